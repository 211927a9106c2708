"""The experiment runner, as it was imported before it became the `recarena.experiment`
package (`recarena.experiment.runner`, `.artifacts`, `.protocols`): every name code and
saved runs used from here still imports from here."""

from recarena.experiment.artifacts import (
    FIRST_STAGE_PREFIX,
    MODEL_FOLDER_EXCLUDE,
    STAGE_FILE,
    _hash,
    data_hash,
    model_hash,
    run_directory_for,
    setup_hash,
)
from recarena.experiment.protocols import build_split, split_problems
from recarena.experiment.runner import (
    ExperimentRunner,
    RunResult,
    _quiet_library_progress,
    run_experiment,
)
from recarena.metrics.pointwise import classify_pointwise
from recarena.metrics.segments import SEGMENT_ALL

__all__ = [
    "FIRST_STAGE_PREFIX",
    "MODEL_FOLDER_EXCLUDE",
    "SEGMENT_ALL",
    "STAGE_FILE",
    "ExperimentRunner",
    "RunResult",
    "_hash",
    "_quiet_library_progress",
    "build_split",
    "classify_pointwise",
    "data_hash",
    "model_hash",
    "run_directory_for",
    "run_experiment",
    "setup_hash",
    "split_problems",
]
