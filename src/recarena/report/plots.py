"""The report's figures, drawn with matplotlib and returned as inline SVG text.

Figures are built with `matplotlib.figure.Figure` and written by the SVG backend without
touching pyplot or the process-wide backend, so drawing a report from a notebook or a
server leaves no window and no global state behind. Text stays text in the SVG (selectable,
small); element ids get a per-figure prefix so several figures can share one page.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recarena.report.stats import pareto_front

_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "recarena-report",
    "font.family": ["DejaVu Sans", "sans-serif"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
}

FAMILY_MARKERS = {
    "classical": "o",
    "content": "s",
    "frozen-lm": "^",
    "lm-features-trained": "v",
    "cross-encoder": "D",
    "two-tower": "P",
    "generative-lm": "*",
}

_counter = iter(range(1, 1 << 30))


def model_colors(labels: Sequence[str]) -> dict[str, Any]:
    """One stable colour per model for every figure of a report."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    n = cmap.N
    return {label: cmap(i % n) for i, label in enumerate(labels)}


def _figure(width: float, height: float, **adjust: float):
    """A figure with fixed margins (in inches where given as ``*_in``, else fractions).

    Fixed margins instead of constrained layout: the layout engine measures every text
    again on each pass and costs most of a report's drawing time.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    margins = {"left": 0.75, "right": 0.25, "bottom": 0.55, "top": 0.45}
    margins.update({k.removesuffix("_in"): v for k, v in adjust.items() if k.endswith("_in")})
    fig.subplots_adjust(
        left=margins["left"] / width,
        right=1 - margins["right"] / width,
        bottom=margins["bottom"] / height,
        top=1 - margins["top"] / height,
        wspace=adjust.get("wspace", 0.25),
    )
    return fig


def _plain_log_axis(axis, values: Sequence[float] | np.ndarray = ()) -> None:
    """Log-scale tick labels as plain numbers (``0.01``, ``100``), never mathtext.

    Mathtext labels (``$10^{2}$``) are parsed by pyparsing, which is slow enough to
    dominate drawing time.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    decades = math.log10(v.max() / v.min()) if len(v) else 3.0
    subs = (1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def to_svg(fig: Any, label: str) -> str:
    """The figure as an ``<svg>`` element with unique ids and an accessible label."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    prefix = f"f{next(_counter)}-"
    text = re.sub(r'id="([^"]+)"', rf'id="{prefix}\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}\1)", text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}\1"', text)
    from html import escape

    return text.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" ', 1)


def _positive(values: Sequence[float | None]) -> tuple[np.ndarray, bool]:
    """Costs for a log axis: missing -> NaN, zero -> half the smallest positive value."""
    x = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    pos = x[np.isfinite(x) & (x > 0)]
    floor = pos.min() / 2 if len(pos) else 1e-3
    clipped = bool(np.any(np.isfinite(x) & (x <= 0)))
    return np.where(np.isfinite(x) & (x <= 0), floor, x), clipped


def _label_offsets(x: np.ndarray, y: np.ndarray, ok: np.ndarray) -> dict[int, float]:
    """Vertical offsets (points) for point labels so that near neighbours do not overlap.

    Greedy, from the top: a label whose point lies close to an already placed label (in
    axis-normalised units) moves down one line until it is free.
    """
    idx = np.flatnonzero(ok)
    if not len(idx):
        return {}
    span_x = max(float(np.ptp(x[idx])), 1e-9)
    span_y = max(float(np.ptp(y[idx])), 1e-9)
    nx, ny = (x - x[idx].min()) / span_x, (y - y[idx].min()) / span_y
    line = 0.045  # one label line, as a share of the axis height (about 10 points)
    placed: list[tuple[float, float]] = []
    out: dict[int, float] = {}
    for i in sorted(idx, key=lambda j: -y[j]):
        level = ny[i]
        while any(abs(nx[i] - px) < 0.18 and abs(level - py) < line for px, py in placed):
            level -= line
        placed.append((nx[i], level))
        out[int(i)] = 4 - (ny[i] - level) / line * 10
    return out


def _rgba(colors: Mapping[str, Any], labels: Sequence[str]) -> np.ndarray:
    from matplotlib.colors import to_rgba_array

    return to_rgba_array([colors.get(x, "C0") for x in labels])


def quality_cost(
    points: Sequence[Mapping[str, Any]],
    metric_label: str,
    title: str,
    colors: Mapping[str, Any],
) -> tuple[str, list[str]]:
    """Quality against fit time and against per-user latency (log x), Pareto fronts drawn.

    ``points``: dicts with ``label, family, quality, low, high, fit_seconds, latency_ms``.
    Returns the SVG and notes for the caption.
    """
    import matplotlib

    notes: list[str] = []
    labels = [p["label"] for p in points]
    rgba = _rgba(colors, labels)
    families = [p.get("family", "") for p in points]
    with matplotlib.rc_context(_RC):
        fig = _figure(10, 4.2, wspace=0.08)
        axes = fig.subplots(1, 2, sharey=True)
        q = np.array([p["quality"] for p in points], dtype=np.float64)
        lo = np.array([p.get("low", np.nan) for p in points], dtype=np.float64)
        hi = np.array([p.get("high", np.nan) for p in points], dtype=np.float64)
        for ax, key, xlabel in (
            (axes[0], "fit_seconds", "fit time (s, log scale)"),
            (axes[1], "latency_ms", "per-user latency p50 (ms, log scale)"),
        ):
            x, clipped = _positive([p.get(key) for p in points])
            if clipped:
                notes.append(f"{xlabel.split(' (')[0]} of 0 drawn at half the smallest value")
            missing = [p["label"] for p, v in zip(points, x, strict=True) if not np.isfinite(v)]
            if missing:
                notes.append(f"no {xlabel.split(' (')[0]} for {', '.join(missing)}")
            ok = np.isfinite(x) & np.isfinite(q)
            if not ok.any():
                ax.text(0.5, 0.5, "no cost recorded", ha="center", transform=ax.transAxes)
                continue
            # one artist for all whiskers, one per marker shape: drawing time grows with
            # the number of artists, not of points
            from matplotlib.collections import LineCollection

            whiskers = ok & np.isfinite(lo) & np.isfinite(hi)
            ax.add_collection(
                LineCollection(
                    [[(x[i], lo[i]), (x[i], hi[i])] for i in np.flatnonzero(whiskers)],
                    colors=rgba[whiskers],
                    linewidths=1,
                )
            )
            for family in dict.fromkeys(families):
                sel = ok & np.array([f == family for f in families])
                if sel.any():
                    ax.scatter(
                        x[sel],
                        q[sel],
                        c=rgba[sel],
                        s=45,
                        marker=FAMILY_MARKERS.get(family, "o"),
                        zorder=3,
                    )
            for i, dy in _label_offsets(np.log10(x), q, ok).items():
                ax.annotate(
                    labels[i],
                    (x[i], q[i]),
                    xytext=(5, dy),
                    textcoords="offset points",
                    fontsize=7.5,
                )
            front = pareto_front(np.where(ok, x, np.nan), q)
            if front.any():
                idx = np.flatnonzero(front)
                idx = idx[np.argsort(x[idx])]
                ax.step(
                    x[idx],
                    q[idx],
                    where="post",
                    color="0.35",
                    linestyle="--",
                    linewidth=1,
                    zorder=1,
                )
                ax.scatter(
                    x[idx],
                    q[idx],
                    s=170,
                    facecolors="none",
                    edgecolors="0.35",
                    linewidths=1,
                    zorder=2,
                )
            ax.set_xscale("log")
            # room on the right for the names of the dearest models
            ax.set_xlim(np.nanmin(x[ok]) / 2, np.nanmax(x[ok]) * 8)
            _plain_log_axis(ax.xaxis, x[ok])
            ax.set_xlabel(xlabel)
        axes[0].set_ylabel(metric_label)
        fig.suptitle(title, fontsize=10)
    return to_svg(fig, title), sorted(set(notes))


def _lines(
    ax,
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    rgba: np.ndarray,
    marker_size: float = 10,
    linewidth: float = 1.4,
) -> None:
    """Many polylines as one LineCollection plus one scatter of their points."""
    from matplotlib.collections import LineCollection

    segments = [np.column_stack([x, y]) for x, y in zip(xs, ys, strict=True)]
    ax.add_collection(LineCollection(segments, colors=rgba, linewidths=linewidth))
    if marker_size:
        px = np.concatenate([np.asarray(x, dtype=np.float64) for x in xs]) if xs else np.array([])
        py = np.concatenate([np.asarray(y, dtype=np.float64) for y in ys]) if ys else np.array([])
        pc = np.repeat(rgba, [len(x) for x in xs], axis=0) if xs else rgba
        ax.scatter(px, py, c=pc, s=marker_size, zorder=3)
    ax.autoscale_view()


def metric_curves(
    curves: Mapping[str, Mapping[str, Sequence[tuple[int, float, float, float]]]],
    display: Mapping[str, str],
    title: str,
    colors: Mapping[str, Any],
) -> str:
    """``metric@K`` against K, one panel per metric, one line per model with its CI band.

    Colours follow the report's model colours (the legend is on the page).
    """
    import matplotlib
    from matplotlib.collections import PolyCollection

    names = list(curves)
    with matplotlib.rc_context(_RC):
        fig = _figure(max(6.0, 2.9 * len(names)), 3.3, wspace=0.3)
        axes = np.atleast_1d(fig.subplots(1, len(names)))
        for ax, name in zip(axes, names, strict=True):
            labels = list(curves[name])
            rgba = _rgba(colors, labels)
            xs, ys, bands, band_rgba = [], [], [], []
            for label, c in zip(labels, rgba, strict=True):
                pts = np.array(curves[name][label], dtype=np.float64).reshape(-1, 4)
                xs.append(pts[:, 0])
                ys.append(pts[:, 1])
                if np.all(np.isfinite(pts[:, 2:])):
                    bands.append(np.vstack([pts[:, [0, 2]], pts[::-1][:, [0, 3]]]))
                    band_rgba.append((*c[:3], 0.12))
            if bands:
                ax.add_collection(PolyCollection(bands, facecolors=band_rgba, linewidths=0))
            _lines(ax, xs, ys, rgba)
            all_ks = sorted({p[0] for pts in curves[name].values() for p in pts})
            ax.set_xticks(all_ks)
            ax.set_xlabel("K")
            ax.set_title(f"{display.get(name, name)}@K")
        fig.suptitle(title, fontsize=10)
    return to_svg(fig, title)


def segment_bars(
    segments: Sequence[tuple[str, int]],
    values: Mapping[str, Mapping[str, tuple[float, float, float]]],
    models: Sequence[str],
    metric_label: str,
    title: str,
    colors: Mapping[str, Any],
) -> str:
    """Grouped bars of one metric per segment (n users under each), with CI whiskers."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        width_in = max(8.0, 0.2 * len(models) * len(segments) + 2)
        fig = _figure(width_in, 3.6)
        ax = fig.subplots()
        n = max(1, len(models))
        width = 0.8 / n
        xs = np.arange(len(segments))
        pos, height, low, high, rgba = [], [], [], [], []
        model_rgba = _rgba(colors, list(models)) if models else np.zeros((0, 4))
        for j, _label in enumerate(models):
            for i, (seg, _) in enumerate(segments):
                mean, lo, hi = values.get(seg, {}).get(_label, (np.nan, np.nan, np.nan))
                if not np.isfinite(mean):
                    continue
                pos.append(xs[i] - 0.4 + width * (j + 0.5))
                height.append(mean)
                ok = np.isfinite(lo) and np.isfinite(hi)
                low.append(max(0.0, mean - lo) if ok else 0.0)
                high.append(max(0.0, hi - mean) if ok else 0.0)
                rgba.append(model_rgba[j])
        if pos:
            ax.bar(pos, height, width, color=np.array(rgba))
            ax.errorbar(
                pos, height, yerr=[low, high], fmt="none", ecolor="0.2", elinewidth=0.7, capsize=1.5
            )
        top = ax.get_ylim()[1]
        for i, (seg, count) in enumerate(segments):
            seg_values = [v[0] for v in values.get(seg, {}).values() if np.isfinite(v[0])]
            if count == 0 or not seg_values:
                ax.text(i, top * 0.05, "no users", ha="center", fontsize=8, color="0.4")
            elif max(seg_values) == 0:
                ax.text(i, top * 0.05, "all 0", ha="center", fontsize=8, color="0.4")
        ax.set_xticks(xs, [f"{seg}\nn={count:,}" for seg, count in segments])
        ax.set_xlim(-0.6, len(segments) - 0.4)
        ax.set_ylabel(metric_label)
        ax.grid(axis="x", visible=False)
        fig.suptitle(title, fontsize=10)
    return to_svg(fig, title)


def popularity(
    shares: Mapping[str, np.ndarray],
    arp: Mapping[str, float],
    data_share: np.ndarray,
    test_share: np.ndarray,
    data_arp: float,
    test_arp: float,
    k: int,
    title: str,
    colors: Mapping[str, Any],
) -> str:
    """Share of top-k recommendations per training-popularity decile, and ARP per model.

    Reference lines: dashed black = all interactions of the data, dotted grey = held-out
    test items (the caption says so; the model legend is on the page).
    """
    import matplotlib

    with matplotlib.rc_context(_RC):
        longest = max((len(x) for x in arp), default=8)
        fig = _figure(11, 4.0, wspace=0.12 + 0.012 * longest)
        ax, ax2 = fig.subplots(1, 2, width_ratios=[1.5, 1])
        deciles = np.arange(1, len(data_share) + 1, dtype=np.float64)
        floor = 1e-3  # percent: zero shares sit on the floor of the log axis
        labels = list(shares)
        _lines(
            ax,
            [deciles] * len(labels),
            [np.maximum(np.asarray(shares[x]) * 100, floor) for x in labels],
            _rgba(colors, labels),
            marker_size=8,
            linewidth=1.2,
        )
        ax.plot(deciles, np.maximum(data_share * 100, floor), "k--", linewidth=2)
        ax.plot(deciles, np.maximum(test_share * 100, floor), ":", color="0.3", linewidth=2)
        ax.set_yscale("log")
        all_shares = np.concatenate(
            [*(np.ravel(v) for v in shares.values()), data_share, test_share]
        )
        _plain_log_axis(ax.yaxis, np.maximum(all_shares * 100, floor))
        ax.set_ylim(bottom=floor * 0.8)
        ax.set_xticks(deciles)
        ax.set_xlabel("training popularity decile of the item (1 = most popular tenth)")
        ax.set_ylabel(f"share of top-{k} recommendations (%, log)")
        arp_labels = list(arp)
        ax2.barh(arp_labels, [arp[x] for x in arp_labels], color=_rgba(colors, arp_labels))
        if math.isfinite(data_arp):
            ax2.axvline(data_arp, color="k", linestyle="--", linewidth=1.5)
        if math.isfinite(test_arp):
            ax2.axvline(test_arp, color="0.3", linestyle=":", linewidth=1.5)
        ax2.invert_yaxis()
        ax2.set_xlabel(f"ARP@{k}: mean training users per listed item")
        ax2.grid(axis="y", visible=False)
        fig.suptitle(title, fontsize=10)
    return to_svg(fig, title)


#: training-log keys that hold the training loss (SASRec logs ``loss``, the LM loop
#: ``train_loss``): both are drawn in one "training loss" panel
_LOSS_KEYS = ("loss", "train_loss")


def training_axis(log: Sequence[Mapping[str, Any]]) -> str:
    """``"step"`` when every record of a training log has an optimizer step, else ``"epoch"``."""
    return "step" if log and all(isinstance(r.get("step"), int) for r in log) else "epoch"


def training_curves(
    logs: Mapping[str, Sequence[Mapping[str, Any]]], title: str, colors: Mapping[str, Any]
) -> str:
    """Training loss and validation metrics of the models that logged them.

    The x axis is the optimizer step when every log has one (the LM training loop measures
    every few steps, from step 0, before training), else the epoch; give models of one kind
    per call. Panels: the training loss and each ``valid_*`` value.
    """
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    axis = "step" if all(training_axis(log) == "step" for log in logs.values()) else "epoch"
    valid_keys = sorted(
        {
            k
            for log in logs.values()
            for row in log
            for k, v in row.items()
            if k.startswith("valid_") and isinstance(v, (int, float))
        }
    )
    panels = ["training loss", *valid_keys]
    with matplotlib.rc_context(_RC):
        fig = _figure(max(6.0, 4.2 * len(panels)), 3.3, wspace=0.3)
        axes = np.atleast_1d(fig.subplots(1, len(panels)))
        for ax, key in zip(axes, panels, strict=True):
            keys = _LOSS_KEYS if key == "training loss" else (key,)
            xs, ys, labels = [], [], []
            for label, log in logs.items():
                pts = [
                    (row.get(axis, i + 1), row[k])
                    for i, row in enumerate(log)
                    for k in keys
                    if isinstance(row.get(k), (int, float)) and math.isfinite(row[k])
                ]
                if pts:
                    arr = np.array(pts, dtype=np.float64)
                    xs.append(arr[:, 0])
                    ys.append(arr[:, 1])
                    labels.append(label)
            if xs:
                _lines(ax, xs, ys, _rgba(colors, labels), marker_size=8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("optimizer step" if axis == "step" else "epoch")
            ax.set_title(key.replace("_", " "))
        fig.suptitle(title, fontsize=10)
    return to_svg(fig, title)


def privacy_utility(
    curves: Mapping[str, Sequence[tuple[float | None, float, float, float]]],
    metric: str,
    title: str,
    colors: Mapping[str, Any],
) -> str:
    """Quality against the epsilon spent, one line per model family: points ``(epsilon,
    mean, low, high)``, epsilon None (not private) drawn at the right edge as infinity."""
    import matplotlib

    finite = [e for pts in curves.values() for e, *_ in pts if e is not None and e > 0]
    right = max(finite) * 4 if finite else 10.0
    with matplotlib.rc_context(_RC):
        fig = _figure(6.0, 3.6)
        ax = fig.subplots()
        for name, pts in curves.items():
            rows = sorted(((right if e is None else e), m, lo, hi) for e, m, lo, hi in pts)
            arr = np.array(rows, dtype=np.float64)
            color = colors.get(name, "0.3")
            ax.errorbar(
                arr[:, 0],
                arr[:, 1],
                yerr=[arr[:, 1] - arr[:, 2], arr[:, 3] - arr[:, 1]],
                marker="o",
                capsize=3,
                color=color,
                label=name,
            )
        ax.set_xscale("log")
        ticks = sorted({*(e for e in finite), right})
        ax.set_xticks(ticks)
        ax.set_xticklabels([("∞" if t == right else f"{t:g}") for t in ticks])
        ax.set_xlabel("epsilon spent (∞: not private)")
        ax.set_ylabel(metric)
        ax.legend(fontsize=8)
        fig.suptitle(title, fontsize=10)
    return to_svg(fig, title)


def legend_html(labels: Sequence[str], colors: Mapping[str, Any]) -> str:
    """An HTML legend (colour swatch + name) for the figures: cheaper than matplotlib's."""
    from html import escape

    from matplotlib.colors import to_hex

    items = "".join(
        f'<span class="key"><i style="background:{to_hex(colors.get(x, "C0"))}"></i>'
        f"{escape(x)}</span>"
        for x in labels
    )
    return f'<div class="legend">{items}</div>'
