"""The report's tables: one `Table` object rendered as HTML, Markdown and CSV.

A `Table` holds display cells (formatted text, the confidence interval under it, CSS hints)
and a raw `pandas.DataFrame` of the unrounded numbers; the HTML and Markdown come from the
cells, the CSV from the raw frame, so a spreadsheet gets every digit and a paper the same
text as the page.

Formatting is fixed here and used everywhere (page, Markdown, tests): metric values with
`fmt_metric` (4 decimals), intervals with `fmt_ci`, p-values with `fmt_p`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from recarena._io import atomic_path, write_text


# ---------------------------------------------------------------------- formatting
def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt_metric(value: Any) -> str:
    """A metric value as the report shows it: 4 decimals, ``–`` when missing."""
    return f"{float(value):.4f}" if _finite(value) else "–"


def fmt_ci(low: Any, high: Any) -> str:
    """A confidence interval as ``[low, high]`` with 4 decimals (empty when missing)."""
    if _finite(low) and _finite(high):
        return f"[{float(low):.4f}, {float(high):.4f}]"
    return ""


def fmt_diff(value: Any) -> str:
    return f"{float(value):+.4f}" if _finite(value) else "–"


def fmt_p(value: Any) -> str:
    if not _finite(value):
        return "–"
    v = float(value)
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def fmt_seconds(value: Any) -> str:
    """Seconds or milliseconds: 3 significant figures below 100, whole numbers above."""
    if not _finite(value):
        return "–"
    v = float(value)
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) >= 0.001 else f"{v:.1e}"


def fmt_rate(value: Any) -> str:
    if not _finite(value):
        return "–"
    v = float(value)
    return f"{v:,.0f}" if v >= 10 else f"{v:.2g}"


def fmt_count(value: Any) -> str:
    """Parameter counts: ``2.83M``, ``45.1k``, ``512``."""
    if not _finite(value):
        return "–"
    v = float(value)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.3g}{unit}"
    return f"{v:.0f}"


def fmt_int(value: Any) -> str:
    return f"{int(value):,}" if _finite(value) else "–"


def fmt_mib(value: Any) -> str:
    return f"{float(value):,.0f}" if _finite(value) else "–"


# ---------------------------------------------------------------------- tables
@dataclass
class Cell:
    text: str
    sub: str = ""
    title: str = ""
    cls: str = ""
    attrs: dict[str, str] = field(default_factory=dict)
    colspan: int = 1


@dataclass
class Table:
    """A titled table with display cells and the raw numbers behind them."""

    key: str
    title: str
    header: list[str]
    rows: list[list[Cell]]
    raw: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    header_titles: list[str] = field(default_factory=list)
    row_classes: list[str] = field(default_factory=list)
    css_class: str = ""

    def to_html(self) -> str:
        head = []
        for i, h in enumerate(self.header):
            tip = self.header_titles[i] if i < len(self.header_titles) else ""
            head.append(
                f'<th title="{escape(tip)}">{escape(h)}</th>' if tip else f"<th>{escape(h)}</th>"
            )
        body = []
        for r, row in enumerate(self.rows):
            rcls = self.row_classes[r] if r < len(self.row_classes) else ""
            cells = []
            for c in row:
                attrs = "".join(f' {k}="{escape(v)}"' for k, v in c.attrs.items())
                if c.cls:
                    attrs += f' class="{escape(c.cls)}"'
                if c.title:
                    attrs += f' title="{escape(c.title)}"'
                if c.colspan > 1:
                    attrs += f' colspan="{c.colspan}"'
                inner = f'<span class="v">{escape(c.text)}</span>'
                if c.sub:
                    inner += f'<span class="ci">{escape(c.sub)}</span>'
                cells.append(f"<td{attrs}>{inner}</td>")
            body.append(
                f'<tr class="{rcls}">' + "".join(cells) + "</tr>"
                if rcls
                else "<tr>" + "".join(cells) + "</tr>"
            )
        notes = "".join(f'<p class="note">{escape(n)}</p>' for n in self.notes)
        return (
            f'<div class="table-wrap"><table id="t-{escape(self.key)}" data-table="{escape(self.key)}"'
            + (f' class="{escape(self.css_class)}"' if self.css_class else "")
            + ">"
            f"<caption>{escape(self.title)}</caption>"
            f"<thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
            f"{notes}"
        )

    def to_markdown(self) -> str:
        def md(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        lines = [f"**{md(self.title)}**", ""]
        lines.append("| " + " | ".join(md(h) for h in self.header) + " |")
        lines.append("|" + "---|" * len(self.header))
        for row in self.rows:
            cells = []
            for c in row:
                text = c.text + (f" {c.sub}" if c.sub else "")
                cells.append(md(text))
                cells += [""] * (c.colspan - 1)
            lines.append("| " + " | ".join(cells) + " |")
        if self.notes:
            lines.append("")
            lines += [md(n) for n in self.notes]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> None:
        """``folder/KEY.md`` and ``folder/KEY.csv``."""
        write_text(folder / f"{self.key}.md", self.to_markdown())
        with atomic_path(folder / f"{self.key}.csv") as tmp:
            self.raw.to_csv(tmp, index=False)


def simple_table(
    key: str, title: str, rows: list[tuple[str, Any]], header=("field", "value")
) -> Table:
    """A two-column key/value table (set-up facts)."""
    cells = [[Cell(str(k)), Cell(str(v))] for k, v in rows]
    raw = pd.DataFrame([(str(k), str(v)) for k, v in rows], columns=list(header))
    return Table(key, title, list(header), cells, raw, css_class="kv")
