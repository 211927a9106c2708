"""Experiment configuration: a TOML file validated by pydantic.

Stability: **stable**. New keys may be added with defaults; existing keys keep their meaning.
Unknown keys are errors that name the key, so a misspelling never goes unnoticed.

A minimal experiment::

    name = "ml100k-baselines"
    [data]
    name = "ml-100k"
    [[models]]
    name = "ease"
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recarena.errors import ConfigError

ACCURACY_METRICS = frozenset({"hr", "recall", "precision", "f1", "ndcg", "mrr", "map"})
KNOWN_LIST_METRICS = ACCURACY_METRICS | {"coverage", "novelty", "ild", "arp", "gini"}


#: what joins a model's label and a training seed in the label of that seed's run
SEED_MARK = "@seed"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def _check_seeds(seeds: list[int] | None) -> list[int] | None:
    if seeds is None:
        return None
    if not seeds:
        raise ValueError("seeds must name at least one seed (leave it out to train once)")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"seeds {seeds} repeat {repeated}; expected distinct seeds")
    negative = [s for s in seeds if s < 0]
    if negative:
        raise ValueError(f"seeds must be >= 0 (numpy and torch seeds), got {negative}")
    return seeds


class PreprocessConfig(_Strict):
    """Applied in this order: rating threshold, de-duplication, k-core."""

    min_rating: float | None = Field(
        None, description="keep interactions rated >= this (implicit feedback)"
    )
    dedup: Literal["none", "latest", "first"] = Field(
        "latest", description="one interaction per user-item pair"
    )
    user_core: int = Field(0, ge=0, description="users need at least this many interactions")
    item_core: int = Field(0, ge=0, description="items need at least this many interactions")


class DataConfig(_Strict):
    """Which data to load: a catalog ``name`` (``recarena data list``) or local files."""

    name: str | None = Field(None, description="catalog data set, e.g. 'ml-100k'")
    format: str | None = Field(
        None, description="loader for local files: csv, tsv, parquet, recbole, movielens-100k, ..."
    )
    path: str | None = Field(None, description="file or folder of the interactions")
    items_path: str | None = Field(None, description="item table file (csv/tsv/parquet formats)")
    users_path: str | None = Field(None, description="user table file (csv/tsv/parquet formats)")
    columns: dict[str, str] = Field(
        default_factory=dict, description="user/item/timestamp/rating -> column in the file"
    )
    item_columns: dict[str, str] = Field(
        default_factory=dict,
        description="item table: 'item' -> id column, other keys -> text fields",
    )
    user_columns: dict[str, str] = Field(
        default_factory=dict,
        description="user table: 'user' -> id column, other keys -> attributes",
    )
    list_columns: list[str] = Field(
        default_factory=list, description="item fields holding several values, e.g. genres"
    )
    list_separator: str = Field("|", description="separator inside list fields")
    separator: str | None = Field(
        None, description="field separator of csv/tsv files (default by format)"
    )
    encoding: str = Field("utf-8", description="text encoding of local files")
    timestamp_unit: Literal["s", "ms", "us", "ns", "iso"] = Field(
        "s", description="unit of the timestamp column"
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="format-specific loader options: mind valid_days; amazon and lfm "
        "min_timestamp; lastfm-hetrec top_tags, min_plays",
    )
    text_template: str | None = Field(
        None, description="item text, e.g. 'Title: {title}. Genres: {genres}.'"
    )
    text_max_chars: int = Field(400, gt=0, description="longest text kept per field")
    ties: Literal["hash", "file"] = Field(
        "hash",
        description="order of a user's interactions with equal timestamps: 'hash' (a fixed "
        "hash of the ids: any row order gives the same split) or 'file' (the order the rows "
        "are read in, as the SASRec and BERT4Rec preprocessing's stable sort: for "
        "reproducing splits published that way; a temporal split's cut is decided by the "
        "hash either way)",
    )
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)

    @field_validator("columns")
    @classmethod
    def _one_column_per_role(cls, columns: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for role, column in columns.items():
            if column in seen:
                raise ValueError(
                    f"data.columns reads both the {seen[column]} and the {role} from column "
                    f"{column!r}; each role needs its own column"
                )
            seen[column] = role
        return columns

    @model_validator(mode="after")
    def _name_or_path(self) -> DataConfig:
        if (self.name is None) == (self.path is None):
            raise ValueError(
                "give exactly one of data.name (a catalog data set) or data.path (local files)"
            )
        if self.path is not None and self.format is None:
            raise ValueError(
                "data.path needs data.format (csv, tsv, parquet, recbole, movielens-100k, ...)"
            )
        return self


class SplitConfig(_Strict):
    method: Literal["leave_one_out", "temporal", "random", "cold_item", "predefined"] = Field(
        "leave_one_out",
        description="'predefined' uses the train/valid/test assignment that the data files come with",
    )
    valid_ratio: float = Field(0.1, ge=0, lt=1)
    test_ratio: float = Field(0.1, gt=0, lt=1)
    min_history: int = Field(
        1, ge=0, description="leave-one-out: training interactions a user needs to be evaluated"
    )
    rank_among: Literal["cold", "all"] = Field(
        "cold", description="cold-item split: rank the new items only, or all items"
    )
    fallback_to_random: bool = Field(
        True,
        description="use a random split when a temporal split is asked for data without timestamps",
    )


class ProtocolConfig(_Strict):
    """How lists are produced: full-catalog ranking, sampled candidates, or a first stage's top-N."""

    kind: Literal["full", "sampled", "first_stage", "impressions"] = "full"
    n_negatives: int = Field(99, gt=0, description="sampled: negatives per user")
    sampling: Literal["uniform", "popularity"] = "uniform"
    first_stage: str | None = Field(
        None, description="first_stage: label of the model whose top-N are the candidates"
    )
    top_n: int = Field(50, gt=0, description="first_stage: candidates per user")

    @model_validator(mode="after")
    def _first_stage_named(self) -> ProtocolConfig:
        if self.kind == "first_stage" and not self.first_stage:
            raise ValueError("a first_stage protocol needs first_stage = '<model label>'")
        return self

    @property
    def label(self) -> str:
        if self.kind == "full":
            return "full"
        if self.kind == "sampled":
            return f"sampled-{self.n_negatives}" + ("-pop" if self.sampling == "popularity" else "")
        if self.kind == "impressions":
            return "impressions"
        return f"first-stage-{self.first_stage}-{self.top_n}"

    @property
    def description(self) -> str:
        if self.kind == "full":
            return "full-catalog ranking, items seen in training excluded"
        if self.kind == "sampled":
            how = "popularity-sampled" if self.sampling == "popularity" else "uniformly sampled"
            return f"held-out item(s) + {self.n_negatives} {how} negatives ({self.n_negatives + 1} candidates)"
        if self.kind == "impressions":
            return "per impression: the items shown, clicked vs shown but not clicked"
        return f"top-{self.top_n} of {self.first_stage} ({self.top_n} candidates)"


