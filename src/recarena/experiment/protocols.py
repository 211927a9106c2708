"""The split and what is measured on it: the configured split with its frozen candidates,
the checks of its settings, the seeded user samples of a budget, the protocols each model
is measured on."""

from __future__ import annotations

from typing import Any

import numpy as np

from recarena.config import ExperimentConfig, ModelConfig, ProtocolConfig
from recarena.data.dataset import Dataset
from recarena.errors import ConfigError
from recarena.models.base import Recommender
from recarena.splits import SPLITTERS, Split


def item_text_template(config: ExperimentConfig, dataset: Dataset) -> str:
    if config.data.text_template:
        return config.data.text_template
    default = dataset.info.get("default_text_template")
    if default:
        return default
    if "title" in dataset.items.columns:
        return "{title}"
    return ""


def build_split(config: ExperimentConfig, dataset: Dataset) -> Split:
    """The configured split, with candidates drawn for every sampled protocol."""
    sc = config.split
    method = sc.method
    notes: list[str] = []
    if method == "temporal" and not dataset.has_timestamps:
        if not sc.fallback_to_random:
            raise ConfigError(
                f"data set {dataset.name!r} has no timestamps: a temporal split is impossible "
                "(set split.fallback_to_random = true or choose another method)"
            )
        notes.append("the data has no timestamps: the temporal split fell back to a random split")
        method = "random"
    kwargs: dict[str, Any] = {}
    if method == "leave_one_out":
        kwargs = {"min_history": sc.min_history}
    elif method == "temporal":
        kwargs = {"valid_ratio": sc.valid_ratio, "test_ratio": sc.test_ratio}
    elif method == "random":
        kwargs = {"valid_ratio": sc.valid_ratio, "test_ratio": sc.test_ratio, "seed": config.seed}
    elif method == "cold_item":
        kwargs = {
            "valid_ratio": sc.valid_ratio,
            "test_ratio": sc.test_ratio,
            "seed": config.seed,
            "rank_among": sc.rank_among,
        }
    split = SPLITTERS[method](dataset, **kwargs)
    split.notes[:0] = notes
    if len(split.valid) == 0:
        split.notes.append("no validation interactions: models are not tuned")
    sampled = [p for p in config.evaluation.protocols if p.kind == "sampled"]
    for n, proto in enumerate(sampled):
        stages = ("valid", "test") if len(split.valid) else ("test",)
        split.draw_candidates(
            proto.n_negatives,
            config.seed + n,
            stages=stages,
            all_interactions=dataset.interactions,
            popularity_weighted=proto.sampling == "popularity",
            name=proto.label,
        )
    return split


def split_problems(config: ExperimentConfig) -> list[str]:
    """What makes the configured split impossible, told without the data (as messages).

    The ratios of the temporal, random and cold-item splits must leave training data
    (``valid_ratio + test_ratio < 1``); each ratio's own range is checked by the config.
    """
    sc = config.split
    if sc.method not in ("temporal", "random", "cold_item"):
        return []
    total = sc.valid_ratio + sc.test_ratio
    if total < 1:
        return []
    return [
        f"split: valid_ratio {sc.valid_ratio} + test_ratio {sc.test_ratio} = {total:g} leaves "
        f"nothing to train on; the {sc.method} split expects valid_ratio + test_ratio < 1"
    ]


def sample_users(users: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or len(users) <= limit:
        return users
    rng = np.random.default_rng([seed, 31337])
    return np.sort(rng.choice(users, size=limit, replace=False))


def is_first_stage(config: ExperimentConfig, label: str) -> bool:
    """Whether the model ``label`` is the first stage of one of the experiment's protocols."""
    return any(
        p.kind == "first_stage" and p.first_stage == label for p in config.evaluation.protocols
    )


def protocols_for(
    config: ExperimentConfig, mc: ModelConfig, model: Recommender
) -> tuple[list[ProtocolConfig], dict[str, str]]:
    """The protocols a model is measured on, and why it skips the others."""
    chosen, skipped = [], {}
    for proto in config.evaluation.protocols:
        if mc.protocols is not None and proto.label not in mc.protocols:
            continue
        if proto.kind == "full" and not model.scores_full_catalog:
            skipped[proto.label] = "re-ranker: cannot score the full catalog"
            continue
        if proto.kind == "first_stage" and proto.first_stage == mc.display_name:
            skipped[proto.label] = "this model is the first stage of this protocol"
            continue
        chosen.append(proto)
    return chosen, skipped
