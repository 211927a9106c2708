"""Kill points for the fault-injection tests: a power cut at a named place, on purpose.

A run passes named points: the stage boundaries (``data:saved``, ``split:saved``,
``run:prepared``, ``model:trial``, ``model:fitted``, ``model:measured``, ``model:done``,
``run:summarised``) and, inside every atomic writer, ``write:<file name>`` once the new
content is on disk but before it is renamed into place. With the environment variable
``RECARENA_KILL_AT=<point>`` (or ``<point>#<n>`` for its n-th arrival) the process sends
itself SIGKILL there, as the OOM killer or a power cut would: no ``finally`` block, no
``atexit``, no flush. The tests then rerun the experiment and compare the folder, byte for
byte, with a run that was never stopped. Unset, which it always is outside those tests, a
point costs one lookup in ``os.environ``.

``RECARENA_KILL_LOG=<file>`` appends every point passed to that file instead (one per
line), so that a test can list the points a run passes and kill it at each.
"""

from __future__ import annotations

import os
import signal

KILL_AT = "RECARENA_KILL_AT"
KILL_LOG = "RECARENA_KILL_LOG"

_arrivals: dict[str, int] = {}


def point(name: str) -> None:
    """Mark a point a kill may hit (see the module docstring); a no-op in normal runs."""
    target = os.environ.get(KILL_AT)
    log = os.environ.get(KILL_LOG)
    if not (target or log):
        return
    _arrivals[name] = _arrivals.get(name, 0) + 1
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{name}#{_arrivals[name]}\n")
    if target:
        where, _, nth = target.partition("#")
        if where == name and _arrivals[name] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def reset() -> None:
    """Forget the arrivals counted so far (a new process starts with none)."""
    _arrivals.clear()