class EvaluationConfig(_Strict):
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    metrics: list[str] = Field(
        default_factory=lambda: [
            "hr",
            "recall",
            "precision",
            "f1",
            "ndcg",
            "mrr",
            "map",
            "coverage",
            "novelty",
            "ild",
            "arp",
            "gini",
        ]
    )
    protocols: list[ProtocolConfig] = Field(default_factory=lambda: [ProtocolConfig()])
    tune_metric: str = Field("ndcg@10", description="validation metric that picks parameters")
    refit: bool = Field(
        True, description="refit the chosen parameters on train + valid before testing"
    )
    cold_user_max: int = Field(
        5, ge=0, description="users with at most this many training interactions are cold"
    )
    head_share: float = Field(
        0.2, gt=0, lt=1, description="share of items (by training popularity) that form the head"
    )
    bootstrap: int = Field(
        1000, ge=0, description="bootstrap resamples for confidence intervals (0: none)"
    )
    confidence: float = Field(0.95, gt=0, lt=1)
    max_eval_users: int | None = Field(
        None, gt=0, description="evaluate a seeded sample of this many users"
    )
    latency_users: int = Field(
        100, ge=0, description="users timed one at a time for latency percentiles"
    )

    @field_validator("tune_metric", "metrics", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.lower()
        if isinstance(value, list):
            return [v.lower() if isinstance(v, str) else v for v in value]
        return value

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        unknown = [m for m in metrics if m not in KNOWN_LIST_METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(KNOWN_LIST_METRICS)}")
        return metrics

    @field_validator("tune_metric")
    @classmethod
    def _known_tune_metric(cls, metric: str) -> str:
        name, _, k = metric.partition("@")
        if name not in ACCURACY_METRICS or not k.isdigit() or int(k) <= 0:
            raise ValueError(
                f"tune_metric {metric!r} must look like 'ndcg@10' with one of {sorted(ACCURACY_METRICS)}"
            )
        return metric

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, ks: list[int]) -> list[int]:
        if not ks or any(k <= 0 for k in ks):
            raise ValueError("ks must be a non-empty list of positive integers")
        return sorted(set(ks))


