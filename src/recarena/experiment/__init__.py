"""Running an experiment, in stages: `runner` (preparation, the run loop and each model's
stage calls), `artifacts` (hashes and names of the run folder's records, the set-up stages'
stamps and reuse, each model folder's records), `protocols` (the split, user samples,
candidates, ranking a protocol's lists), `tuning` (grid points, trial keys and the tuning
stage), `fitting` (the refit stage), `measuring` and `impressions` (metrics of a
protocol), `cost` (latency, ``cost.json``), `preflight`, `stages` (what one stage hands
the next). `recarena.runner` re-exports the public names for code written before."""

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
