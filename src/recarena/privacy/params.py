"""The DP parameters every private model shares, checked without loading torch or Opacus."""

from __future__ import annotations

import math
from types import ModuleType


def default_delta(n_users: int) -> float:
    """``1 / n_users ** 1.1``: below ``1 / n``, the usual bound for a meaningful delta."""
    return 1.0 / max(n_users, 2) ** 1.1


def dp_problems(
    epsilon: float | None,
    delta: float | None,
    noise_multiplier: float | None,
    max_grad_norm: float,
) -> list[str]:
    """What is wrong with a model's DP parameters, as messages (none: fine or DP off)."""
    problems = []
    if epsilon is not None and noise_multiplier is not None:
        problems.append(
            f"dp_epsilon = {epsilon} and dp_noise_multiplier = {noise_multiplier} both set the "
            "noise: give the target epsilon or the noise multiplier, not both"
        )
    if epsilon is not None and not (epsilon > 0 and math.isfinite(epsilon)):
        problems.append(f"dp_epsilon must be a positive finite number, got {epsilon}")
    if noise_multiplier is not None and not noise_multiplier > 0:
        problems.append(f"dp_noise_multiplier must be > 0, got {noise_multiplier}")
    if delta is not None and not 0 < delta < 1:
        problems.append(f"dp_delta must be in (0, 1), got {delta}")
    if not max_grad_norm > 0:
        problems.append(f"dp_max_grad_norm must be > 0, got {max_grad_norm}")
    if delta is not None and epsilon is None and noise_multiplier is None:
        problems.append("dp_delta is set but DP is off: set dp_epsilon or dp_noise_multiplier")
    return problems


def opacus_accountants() -> ModuleType:
    """Opacus's accountants package, or a `ModelNotAvailableError` naming the extra to
    install."""
    try:
        import opacus.accountants
        import opacus.accountants.utils
    except ImportError as exc:
        from recarena.errors import ModelNotAvailableError

        raise ModelNotAvailableError(
            "differentially private training needs Opacus: pip install 'recarena[privacy]'"
        ) from exc
    return opacus.accountants
