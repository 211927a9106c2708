"""The report page: one self-contained HTML file (inline CSS, inline SVG, no scripts)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from urllib.parse import quote

from recarena.report.loading import ReportData
from recarena.report.tables import Table
from recarena.report.verdict import Verdict, to_html

CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#dfe3ea;--bg:#fff;--soft:#f5f7fa;--accent:#2557a7;
--good:#1a7f37;--bad:#b42318;--warn:#9a6700}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:1560px;margin:0 auto;padding:0 28px 60px}
header.top{background:#16213a;color:#fff;padding:22px 28px 18px}
header.top h1{margin:0 0 4px;font-size:22px;font-weight:600}
header.top p{margin:0;color:#c9d3e6}
nav.toc{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);
padding:8px 28px;font-size:13px;display:flex;flex-wrap:wrap;gap:4px 14px}
nav.toc a{color:var(--accent);text-decoration:none}
h2{font-size:19px;margin:34px 0 8px;padding-top:8px;border-top:2px solid var(--line)}
h3{font-size:15px;margin:22px 0 6px}
p.desc{color:var(--muted);margin:0 0 10px}
.banner{background:#fff8e6;border:1px solid #f0d58a;color:#5c4400;padding:8px 12px;border-radius:6px;
margin:8px 0 12px}
section.verdict{background:var(--soft);border:1px solid var(--line);border-radius:8px;
padding:6px 20px 12px;margin-top:20px}
section.verdict h2{border:0;margin-top:10px}
section.verdict ul{margin:4px 0 8px;padding-left:20px}
section.verdict li{margin:3px 0}
section.verdict h4{margin:10px 0 2px;font-size:13px;color:var(--muted);text-transform:uppercase;
letter-spacing:.04em}
ul.caveats li{color:#4a3b00}
.table-wrap{overflow-x:auto;margin:6px 0 4px;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;width:100%;font-size:12.5px}
caption{caption-side:top;text-align:left;font-weight:600;padding:8px 10px;background:var(--soft);
border-bottom:1px solid var(--line)}
th,td{padding:4px 7px;border-bottom:1px solid var(--line);vertical-align:top;text-align:left;
white-space:nowrap}
th{background:#fafbfc;font-weight:600;position:sticky;top:0;font-size:12px}
tbody tr:nth-child(even){background:#fbfcfd}
tbody tr.ref{background:#eef4ff}
tbody tr.failed td{color:var(--bad)}
tbody tr.skipped td{color:var(--muted)}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.best .v{font-weight:700}
td.model .v{font-weight:600}
td.failed{white-space:normal}
td.sig .v{color:var(--good);font-weight:600}
td.ns .v{color:var(--muted)}
td .ci{display:block;color:var(--muted);font-size:11px}
td.reference .v{font-style:italic}
p.note{color:var(--muted);font-size:12px;margin:2px 0 10px}
figure.plot{margin:14px 0;padding:8px;border:1px solid var(--line);border-radius:6px;background:#fff}
figure.plot svg{display:block;max-width:100%;height:auto;margin:0 auto}
.legend{display:flex;flex-wrap:wrap;justify-content:center;gap:2px 14px;font-size:12px;
margin:4px 0}
.legend .key{display:inline-flex;align-items:center;gap:5px}
.legend i{display:inline-block;width:14px;height:10px;border-radius:2px}
figure.plot figcaption{color:var(--muted);font-size:12px;margin-top:4px}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:0 18px}
table.kv td,table.wrap td{white-space:normal;overflow-wrap:anywhere}
table.kv td:first-child{white-space:nowrap;color:var(--muted)}
ul.links{columns:3 220px;font-size:13px}
ul.links a{color:var(--accent)}
footer{color:var(--muted);font-size:12px;margin-top:40px;border-top:1px solid var(--line);
padding-top:10px}
code{background:var(--soft);padding:0 4px;border-radius:3px}
"""


@dataclass
class Figure:
    svg: str
    caption: str
    key: str
    legend: str = ""


@dataclass
class ProtocolSection:
    label: str
    title: str
    description: str
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, Figure | Table]] = field(default_factory=list)


def nav_label(label: str, description: str) -> str:
    """``sampled-19 (20 candidates)``: a short name that still says what was ranked."""
    if label == "full":
        return "full"
    found = re.search(r"\((\d[\d,]*) candidates\)", description)
    return f"{label} ({found.group(1)} candidates)" if found else f"{label} ({description})"


def rel_link(target: Path, out_dir: Path) -> str:
    rel = os.path.relpath(target.resolve(), out_dir.resolve())
    return quote(Path(rel).as_posix())


def _figure_html(fig: Figure) -> str:
    return (
        f'<figure class="plot" data-plot="{escape(fig.key)}">{fig.svg}{fig.legend}'
        f"<figcaption>{escape(fig.caption)}</figcaption></figure>"
    )


