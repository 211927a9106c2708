"""The numbers behind the report, per protocol: ranking, significance, segments.

Everything here is computed from `ReportData` (saved summaries and per-user values) and
holds plain values; `recarena.report.tables`, `plots` and `verdict` only present them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recarena._artifacts import read_json_artifact
from recarena.report.loading import ReportData
from recarena.report.stats import PairedResult, holm_correction, paired_test
from recarena.summary import CommonUsers, find_common_users

#: segments in the order the report shows them; others follow in the order found
SEGMENT_ORDER = ("all", "cold_users", "warm_users", "head_items", "tail_items", "cold_items")

#: main columns of a leaderboard, at the report's cut-off
MAIN_METRICS = ("ndcg", "hr", "recall", "mrr")

#: per-unit metrics without a cut-off (impression protocols), shown when present
BARE_METRICS = ("auc", "mrr", "gauc")

#: pointwise metrics shown when a protocol has them (summary key -> display key)
POINTWISE = {"pointwise_accuracy": "accuracy", "pointwise_f1": "f1", "pointwise_auc": "auc"}

ALPHA = 0.05

VS_CLASSICAL = "vs best classical"
TOP_TWO = "best two"

#: segments with fewer users than this get a caveat
FEW_USERS = 100

#: random sign flips per paired test: p-values resolve down to 1 / (1 + this)
N_RESAMPLES = 5000


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float = math.nan
    high: float = math.nan
    n_users: int = 0


@dataclass
class Comparison:
    a: str
    b: str
    kind: str  # VS_CLASSICAL, TOP_TWO or both joined by "; "
    metric: str
    result: PairedResult
    p_holm: float = math.nan

    @property
    def significant(self) -> bool:
        return bool(self.p_holm <= ALPHA) if math.isfinite(self.p_holm) else False


@dataclass
class SegmentWinner:
    segment: str
    n_users: int
    best: str | None = None
    best_value: Estimate | None = None
    runner_up: str | None = None
    test: PairedResult | None = None


@dataclass
class CommonSample:
    """Every model of a protocol over the users all of them were measured on.

    Made where some model was measured on a sample of the users, so that the all-users
    numbers of the others do not sit beside a sample's as if they were comparable.
    """

    users: CommonUsers
    metrics: list[str]
    values: dict[str, dict[str, Estimate]]
    ranking: list[str]


@dataclass(frozen=True)
class LadderCheck:
    """The sanity ladder of a model that reads users' histories, on one candidate protocol.

    Rung 1: its *twin* (the same model and parameters with ``history_len = 0``, so it sees
    the candidate alone) must reach about the pointwise AUC of the popularity reference on
    the same candidates: item popularity is all it can learn, and it can learn it from item
    text. Rung 2: the model with history must beat its twin. A model whose twin misses rung
    1 is set up wrong (a constant or near-constant output): its numbers measure the set-up,
    not the method.
    """

    model: str
    twin: str
    reference: str
    model_auc: float
    twin_auc: float
    reference_auc: float
    #: passes of the cross-encoder's popularity prior that both were given (0: none): rung
    #: 1 then checks that pair training keeps the popularity the prior taught
    prior_passes: int = 0

    @property
    def learns_popularity(self) -> bool:
        return self.twin_auc >= self.reference_auc - LADDER_TOLERANCE

    @property
    def learns_from_history(self) -> bool:
        return self.model_auc > self.twin_auc


#: how far below the popularity reference's AUC the history-free twin may end (rung 1)
LADDER_TOLERANCE = 0.03
#: registry names of the popularity reference of the ladder
LADDER_REFERENCES = ("most_popular",)
#: parameters a twin may differ in: the history it reads, and what the refit sets
_TWIN_FREE = frozenset({"history_len", "epochs", "max_steps", "progress"})


def sanity_ladders(data: ReportData, protocol: str) -> list[LadderCheck]:
    """The `LadderCheck` of every model on ``protocol`` that has a history-free twin there.

    A twin is a finished model of the same registry name whose parameters equal the
    model's except ``history_len`` (0 for the twin, more for the model) and the step counts
    a refit sets; the reference is MostPopular on the same protocol. Nothing is returned
    where a piece is missing or the protocol has no pointwise AUC.
    """
    summary = data.summary
    rows = summary[
        (summary["protocol"] == protocol)
        & (summary["segment"] == "all")
        & (summary["metric"] == "pointwise_auc")
    ]
    auc = {str(r.model): float(r.mean) for r in rows.itertuples()}
    on_proto = [m for m in data.done_models if protocol in m.protocols and m.label in auc]
    references = [m for m in on_proto if m.name in LADDER_REFERENCES]
    if not references:
        return []
    reference = references[0]

    def free(params: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in params.items() if k not in _TWIN_FREE}

    checks = []
    for m in on_proto:
        length = m.params.get("history_len")
        if not isinstance(length, int) or length < 1:
            continue
        twins = [
            t
            for t in on_proto
            if t.name == m.name
            and t.params.get("history_len") == 0
            and free(t.params) == free(m.params)
        ]
        if twins:
            checks.append(
                LadderCheck(
                    m.label,
                    twins[0].label,
                    reference.label,
                    auc[m.label],
                    auc[twins[0].label],
                    auc[reference.label],
                    prior_passes(m),
                )
            )
    return checks


def prior_passes(model: Any) -> int:
    """The passes of a finished cross-encoder's popularity prior: what its fit recorded
    (``cost.json``'s ``prior_passes``), else its ``prior_passes`` parameter (0: none; a
    run made before the prior existed has neither)."""
    passes = model.cost.get("prior_passes", model.params.get("prior_passes"))
    return int(passes or 0)


@dataclass
class ProtocolAnalysis:
    label: str
    description: str
    primary: str
    ranking: list[str]
    values: dict[str, dict[str, Estimate]]
    pointwise: list[str]
    comparisons: list[Comparison]
    best_classical: str | None
    segments: list[tuple[str, int]]
    segment_values: dict[str, dict[str, Estimate]]
    segment_winners: list[SegmentWinner]
    not_run: dict[str, str] = field(default_factory=dict)
    segment_users_by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    common: CommonSample | None = None
    #: model -> how its pointwise metrics were thresholded, where that is not the rule
    #: every model now gets (runs made before it was one rule)
    pointwise_exceptions: dict[str, str] = field(default_factory=dict)
    #: sanity ladders of trained models that have a history-free twin in the report
    ladders: list[LadderCheck] = field(default_factory=list)

    @property
    def sampled(self) -> bool:
        return self.label != "full"

    def comparison(self, a: str, b: str) -> tuple[Comparison, float] | None:
        """The comparison of ``a`` and ``b`` and the sign that makes its difference a - b."""
        for c in self.comparisons:
            if (c.a, c.b) == (a, b):
                return c, 1.0
            if (c.a, c.b) == (b, a):
                return c, -1.0
        return None

    def mark(self, label: str) -> str:
        """``†`` significantly better than the best classical, ``‡`` worse, ``ref`` it."""
        if label == self.best_classical:
            return "ref"
        for c in self.comparisons:
            if VS_CLASSICAL in c.kind and c.a == label and c.significant:
                return "†" if c.result.diff > 0 else "‡"
        return ""


def primary_metric(summary: pd.DataFrame, k: int) -> str:
    """NDCG@k when the summary has it, else the first main metric it has at k."""
    metrics = set(summary["metric"].unique())
    for name in MAIN_METRICS:
        if f"{name}@{k}" in metrics:
            return f"{name}@{k}"
    ranked = sorted(m for m in metrics if "@" in m)
    return ranked[0] if ranked else "ndcg@10"


def _estimates(frame: pd.DataFrame) -> dict[str, dict[str, Estimate]]:
    out: dict[str, dict[str, Estimate]] = {}
    cols = [frame[c].to_numpy() for c in ("model", "metric", "mean", "ci_low", "ci_high")]
    n_users = frame["n_users"].to_numpy()
    for model, metric, mean, low, high, n in zip(*cols, n_users, strict=True):
        out.setdefault(str(model), {})[str(metric)] = Estimate(
            float(mean), float(low), float(high), int(n) if n == n else 0
        )
    return out


def _ordered_segments(names: list[str]) -> list[str]:
    known = [s for s in SEGMENT_ORDER if s in names]
    return known + [s for s in names if s not in known]


def _series(data: ReportData, label: str, protocol: str, metric: str, segment: str) -> pd.Series:
    frame = data.per_user(label, protocol, [metric])
    if metric not in frame.columns:
        return pd.Series(dtype=np.float64)
    sub = frame[frame["segment"] == segment]
    # the unit of pairing: the user, or the impression where a protocol scores impressions
    key = "impression" if "impression" in sub.columns else "user"
    return pd.Series(sub[metric].to_numpy(np.float64), index=sub[key].to_numpy())


def compare(
    data: ReportData, a: str, b: str, protocol: str, metric: str, segment: str = "all"
) -> PairedResult:
    """Paired test of two models on the users both were evaluated on."""
    xa = _series(data, a, protocol, metric, segment)
    xb = _series(data, b, protocol, metric, segment)
    common = xa.index.intersection(xb.index)
    return paired_test(
        xa.loc[common].to_numpy(),
        xb.loc[common].to_numpy(),
        n_resamples=N_RESAMPLES,
        confidence=data.confidence,
        seed=0,
    )


def analyse_protocol(data: ReportData, protocol: str) -> ProtocolAnalysis:
    summary = data.summary[data.summary["protocol"] == protocol]
    primary = primary_metric(summary, data.k) if not summary.empty else f"ndcg@{data.k}"
    on_proto = [m for m in data.done_models if protocol in m.protocols]
    labels = {m.label for m in on_proto}
    all_seg = summary[(summary["segment"] == "all") & summary["model"].isin(labels)]
    values = _estimates(all_seg)

    def score(label: str) -> float:
        est = values.get(label, {}).get(primary)
        return est.mean if est is not None and math.isfinite(est.mean) else -math.inf

    ranking = sorted((m.label for m in on_proto), key=lambda x: (-score(x), x))
    pointwise = [k for k in POINTWISE if k in set(all_seg["metric"])]

    not_run: dict[str, str] = {}
    for m in data.models:
        if m.label in labels:
            continue
        if not m.done:
            not_run[m.label] = f"failed: {m.error}"
        elif protocol in m.skipped:
            not_run[m.label] = f"not run: {m.skipped[protocol]}"
        elif data.runs[m.run].protocols.get(protocol) is None:
            not_run[m.label] = "not run: its run has no such protocol"
        else:
            not_run[m.label] = "not run on this protocol (excluded in the experiment)"

    # ---- significance: each model vs the best classical model, and the best two
    classical = [x for x in ranking if data.model(x).family == "classical"]
    best_classical = classical[0] if classical else None
    pairs: list[list[str]] = []
    if best_classical is not None:
        pairs += [[x, best_classical, VS_CLASSICAL] for x in ranking if x != best_classical]
    if len(ranking) >= 2:
        top = {ranking[0], ranking[1]}
        same = [p for p in pairs if {p[0], p[1]} == top]
        if same:  # the top two include the best classical model: one test serves both
            same[0][2] = f"{VS_CLASSICAL}; {TOP_TWO}"
        else:
            pairs.append([ranking[0], ranking[1], TOP_TWO])
    comparisons = [
        Comparison(a, b, kind, primary, compare(data, a, b, protocol, primary))
        for a, b, kind in pairs
    ]
    adjusted = holm_correction([c.result.p_value for c in comparisons])
    for c, p in zip(comparisons, adjusted, strict=True):
        c.p_holm = float(p)

    # ---- segments
    seg_users: dict[str, int] = {}
    by_model: dict[str, dict[str, int]] = {}
    for m in on_proto:
        path = m.model_dir / protocol / "metrics.json"
        counts = read_json_artifact(path).get("segment_users", {}) if path.exists() else {}
        by_model[m.label] = {str(k): int(v) for k, v in counts.items()}
        for seg, n in by_model[m.label].items():
            seg_users[seg] = max(seg_users.get(seg, 0), n)
    seg_frame = summary[(summary["metric"] == primary) & summary["model"].isin(labels)]
    for seg, n in seg_frame.groupby("segment")["n_users"].max().items():
        seg_users.setdefault(str(seg), int(n))
    segments = [(s, seg_users[s]) for s in _ordered_segments(list(seg_users))]
    segment_values: dict[str, dict[str, Estimate]] = {}
    for seg, frame in seg_frame.groupby("segment", sort=False):
        segment_values[str(seg)] = {
            model: ests[primary] for model, ests in _estimates(frame).items() if primary in ests
        }
    winners = []
    for seg, n in segments:
        w = SegmentWinner(seg, n)
        vals = segment_values.get(seg, {})
        order = sorted(
            (x for x in vals if math.isfinite(vals[x].mean)), key=lambda x: (-vals[x].mean, x)
        )
        if order:
            w.best, w.best_value = order[0], vals[order[0]]
            if len(order) > 1:
                w.runner_up = order[1]
                w.test = compare(data, order[0], order[1], protocol, primary, seg)
        winners.append(w)

    common = common_sample(data, protocol, ranking, primary)
    exceptions: dict[str, str] = {}
    if pointwise:
        from recarena.metrics.pointwise import POINTWISE_THRESHOLD_RULE

        for m in on_proto:
            path = m.model_dir / protocol / "metrics.json"
            found = (read_json_artifact(path).get("pointwise") or {}) if path.exists() else {}
            if found and found.get("threshold_rule") != POINTWISE_THRESHOLD_RULE:
                exceptions[m.label] = str(found.get("threshold", "threshold not recorded"))

    return ProtocolAnalysis(
        label=protocol,
        description=data.protocols.get(protocol, protocol),
        primary=primary,
        ranking=ranking,
        values=values,
        pointwise=pointwise,
        ladders=sanity_ladders(data, protocol) if pointwise else [],
        comparisons=comparisons,
        best_classical=best_classical,
        segments=segments,
        segment_values=segment_values,
        segment_winners=winners,
        not_run=not_run,
        segment_users_by_model=by_model,
        common=common,
        pointwise_exceptions=exceptions,
    )


def common_sample(
    data: ReportData, protocol: str, labels: list[str], primary: str
) -> CommonSample | None:
    """Each model's per-user metrics over the users every model of ``protocol`` was measured
    on (`recarena.summary.find_common_users`), with bootstrap intervals over those users;
    None when every model was measured on the same users."""
    from recarena.metrics import summarize

    if len(labels) < 2 or not any(data.model(x).user_sample for x in labels):
        return None
    user_sets = {}
    for label in labels:
        frame = data.per_user(label, protocol, [])
        user_sets[label] = frame.loc[frame["segment"] == "all", "user"].to_numpy()
    users = find_common_users(user_sets, {x: data.model(x).user_sample for x in labels})
    if users is None:
        return None
    wanted = [f"{n}@{data.k}" for n in MAIN_METRICS] + list(BARE_METRICS)
    n_boot = int(data.runs[0].evaluation.get("bootstrap", 1000))
    values: dict[str, dict[str, Estimate]] = {}
    for label in labels:
        frame = data.per_user(label, protocol, wanted)
        rows = frame[(frame["segment"] == "all") & frame["user"].isin(users.users)]
        columns = [c for c in wanted if c in rows.columns]
        summ = summarize(rows[columns], n_boot=n_boot, confidence=data.confidence, seed=0)
        values[label] = {
            str(metric): Estimate(
                float(r["mean"]), float(r["ci_low"]), float(r["ci_high"]), int(r["n_users"])
            )
            for metric, r in summ.iterrows()
        }
    metrics = [m for m in wanted if any(m in v for v in values.values())]

    def score(label: str) -> float:
        est = values[label].get(primary)
        return est.mean if est is not None and math.isfinite(est.mean) else -math.inf

    ranking = sorted(labels, key=lambda x: (-score(x), x))
    return CommonSample(users, metrics, values, ranking)


def metric_at_k(data: ReportData, protocol: str, metrics: tuple[str, ...]) -> dict[str, Any]:
    """``{metric: {model: [(k, mean, low, high), ...]}}`` over the report's ks (segment all)."""
    sub = data.summary[(data.summary["protocol"] == protocol) & (data.summary["segment"] == "all")]
    out: dict[str, dict[str, list[tuple[int, float, float, float]]]] = {}
    for name in metrics:
        keys = {f"{name}@{k}": k for k in data.ks}
        rows = sub[sub["metric"].isin(keys)]
        if rows.empty:
            continue
        per_model: dict[str, list[tuple[int, float, float, float]]] = {}
        for model, frame in rows.groupby("model", sort=False):
            pts = sorted(
                (keys[m], float(mean), float(lo), float(hi))
                for m, mean, lo, hi in zip(
                    frame["metric"], frame["mean"], frame["ci_low"], frame["ci_high"], strict=True
                )
            )
            per_model[str(model)] = pts
        out[name] = per_model
    return out
