"""Whether RecArena's progress bars show.

The models' own parameters (``progress`` of an encoder, a ranker, a training loop) say
whether *they* may show a bar; a run can ask for none at all: `run_experiment(progress=
False)` (and so a Ray task, the membership audit, a benchmark calling the runner) runs its
models inside `progress_bars(False)`, where `bars_enabled` is False for every bar RecArena
draws and the libraries' own bars (transformers' "Loading weights") are off while a model
loads (`library_bars`).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator

_enabled = True


def bars_enabled() -> bool:
    """False inside `progress_bars(False)`."""
    return _enabled


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """RecArena's bars on (as the models' parameters say) or off inside the block."""
    global _enabled
    before = _enabled
    _enabled = before and enabled
    try:
        yield
    finally:
        _enabled = before


@contextlib.contextmanager
def quiet_library_progress() -> Iterator[None]:
    """transformers' progress bars off inside the block ("Writing model shards" while a
    model is saved), when transformers is imported and they are on; as they were after."""
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is None or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


@contextlib.contextmanager
def gguf_conversion_bar() -> Iterator[None]:
    """transformers' GGUF de-quantisation ("Converting and de-quantizing GGUF tensors...")
    draws a plain tqdm bar that its progress-bar switch does not reach: inside the block it
    follows that switch (off after `quiet_libraries` or inside `library_bars`), as every
    other bar of the library does; as it was after."""
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is None or hf_logging.is_progress_bar_enabled():
        yield
        return
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


@contextlib.contextmanager
def library_bars() -> Iterator[None]:
    """transformers' progress bars off inside the block where RecArena's are off (around
    a model load); as they were otherwise."""
    if _enabled:
        yield
        return
    # a model load imports transformers anyway; its bar switch must exist first
    with contextlib.suppress(ImportError):
        import transformers.utils.logging  # noqa: F401
    with quiet_library_progress():
        yield