def render_page(
    data: ReportData,
    title: str,
    subtitle: str,
    verdict: Verdict,
    sections: list[ProtocolSection],
    training: list[Figure],
    failed: Table | None,
    setup: list[Table],
    out_file: Path,
    tables_dir: Path,
) -> str:
    out_dir = out_file.parent
    nav = ['<a href="#verdict">Verdict</a>']
    nav += [
        f'<a href="#p-{escape(s.label)}" title="{escape(s.description)}">'
        f"{escape(nav_label(s.label, s.description))}</a>"
        for s in sections
    ]
    if training:
        nav.append('<a href="#training">Training curves</a>')
    if failed is not None:
        nav.append('<a href="#failed">Failed models</a>')
    nav.append('<a href="#setup">Set-up</a>')
    nav.append('<a href="#artifacts">Artifacts</a>')

    body: list[str] = []
    body.append('<section class="verdict" id="verdict"><h2>Verdict</h2>')
    body.append("<ul>" + "".join(f"<li>{to_html(s)}</li>" for s in verdict.headline) + "</ul>")
    if verdict.segments:
        body.append("<h4>Per segment</h4><ul>")
        body.append("".join(f"<li>{to_html(s)}</li>" for s in verdict.segments) + "</ul>")
    if verdict.others:
        body.append("<h4>Other protocols (not comparable with full ranking)</h4><ul>")
        body.append("".join(f"<li>{to_html(s)}</li>" for s in verdict.others) + "</ul>")
    if verdict.caveats:
        body.append('<h4>Caveats</h4><ul class="caveats">')
        body.append("".join(f"<li>{to_html(s)}</li>" for s in verdict.caveats) + "</ul>")
    body.append("</section>")

    for s in sections:
        body.append(f'<section class="protocol" id="p-{escape(s.label)}">')
        body.append(f"<h2>Protocol {escape(s.title)}</h2>")
        if s.label == "full":
            body.append(f'<p class="desc">{escape(s.description)}</p>')
        else:
            body.append(
                '<div class="banner">Candidate protocol: every number in this section ranks '
                f"{escape(s.description)}. Do not compare it with full-catalog ranking.</div>"
            )
        for t in s.tables:
            body.append(t.to_html())
        for heading, item in s.figures:
            if heading:
                body.append(f"<h3>{escape(heading)}</h3>")
            body.append(_figure_html(item) if isinstance(item, Figure) else item.to_html())
        body.append("</section>")

    if training:
        body.append('<section id="training"><h2>Training curves</h2>')
        body.append("".join(_figure_html(fig) for fig in training) + "</section>")
    if failed is not None:
        body.append('<section id="failed"><h2>Failed models</h2>' + failed.to_html() + "</section>")

    body.append('<section id="setup"><h2>Set-up</h2><div class="grid2">')
    body.append("".join(f"<div>{t.to_html()}</div>" for t in setup))
    body.append("</div></section>")

    body.append('<section id="artifacts"><h2>Artifacts</h2>')
    body.append(
        f'<p class="desc">Tables as Markdown and CSV: <a href="{rel_link(tables_dir, out_dir)}/">'
        f"{escape(tables_dir.name)}/</a> (all of them in "
        f'<a href="{rel_link(tables_dir / "report.md", out_dir)}">report.md</a>).</p>'
    )
    for i, run in enumerate(data.runs):
        rd = run.run_dir
        body.append(f'<h3>{escape(rd.name)} <code>{escape(str(rd))}</code></h3><ul class="links">')
        for name in (
            "config.toml",
            "run.json",
            "environment.json",
            "summary.csv",
            "summary.md",
            "summary.json",
            "dataset",
            "split",
        ):
            path = rd / name
            if path.exists():
                suffix = "/" if path.is_dir() else ""
                body.append(
                    f'<li><a href="{rel_link(path, out_dir)}{suffix}">{escape(name)}{suffix}</a></li>'
                )
        for m in data.models:
            if m.run == i and m.model_dir.exists():
                body.append(
                    f'<li><a href="{rel_link(m.model_dir, out_dir)}/">models/{escape(m.source_label)}/</a>'
                    f"{' (failed)' if not m.done else ''}</li>"
                )
        body.append("</ul>")
    body.append("</section>")
    body.append(
        "<footer>Written by RecArena from saved run artifacts; nothing was re-run. Intervals are "
        f"{int(data.confidence * 100)}% percentile bootstrap over users unless a table says "
        "otherwise; paired tests are two-sided sign-flip randomization tests with Holm correction "
        "per protocol.</footer>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f'<header class="top"><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>'
        f'<nav class="toc">{"".join(nav)}</nav><main>{"".join(body)}</main></body></html>\n'
    )
