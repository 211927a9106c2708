"""Resampled splits: the experiment once per split seed, each in a run folder of its own.

``split_seeds = [1, 2, 3]`` at the top of an experiment runs the whole experiment three
times, the experiment's ``seed`` replaced by each split seed in turn: the split (where its
method draws one: ``random``, ``cold_item``; ``leave_one_out`` and ``temporal`` are decided
by the timestamps, and a notice says so), the sampled candidates, the user samples of a
budget, the grid samples and the tie-breaking are drawn again. Training seeds (``seeds``)
are a separate choice and apply within every split.

Layout::

    RUN_DIR/
      split_seeds.json      the split seeds, their folders, the split method and whether
                            the split itself depends on the seed (written first)
      config.toml           the experiment as given (split_seeds, no seed)
      split-seed-1/         a complete run folder (config.toml with seed = 1, its own
      split-seed-2/         lock, DONE.json per model, summaries and report): it resumes,
      ...                   reports and runs on a Ray cluster as any other run
      summary_splits.csv / comparisons_splits.csv / summary_splits.json / summary_splits.md
                            across the splits (`recarena.summary_splits`)

Each split folder is an ordinary run: a stopped experiment resumes split by split and,
within a split, model by model. The folder of a split seed no longer asked for is left as
it is and not summarised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from recarena._io import read_json, write_json, write_text
from recarena.config import ExperimentConfig, dump_config
from recarena.errors import RunDirectoryError

if TYPE_CHECKING:
    from recarena.experiment.runner import RunResult

log = logging.getLogger(__name__)

#: the record of a run folder that holds one run folder per split seed
SPLIT_RECORD = "split_seeds.json"
#: split methods whose split does not depend on the seed
SEEDLESS_SPLITS = ("leave_one_out", "temporal")


def split_folder(seed: int) -> str:
    """The name of the run folder of split seed ``seed``."""
    return f"split-seed-{seed}"


def split_config(config: ExperimentConfig, seed: int) -> ExperimentConfig:
    """The experiment of one split seed: ``seed`` in place of ``split_seeds``."""
    return config.model_copy(update={"seed": seed, "split_seeds": None})


def split_runs(run_dir: Path) -> dict[int, Path]:
    """Split seed -> run folder, from the ``split_seeds.json`` of ``run_dir`` (empty when
    there is none)."""
    path = run_dir / SPLIT_RECORD
    if not path.exists():
        return {}
    record = read_json(path)
    return {int(seed): run_dir / name for seed, name in record["runs"].items()}


def is_split_parent(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds one run folder per split seed."""
    return (run_dir / SPLIT_RECORD).exists()


def seed_independent_split(config: ExperimentConfig) -> bool:
    """Whether the experiment's split is the same at every seed (only the candidates,
    samples and tie-breaks are drawn again)."""
    return config.split.method in SEEDLESS_SPLITS


def check_split_parent(run_dir: Path, config: ExperimentConfig, overwrite: bool) -> None:
    """Refuse to mix a run folder of one split with one holding a folder per split seed
    (``overwrite`` lets a run without split seeds empty a folder of split folders, as it
    empties any run folder; the other way round the folder must be removed by hand)."""
    if config.split_seeds is not None and (run_dir / "run.json").exists():
        raise RunDirectoryError(
            f"{run_dir} holds a run of one split (run.json); `split_seeds` puts one run folder "
            "per split seed in it: give the experiment another `name`, or delete that folder"
        )
    if config.split_seeds is None and not overwrite and is_split_parent(run_dir):
        raise RunDirectoryError(
            f"{run_dir} holds one run folder per split seed ({SPLIT_RECORD}) and the "
            "experiment has no `split_seeds`: give it another `name`, or --overwrite to "
            "delete those runs"
        )


@dataclass
class SplitRunResult:
    """What `run_split_seeds` returns: the parent folder, each split's result and the
    tables across splits."""

    run_dir: Path
    runs: dict[int, RunResult]
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    failed: dict[str, str] = field(default_factory=dict)


def write_split_record(run_dir: Path, config: ExperimentConfig) -> None:
    """``split_seeds.json`` and ``config.toml`` of the parent folder."""
    assert config.split_seeds is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        run_dir / SPLIT_RECORD,
        {
            "format": 1,
            "name": config.name,
            "split_seeds": list(config.split_seeds),
            "runs": {str(s): split_folder(s) for s in config.split_seeds},
            "split_method": config.split.method,
            "split_depends_on_seed": not seed_independent_split(config),
        },
    )
    write_text(run_dir / "config.toml", dump_config(config))


def run_split_seeds(
    config: ExperimentConfig,
    run_dir: Path,
    cache: Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    on_event: Callable[[str], None] | None = None,
) -> SplitRunResult:
    """Run the experiment once per split seed (in order), then the summaries across them.

    Every split's experiment is checked before anything runs, so a mistake in the config
    stops the run before the first split. A failed model in one split is recorded in that
    split (FAILED.json) and named in ``failed`` as ``label (split seed N)``; the others go on.
    """
    from recarena.experiment.runner import ExperimentRunner
    from recarena.summary_splits import write_split_summaries

    assert config.split_seeds is not None
    emit = on_event or (lambda msg: log.info(msg))
    check_split_parent(run_dir, config, overwrite)
    runners: dict[int, Any] = {}
    for seed in config.split_seeds:
        runner = ExperimentRunner(
            split_config(config, seed),
            run_dir / split_folder(seed),
            cache,
            progress=progress,
            on_event=on_event,
        )
        runner.check_config()
        runners[seed] = runner
    if seed_independent_split(config):
        emit(
            f"split {config.split.method!r} is decided by the timestamps: it is the same at "
            "every split seed; the seeds draw the candidates, samples and tie-breaks again"
        )
    write_split_record(run_dir, config)
    results: dict[int, RunResult] = {}
    failed: dict[str, str] = {}
    for n, (seed, runner) in enumerate(runners.items(), start=1):
        emit(f"split seed {seed} ({n}/{len(runners)}): {runner.run_dir}")
        results[seed] = runner.run(overwrite=overwrite)
        for label, error in results[seed].failed.items():
            failed[f"{label} (split seed {seed})"] = error
    table, comparisons = write_split_summaries(
        run_dir, {s: r.run_dir for s, r in results.items()}, config.evaluation
    )
    return SplitRunResult(run_dir, results, table, comparisons, failed)


def summarise_split_parent(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rewrite the summaries across the split folders of ``run_dir`` from their artifacts
    (the split folders' own summaries are the caller's)."""
    from recarena.config import load_config
    from recarena.summary_splits import write_split_summaries

    config = load_config(run_dir / "config.toml")
    runs = {s: p for s, p in split_runs(run_dir).items() if (p / "run.json").exists()}
    if not runs:
        raise RunDirectoryError(f"{run_dir}: no split folder has run yet ({SPLIT_RECORD})")
    return write_split_summaries(run_dir, runs, config.evaluation)