class ModelConfig(_Strict):
    name: str = Field(description="registry name ('ease') or 'package.module:Class'")
    label: str | None = Field(
        None, description="name shown in results (default: name); unique per experiment"
    )
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] | None = Field(
        None, description="validation grid; None = the model's default, {} = no tuning"
    )
    max_trials: int = Field(
        12, ge=1, description="largest number of grid points tried (seeded sample beyond)"
    )
    max_eval_users: int | None = Field(
        None, gt=0, description="budget: evaluate a seeded sample of this many users"
    )
    protocols: list[str] | None = Field(
        None, description="protocol labels to run on (default: all it can)"
    )
    refit: bool | None = Field(
        None,
        description="this model only: refit on train + valid before testing (true), or test "
        "the model chosen on validation, its history extended by the validation items "
        "(false); default: evaluation.refit",
    )
    seeds: list[int] | None = Field(
        None,
        description="this model only: train and measure it once per seed (its `seed` "
        "parameter), on the same split and candidates; default: the experiment's seeds",
    )

    @field_validator("seeds")
    @classmethod
    def _seed_list(cls, seeds: list[int] | None) -> list[int] | None:
        return _check_seeds(seeds)

    @field_validator("label")
    @classmethod
    def _no_seed_mark(cls, label: str | None) -> str | None:
        if label is not None and SEED_MARK in label:
            raise ValueError(
                f"label {label!r} contains {SEED_MARK!r}, which names the runs of one seed "
                f"('sasrec{SEED_MARK}43'); choose another label"
            )
        return label

    @property
    def display_name(self) -> str:
        return self.label or self.name


class ExecutionConfig(_Strict):
    """Where the models of an experiment run: in this process (the default), or as tasks on
    a Ray cluster (`recarena.experiment.distributed`). Not part of any result's hash: a
    run folder resumes whichever executor made it."""

    executor: Literal["local", "ray"] = Field(
        "local", description="local: one model after the other here; ray: tasks on a cluster"
    )
    address: str | None = Field(
        None,
        description="Ray cluster to join (host:port, or 'auto' for the cluster this machine "
        "belongs to); None: start a Ray instance on this machine",
    )
    node_ip_address: str | None = Field(
        None, description="this machine's address as the cluster sees it (Ray's default: its own)"
    )
    max_retries: int = Field(
        2, ge=0, description="times Ray runs a task again when its worker dies (node lost, killed)"
    )
    resources: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="per model label: the Ray resources its task asks for (num_cpus, "
        "num_gpus, memory in bytes), instead of the model's own declaration",
    )

    @field_validator("resources")
    @classmethod
    def _known_resources(
        cls, resources: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, float]]:
        known = {"num_cpus", "num_gpus", "memory"}
        for label, wanted in resources.items():
            unknown = sorted(set(wanted) - known)
            if unknown:
                raise ValueError(
                    f"resources of {label!r} name {unknown}; expected some of {sorted(known)}"
                )
            negative = {k: v for k, v in wanted.items() if v < 0}
            if negative:
                raise ValueError(f"resources of {label!r} must be >= 0, got {negative}")
        return resources


