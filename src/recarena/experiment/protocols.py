"""The split and what is measured on it: the configured split with its frozen candidates,
the checks of its settings, the seeded user samples of a budget, the protocols each model
is measured on, each protocol's candidates (`candidates_for`: a sampled protocol's from
the split, a first stage's from its model's files in ``split/``), the ranked lists of a
protocol (`rank_lists`) and a first stage's top-N (`first_stage_lists`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recarena._artifacts import load_npz_artifact
from recarena.config import ExperimentConfig, ModelConfig, ProtocolConfig
from recarena.data.dataset import Dataset
from recarena.errors import ArtifactError, ConfigError
from recarena.experiment.artifacts import first_stage_path
from recarena.models.base import Recommender
from recarena.ranking import RankedLists
from recarena.splits import SPLITTERS, CandidateSet, Split


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


def candidates_for(
    split: Split, run_dir: Path, proto: ProtocolConfig, stage: str
) -> CandidateSet | None:
    """The frozen candidates of ``proto`` at ``stage``: a sampled protocol's are the
    split's, a first stage's the file its model wrote into ``split/`` (None before it did,
    and for full ranking)."""
    if proto.kind == "sampled":
        return split.candidates.get(f"{proto.label}:{stage}")
    if proto.kind == "first_stage":
        path = first_stage_path(run_dir, proto, stage)
        if path.exists():
            z = load_npz_artifact(path)
            return CandidateSet(z["users"], z["items"], str(z["kind"]), str(z["description"]))
        return None
    return None


def rank_lists(
    model: Recommender,
    proto: ProtocolConfig,
    stage: str,
    users: np.ndarray,
    exclude: sp.csr_matrix,
    k: int,
    *,
    item_pool: np.ndarray | None,
    candidates: CandidateSet | None,
    seed: int,
) -> RankedLists:
    """``users``' top-``k`` under ``proto``: of the whole catalog (``item_pool``), or of
    their ``candidates`` (which must cover every user)."""
    if proto.kind == "full":
        return model.recommend(users, k, exclude=exclude, item_pool=item_pool, seed=seed)
    cand = candidates
    if cand is None:
        raise ArtifactError(f"no {proto.label} candidates for stage {stage!r}")
    rows = np.searchsorted(cand.users, users)
    if not np.array_equal(cand.users[np.minimum(rows, len(cand.users) - 1)], users):
        raise ArtifactError(f"{proto.label} candidates do not cover every {stage} user")
    return model.recommend(
        users,
        k,
        candidates=cand.items[rows],
        exclude=exclude,
        item_pool=item_pool,
        seed=seed,
    )


def first_stage_top_n(config: ExperimentConfig, label: str) -> int:
    """How many candidates the first stage ``label`` gives (the most any protocol takes)."""
    return max(
        p.top_n
        for p in config.evaluation.protocols
        if p.kind == "first_stage" and p.first_stage == label
    )


def check_first_stage(label: str, model: Recommender) -> None:
    """A first stage ranks the whole catalog: say so when ``model`` cannot."""
    if not model.scores_full_catalog:
        raise ConfigError(
            f"model {label!r} cannot score the full catalog, so it cannot be a first stage"
        )


def first_stage_lists(
    config: ExperimentConfig,
    label: str,
    model: Recommender,
    split: Split,
    stage: str,
    exclude: sp.csr_matrix,
) -> RankedLists:
    """The first stage's top-N for every user of ``stage``, whatever its own budget."""
    return model.recommend(
        split.eval_users(stage),
        first_stage_top_n(config, label),
        exclude=exclude,
        item_pool=split.item_pool.get(stage),
        seed=config.seed,
    )
