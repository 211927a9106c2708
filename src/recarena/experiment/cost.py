"""A model's cost record (``cost.json``): sizes, fit and tuning times, ranking speed and
latency, peak memory, then what the model records of itself (`Recommender.cost_record`).

`latency_ms` times single-user rankings; `cost_record` assembles the record from the
stages' results. Nothing here reads or writes a run folder (`recarena.experiment.artifacts`
writes ``cost.json``); the timers themselves are `recarena.cost`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from recarena.cost import PeakMemory
from recarena.experiment.protocols import sample_users
from recarena.experiment.stages import Fitted, Measured, Tuning


def latency_ms(
    rank_one: Callable[[np.ndarray], Any], users: np.ndarray, n: int, seed: int
) -> tuple[float, float] | None:
    """The median and 95th percentile (milliseconds) of ``rank_one`` on one user at a time,
    for a seeded sample of ``n`` of ``users`` (None when ``n`` or ``users`` is empty)."""
    if n == 0 or len(users) == 0:
        return None
    sample = sample_users(users, n, seed + 1)
    times = []
    for u in sample:
        start = time.perf_counter()
        rank_one(np.array([u]))
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def cost_record(
    tuning: Tuning, fitted: Fitted, measured: Measured, mem: PeakMemory
) -> dict[str, Any]:
    """``cost.json``: sizes, times, speed and memory, then the model's own record."""
    n_total, n_trainable = fitted.model.n_parameters()
    latency = measured.latency
    return {
        "parameters_total": int(n_total),
        "parameters_trainable": int(n_trainable),
        "fit_seconds": fitted.fit_seconds,
        "tuning_seconds": tuning.seconds,
        "tuning_trials": len(tuning.trials),
        "users_per_second": measured.throughput,
        "latency_ms_p50": latency[0] if latency else None,
        "latency_ms_p95": latency[1] if latency else None,
        "peak_memory_mib": mem.peak_mib,
        "gpu_peak_memory_mib": None if mem.gpu_peak_bytes is None else mem.gpu_peak_bytes / 2**20,
        **fitted.model.cost_record(),
    }
