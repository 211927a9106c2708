from __future__ import annotations

import os

# tests never reach a model hub: real weights come from the zoo's offline packages
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from recarena.data.dataset import Dataset  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="run slow tests that load real model packages and data sets",
    )


@pytest.fixture(autouse=True)
def _library_logging_restored():
    """A command-line test sets up logging for the whole process (its handler, and
    `recarena._logs.quiet_libraries`): put the logging and the libraries' progress bars
    back after each test, so no test depends on which ran before it in the same worker."""
    import logging
    import sys

    from recarena._logs import LIBRARY_LOGGERS

    names = ("py.warnings", *LIBRARY_LOGGERS)
    levels = {name: logging.getLogger(name).level for name in names}
    root = logging.getLogger()
    root_state = (root.level, list(root.handlers))
    env = {k: os.environ.get(k) for k in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")}
    hf = sys.modules.get("transformers.utils.logging")
    bars = hf.is_progress_bar_enabled() if hf is not None else True
    verbosity = hf.get_verbosity() if hf is not None else None
    yield
    logging.captureWarnings(False)
    # the command line's handler writes to a console that is gone after the test
    root.setLevel(root_state[0])
    root.handlers[:] = root_state[1]
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    hf = sys.modules.get("transformers.utils.logging")
    if hf is not None:
        (hf.enable_progress_bar if bars else hf.disable_progress_bar)()
        if verbosity is not None:
            hf.set_verbosity(verbosity)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def make_planted_dataset(
    n_clusters: int = 3,
    items_per_cluster: int = 20,
    users_per_cluster: int = 30,
    history: int = 10,
    seed: int = 0,
) -> Dataset:
    """Users who only like the items of their own cluster; item titles share cluster words.

    Every user reads ``history`` items of their cluster in a random order over time. Text
    models, collaborative models and sequential models can all recover the clusters.
    """
    rng = np.random.default_rng(seed)
    words = [
        "space rocket galaxy orbit",
        "cooking recipe kitchen baking",
        "football match goal league",
        "piano concert symphony violin",
        "garden flowers plants soil",
    ]
    rows = []
    t = 1_000_000
    for c in range(n_clusters):
        for u in range(users_per_cluster):
            user = f"u{c}_{u}"
            picks = rng.choice(items_per_cluster, size=history, replace=False)
            for p in picks:
                t += 60
                rows.append((user, f"i{c}_{p}", t, 5.0))
    inter = pd.DataFrame(rows, columns=["user", "item", "timestamp", "rating"])
    titles = {}
    genres = {}
    for c in range(n_clusters):
        for p in range(items_per_cluster):
            titles[f"i{c}_{p}"] = f"{words[c % len(words)]} story {p}"
            genres[f"i{c}_{p}"] = [f"genre{c}"]
    items = pd.DataFrame({"title": titles, "genres": genres})
    return Dataset.from_raw("planted", inter, items)


@pytest.fixture(scope="session")
def planted_dataset() -> Dataset:
    return make_planted_dataset()
