"""The user-level DP-SGD parameters the neural models share (SASRec and the text-SASRec,
the two-tower): their checks, whether a fit is private, and the values at which a model is
not private. Torch-free: the training itself is `recarena.privacy.dp`."""

from __future__ import annotations

from typing import Any

from recarena.models.base import is_number, require_param
from recarena.privacy.params import dp_problems

#: the DP-SGD parameters at the values that leave a model not private (the behaviour from
#: before they existed; see `Recommender.neutral_params`)
DP_SGD_OFF: dict[str, Any] = {
    "dp_epsilon": None,
    "dp_delta": None,
    "dp_noise_multiplier": None,
    "dp_max_grad_norm": 1.0,
}


class DPSGDParams:
    """Mixin of a recommender with ``dp_epsilon``, ``dp_delta``, ``dp_noise_multiplier``
    and ``dp_max_grad_norm`` parameters (read with defaults: a model saved before they
    existed is not private)."""

    def _check_dp_params(self) -> None:
        """Numbers or None, then `dp_problems`: a `ValueError` naming every problem."""
        dp = {k: vars(self).get(k) for k in ("dp_epsilon", "dp_delta", "dp_noise_multiplier")}
        for name, value in dp.items():
            require_param(self, name, value is None or is_number(value), "a number or None")
        norm = vars(self).get("dp_max_grad_norm", 1.0)
        require_param(self, "dp_max_grad_norm", is_number(norm), "a positive number")
        problems = dp_problems(dp["dp_epsilon"], dp["dp_delta"], dp["dp_noise_multiplier"], norm)
        if problems:
            raise ValueError(f"{type(self).__name__} differential privacy: " + "; ".join(problems))

    def _private(self) -> bool:
        """Whether this fit is differentially private."""
        state = vars(self)
        return state.get("dp_epsilon") is not None or state.get("dp_noise_multiplier") is not None
