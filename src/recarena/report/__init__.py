"""The comparison report: which model, used how, for my data, at what cost.

`build_report` reads one or more run directories (see `recarena.experiment.runner` for their layout)
and writes one self-contained HTML page (inline CSS and SVG figures, no scripts, nothing
fetched from the network) plus Markdown and CSV copies of every table::

    RUN_DIR/report.html
    RUN_DIR/report_tables/leaderboard_full.md, .csv, significance_full.*, segments_*, ...
    RUN_DIR/report_tables/report.md      the verdict and every table in one Markdown file

The page holds, per protocol: a leaderboard (quality with confidence intervals, family and
fusion, cost), paired significance tests against the best classical baseline and between
the best two models (Holm-corrected), quality-vs-cost plots with the Pareto front, metric@K
curves, per-segment results and popularity bias; then training curves, failed models, the
exact set-up (data, split, protocols, seeds, versions, hardware) and links to the artifacts.
A verdict at the top is written from those numbers.

Several runs merge when they share a data set, a split and candidates (`merge_runs`); a
label that occurs in more than one run is shown as ``"LABEL (RUN)"``.

Stability: **experimental**. `build_report`'s signature is stable; the page layout and
the table files may change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from recarena.report.loading import (
    ModelRecord,
    ReportData,
    RunArtifacts,
    check_mergeable,
    load_report_data,
    load_run,
    merge_runs,
)
from recarena.report.stats import (
    PairedResult,
    holm_correction,
    paired_test,
    pareto_front,
    sign_flip_p_value,
)
from recarena.report.tables import fmt_ci, fmt_metric

__all__ = [
    "ModelRecord",
    "PairedResult",
    "ReportData",
    "RunArtifacts",
    "build_report",
    "check_mergeable",
    "default_report_path",
    "fmt_ci",
    "fmt_metric",
    "holm_correction",
    "load_report_data",
    "load_run",
    "merge_runs",
    "paired_test",
    "pareto_front",
    "sign_flip_p_value",
    "tables_dir_for",
]

log = logging.getLogger(__name__)


def default_report_path(run_dirs: Sequence[Path]) -> Path:
    """``RUN_DIR/report.html`` for one run; ``FIRST_RUN/report-merged.html`` for several."""
    first = Path(run_dirs[0])
    return first / ("report.html" if len(run_dirs) == 1 else "report-merged.html")


def tables_dir_for(out_file: Path) -> Path:
    """Where the Markdown/CSV tables of a report go: ``report.html`` -> ``report_tables/``."""
    return out_file.with_name(f"{out_file.stem}_tables")


def build_report(
    run_dirs: Sequence[str | PathLike[str]] | str | PathLike[str],
    out_file: str | PathLike[str] | None = None,
) -> Path:
    """Write the HTML report of one or more runs and return its path.

    Parameters
    ----------
    run_dirs
        Run directories; several must share a data set, split and candidates.
    out_file
        The HTML file to write (default: `default_report_path`). Tables go to the folder
        `tables_dir_for` names, next to it.

    Raises
    ------
    recarena.errors.ArtifactError
        A folder is not a run directory, an artifact is damaged, or the runs differ in data
        set, split, segment settings or candidates (the message names what differs).
    """
    from recarena._io import write_text
    from recarena.report.assemble import assemble

    if isinstance(run_dirs, (str, PathLike)):
        run_dirs = [run_dirs]
    dirs = [Path(p) for p in run_dirs]
    if not dirs:
        from recarena.errors import ArtifactError

        raise ArtifactError("no run directories given")
    out = Path(out_file) if out_file is not None else default_report_path(dirs)
    start = time.perf_counter()
    data = load_report_data(dirs)
    tables_dir = tables_dir_for(out)
    html, markdown, tables = assemble(data, out, tables_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    for table in tables:
        table.write(tables_dir)
    write_text(tables_dir / "report.md", markdown)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, html)
    log.info("report written to %s in %.1f s", out, time.perf_counter() - start)
    return out
