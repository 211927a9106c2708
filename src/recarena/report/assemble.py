"""Putting the report together: analysis -> tables and figures -> page and Markdown."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from recarena.report import plots
from recarena.report.analysis import MAIN_METRICS, ProtocolAnalysis, analyse_protocol, metric_at_k
from recarena.report.loading import ReportData
from recarena.report.page import Figure, ProtocolSection, render_page
from recarena.report.popularity import analyse_popularity, reference_for
from recarena.report.sections import (
    common_users_table,
    dataset_table,
    environment_table,
    evaluation_table,
    failed_table,
    fairness_tables,
    ladder_table,
    leaderboard_table,
    metric_display,
    popularity_table,
    preprocessing_table,
    privacy_table,
    protocol_title,
    protocols_table,
    seeds_tables,
    segment_table,
    significance_table,
    split_table,
)
from recarena.report.tables import Table
from recarena.report.verdict import build_verdict

log = logging.getLogger(__name__)


def _privacy_figure(data: ReportData, pa: ProtocolAnalysis, colors) -> Figure | None:
    """The privacy-utility curve of each model family trained privately at least once:
    quality with its interval against the epsilon spent (the non-private model at ∞)."""
    curves: dict[str, list[tuple[float | None, float, float, float]]] = {}
    for label in pa.ranking:
        m = data.model(label)
        est = pa.values.get(label, {}).get(pa.primary)
        if est is None or not math.isfinite(est.mean):
            continue
        eps = (m.cost.get("dp") or {}).get("epsilon_spent")
        curves.setdefault(m.name or label, []).append((eps, est.mean, est.low, est.high))
    curves = {
        name: pts
        for name, pts in curves.items()
        if any(e is not None for e, *_ in pts) and len(pts) > 1
    }
    if not curves:
        return None
    metric = metric_display(pa.primary)
    title = f"{metric} against epsilon — {protocol_title(pa.label, pa.description)}"
    family_colors = {name: colors.get(name, None) or "0.3" for name in curves}
    svg = plots.privacy_utility(curves, metric, title, family_colors)
    caption = (
        "Each line is one model trained without and with differential privacy (Opacus, one "
        "user's sequence the unit); x: the epsilon the final training spent, ∞ for the "
        "non-private one; whiskers: the interval over users."
    )
    return Figure(svg, caption, f"privacy-{pa.label}")


def _quality_cost_figure(data: ReportData, pa: ProtocolAnalysis, colors) -> Figure | None:
    points = []
    for label in pa.ranking:
        est = pa.values.get(label, {}).get(pa.primary)
        if est is None or not math.isfinite(est.mean):
            continue
        m = data.model(label)
        points.append(
            {
                "label": label,
                "family": m.family,
                "quality": est.mean,
                "low": est.low,
                "high": est.high,
                "fit_seconds": m.cost.get("fit_seconds"),
                "latency_ms": m.cost.get("latency_ms_p50"),
            }
        )
    if not points:
        return None
    metric = metric_display(pa.primary)
    title = f"{metric} vs cost — {protocol_title(pa.label, pa.description)}"
    svg, notes = plots.quality_cost(points, metric, title, colors)
    caption = (
        f"Each point is a model ({metric} with its CI; marker by family: circle classical, "
        "square content, triangles LM features, diamond cross-encoder, plus two-tower, star "
        "generative). The dashed step line joins the Pareto front: no other model is both "
        "cheaper and better. Latency is one user's list, measured on the model's first protocol."
    )
    if notes:
        caption += " " + "; ".join(notes) + "."
    return Figure(svg, caption, f"quality-cost-{pa.label}")


def _metric_k_figure(data: ReportData, pa: ProtocolAnalysis, colors) -> Figure | None:
    curves = metric_at_k(data, pa.label, MAIN_METRICS)
    if not curves:
        return None
    display = {name: metric_display(f"{name}@1").removesuffix("@1") for name in curves}
    title = f"Metrics at each cut-off K — {protocol_title(pa.label, pa.description)}"
    svg = plots.metric_curves(curves, display, title, colors)
    caption = (
        f"Mean over users at K = {', '.join(str(k) for k in data.ks)}; shaded: "
        f"{int(data.confidence * 100)}% bootstrap CI."
    )
    return Figure(svg, caption, f"metric-k-{pa.label}", plots.legend_html(list(pa.ranking), colors))


def _segment_figure(data: ReportData, pa: ProtocolAnalysis, colors) -> Figure | None:
    if not pa.segments or not pa.ranking:
        return None
    values = {
        seg: {label: (e.mean, e.low, e.high) for label, e in vals.items()}
        for seg, vals in pa.segment_values.items()
    }
    metric = metric_display(pa.primary)
    title = f"{metric} per segment — {protocol_title(pa.label, pa.description)}"
    svg = plots.segment_bars(pa.segments, values, pa.ranking, metric, title, colors)
    caption = (
        "n = users in the segment (item segments: users with a held-out item of that kind). "
        "Whiskers: CI. Segments without users are marked."
    )
    return Figure(svg, caption, f"segments-{pa.label}", plots.legend_html(pa.ranking, colors))


def assemble(data: ReportData, out_file: Path, tables_dir: Path) -> tuple[str, str, list[Table]]:
    """The HTML page, the Markdown version and every table of the report."""
    colors = plots.model_colors([m.label for m in data.done_models])
    analyses = {p: analyse_protocol(data, p) for p in data.protocols}
    verdict = build_verdict(data, analyses)
    reference = reference_for(data.runs[0])

    all_tables: list[Table] = []
    sections: list[ProtocolSection] = []
    for label, pa in analyses.items():
        section = ProtocolSection(label, protocol_title(label, pa.description), pa.description)
        board = leaderboard_table(data, pa)
        section.tables.append(board)
        all_tables.append(board)
        if pa.common is not None:
            shared = common_users_table(data, pa)
            section.tables.append(shared)
            all_tables.append(shared)
        if pa.ladders:
            ladder = ladder_table(data, pa)
            section.tables.append(ladder)
            all_tables.append(ladder)
        if pa.comparisons:
            sig = significance_table(data, pa)
            section.tables.append(sig)
            all_tables.append(sig)
        for seeds in seeds_tables(data, pa):
            section.tables.append(seeds)
            all_tables.append(seeds)
        for fair in fairness_tables(data, pa):
            section.tables.append(fair)
            all_tables.append(fair)
        privacy = privacy_table(data, pa)
        if privacy is not None:
            section.tables.append(privacy)
            all_tables.append(privacy)
            fig = _privacy_figure(data, pa, colors)
            if fig is not None:
                section.figures.append(("Privacy and quality", fig))
        fig = _quality_cost_figure(data, pa, colors)
        if fig is not None:
            section.figures.append(("Quality vs cost", fig))
        fig = _metric_k_figure(data, pa, colors)
        if fig is not None:
            section.figures.append(("Metrics at K", fig))
        if pa.segments and pa.ranking:
            seg_table = segment_table(data, pa)
            all_tables.append(seg_table)
            section.figures.append(("Segments", seg_table))
            fig = _segment_figure(data, pa, colors)
            if fig is not None:
                section.figures.append(("", fig))
        if reference is not None and pa.ranking:
            pop = analyse_popularity(data, label, pa.ranking, reference)
            if pop.models:
                pop_table = popularity_table(data, pa, pop)
                all_tables.append(pop_table)
                section.figures.append(("Popularity bias", pop_table))
                title = f"Popularity of recommended items — {protocol_title(label, pa.description)}"
                svg = plots.popularity(
                    {x: p.share for x, p in pop.models.items()},
                    {x: p.arp for x, p in pop.models.items()},
                    reference.data_share,
                    reference.test_share,
                    reference.data_arp,
                    reference.test_arp,
                    pop.k,
                    title,
                    colors,
                )
                section.figures.append(
                    (
                        "",
                        Figure(
                            svg,
                            "Left: share of top-k recommendations per training-popularity decile "
                            "(log scale; zero shares sit on the floor) against the data's own "
                            "spread: dashed black, all interactions of the data set; dotted grey, "
                            "the held-out test items. Right: ARP per model, with the same two "
                            "references.",
                            f"popularity-{label}",
                            plots.legend_html(list(pop.models), colors),
                        ),
                    )
                )
        sections.append(section)

    logs = {m.label: m.training_log for m in data.done_models if m.training_log}
    training = []
    for axis, what in (("epoch", "per epoch"), ("step", "every few optimizer steps")):
        group = {k: v for k, v in logs.items() if plots.training_axis(v) == axis}
        if group:
            svg = plots.training_curves(group, f"Training curves ({what})", colors)
            training.append(
                Figure(
                    svg,
                    f"Measured {what}, from each model's training_log.json: training loss, "
                    "and the validation metrics where measured"
                    + (" (the first point is before training)." if axis == "step" else "."),
                    f"training-{axis}",
                    plots.legend_html(list(group), colors),
                )
            )
    failed = failed_table(data) if data.failed_models else None
    if failed is not None:
        all_tables.append(failed)

    run0 = data.runs[0]
    setup = [dataset_table(run0)]
    pre = preprocessing_table(run0)
    if pre is not None:
        setup.append(pre)
    setup += [
        split_table(run0),
        protocols_table(data),
        evaluation_table(data),
        environment_table(data),
    ]
    all_tables += setup

    name = " + ".join(r.name for r in data.runs)
    title = f"RecArena report: {name}"
    n_done, n_failed = len(data.done_models), len(data.failed_models)
    subtitle = (
        f"{run0.dataset_meta.get('name', run0.state.get('dataset', '?'))} · split "
        f"{run0.split_meta.get('method', run0.state.get('split', '?'))} · "
        f"{len(data.protocols)} protocol(s) · {n_done} model(s)"
        + (f", {n_failed} failed" if n_failed else "")
        + (f" · {len(data.runs)} runs merged" if len(data.runs) > 1 else "")
    )
    html = render_page(
        data, title, subtitle, verdict, sections, training, failed, setup, out_file, tables_dir
    )
    md = [f"# {title}", "", subtitle, "", verdict.to_markdown()]
    for t in all_tables:
        md += [t.to_markdown(), ""]
    return html, "\n".join(md), all_tables
