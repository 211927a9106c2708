"""Validation grids: every model gets the same, small, seeded tuning budget."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np


def expand_grid(grid: dict[str, list[Any]], max_trials: int, seed: int) -> list[dict[str, Any]]:
    """All combinations of ``grid``; a seeded sample of ``max_trials`` when there are more.

    The first combination (each parameter's first value) is always kept, so a grid whose
    first values are the defaults always tries the defaults.
    """
    if not grid:
        return [{}]
    keys = sorted(grid)
    for key in keys:
        if not isinstance(grid[key], list) or not grid[key]:
            raise ValueError(f"grid values for {key!r} must be a non-empty list")
    points = [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(grid[k] for k in keys))
    ]
    if len(points) <= max_trials:
        return points
    rng = np.random.default_rng([seed, 2**31 - 1])
    rest = rng.choice(np.arange(1, len(points)), size=max_trials - 1, replace=False)
    return [points[0], *(points[i] for i in sorted(rest))]


def params_key(params: dict[str, Any]) -> str:
    """A stable text key of a parameter dict (for resuming a grid)."""
    return json.dumps(params, sort_keys=True, default=str)
