"""Measuring what a model costs: wall time, peak memory, latency percentiles."""

from __future__ import annotations

import resource
import sys
import threading
import time
from pathlib import Path
from types import TracebackType


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


class PeakMemory:
    """Peak resident memory of this process while the block runs (sampled every 20 ms).

    Falls back to the process-wide ``ru_maxrss`` where ``/proc`` is not there. On a GPU the
    peak allocated CUDA memory is recorded too.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_bytes = 0
        self.gpu_peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = _rss_bytes()
            if rss is not None and rss > self.peak_bytes:
                self.peak_bytes = rss
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self.peak_bytes = _rss_bytes() or 0
        if Path("/proc/self/statm").exists():
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        else:
            self.peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        rss = _rss_bytes()
        if rss is not None:
            self.peak_bytes = max(self.peak_bytes, rss)
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            self.gpu_peak_bytes = int(torch.cuda.max_memory_allocated())

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
