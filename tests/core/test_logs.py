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


def test_the_gguf_conversion_bar_follows_the_libraries_switch(restore_logging, capsys):
    # transformers' GGUF de-quantisation draws a plain tqdm bar that its own
    # disable_progress_bar() does not reach
    hf = pytest.importorskip("transformers.utils.logging")
    gguf_utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    from recarena._progress import gguf_conversion_bar

    original = gguf_utils.tqdm
    hf.enable_progress_bar()
    with gguf_conversion_bar():
        assert gguf_utils.tqdm is original  # -v, or a bench that shows bars: unchanged
    quiet_libraries(False)
    with gguf_conversion_bar():
        for _ in gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors"):
            pass
    assert gguf_utils.tqdm is original
    assert "de-quantizing" not in capsys.readouterr().err
    # the unpatched bar does draw (so the check above is not vacuous)
    for _ in gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors"):
        pass
    assert "de-quantizing" in capsys.readouterr().err
