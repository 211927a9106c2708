"""The verdict: a few sentences written from the numbers, with their caveats.

Sentences use ``**bold**`` for model names (Markdown); `to_html` turns them into HTML.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from html import escape

from recarena.report.analysis import ALPHA, FEW_USERS, ProtocolAnalysis
from recarena.report.loading import ReportData
from recarena.report.sections import fusion_text, metric_display, protocol_title
from recarena.report.tables import fmt_ci, fmt_diff, fmt_metric, fmt_p, fmt_seconds


@dataclass
class Verdict:
    headline: list[str] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        parts = ["## Verdict", ""]
        parts += [f"- {s}" for s in self.headline]
        if self.segments:
            parts += ["", "Per segment:", ""] + [f"- {s}" for s in self.segments]
        if self.others:
            parts += ["", "Other protocols (not comparable with full ranking):", ""]
            parts += [f"- {s}" for s in self.others]
        if self.caveats:
            parts += ["", "Caveats:", ""] + [f"- {s}" for s in self.caveats]
        return "\n".join(parts) + "\n"


def to_html(sentence: str) -> str:
    """Escape a verdict sentence and turn ``**x**`` into ``<strong>x</strong>``."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escape(sentence))


def _rel(diff: float, base: float) -> str:
    if not (math.isfinite(diff) and math.isfinite(base)) or base == 0:
        return ""
    return f" ({diff / abs(base) * 100:+.1f}%)"


def _significance(p_holm: float, *, corrected: bool = True) -> str:
    how = "Holm-corrected " if corrected else "uncorrected "
    if not math.isfinite(p_holm):
        return "untested"
    if p_holm <= ALPHA:
        return f"significant ({how}p {'< 0.001' if p_holm < 0.001 else '= ' + fmt_p(p_holm)})"
    return f"not significant ({how}p = {fmt_p(p_holm)})"


def _protocol_lines(data: ReportData, pa: ProtocolAnalysis, short: bool) -> list[str]:
    lines: list[str] = []
    metric = metric_display(pa.primary)
    if not pa.ranking:
        return [f"No model finished on {protocol_title(pa.label, pa.description)}."]
    best = pa.ranking[0]
    bm = data.model(best)
    est = pa.values.get(best, {}).get(pa.primary)
    kind = bm.family + (f", {fusion_text(bm.fusion)}" if fusion_text(bm.fusion) != "—" else "")
    lines.append(
        f"On {protocol_title(pa.label, pa.description)}, **{best}** ({kind}) ranks best: "
        f"{metric} {fmt_metric(est.mean if est else None)} {fmt_ci(est.low, est.high) if est else ''}".rstrip()
        + "."
    )
    if len(pa.ranking) > 1:
        second = pa.ranking[1]
        found = pa.comparison(best, second)
        if found:
            c, sign = found
            lines.append(
                f"Margin over the runner-up **{second}**: {fmt_diff(sign * c.result.diff)}"
                f"{_rel(sign * c.result.diff, c.result.mean_b if sign > 0 else c.result.mean_a)}, "
                f"{_significance(c.p_holm)}"
                + ("; the two are tied within noise." if not c.significant else ".")
            )
    if pa.best_classical is None:
        lines.append(
            "No classical baseline ran on this protocol, so nothing is measured against one."
        )
    elif pa.best_classical == best:
        others = [x for x in pa.ranking if data.model(x).family != "classical"]
        lines.append(
            "The best model is a classical baseline"
            + (f": none of {', '.join(f'**{x}**' for x in others)} beats it." if others else ".")
        )
    else:
        found = pa.comparison(best, pa.best_classical)
        if found:
            c, sign = found
            lines.append(
                f"Margin over the best classical baseline **{pa.best_classical}**: "
                f"{fmt_diff(sign * c.result.diff)}"
                f"{_rel(sign * c.result.diff, c.result.mean_b if sign > 0 else c.result.mean_a)}, "
                f"{_significance(c.p_holm)}."
            )
    if short:
        return lines
    # cheapest model whose mean lies inside the best model's interval
    if est is not None and math.isfinite(est.low):
        inside = [
            x
            for x in pa.ranking[1:]
            if pa.values.get(x, {}).get(pa.primary) is not None
            and pa.values[x][pa.primary].mean >= est.low
        ]

        def fit(x: str) -> float:
            v = data.model(x).cost.get("fit_seconds")
            return float(v) if v is not None and math.isfinite(float(v)) else math.inf

        def latency(x: str) -> float:
            v = data.model(x).cost.get("latency_ms_p50")
            return float(v) if v is not None and math.isfinite(float(v)) else math.inf

        cheaper = [x for x in inside if fit(x) < fit(best)]
        if cheaper:
            pick = min(cheaper, key=lambda x: (fit(x), latency(x)))
            v = pa.values[pick][pa.primary]
            lines.append(
                f"Cheapest model within the {int(data.confidence * 100)}% CI of the best: "
                f"**{pick}** ({metric} {fmt_metric(v.mean)} ≥ {fmt_metric(est.low)}), fit "
                f"{fmt_seconds(fit(pick))} s vs {fmt_seconds(fit(best))} s, p50 latency "
                f"{fmt_seconds(latency(pick))} ms vs {fmt_seconds(latency(best))} ms."
            )
        elif inside:
            names = ", ".join(f"**{x}**" for x in inside)
            verb = "falls" if len(inside) == 1 else "fall"
            lines.append(
                f"{names} also {verb} within the best model's {int(data.confidence * 100)}% CI, "
                f"but {'it is not' if len(inside) == 1 else 'none is'} cheaper to fit than "
                f"**{best}**."
            )
        else:
            lines.append(
                f"No other model's mean falls within the {int(data.confidence * 100)}% CI of "
                f"**{best}**."
            )
    return lines


