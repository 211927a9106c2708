"""What each stage of `ExperimentRunner.run_model` hands to the next: the model's job
(`ModelJob`, from ``_start_model``), what validation chose (`Tuning`), the model that is
tested (`Fitted`) and what was measured (`Measured`).

Plain records, so that the modules that run a stage or take its result
(`recarena.experiment.tuning`, `recarena.experiment.fitting`, `recarena.experiment.cost`,
`recarena.experiment.artifacts`) need nothing of the runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recarena.config import ModelConfig, ProtocolConfig
from recarena.models.base import Recommender, TrainingData


@dataclass
class ModelJob:
    """One model's run: its entry, folder, untrained model and protocols."""

    mc: ModelConfig
    label: str
    mdir: Path
    template: Recommender
    protocols: list[ProtocolConfig]
    skipped: dict[str, str]
    budget_users: int | None
    first_stage: bool
    has_valid: bool
    refit: bool
    #: the protocol validation is measured on
    tune_proto: ProtocolConfig

    @property
    def checkpoints(self) -> Path:
        return self.mdir / "checkpoints"


@dataclass
class Tuning:
    """What validation chose: the parameters, the trials and their time."""

    needs_validation: bool
    trials: list[dict[str, Any]]
    seconds: float
    chosen: dict[str, Any] = field(default_factory=dict)
    #: what the chosen trial's fit learned for the refit (SASRec: its best epoch)
    refit_extra: dict[str, Any] = field(default_factory=dict)
    #: the chosen trial's model when it is still in memory
    best_model: Recommender | None = None


@dataclass
class Fitted:
    """The model that is tested, and how it came to be."""

    model: Recommender
    #: the training data of the test stage (train + valid)
    data: TrainingData
    refitted: bool
    fit_seconds: float
    history_refreshed: bool | None


@dataclass
class Measured:
    """Every protocol's metrics, and the speed of the first ranking."""

    test_users: np.ndarray
    results: dict[str, Any] = field(default_factory=dict)
    throughput: float | None = None
    latency: tuple[float, float] | None = None
