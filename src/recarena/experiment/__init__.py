"""Running an experiment, in stages: `runner` (the experiment and each model's stages),
`artifacts` (hashes and names of the run folder's records), `protocols` (the split and
user samples). `recarena.runner` re-exports the public names for code written before."""

from recarena.experiment.artifacts import data_hash, model_hash, run_directory_for, setup_hash
from recarena.experiment.protocols import build_split, split_problems
from recarena.experiment.runner import ExperimentRunner, RunResult, run_experiment

__all__ = [
    "ExperimentRunner",
    "RunResult",
    "build_split",
    "data_hash",
    "model_hash",
    "run_directory_for",
    "run_experiment",
    "setup_hash",
    "split_problems",
]
