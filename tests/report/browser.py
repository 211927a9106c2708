"""Headless Chromium for the report tests, driven by selenium and Debian's chromedriver.

Needs ``apt-get install -y chromium chromium-driver`` and ``pip install selenium``. Where
they are missing the browser tests fail with a message saying so, unless the environment
variable ``RECARENA_SKIP_BROWSER_TESTS=1`` is set (for a developer machine without a
browser); CI never sets it. ``RECARENA_CHROMIUM`` and ``RECARENA_CHROMEDRIVER`` name other
binaries than ``/usr/bin/chromium`` and ``/usr/bin/chromedriver``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

SKIP_ENV = "RECARENA_SKIP_BROWSER_TESTS"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver",)
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def _find(env: str, candidates: tuple[str, ...], name: str) -> str | None:
    """A binary: the path in ``env`` when set (must exist), else a usual place, else PATH."""
    override = os.environ.get(env)
    if override:
        return override if Path(override).exists() else None
    for path in candidates:
        if Path(path).exists():
            return path
    return shutil.which(name)


def browser_or_skip() -> tuple[str, str]:
    """Paths of chromium and chromedriver; fails (or skips, when allowed) without them."""
    chromium = _find("RECARENA_CHROMIUM", CHROMIUM_CANDIDATES, "chromium")
    driver = _find("RECARENA_CHROMEDRIVER", DRIVER_CANDIDATES, "chromedriver")
    problems = []
    if not chromium:
        problems.append("chromium is not installed (apt-get install -y chromium)")
    if not driver:
        problems.append("chromedriver is not installed (apt-get install -y chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        problems.append("the selenium package is not installed (pip install selenium)")
    if problems:
        message = "browser test needs headless Chromium: " + "; ".join(problems)
        if os.environ.get(SKIP_ENV) == "1":
            pytest.skip(f"{message} ({SKIP_ENV}=1)")
        pytest.fail(f"{message}. Set {SKIP_ENV}=1 to skip browser tests on a machine without one.")
    return chromium, driver  # type: ignore[return-value]


@contextmanager
def headless_chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A selenium Chrome driver on headless Chromium with a fresh profile, console logged."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = browser_or_skip()
    profile = tempfile.mkdtemp(prefix="recarena-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def full_page_screenshot(driver: Any, path: Path, tile_height: int = 8000) -> list[Path]:
    """PNGs of the whole page, through the DevTools protocol (beyond the window's height).

    Pages taller than ``tile_height`` CSS pixels are saved as several tiles
    (``NAME-1.png``, ``NAME-2.png``...); returns the files written.
    """
    import base64

    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    width, height = int(size["width"]), int(size["height"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tiles = max(1, -(-height // tile_height))
    written = []
    for i in range(tiles):
        top = i * tile_height
        clip = {
            "x": 0,
            "y": top,
            "width": width,
            "height": min(tile_height, height - top),
            "scale": 1,
        }
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
        )
        target = path if tiles == 1 else path.with_name(f"{path.stem}-{i + 1}{path.suffix}")
        target.write_bytes(base64.b64decode(shot["data"]))
        written.append(target)
    return written