def _segment_lines(data: ReportData, pa: ProtocolAnalysis) -> list[str]:
    out = []
    metric = metric_display(pa.primary)
    for w in pa.segment_winners:
        if w.segment == "all":
            continue
        if w.n_users == 0 or w.best is None:
            out.append(f"{w.segment}: no users in this segment.")
            continue
        text = (
            f"{w.segment} (n={w.n_users:,}): **{w.best}** {metric} {fmt_metric(w.best_value.mean)}"
            if w.best_value
            else f"{w.segment}: **{w.best}**"
        )
        if w.best_value is not None and w.best_value.mean == 0:
            out.append(
                f"{w.segment} (n={w.n_users:,}): no model finds any held-out item ({metric} 0 for all)."
            )
            continue
        if w.runner_up and w.test is not None and w.test.diff == 0:
            text += f", tied with **{w.runner_up}**"
        elif w.runner_up and w.test is not None:
            text += (
                f", ahead of **{w.runner_up}** by {fmt_diff(w.test.diff)}, "
                f"{_significance(w.test.p_value, corrected=False)}"
            )
        if w.n_users < FEW_USERS:
            text += "; few users, read with care"
        out.append(text + ".")
    return out


def build_verdict(data: ReportData, analyses: dict[str, ProtocolAnalysis]) -> Verdict:
    v = Verdict()
    labels = list(analyses)
    if not labels:
        v.headline.append("No protocol has results.")
        return v
    main = analyses[labels[0]]
    v.headline = _protocol_lines(data, main, short=False)
    v.segments = _segment_lines(data, main)
    for label in labels[1:]:
        v.others += _protocol_lines(data, analyses[label], short=True)

    # ---- caveats
    sampled_users = [m for m in data.done_models if m.user_sample]
    if sampled_users:
        v.caveats.append(
            "Evaluated on a seeded sample of users: "
            + ", ".join(
                f"**{m.label}** ({m.evaluated_users:,} of {m.all_test_users:,})"
                for m in sampled_users
                if m.evaluated_users is not None and m.all_test_users is not None
            )
            + "; their means are over fewer users than the others (paired tests use the users both models have)."
            + (
                " Each protocol's table “on the users every model was measured on” compares "
                "all models on the same users."
                if any(pa.common is not None for pa in analyses.values())
                else ""
            )
        )
    for label in labels:
        if label != "full":
            v.caveats.append(
                f"{protocol_title(label, analyses[label].description)} ranks a small candidate "
                "set: numbers are higher than in full ranking and can reorder models (Krichene "
                "& Rendle, KDD 2020). Never compare them with full-catalog numbers."
            )
    if "full" not in labels:
        v.caveats.append("No full-catalog protocol: every result here is on candidate sets.")
    kept = [m.label for m in data.done_models if m.refit is False]
    if kept and any(m.refit for m in data.done_models):
        v.caveats.append(
            "Not refit on train + validation: "
            + ", ".join(f"**{k}**" for k in kept)
            + " ranked the test items with what they learned on train alone; the other "
            "models were refit, so these trained without the validation interactions."
        )
    v.caveats += stale_history_caveats(data)
    v.caveats += ladder_caveats(analyses)
    trials = {m.label: int(m.cost.get("tuning_trials") or 0) for m in data.done_models}
    if len(set(trials.values())) > 1:
        v.caveats.append(
            "Tuning budgets differ (validation trials): "
            + ", ".join(f"{k} {n}" for k, n in sorted(trials.items(), key=lambda kv: -kv[1]))
            + "."
        )
    for w in main.segment_winners:
        if w.segment in ("cold_users", "cold_items") and 0 < w.n_users < FEW_USERS:
            v.caveats.append(
                f"{w.segment} holds only {w.n_users} users: its numbers are dominated by noise."
            )
        elif w.segment in ("cold_users", "cold_items") and w.n_users == 0:
            v.caveats.append(f"{w.segment}: no users in this split, so nothing is said about them.")
    notes = []
    for run in data.runs:
        for n in list(run.state.get("notes") or []) + list(run.split_meta.get("notes") or []):
            if n not in notes:
                notes.append(n)
    for n in notes:
        v.caveats.append(f"Split note: {n}.")
    if data.failed_models:
        v.caveats.append(
            f"{len(data.failed_models)} model(s) failed and have no results: "
            + ", ".join(f"**{m.label}**" for m in data.failed_models)
            + " (see Failed models)."
        )
    seeds = {run.config.get("seed") for run in data.runs}
    v.caveats.append(
        f"Each model ran once (seed {', '.join(str(s) for s in sorted(seeds, key=str))}): the "
        "intervals cover the sampling of users, not training randomness."
    )
    if len(data.runs) > 1:
        machines = {
            (
                r.environment.get("cpu"),
                r.environment.get("cpu_count"),
                str(r.environment.get("gpus")),
            )
            for r in data.runs
        }
        if len(machines) > 1:
            v.caveats.append(
                "The merged runs ran on different machines: compare their costs with care."
            )
    if any(r.summary_rebuilt for r in data.runs):
        v.caveats.append(
            "summary.csv was missing in a run: the report rebuilt it from per-user files."
        )
    return v


