"""The run folder's records: setup and model hashes, the names of what a run writes, and
the writing of a measured protocol (`write_measurement`).

What a resumed run may reuse is decided by these hashes (`setup_hash` for the data, split
and evaluation, `data_hash` for the data set alone, `model_hash` for a ``[[models]]``
entry) and by the sha256 of every file (`recarena._artifacts`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from recarena._io import atomic_path, write_json
from recarena.config import ExperimentConfig, ModelConfig
from recarena.experiment.measuring import Measurement

#: written into ``dataset/`` and ``split/`` last: the hash of the configuration that made
#: them and the sha256 of every file in them
STAGE_FILE = "stage.json"
#: the names of the first-stage candidate files a first-stage model writes into ``split/``
FIRST_STAGE_PREFIX = "first_stage__"
#: what a model folder holds that its DONE.json does not record: itself, a failure record,
#: the checkpoints of long trainings (removed once the model is done)
MODEL_FOLDER_EXCLUDE = ("DONE.json", "FAILED.json", "checkpoints")


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def setup_hash(config: ExperimentConfig) -> str:
    """Hash of everything that makes two runs comparable: data, split, evaluation, seed."""
    dump = config.model_dump(mode="json")
    return _hash({k: dump[k] for k in ("data", "split", "evaluation", "seed")})


def data_hash(config: ExperimentConfig) -> str:
    """Hash of what the preprocessed data set depends on: the ``[data]`` table."""
    return _hash({"data": config.model_dump(mode="json")["data"]})


def model_hash(model_config: ModelConfig) -> str:
    fields = model_config.model_dump(mode="json")
    if fields.get("refit") is None:
        # the option came later: a model that leaves it unset keeps its earlier hash, so
        # runs made before it still resume
        fields.pop("refit", None)
    if fields.get("seeds") is None:
        # the same for the per-model seeds: an entry without them keeps its earlier hash
        fields.pop("seeds", None)
    return _hash(fields)


def write_measurement(folder: Path, measurement: Measurement) -> None:
    """A measured protocol's ``per_user.parquet``, then its ``metrics.json``, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "per_user.parquet") as tmp:
        measurement.per_user.to_parquet(tmp, index=False)
    write_json(folder / "metrics.json", measurement.record)


def _status(damaged: list[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    return ("damaged", damaged) if damaged else ("done", [])


def run_directory_for(
    config: ExperimentConfig, output_dir: str | os.PathLike[str] | None = None
) -> Path:
    base = Path(output_dir if output_dir is not None else config.output_dir)
    return base / config.name
