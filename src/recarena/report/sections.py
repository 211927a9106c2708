"""Tables of the report built from the analysis: leaderboards, tests, segments, set-up."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from recarena.metrics import display_name
from recarena.report.analysis import ALPHA, BARE_METRICS, POINTWISE, ProtocolAnalysis
from recarena.report.loading import ModelRecord, ReportData, RunArtifacts
from recarena.report.popularity import N_BINS, PopularityAnalysis
from recarena.report.tables import (
    Cell,
    Table,
    fmt_ci,
    fmt_count,
    fmt_diff,
    fmt_int,
    fmt_metric,
    fmt_mib,
    fmt_p,
    fmt_rate,
    fmt_seconds,
    simple_table,
)
from recarena.summary import COMMON_USERS_SEGMENT

MARK_NOTE = (
    "† significantly better and ‡ significantly worse than the best classical baseline "
    "(ref) on {metric}, two-sided paired sign-flip randomization test on per-user values, "
    "Holm-corrected over the comparisons of this protocol, α = {alpha}."
)


def protocol_title(label: str, description: str) -> str:
    """A protocol as shown everywhere: non-full protocols carry their candidates."""
    if label == "full":
        return "full (full-catalog ranking)"
    return f"{label} ({description})"


def fusion_text(fusion: str) -> str:
    return "—" if fusion in ("", "none", None) else fusion


def metric_display(key: str) -> str:
    try:
        return display_name(key)
    except (KeyError, ValueError):
        return key


def family_cell(m: ModelRecord) -> Cell:
    fusion = fusion_text(m.fusion)
    return Cell(m.family, sub="" if fusion == "—" else fusion)


def model_text(data: ReportData, label: str, mark: str = "") -> str:
    m = data.model(label)
    text = label
    if mark and mark != "ref":
        text += f" {mark}"
    if m.user_sample:
        text += " *"
    return text


def cost_cells(m: ModelRecord, encode: bool, gpu: bool) -> list[Cell]:
    """Fit time, latency (p95 under p50), throughput, parameters, memory (device under it)."""
    c = m.cost
    total, trainable = c.get("parameters_total"), c.get("parameters_trainable")
    tuning = (
        f"tuning: {fmt_seconds(c.get('tuning_seconds'))} s over {c.get('tuning_trials', 0)} trials"
    )
    memory_sub = str(c.get("device") or "–")
    if c.get("mixed_precision") not in (None, "no"):
        memory_sub += f" {c['mixed_precision']}"
    if c.get("encode_dtype"):
        memory_sub += f", encoded in {c['encode_dtype']}"
    if gpu and _finite(c.get("gpu_peak_memory_mib")):
        memory_sub += f", GPU {fmt_mib(c.get('gpu_peak_memory_mib'))}"
    cells = [
        Cell(
            fmt_seconds(c.get("fit_seconds")),
            sub=f"{c.get('tuning_trials', 0)} trials",
            cls="num",
            title=tuning,
        ),
        Cell(
            fmt_seconds(c.get("latency_ms_p50")),
            sub=f"p95 {fmt_seconds(c.get('latency_ms_p95'))}",
            cls="num",
        ),
        Cell(fmt_rate(c.get("users_per_second")), cls="num"),
        Cell(
            fmt_count(total),
            sub=f"{fmt_count(trainable)} trainable"
            if trainable is not None and trainable != total
            else "",
            title=f"{fmt_int(total)} total, {fmt_int(trainable)} trainable",
            cls="num",
        ),
        Cell(fmt_mib(c.get("peak_memory_mib")), sub=memory_sub, cls="num"),
    ]
    if encode:
        cells.append(Cell(fmt_rate(c.get("encode_items_per_second")), cls="num"))
    return cells


COST_HEADER = ["fit s", "latency ms", "users/s", "params", "peak MiB"]
COST_TITLES = [
    "wall time of the final fit; validation trials under it (tuning time in the tooltip)",
    "latency of one user's list: median, 95th percentile under it",
    "users ranked per second in the batch run",
    "parameters, total (trainable under it when they differ)",
    "peak resident memory of the process while fitting and ranking; device (with the "
    "autocast precision of a language model that used one, e.g. bf16) and peak GPU memory "
    "under it",
]
COST_RAW = [
    "fit_seconds",
    "tuning_seconds",
    "tuning_trials",
    "latency_ms_p50",
    "latency_ms_p95",
    "users_per_second",
    "parameters_total",
    "parameters_trainable",
    "peak_memory_mib",
    "gpu_peak_memory_mib",
    "device",
    "mixed_precision",
    "encode_dtype",
    "encode_items_per_second",
]


def leaderboard_table(data: ReportData, pa: ProtocolAnalysis) -> Table:
    k = data.k
    metrics = [f"{n}@{k}" for n in ("ndcg", "hr", "recall", "mrr")]
    metrics = [m for m in metrics if any(m in v for v in pa.values.values())] or [pa.primary]
    metrics += [m for m in BARE_METRICS if any(m in v for v in pa.values.values())]
    coverage = f"coverage@{k}"
    has_cov = any(coverage in v for v in pa.values.values())
    models = [data.model(x) for x in pa.ranking]
    encode = any(_finite(m.cost.get("encode_items_per_second")) for m in models)
    gpu = any(_finite(m.cost.get("gpu_peak_memory_mib")) for m in models)
    header = ["#", "model", "family · fusion", *[metric_display(m) for m in metrics]]
    titles = [
        "",
        "",
        "model family; under it, how a language model is used (fusion way)",
        *[f"mean over users, {int(data.confidence * 100)}% bootstrap CI under it" for _ in metrics],
    ]
    if has_cov:
        header.append(metric_display(coverage))
        titles.append("share of the catalog recommended to at least one user")
    header += [
        POINTWISE[p].upper() if p == "pointwise_auc" else POINTWISE[p].capitalize()
        for p in pa.pointwise
    ]
    titles += ["pointwise, candidates as a classifier" for _ in pa.pointwise]
    header += ["users", *COST_HEADER]
    titles += ["test users evaluated (impressions, on an impression protocol)", *COST_TITLES]
    if encode:
        header.append("encode items/s")
        titles.append("item texts encoded per second")

    rows, raw, classes = [], [], []
    for rank, m in enumerate(models, start=1):
        vals = pa.values.get(m.label, {})
        mark = pa.mark(m.label)
        name = Cell(model_text(data, m.label, mark), cls="model", attrs={"data-model": m.label})
        if mark == "ref":
            name.sub = "best classical (ref)"
        row = [Cell(str(rank), cls="num"), name, family_cell(m)]
        rec: dict[str, Any] = {
            "protocol": pa.label,
            "protocol_description": pa.description,
            "rank": rank,
            "model": m.label,
            "run": data.runs[m.run].run_dir.name,
            "family": m.family,
            "fusion": m.fusion,
            "status": "done",
            "user_sample": m.user_sample,
            "vs_best_classical": {"ref": "reference", "†": "better", "‡": "worse"}.get(
                mark, "n.s." if pa.best_classical else ""
            ),
        }
        for key in metrics:
            est = vals.get(key)
            cls = "num best" if rank == 1 else "num"
            row.append(
                Cell(
                    fmt_metric(est.mean if est else None),
                    sub=fmt_ci(est.low, est.high) if est else "",
                    cls=cls,
                    attrs={"data-model": m.label, "data-metric": key, "data-protocol": pa.label},
                )
            )
            rec[key] = est.mean if est else math.nan
            rec[f"{key}_ci_low"] = est.low if est else math.nan
            rec[f"{key}_ci_high"] = est.high if est else math.nan
        if has_cov:
            est = vals.get(coverage)
            row.append(
                Cell(
                    fmt_metric(est.mean if est else None),
                    cls="num",
                    attrs={
                        "data-model": m.label,
                        "data-metric": coverage,
                        "data-protocol": pa.label,
                    },
                )
            )
            rec[coverage] = est.mean if est else math.nan
        for p in pa.pointwise:
            est = vals.get(p)
            row.append(
                Cell(
                    fmt_metric(est.mean if est else None),
                    cls="num",
                    attrs={"data-model": m.label, "data-metric": p, "data-protocol": pa.label},
                )
            )
            rec[POINTWISE[p]] = est.mean if est else math.nan
        n_users = vals[pa.primary].n_users if pa.primary in vals else m.evaluated_users
        row.append(
            Cell(
                fmt_int(n_users),
                cls="num",
                title=f"{fmt_int(m.evaluated_users)} of {fmt_int(m.all_test_users)} test users"
                if m.user_sample
                else "",
            )
        )
        rec["n_users"] = n_users
        row += cost_cells(m, encode, gpu)
        for key in COST_RAW:
            rec[key] = m.cost.get(key)
        rows.append(row)
        raw.append(rec)
        classes.append("ref" if mark == "ref" else "")
    width = len(header) - 3
    for label, why in pa.not_run.items():
        m = data.model(label)
        failed = why.startswith("failed")
        rows.append(
            [
                Cell("–", cls="num"),
                Cell(label, cls="model", attrs={"data-model": label}),
                family_cell(m),
                Cell(why, cls="failed" if failed else "skipped", colspan=width),
            ]
        )
        classes.append("failed" if failed else "skipped")
        raw.append(
            {
                "protocol": pa.label,
                "protocol_description": pa.description,
                "model": label,
                "run": data.runs[m.run].run_dir.name,
                "family": m.family,
                "fusion": m.fusion,
                "status": "failed" if failed else "not run",
                "error": why,
            }
        )
    notes = []
    if pa.best_classical:
        notes.append(MARK_NOTE.format(metric=metric_display(pa.primary), alpha=ALPHA))
    else:
        notes.append("No classical baseline ran on this protocol: no † marks.")
    if any(m.user_sample for m in models):
        text = "* evaluated on a seeded sample of the test users (see users); its mean is over other users than the rest."
        if pa.common is not None:
            text += f" The next table compares every model {pa.common.users.title()}."
        notes.append(text)
    if pa.pointwise:
        from recarena.metrics.pointwise import POINTWISE_THRESHOLD_RULE

        notes.append(f"Pointwise accuracy and F1: {POINTWISE_THRESHOLD_RULE}.")
        for label, how in pa.pointwise_exceptions.items():
            notes.append(
                f"{label}: pointwise metrics thresholded otherwise ({how}), in a run made "
                "before one rule applied to every model; not comparable with the others'."
            )
    notes.append(
        f"Intervals: {int(data.confidence * 100)}% percentile bootstrap over users, from the run's summary. "
        "Cost: wall-clock on the run's machine (see Set-up); latency measured one user at a time on the "
        "model's first protocol."
    )
    title = f"Leaderboard — {protocol_title(pa.label, pa.description)}, sorted by {metric_display(pa.primary)}"
    return Table(
        key=f"leaderboard_{pa.label}",
        title=title,
        header=header,
        rows=rows,
        raw=pd.DataFrame(raw),
        notes=notes,
        header_titles=titles,
        row_classes=classes,
    )


def common_users_table(data: ReportData, pa: ProtocolAnalysis) -> Table:
    """Every model of the protocol over the users all of them were measured on."""
    common = pa.common
    assert common is not None
    header = ["#", "model", "family · fusion", *[metric_display(m) for m in common.metrics]]
    header.append("users")
    titles = ["", "", "model family; under it, how a language model is used (fusion way)"]
    titles += [
        f"mean over these users, {int(data.confidence * 100)}% bootstrap CI under it"
        for _ in common.metrics
    ]
    titles.append("users (impressions, on an impression protocol) in the mean")
    rows, raw = [], []
    for rank, label in enumerate(common.ranking, start=1):
        m = data.model(label)
        vals = common.values.get(label, {})
        row = [
            Cell(str(rank), cls="num"),
            Cell(model_text(data, label), cls="model", attrs={"data-model": label}),
            family_cell(m),
        ]
        rec: dict[str, Any] = {
            "protocol": pa.label,
            "users": "common",
            "rank": rank,
            "model": label,
            "run": data.runs[m.run].run_dir.name,
            "family": m.family,
            "fusion": m.fusion,
            "user_sample": m.user_sample,
        }
        for key in common.metrics:
            est = vals.get(key)
            row.append(
                Cell(
                    fmt_metric(est.mean if est else None),
                    sub=fmt_ci(est.low, est.high) if est else "",
                    cls="num best" if rank == 1 else "num",
                    attrs={
                        "data-model": label,
                        "data-metric": key,
                        "data-protocol": pa.label,
                        "data-segment": COMMON_USERS_SEGMENT,
                    },
                )
            )
            rec[key] = est.mean if est else math.nan
            rec[f"{key}_ci_low"] = est.low if est else math.nan
            rec[f"{key}_ci_high"] = est.high if est else math.nan
        n = vals[pa.primary].n_users if pa.primary in vals else common.users.n_users
        row.append(Cell(fmt_int(n), cls="num"))
        rec["n_users"] = n
        rows.append(row)
        raw.append(rec)
    notes = [
        common.users.describe(),
        f"Means and {int(data.confidence * 100)}% percentile bootstrap intervals over these "
        "users only; the leaderboard above keeps each model's numbers over all the users it "
        "was measured on. Coverage and pointwise metrics are not restricted. * the model was "
        "measured on a seeded sample of the test users.",
    ]
    return Table(
        key=f"common_users_{pa.label}",
        title=f"Leaderboard {common.users.title()} — {protocol_title(pa.label, pa.description)}",
        header=header,
        rows=rows,
        raw=pd.DataFrame(raw),
        notes=notes,
        header_titles=titles,
    )


def ladder_table(data: ReportData, pa: ProtocolAnalysis) -> Table:
    """The sanity ladder of each model with a history-free twin (see `LadderCheck`)."""
    from recarena.report.analysis import LADDER_TOLERANCE

    header = [
        "model",
        "AUC",
        "without history",
        "popularity reference",
        "learns popularity",
        "learns from history",
    ]
    titles = [
        "",
        "pointwise AUC of the model with users' histories",
        "pointwise AUC of the same model and parameters with history_len = 0",
        "pointwise AUC of MostPopular on the same candidates",
        f"rung 1: the history-free twin within {LADDER_TOLERANCE:.2f} of the popularity AUC",
        "rung 2: the model with history above its history-free twin",
    ]
    rows, raw = [], []
    for c in pa.ladders:
        rows.append(
            [
                Cell(model_text(data, c.model), cls="model", attrs={"data-model": c.model}),
                Cell(fmt_metric(c.model_auc), cls="num"),
                Cell(
                    fmt_metric(c.twin_auc),
                    sub=c.twin
                    + (
                        f", after a popularity prior of {c.prior_passes} passes"
                        if c.prior_passes
                        else ""
                    ),
                    cls="num",
                ),
                Cell(fmt_metric(c.reference_auc), sub=c.reference, cls="num"),
                Cell("yes" if c.learns_popularity else "NO"),
                Cell("yes" if c.learns_from_history else "no"),
            ]
        )
        raw.append(
            {
                "protocol": pa.label,
                "model": c.model,
                "auc": c.model_auc,
                "twin": c.twin,
                "twin_auc": c.twin_auc,
                "reference": c.reference,
                "reference_auc": c.reference_auc,
                "prior_passes": c.prior_passes,
                "learns_popularity": c.learns_popularity,
                "learns_from_history": c.learns_from_history,
            }
        )
    return Table(
        f"ladder-{pa.label}",
        f"Sanity ladder — {protocol_title(pa.label, pa.description)}",
        header,
        rows,
        pd.DataFrame(raw),
        notes=[
            "A trained model that reads histories must first learn what its history-free twin "
            "can: item popularity, from the item alone (rung 1), then beat that twin with the "
            "history (rung 2). A model whose twin misses rung 1 is set up wrong, and its "
            "numbers measure the set-up, not the method. Where both were given the "
            "cross-encoder's popularity prior (`prior_passes`: each item's text regressed on "
            "its training log-odds before pair training), rung 1 checks that pair training "
            "keeps what the prior taught, not that pairs alone teach it."
        ],
        header_titles=titles,
    )


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def significance_table(data: ReportData, pa: ProtocolAnalysis) -> Table:
    header = [
        "model A",
        "model B",
        "tested as",
        "metric",
        "mean A",
        "mean B",
        "A − B [95% CI]",
        "users",
        "p",
        "p (Holm)",
        "result",
    ]
    rows, raw = [], []
    for c in pa.comparisons:
        r = c.result
        verdict = f"{c.a if r.diff > 0 else c.b} better" if c.significant else "not significant"
        rows.append(
            [
                Cell(c.a, cls="model"),
                Cell(c.b, cls="model"),
                Cell(c.kind),
                Cell(metric_display(c.metric)),
                Cell(fmt_metric(r.mean_a), cls="num"),
                Cell(fmt_metric(r.mean_b), cls="num"),
                Cell(fmt_diff(r.diff), sub=fmt_ci(r.ci_low, r.ci_high), cls="num"),
                Cell(fmt_int(r.n_users), cls="num"),
                Cell(fmt_p(r.p_value), cls="num"),
                Cell(fmt_p(c.p_holm), cls="num"),
                Cell(verdict, cls="sig" if c.significant else "ns"),
            ]
        )
        raw.append(
            {
                "protocol": pa.label,
                "protocol_description": pa.description,
                "model_a": c.a,
                "model_b": c.b,
                "tested_as": c.kind,
                "metric": c.metric,
                "mean_a": r.mean_a,
                "mean_b": r.mean_b,
                "diff": r.diff,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "n_users": r.n_users,
                "p_value": r.p_value,
                "p_holm": c.p_holm,
                "significant": c.significant,
            }
        )
    from recarena.report.analysis import N_RESAMPLES

    notes = [
        f"Two-sided paired sign-flip randomization test ({N_RESAMPLES:,} random flips) on the "
        f"per-user {metric_display(pa.primary)} differences of the users both models were "
        f"evaluated on (segment all); p-values Holm-corrected over the {len(pa.comparisons)} "
        f"comparisons of this table; significant at α = {ALPHA}. The interval of the difference "
        "is a paired t-interval over users.",
    ]
    return Table(
        key=f"significance_{pa.label}",
        title=f"Paired tests — {protocol_title(pa.label, pa.description)}",
        header=header,
        rows=rows,
        raw=pd.DataFrame(raw),
        notes=notes,
    )


def segment_table(data: ReportData, pa: ProtocolAnalysis) -> Table:
    segs = pa.segments
    header = ["model", *[f"{s} (n={n:,})" for s, n in segs]]
    best = {}
    for w in pa.segment_winners:
        tied = w.test is not None and w.test.diff == 0
        if w.best and w.best_value is not None and w.best_value.mean > 0 and not tied:
            best[w.segment] = w.best
    rows, raw = [], []
    for label in pa.ranking:
        row = [Cell(model_text(data, label), cls="model", attrs={"data-model": label})]
        rec: dict[str, Any] = {"model": label}
        for seg, _ in segs:
            est = pa.segment_values.get(seg, {}).get(label)
            row.append(
                Cell(
                    fmt_metric(est.mean if est else None),
                    sub=fmt_ci(est.low, est.high) if est else "",
                    cls="num best" if best.get(seg) == label else "num",
                    title=f"{est.n_users:,} users" if est else "no users in this segment",
                    attrs={"data-model": label, "data-segment": seg, "data-metric": pa.primary},
                )
            )
            rec[seg] = est.mean if est else math.nan
            rec[f"{seg}_ci_low"] = est.low if est else math.nan
            rec[f"{seg}_ci_high"] = est.high if est else math.nan
            rec[f"{seg}_n_users"] = est.n_users if est else 0
        rows.append(row)
        raw.append(rec)
    notes = [
        "cold_users: at most evaluation.cold_user_max training items; head/tail/cold items: "
        "hits counted on the held-out items of that popularity class only (users without one "
        "are left out of the segment). Best per segment in bold."
    ]
    empty = [s for s, n in segs if n == 0]
    if empty:
        notes.append(f"No users in: {', '.join(empty)}.")
    return Table(
        key=f"segments_{pa.label}",
        title=f"{metric_display(pa.primary)} per segment — {protocol_title(pa.label, pa.description)}",
        header=header,
        rows=rows,
        raw=pd.DataFrame(raw),
        notes=notes,
    )


def popularity_table(data: ReportData, pa: ProtocolAnalysis, pop: PopularityAnalysis) -> Table:
    k = pop.k
    header = [
        "model",
        f"ARP@{k}",
        "ARP / data",
        "top decile %",
        "deciles 2–5 %",
        "deciles 6–10 %",
    ]
    ref = pop.reference
    rows, raw = [], []

    def add(name: str, share, arp: float, cls: str = "") -> None:
        ratio = arp / ref.data_arp if ref.data_arp else math.nan
        rows.append(
            [
                Cell(name, cls=("model " + cls).strip(), attrs={"data-model": name}),
                Cell(f"{arp:,.1f}" if _finite(arp) else "–", cls="num"),
                Cell(f"{ratio:.2f}×" if _finite(ratio) else "–", cls="num"),
                Cell(f"{share[0] * 100:.1f}", cls="num"),
                Cell(f"{share[1:5].sum() * 100:.1f}", cls="num"),
                Cell(f"{share[5:].sum() * 100:.1f}", cls="num"),
            ]
        )
        rec = {"model": name, f"arp@{k}": arp, "arp_over_data": ratio}
        rec.update({f"decile_{i + 1}_share": float(share[i]) for i in range(N_BINS)})
        raw.append(rec)

    for label in pa.ranking:
        mp = pop.models.get(label)
        if mp is not None:
            add(label, mp.share, mp.arp)
    add("data (all interactions)", ref.data_share, ref.data_arp, "reference")
    add("held-out test items", ref.test_share, ref.test_arp, "reference")
    notes = [
        "Items ranked by training popularity (distinct users in train + valid) and cut into 10 "
        "deciles of equal item count (ties by item id); shares of each model's top-"
        f"{k} lists per decile. ARP / data: ARP over the mean training popularity of an "
        "interaction in the data (1× matches what users consume)."
    ]
    if pa.sampled:
        notes.append(
            "On candidate protocols the lists can only hold candidates: popularity follows the "
            "candidates as much as the model."
        )
    return Table(
        key=f"popularity_{pa.label}",
        title=f"Popularity of recommended items — {protocol_title(pa.label, pa.description)}",
        header=header,
        rows=rows,
        raw=pd.DataFrame(raw),
        notes=notes,
    )


def failed_table(data: ReportData) -> Table:
    rows, raw = [], []
    for m in data.failed_models:
        first = (m.error or "").strip().splitlines()[0] if m.error else "failed"
        rows.append(
            [
                Cell(m.label, cls="model", attrs={"data-model": m.label}),
                Cell(m.name),
                Cell(m.family),
                Cell(first[:400], title=m.error or "", cls="failed"),
            ]
        )
        raw.append(
            {
                "model": m.label,
                "name": m.name,
                "run": data.runs[m.run].run_dir.name,
                "family": m.family,
                "error": m.error,
            }
        )
    return Table(
        key="failed",
        title="Failed models",
        header=["model", "registry name", "family", "error"],
        rows=rows,
        raw=pd.DataFrame(raw, columns=["model", "name", "run", "family", "error"]),
        notes=["The full error (and traceback) is in each model's FAILED.json."],
    )


# ---------------------------------------------------------------------- set-up
def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt_value(x) for x in v)
    return str(v)


def dataset_table(run: RunArtifacts) -> Table:
    meta = run.dataset_meta
    info = meta.get("info") or {}
    rows: list[tuple[str, Any]] = [("name", meta.get("name", run.state.get("dataset", "?")))]
    for key in ("catalog_name", "format", "source", "source_sha256", "note"):
        if info.get(key):
            rows.append((key, info[key]))
    for key, value in (info.get("stats") or {}).items():
        rows.append((key, _fmt_value(value)))
    return simple_table("dataset", "Data set", rows)


def preprocessing_table(run: RunArtifacts) -> Table | None:
    steps = (run.dataset_meta.get("info") or {}).get("preprocessing") or []
    if not steps:
        return None
    header = ["step", "settings", "interactions", "users", "items"]
    rows, raw = [], []
    for s in steps:
        settings = {
            k: v
            for k, v in s.items()
            if k != "step" and not k.endswith("_before") and not k.endswith("_after")
        }

        def span(name: str, s=s) -> str:
            b, a = s.get(f"{name}_before"), s.get(f"{name}_after")
            return f"{fmt_int(b)} → {fmt_int(a)}" if b is not None else "–"

        row = [
            s.get("step", "?"),
            _fmt_value(settings) or "–",
            span("interactions"),
            span("users"),
            span("items"),
        ]
        rows.append([Cell(str(x)) for x in row])
        raw.append(dict(zip(header, row, strict=True)))
    return Table("preprocessing", "Preprocessing (in order)", header, rows, pd.DataFrame(raw))


def split_table(run: RunArtifacts) -> Table:
    meta = run.split_meta
    rows: list[tuple[str, Any]] = [("method", meta.get("method", run.state.get("split", "?")))]
    for key, value in (meta.get("params") or {}).items():
        rows.append((f"param: {key}", _fmt_value(value)))
    stats = meta.get("stats") or {}
    for key in ("train", "valid", "test", "valid_users", "test_users", "cold_items"):
        if key in stats:
            rows.append((key, _fmt_value(stats[key])))
    for key, value in (stats.get("candidates") or {}).items():
        rows.append((f"candidates {key}", value))
    notes = list(meta.get("notes") or []) + [
        n for n in run.state.get("notes", []) if n not in (meta.get("notes") or [])
    ]
    for n in notes:
        rows.append(("note", n))
    return simple_table("split", "Split", rows)


def protocols_table(data: ReportData) -> Table:
    header = ["protocol", "candidates", "models run"]
    rows, raw = [], []
    for label, desc in data.protocols.items():
        models = [m.label for m in data.done_models if label in m.protocols]
        rows.append([Cell(label), Cell(desc), Cell(", ".join(models) or "–")])
        raw.append({"protocol": label, "description": desc, "models": ", ".join(models)})
    return Table(
        "protocols",
        "Protocols",
        header,
        rows,
        pd.DataFrame(raw),
        notes=[
            "Never compare numbers across protocols: sampled or first-stage candidates make "
            "the task easier and can reorder models."
        ],
        css_class="wrap",
    )


def evaluation_table(data: ReportData) -> Table:
    rows: list[tuple[str, Any]] = []
    for run in data.runs:
        ev = run.evaluation
        prefix = f"{run.run_dir.name}: " if len(data.runs) > 1 else ""
        rows.append((f"{prefix}seed", run.config.get("seed", "?")))
        for key in (
            "ks",
            "tune_metric",
            "refit",
            "cold_user_max",
            "head_share",
            "bootstrap",
            "confidence",
            "max_eval_users",
            "latency_users",
        ):
            if key in ev:
                rows.append((f"{prefix}{key}", _fmt_value(ev[key])))
        rows.append((f"{prefix}item text template", run.state.get("item_text_template") or "–"))
    return simple_table("evaluation", "Seeds and evaluation settings", rows)


def environment_table(data: ReportData) -> Table:
    header = (
        ["", *[r.run_dir.name for r in data.runs]] if len(data.runs) > 1 else ["field", "value"]
    )
    keys: list[str] = []
    flat: list[dict[str, str]] = []
    for run in data.runs:
        env = run.environment
        d: dict[str, str] = {}
        for key in ("python", "platform", "cpu", "cpu_count", "memory_gib", "gpus", "git_revision"):
            if key in env:
                d[key] = _fmt_value(env[key]) if env[key] not in ([], None) else "none"
        for pkg, ver in (env.get("packages") or {}).items():
            d[pkg] = str(ver)
        d["created"] = str(run.state.get("created", "?"))
        flat.append(d)
        keys += [k for k in d if k not in keys]
    rows = [[Cell(k), *[Cell(d.get(k, "–")) for d in flat]] for k in keys]
    raw = pd.DataFrame([[k, *[d.get(k, "") for d in flat]] for k in keys], columns=header)
    return Table("environment", "Versions and hardware", header, rows, raw)


def seeds_tables(data: ReportData, pa: ProtocolAnalysis) -> list[Table]:
    """Each model across its training seeds, and the best against the others, on one
    protocol (from the run's ``summary_seeds.csv`` and ``comparisons_seeds.csv``; none
    when no run of the report asked for seeds)."""
    from recarena.summary_seeds import ranking_across_seeds, seeds_text

    tables = []
    for run in data.runs:
        path = run.run_dir / "summary_seeds.csv"
        if not path.exists():
            continue
        metric = str(run.evaluation.get("tune_metric", f"ndcg@{data.k}"))
        ranked = ranking_across_seeds(pd.read_csv(path), pa.label, metric)
        if ranked.empty:
            continue
        where = f" ({run.name})" if len(data.runs) > 1 else ""
        suffix = f"_{run.name}" if len(data.runs) > 1 else ""
        rows = []
        for _, r in ranked.iterrows():
            seeds = seeds_text(r)
            rows.append(
                [
                    Cell(str(r["model"]), cls="model"),
                    Cell(seeds),
                    Cell(fmt_metric(r["mean"]), sub=fmt_ci(r["ci_low"], r["ci_high"]), cls="num"),
                    Cell(fmt_metric(r["seed_sd"]), cls="num"),
                    Cell(fmt_metric(r["user_half_width"]), cls="num"),
                    Cell(fmt_int(r["n_users"]), cls="num"),
                ]
            )
        level = f"{data.confidence:.0%}"
        tables.append(
            Table(
                key=f"seeds_{pa.label}{suffix}",
                title=f"Across training seeds{where} — {protocol_title(pa.label, pa.description)}",
                header=[
                    "model",
                    "seeds",
                    f"{metric_display(metric)} [{level}: users and seeds]",
                    "sd over seeds",
                    "± over users",
                    "users",
                ],
                rows=rows,
                raw=ranked,
                notes=[
                    "The mean over seeds of each seed's mean over users. The interval is a "
                    "two-level percentile bootstrap (users drawn once for every seed, seeds "
                    "drawn with replacement), so it covers training randomness as well as "
                    "the sampling of users. 'sd over seeds' is the standard deviation of the "
                    "per-seed means; '± over users' the half-width of the interval over users "
                    "alone (the mean of the seeds' own): where the first is comparable to the "
                    "second, one training run cannot rank the models. A model that takes no "
                    "seed is deterministic given its data and ran once."
                ],
            )
        )
        cpath = run.run_dir / "comparisons_seeds.csv"
        comps = pd.read_csv(cpath) if cpath.exists() else pd.DataFrame()
        comps = comps[comps["protocol"] == pa.label] if len(comps) else comps
        if comps.empty:
            continue
        crow = []
        for _, c in comps.iterrows():
            crow.append(
                [
                    Cell(str(c["model_a"]), cls="model"),
                    Cell(str(c["model_b"]), cls="model"),
                    Cell(fmt_metric(c["mean_a"]), cls="num"),
                    Cell(fmt_metric(c["mean_b"]), cls="num"),
                    Cell(fmt_diff(c["diff"]), sub=fmt_ci(c["ci_low"], c["ci_high"]), cls="num"),
                    Cell("yes" if bool(c["consistent"]) else "no"),
                    Cell(
                        f"{c['model_a']} better" if bool(c["better"]) else "not shown",
                        cls="sig" if bool(c["better"]) else "ns",
                    ),
                ]
            )
        tables.append(
            Table(
                key=f"seeds_comparisons_{pa.label}{suffix}",
                title=f"Best against the others across seeds{where} — "
                f"{protocol_title(pa.label, pa.description)}",
                header=[
                    "model A",
                    "model B",
                    "mean A",
                    "mean B",
                    f"A − B [{level}: users and seeds]",
                    "same sign at every seed pair",
                    "result",
                ],
                rows=crow,
                raw=comps,
                notes=[
                    f"{metric_display(metric)} differences on the users both were measured on. "
                    "A is better only when the interval of the difference (users drawn once "
                    "for both models, each model's seeds drawn with replacement) excludes zero "
                    "and A's mean is above B's at every pair of their seeds."
                ],
            )
        )
    return tables


def fairness_tables(data: ReportData, pa: ProtocolAnalysis) -> list[Table]:
    """Each model's worst and best group of users and the gap, against the best classical
    model, on one protocol (from the run's ``fairness_gaps.csv`` and
    ``fairness_users.csv``)."""
    tables = []
    for run in data.runs:
        path, groups_path = run.run_dir / "fairness_gaps.csv", run.run_dir / "fairness_users.csv"
        if not path.exists() or not groups_path.exists():
            continue
        labels = {"group": str, "worst_group": str, "best_group": str, "grouping": str}
        gaps = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=labels)
        gaps = gaps[gaps["protocol"] == pa.label]
        if gaps.empty:
            continue
        groups = pd.read_csv(groups_path, keep_default_na=False, na_values=[""], dtype=labels)
        groups = groups[groups["protocol"] == pa.label].set_index(["model", "grouping", "group"])
        where = f" ({run.name})" if len(data.runs) > 1 else ""
        suffix = f"_{run.name}" if len(data.runs) > 1 else ""
        metric = str(gaps["metric"].iloc[0])
        rows, row_classes = [], []
        for grouping, sub in gaps.groupby("grouping", sort=False):
            for _, r in sub.sort_values("gap", kind="stable").iterrows():
                verdict = r["verdict"] if isinstance(r["verdict"], str) else ""
                rows.append(
                    [
                        Cell(str(grouping)),
                        Cell(str(r["model"]), cls="model"),
                        Cell(
                            str(r["worst_group"]),
                            sub=_group_mean(groups, r["model"], grouping, r["worst_group"]),
                        ),
                        Cell(
                            str(r["best_group"]),
                            sub=_group_mean(groups, r["model"], grouping, r["best_group"]),
                        ),
                        Cell(
                            fmt_metric(r["gap"]), sub=fmt_ci(r["ci_low"], r["ci_high"]), cls="num"
                        ),
                        Cell(
                            fmt_diff(r["gap_vs_reference"])
                            if verdict
                            else "ref"
                            if r["model"] == r["reference"]
                            else "–",
                            sub=fmt_ci(r["vs_ci_low"], r["vs_ci_high"]) if verdict else "",
                            cls="num",
                        ),
                        Cell(verdict, cls="sig" if verdict in ("wider", "narrower") else "ns"),
                    ]
                )
                row_classes.append("")
        tables.append(
            Table(
                key=f"fairness_{pa.label}{suffix}",
                title=f"Quality by user group{where} — {protocol_title(pa.label, pa.description)}",
                header=[
                    "users by",
                    "model",
                    f"worst group ({metric_display(metric)})",
                    "best group",
                    f"gap [{data.confidence:.0%}]",
                    "gap − reference's",
                    "gap vs reference",
                ],
                rows=rows,
                raw=gaps,
                row_classes=row_classes,
                notes=[
                    "Each model's worst and best group of users by the mean of the tuning metric "
                    "(groups of too few users are listed in fairness_users.csv but not named), "
                    "and the gap between them with a stratified bootstrap interval (users "
                    "resampled within each group). The reference is the best classical model of "
                    "the protocol; the difference of the gaps is computed on the same resampled "
                    "users, and a model widens or narrows the reference's gap only when that "
                    "interval excludes zero."
                ],
            )
        )
    return tables


def _group_mean(groups: pd.DataFrame, model: str, grouping: str, group: str) -> str:
    key = (model, grouping, str(group))
    return fmt_metric(groups.loc[key, "mean"]) if key in groups.index else "–"


def privacy_table(data: ReportData, pa: ProtocolAnalysis) -> Table | None:
    """Each model's quality beside the epsilon its training spent (DP) and the membership
    audit's attack AUC (``membership.csv``, from `recarena audit`); None when the run has
    neither a private model nor an audit."""
    audits: dict[str, pd.Series] = {}
    for m in data.done_models:
        path = data.runs[m.run].run_dir / "membership.csv"
        if path.exists():
            table = pd.read_csv(path).set_index("model")
            if m.source_label in table.index:
                audits[m.label] = table.loc[m.source_label]
    private = {m.label: m.cost.get("dp") for m in data.done_models if m.cost.get("dp")}
    if not audits and not private:
        return None
    rows, raw = [], []
    for label in pa.ranking:
        est = pa.values.get(label, {}).get(pa.primary)
        dp = private.get(label) or {}
        audit = audits.get(label)
        audited = audit is not None and audit["status"] == "audited"
        eps = dp.get("epsilon_spent")
        rows.append(
            [
                Cell(label, cls="model"),
                Cell(
                    fmt_metric(est.mean) if est else "–",
                    sub=fmt_ci(est.low, est.high) if est else "",
                    cls="num",
                ),
                Cell("∞ (not private)" if eps is None else f"{eps:.2f}", cls="num"),
                Cell("–" if not dp else f"{dp.get('noise_multiplier', math.nan):.3f}", cls="num"),
                Cell(
                    f"{audit['attack_auc']:.3f}" if audited else "–",
                    sub=fmt_ci(audit["ci_low"], audit["ci_high"]) if audited else "",
                    title="" if audit is None or audited else str(audit["status"]),
                    cls="num",
                ),
            ]
        )
        raw.append(
            {
                "model": label,
                "metric": pa.primary,
                "mean": est.mean if est else math.nan,
                "ci_low": est.low if est else math.nan,
                "ci_high": est.high if est else math.nan,
                "epsilon_spent": eps,
                "delta": dp.get("delta"),
                "noise_multiplier": dp.get("noise_multiplier"),
                "attack_auc": audit["attack_auc"] if audited else math.nan,
                "attack_ci_low": audit["ci_low"] if audited else math.nan,
                "attack_ci_high": audit["ci_high"] if audited else math.nan,
                "audit": None if audit is None else audit["status"],
            }
        )
    return Table(
        key=f"privacy_{pa.label}",
        title=f"Privacy — {protocol_title(pa.label, pa.description)}",
        header=[
            "model",
            f"{metric_display(pa.primary)} [{data.confidence:.0%}]",
            "epsilon spent",
            "noise multiplier",
            "membership attack AUC",
        ],
        rows=rows,
        raw=pd.DataFrame(raw),
        notes=[
            "Epsilon: what the final training spent by Opacus's RDP accountant, one user's whole "
            "training sequence being the privacy unit (model selection on validation is not "
            "counted). Attack AUC (recarena audit): how well the rank of a user's last training "
            "item tells training users from users held out of training; .5 is chance. A model "
            "without an audit result was not audited (hover for the reason)."
        ],
    )