def stale_history_caveats(data: ReportData) -> list[str]:
    """Caveats naming models that were not refit and ranked from train-only histories."""
    from recarena.models.base import STALE_HISTORY_REASONS

    out = []
    kept = [m for m in data.done_models if m.refit is False]
    stale = [m for m in kept if m.history_recorded and m.history_refreshed is False]
    if stale:
        named = "; ".join(
            f"**{m.label}** ({STALE_HISTORY_REASONS.get(m.history_use or '', m.history_use)})"
            for m in stale
        )
        one = len(stale) == 1
        out.append(
            f"Stale histories: {named} {'was' if one else 'were'} not refit and could not take "
            "in the validation interactions, so each user's test items were ranked from a "
            "history without them (the user's latest interactions before the test); the other "
            f"models read them. Compare {'its' if one else 'their'} numbers with care, or refit "
            f"{'it' if one else 'them'} (refit = true)."
        )
    unknown = [m for m in kept if not m.history_recorded]
    if unknown:
        out.append(
            "Not recorded: "
            + ", ".join(f"**{m.label}**" for m in unknown)
            + " ran before RecArena recorded whether a model that is not refit reads the "
            "validation interactions; runs of that time gave them only to models with an "
            "update_history method of their own (SASRec, text-SASRec), so the others ranked "
            "from train-only histories. Rerun them to be sure."
        )
    return out


def ladder_caveats(analyses: dict[str, ProtocolAnalysis]) -> list[str]:
    """Caveats for trained models that fail a rung of their sanity ladder."""
    out = []
    for pa in analyses.values():
        where = protocol_title(pa.label, pa.description)
        for c in pa.ladders:
            if not c.learns_popularity:
                out.append(
                    f"Set-up check failed: without history, **{c.twin}** reached AUC "
                    + (
                        f"(after a popularity prior of {c.prior_passes} passes) "
                        if c.prior_passes
                        else ""
                    )
                    + f"{c.twin_auc:.3f} against {c.reference_auc:.3f} for **{c.reference}** "
                    f"({where}): it does not learn even item popularity, so **{c.model}**'s "
                    "numbers measure its set-up (training budget, learning rate, pooling, "
                    "input order), not the method. Do not read them as a finding."
                )
            elif not c.learns_from_history:
                out.append(
                    f"**{c.model}** (AUC {c.model_auc:.3f}) does not beat its history-free "
                    f"twin **{c.twin}** ({c.twin_auc:.3f}) on {where}: it learned item "
                    "popularity but nothing from users' histories."
                )
    return out
