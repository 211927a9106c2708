"""Differentially private training with Opacus: DP-SGD where the privacy unit is one user.

A recommender is trained on users' behaviour, and what needs protecting is a user's whole
history, not one interaction of it. So the unit of privacy here is the *user*: each step
draws users by Poisson sampling (each user independently with probability ``q = batch_size
/ n_users``, Opacus's `UniformWithReplacementSampler`), computes one gradient per user from
that user's whole training sequence (``torch.func.vmap`` of ``torch.func.grad``, the same
per-sample gradients Opacus's functorch mode computes, taken over the whole model so that an
item table shared by the input and the output layer is counted once), and hands them to
Opacus's `DPOptimizer`, which clips each user's gradient to ``max_grad_norm``, adds Gaussian
noise of standard deviation ``noise_multiplier * max_grad_norm`` to their sum and divides
by the expected batch size. Opacus's RDP accountant counts every step (noise multiplier,
sampling rate), and the epsilon spent is read from it, for the ``delta`` of the run.

The user sets a target ``(epsilon, delta)``, and the noise multiplier is the one Opacus's
`get_noise_multiplier` finds for the steps of the training's epoch budget; or the user sets
``noise_multiplier`` directly. A training that stops early spends less than its target; the
record says what was spent. What the accountant does not cover, said plainly in the record:
choosing the stopping epoch and the grid point on validation reads the same users'
validation items, and the refit on train + validation is a second private training whose
epsilon is recorded on its own (the two compose).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from recarena.privacy.params import default_delta, dp_problems

__all__ = ["DPRecord", "UserLevelDPSGD", "default_delta", "dp_problems"]

#: the privacy unit, in the record
PRIVACY_UNIT = "user (the whole training sequence)"


@dataclass
class DPRecord:
    """What a private training spent, as ``training_log`` and ``cost.json`` keep it."""

    epsilon: float
    delta: float
    target_epsilon: float | None
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    n_users: int
    expected_batch_size: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "epsilon_spent": self.epsilon,
            "delta": self.delta,
            "target_epsilon": self.target_epsilon,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "n_users": self.n_users,
            "expected_batch_size": self.expected_batch_size,
            "privacy_unit": PRIVACY_UNIT,
            "accountant": "opacus RDPAccountant",
            "not_covered": "model selection on validation (stopping epoch, grid point)",
        }


class UserLevelDPSGD:
    """DP-SGD steps over users for one training (see the module docstring).

    Parameters
    ----------
    module
        The network; its parameters with ``requires_grad`` are trained.
    optimizer
        The optimizer of those parameters; wrapped in Opacus's `DPOptimizer`.
    n_users
        Users that can be sampled (the training users).
    batch_size
        Expected users per step; the sampling rate is ``batch_size / n_users``.
    epochs
        The epoch budget the noise is calibrated for (an epoch is ``1 / q`` steps).
    epsilon, delta, noise_multiplier, max_grad_norm
        The target (``epsilon`` with ``delta``, default `default_delta`) or the noise
        multiplier, and the clipping norm of one user's gradient.
    seed
        Seeds the Poisson sampling and the noise.
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        n_users: int,
        batch_size: int,
        epochs: int,
        epsilon: float | None,
        delta: float | None,
        noise_multiplier: float | None,
        max_grad_norm: float,
        seed: int,
    ) -> None:
        try:
            from opacus.accountants import RDPAccountant
            from opacus.accountants.utils import get_noise_multiplier
            from opacus.optimizers import DPOptimizer
        except ImportError as exc:
            from recarena.errors import ModelNotAvailableError

            raise ModelNotAvailableError(
                "differentially private training needs Opacus: pip install 'recarena[privacy]'"
            ) from exc

        if n_users < 1:
            raise ValueError("private training needs at least one user")
        self.module = module
        self.n_users = n_users
        self.sample_rate = min(1.0, batch_size / n_users)
        self.expected_batch_size = max(1, round(self.sample_rate * n_users))
        self.steps_per_epoch = max(1, round(1 / self.sample_rate))
        self.delta = delta if delta is not None else default_delta(n_users)
        self.target_epsilon = epsilon
        if noise_multiplier is None:
            if epsilon is None:
                raise ValueError("give a target epsilon or a noise multiplier")
            noise_multiplier = get_noise_multiplier(
                target_epsilon=epsilon,
                target_delta=self.delta,
                sample_rate=self.sample_rate,
                steps=epochs * self.steps_per_epoch,
                accountant="rdp",
            )
        self.noise_multiplier = float(noise_multiplier)
        self.max_grad_norm = float(max_grad_norm)
        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=self.expected_batch_size,
            loss_reduction="mean",
            generator=torch.Generator().manual_seed(seed),
        )
        self.accountant = RDPAccountant()
        self._rng = np.random.default_rng([seed, 1009])
        self.steps = 0

    def epoch_batches(self) -> Iterator[np.ndarray]:
        """One epoch of Poisson-sampled user indices (``1 / q`` steps; a batch may be
        empty: its step is noise alone, and it is counted)."""
        for _ in range(self.steps_per_epoch):
            chosen = self._rng.random(self.n_users) < self.sample_rate
            yield np.flatnonzero(chosen)

    def step(
        self,
        loss_of_one: Callable[..., torch.Tensor],
        batch: tuple[torch.Tensor, ...],
    ) -> float:
        """One private step on ``batch`` (tensors whose first dimension is the sampled
        users); ``loss_of_one(module, *tensors_of_one_user)`` is one user's loss, the
        tensors given with a leading dimension of 1. Returns the mean loss (NaN when the
        batch is empty)."""
        from torch.func import functional_call, grad_and_value, vmap

        params = {n: p for n, p in self.module.named_parameters() if p.requires_grad}
        buffers = dict(self.module.named_buffers())
        n = int(batch[0].shape[0]) if batch else 0
        if n:
            detached = {k: v.detach() for k, v in params.items()}

            def one(p: dict[str, torch.Tensor], *sample: torch.Tensor) -> torch.Tensor:
                one_batch = tuple(x.unsqueeze(0) for x in sample)

                def call(*args: Any, **kwargs: Any) -> Any:
                    return functional_call(self.module, (p, buffers), args, kwargs)

                return loss_of_one(_Bound(self.module, call, p), *one_batch)

            grads, losses = vmap(
                grad_and_value(one), in_dims=(None, *([0] * len(batch))), randomness="different"
            )(detached, *batch)
            for name, p in params.items():
                p.grad_sample = grads[name].detach()
            mean_loss = float(losses.mean())
        else:
            for p in params.values():
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
            mean_loss = math.nan
        self._noised_step()
        return mean_loss

    def _noised_step(self) -> None:
        """Opacus's clipping, noise and update from the parameters' ``grad_sample``, and
        the step counted by the accountant."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.steps += 1

    def step_each(self, loss_of: Callable[[int], torch.Tensor], n: int) -> float:
        """One private step where ``loss_of(i)`` is the loss of the batch's ``i``-th user,
        differentiated user by user (for a network that `step`'s ``vmap`` cannot run, e.g.
        one that encodes text through cached layers). The same clipping, noise and
        accounting as `step`; returns the mean loss (NaN when the batch is empty)."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        samples: list[list[torch.Tensor]] = [[] for _ in params]
        losses = []
        for i in range(n):
            loss = loss_of(i)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for rows, g, p in zip(samples, grads, params, strict=True):
                rows.append(torch.zeros_like(p) if g is None else g.detach())
            losses.append(float(loss.detach()))
        for p, rows in zip(params, samples, strict=True):
            p.grad_sample = (
                torch.stack(rows)
                if rows
                else torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
            )
        self._noised_step()
        return float(np.mean(losses)) if losses else math.nan

    def epsilon(self) -> float:
        """The epsilon spent so far, for this training's ``delta`` (Opacus's RDP accountant)."""
        if self.steps == 0:
            return 0.0
        return float(self.accountant.get_epsilon(delta=self.delta))

    def record(self) -> DPRecord:
        return DPRecord(
            epsilon=self.epsilon(),
            delta=self.delta,
            target_epsilon=self.target_epsilon,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            sample_rate=self.sample_rate,
            steps=self.steps,
            n_users=self.n_users,
            expected_batch_size=self.expected_batch_size,
        )


class _Bound:
    """The module as ``loss_of_one`` sees it inside ``vmap``: calling it runs the module
    with the functional parameters; ``param(name)`` is one of them (e.g. an item table the
    loss reads directly); other attributes are the module's."""

    def __init__(self, module: nn.Module, call: Callable[..., Any], params: dict[str, Any]):
        self._module = module
        self._call = call
        self._params = params

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    def param(self, name: str) -> torch.Tensor:
        return self._params[name]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)