class FairnessConfig(_Strict):
    """How users are grouped for quality per group (`recarena.summary_fairness`); read
    when the summaries are written, so not part of any result's hash."""

    user_columns: list[str] | None = Field(
        None,
        description="columns of the data's user table that group users (default: gender, "
        "age and occupation where present); activity and mainstreamness always",
    )
    min_group_users: int = Field(
        20, ge=1, description="a group of fewer users is listed but not named best or worst"
    )
    item_columns: list[str] | None = Field(
        None,
        description="columns of the data's item table whose groups' exposure is measured "
        "(default: genres and year where present); popularity head and tail always",
    )


class ExperimentConfig(_Strict):
    name: str = "experiment"
    seed: int = 42
    seeds: list[int] | None = Field(
        None,
        description="train and measure every model that takes a `seed` once per seed, on "
        "the same split and candidates (`seed` above seeds the split and the samples); "
        "a [[models]] entry's own `seeds` overrides it; default: each model once",
    )
    split_seeds: list[int] | None = Field(
        None,
        description="run the whole experiment once per split seed, each in a run folder of "
        "its own (split-seed-N): the split, candidates and samples are drawn again at every "
        "seed (in place of `seed`), and a summary across splits gives each model's mean "
        "with an interval over splits and users; default: one split, drawn from `seed`",
    )
    output_dir: str = "runs"
    cache_dir: str | None = Field(
        None, description="data and model cache (default: $RECARENA_CACHE or ~/.cache/recarena)"
    )
    data: DataConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    models: list[ModelConfig] = Field(min_length=1)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)

    @field_validator("seeds", "split_seeds")
    @classmethod
    def _seed_list(cls, seeds: list[int] | None) -> list[int] | None:
        return _check_seeds(seeds)

    @model_validator(mode="after")
    def _split_seeds_and_seed(self) -> ExperimentConfig:
        if self.split_seeds is not None and "seed" in self.model_fields_set:
            raise ValueError(
                f"`seed = {self.seed}` and `split_seeds = {self.split_seeds}` both seed the "
                "split: give `split_seeds` alone (each split is drawn from one of them)"
            )
        if self.split_seeds is not None and self.split.method == "predefined":
            raise ValueError(
                "`split_seeds` draws the split again at every seed, but `split.method = "
                '"predefined"` reads the split from the data: leave `split_seeds` out'
            )
        return self

    def seeds_of(self, model: ModelConfig) -> list[int] | None:
        """The training seeds of a ``[[models]]`` entry: its own, else the experiment's."""
        return model.seeds if model.seeds is not None else self.seeds

    @model_validator(mode="after")
    def _seeds_and_params(self) -> ExperimentConfig:
        for m in self.models:
            if self.seeds_of(m) is None:
                continue
            where = "its `seeds`" if m.seeds is not None else "the experiment's `seeds`"
            if "seed" in m.params:
                raise ValueError(
                    f"model {m.display_name!r} sets params.seed = {m.params['seed']!r} and "
                    f"is also trained once per seed of {where}; give the seeds in one place"
                )
            if m.grid and "seed" in m.grid:
                raise ValueError(
                    f"model {m.display_name!r} tunes `seed` in its grid and is also trained "
                    f"once per seed of {where}; a seed is not a parameter to choose on "
                    "validation: leave it out of the grid"
                )
        return self

    @model_validator(mode="after")
    def _unique_labels(self) -> ExperimentConfig:
        seen: set[str] = set()
        for m in self.models:
            if m.display_name in seen:
                raise ValueError(
                    f"two models are labelled {m.display_name!r}; give each a unique label"
                )
            seen.add(m.display_name)
        labels = {p.label for p in self.evaluation.protocols}
        for p in self.evaluation.protocols:
            if p.kind == "first_stage" and p.first_stage not in seen:
                raise ValueError(
                    f"first_stage model {p.first_stage!r} is not one of the models {sorted(seen)}"
                )
        for m in self.models:
            for label in m.protocols or []:
                if label not in labels:
                    raise ValueError(
                        f"model {m.display_name!r} names protocol {label!r}; protocols: {sorted(labels)}"
                    )
        return self


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid experiment configuration"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{loc}'")
        elif err["type"] == "missing":
            lines.append(f"  missing required key '{loc}'")
        else:
            where = f"'{loc}': " if loc else ""
            lines.append(f"  {where}{err['msg']}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_config(path: str | os.PathLike[str]) -> ExperimentConfig:
    """Read and validate an experiment TOML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: experiment file not found") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path))


def with_execution(
    config: ExperimentConfig,
    *,
    executor: str | None = None,
    address: str | None = None,
    node_ip_address: str | None = None,
) -> ExperimentConfig:
    """``config`` with its ``[execution]`` overridden (the command line's options); an
    address means Ray."""
    updates: dict[str, Any] = {}
    if executor is not None:
        updates["executor"] = executor
    if address is not None:
        updates["address"] = address
        updates.setdefault("executor", "ray")
    if node_ip_address is not None:
        updates["node_ip_address"] = node_ip_address
    if not updates:
        return config
    fields = config.execution.model_dump()
    fields.update(updates)
    try:
        execution = ExecutionConfig.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, "command line")) from None
    if execution.executor == "local" and execution.address:
        raise ConfigError("--address names a Ray cluster: it needs --executor ray")
    return config.model_copy(update={"execution": execution})


def builtin_config_path(name: str) -> Path:
    """Path of a configuration shipped with RecArena (``quickstart``, ...)."""
    return Path(__file__).parent / "configs" / f"{name}.toml"


def dump_config(config: ExperimentConfig) -> str:
    """The resolved configuration as TOML (every default written out; with
    ``split_seeds``, ``seed`` is left out: the split seeds replace it)."""
    exclude = {"seed"} if config.split_seeds is not None else None
    return _to_toml(config.model_dump(mode="json", exclude_none=True, exclude=exclude))


def _to_toml(data: dict[str, Any], prefix: str = "") -> str:
    scalars, tables, arrays = [], [], []
    for key, value in data.items():
        if isinstance(value, dict) and not _is_inline(key, prefix):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        elif value is None:
            # TOML has no null: leave the key out, which means the default
            scalars.append(f"# {_toml_key(key)} = None (not written: TOML has no null)")
        else:
            scalars.append(f"{_toml_key(key)} = {_toml_value(value)}")
    out = "\n".join(scalars) + ("\n" if scalars else "")
    for key, value in tables:
        name = f"{prefix}{_toml_key(key)}"
        out += f"\n[{name}]\n" + _to_toml(value, name + ".")
    for key, items in arrays:
        name = f"{prefix}{_toml_key(key)}"
        for item in items:
            out += f"\n[[{name}]]\n" + _to_toml(item, name + ".")
    return out


_INLINE_TABLES = {"columns", "item_columns", "user_columns", "params", "grid", "options"}


def _is_inline(key: str, prefix: str) -> bool:
    return key in _INLINE_TABLES


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ "
            + ", ".join(
                f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None
            )
            + " }"
        )
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
