"""A run prints RecArena's progress only; -v shows the libraries' warnings and bars."""

from __future__ import annotations

import logging
import os
import warnings

import pytest

from recarena._logs import quiet_libraries


@pytest.fixture
def restore_logging(monkeypatch):
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    levels = {n: logging.getLogger(n).level for n in ("py.warnings", "transformers", "peft")}
    yield
    logging.captureWarnings(False)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    hf = pytest.importorskip("transformers.utils.logging")
    hf.enable_progress_bar()
    hf.set_verbosity_warning()


def _library_warning() -> None:
    warnings.warn_explicit(
        "`is_gradient_checkpointing` is deprecated", FutureWarning, "transformers/x.py", 1
    )


def test_quiet_by_default_and_verbose_on_request(restore_logging, caplog):
    hf = pytest.importorskip("transformers.utils.logging")
    quiet_libraries(False)
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert not hf.is_progress_bar_enabled() and hf.get_verbosity() == hf.ERROR
    assert logging.getLogger("peft").getEffectiveLevel() == logging.ERROR
    with caplog.at_level(logging.DEBUG, logger="recarena"), warnings.catch_warnings():
        warnings.simplefilter("always")
        _library_warning()
        logging.getLogger("recarena.experiment").info("sasrec: fitting")
    messages = [r.getMessage() for r in caplog.records]
    assert "sasrec: fitting" in messages
    assert not any("deprecated" in m for m in messages)
    caplog.clear()
    quiet_libraries(True)
    assert hf.is_progress_bar_enabled()
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("always")
        _library_warning()
    assert any("is deprecated" in r.getMessage() for r in caplog.records)
