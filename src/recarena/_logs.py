"""What a run prints: RecArena's own progress, and the libraries only when asked (``-v``).

Language-model libraries print progress bars ("Loading weights") and deprecation warnings
into the middle of a run's progress. `quiet_libraries` routes Python warnings into the
logging system (logger ``py.warnings``) and, unless ``verbose``, keeps them and the
libraries' own loggers below the surface: Hugging Face progress bars off
(``HF_HUB_DISABLE_PROGRESS_BARS``, which transformers reads too), transformers' verbosity
at errors, the libraries' loggers at errors. RecArena itself raises no Python warnings:
what it has to say goes through its loggers, which stay at INFO.
"""

from __future__ import annotations

import logging
import os
import sys

#: loggers of the libraries RecArena runs, quiet unless verbose
LIBRARY_LOGGERS = (
    "transformers",
    "sentence_transformers",
    "peft",
    "accelerate",
    "torch",
    "huggingface_hub",
    "opacus",
    "ray",
    "urllib3",
    "filelock",
    "httpx",
    "matplotlib",
    "numba",
    "PIL",
)


def quiet_libraries(verbose: bool) -> None:
    """Route warnings to logging and silence the libraries unless ``verbose``."""
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.WARNING if verbose else logging.ERROR)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if verbose else logging.ERROR)
    hf_logging = sys.modules.get("transformers.utils.logging")
    if verbose:
        if hf_logging is not None:
            hf_logging.enable_progress_bar()
            hf_logging.set_verbosity_warning()
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if hf_logging is not None:  # imported already: its settings were read at import
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
