"""Training seeds: the runs a ``[[models]]`` entry makes when the experiment asks for seeds.

``seeds = [42, 43, 44]`` (at the top of the experiment, or in one ``[[models]]`` entry)
trains and measures a model once per seed, on the same split, candidates and users (the
experiment's ``seed`` keeps seeding those). Each seed is a run of its own, with its own
folder, tuning, ``DONE.json`` and per-user metrics, so a stopped experiment resumes per
(model, seed); its label is the model's label and the seed joined by
`recarena.config.SEED_MARK` (``sasrec@seed43``), and its ``seed`` parameter is the seed.

A model without a ``seed`` parameter (EASE, ItemKNN, MostPopular, TF-IDF, the frozen
encoders) is deterministic given its data: it runs once, and its record says so. One seed
keeps the model's label. No seeds (the default) changes nothing: every model runs once
with its own parameters, as before seeds existed, so earlier run folders resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recarena.config import SEED_MARK, ExperimentConfig, ModelConfig


@dataclass(frozen=True)
class SeedRun:
    """One run of a ``[[models]]`` entry: its configuration and what seed it stands for."""

    config: ModelConfig
    #: the ``[[models]]`` entry's label
    group: str
    #: the seed of this run; None when the model runs once without seeds
    seed: int | None
    #: the seeds the experiment asked for (None: none)
    seeds: tuple[int, ...] | None
    #: asked for seeds, but the model takes no ``seed``: it ran once
    deterministic: bool = False

    @property
    def label(self) -> str:
        return self.config.display_name

    def record(self) -> dict[str, Any] | None:
        """What ``DONE.json`` keeps of it (``training_seeds``); None without seeds."""
        if self.seeds is None:
            return None
        out: dict[str, Any] = {"group": self.group, "seeds": list(self.seeds)}
        if self.deterministic:
            out["deterministic"] = True
        else:
            out["seed"] = self.seed
        return out


def seed_label(label: str, seed: int) -> str:
    """The label of one seed's run of the model labelled ``label``."""
    return f"{label}{SEED_MARK}{seed}"


def takes_seed(mc: ModelConfig) -> bool | None:
    """Whether the model's class has a ``seed`` parameter (None: the class cannot be
    loaded, and its own run reports why)."""
    from recarena.models.registry import get_model_class

    try:
        klass = get_model_class(mc.name)
    except Exception:  # noqa: BLE001 - the pre-flight checks and the run name the problem
        return None
    return "seed" in klass._param_names()


def seed_runs(config: ExperimentConfig) -> list[SeedRun]:
    """Every run the experiment makes, in the order of its ``[[models]]``, seeds in the
    order given.

    A run's configuration is the entry's, with the seed in ``params`` (the label marked
    when there are several seeds) and ``seeds`` left out, so a run's ``model_hash`` does
    not depend on the other seeds asked for.
    """
    runs: list[SeedRun] = []
    for mc in config.models:
        seeds = config.seeds_of(mc)
        label = mc.display_name
        if seeds is None:
            runs.append(SeedRun(mc, label, None, None))
            continue
        plain = mc.model_copy(update={"seeds": None})
        if not takes_seed(mc):
            runs.append(SeedRun(plain, label, None, tuple(seeds), deterministic=True))
            continue
        for seed in seeds:
            update: dict[str, Any] = {"params": {**mc.params, "seed": seed}}
            if len(seeds) > 1:
                update["label"] = seed_label(label, seed)
            runs.append(SeedRun(plain.model_copy(update=update), label, seed, tuple(seeds)))
    return runs


def model_runs(config: ExperimentConfig) -> list[ModelConfig]:
    """The ``[[models]]`` configurations the runner runs (`seed_runs`)."""
    return [run.config for run in seed_runs(config)]


def seed_problems(config: ExperimentConfig) -> list[str]:
    """What is wrong with the experiment's seeds, as messages: a first stage trained once
    per seed (a protocol needs one candidate list per user, so its first stage must be
    deterministic or given one seed)."""
    first_stages = {p.first_stage for p in config.evaluation.protocols if p.kind == "first_stage"}
    problems = []
    for run in seed_runs(config):
        if run.group in first_stages and run.label != run.group:
            problems.append(
                f"model {run.group!r} is the first stage of a protocol and is trained once "
                f"per seed of {list(run.seeds or [])}; a protocol needs one candidate list "
                f"per user: give it one seed (`seeds = [{run.seeds[0] if run.seeds else 42}]` "
                "in its [[models]] entry) or use a deterministic first stage"
            )
            break
    return problems
