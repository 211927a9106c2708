"""Where RecArena keeps fetched data sets, model packages and encoded vectors.

Order of precedence: an explicit argument (``--cache-dir`` on the CLI, ``cache_dir`` in an
experiment file), then the ``RECARENA_CACHE`` environment variable, then
``~/.cache/recarena``. Only the CLI and the runner read the environment; library functions
take the folder as an argument.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "RECARENA_CACHE"


def resolve_cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit is not None:
        path = Path(explicit)
    elif os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR])
    else:
        path = Path.home() / ".cache" / "recarena"
    path = path.expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
