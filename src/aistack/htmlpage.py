"""Self-contained HTML pages for people: one file, inline SVG plots, no URLs.

Shared by the reports (monitoring, evaluation). A page opens offline (no
external CSS, JS, fonts or images), so it can be mailed, archived next to a
run or attached to a ticket. Figures are built on `matplotlib.figure.Figure`
directly (no pyplot, no global figure state) and rendered with the SVG backend;
text stays text (`svg.fonttype = none`) to keep files small, and everything
user-provided is escaped with `html.escape`.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.typing import RcKeyType

SMALL, LARGE = 1e-3, 1e5  # outside this range numbers get an exponent
RC: dict[RcKeyType, object] = {
    "svg.fonttype": "none",
    "date.converter": "concise",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
DROP = re.compile(
    r"<metadata>.*?</metadata>|<!--.*?-->|\s+xmlns(?::\w+)?=\"[^\"]*\"", re.DOTALL
)
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;
 margin:0 auto;max-width:1200px;padding:16px 24px;color:#222;background:#fff}
h1{margin:0 0 8px;font-size:1.6em}h2{margin:28px 0 8px;font-size:1.2em;
 border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:.9em;margin:4px 0}
th,td{border:1px solid #ddd;padding:3px 10px;text-align:left}
th{background:#f3f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.drifted td,tr.firing td,tr.mismatch td{background:#fde2e2}
.share{font-weight:600}.note{color:#666;font-style:italic}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px}
figure{margin:0;border:1px solid #eee;padding:4px}
svg{width:100%;height:auto;display:block}
figcaption{font-weight:600;padding:2px 4px}
"""


def write_page(path: Path, title: str, sections: Sequence[str]) -> Path:
    """Write one self-contained HTML page of `sections` at `path`."""
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(s for s in sections if s)
        + "\n</body></html>\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def fmt(value: object) -> str:
    """Format one cell: short numbers, a dash for missing values.

    Tables are read by people; p-values need exponents, the rest three decimals.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(value)
    if isinstance(value, float | np.floating):
        x = float(value)
        if x != 0 and (abs(x) < SMALL or abs(x) >= LARGE):
            return f"{x:.2e}"
        return f"{x:.3f}"
    return str(value)


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    row_classes: Iterable[str] | None = None,
) -> str:
    """Render an escaped HTML table; numbers are right-aligned.

    All tables in the report share one look and one escaping path.
    """
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    classes = list(row_classes) if row_classes is not None else []
    body = []
    for i, row in enumerate(rows):
        cls = classes[i] if i < len(classes) else ""
        attr = f' class="{html.escape(cls)}"' if cls else ""
        body.append(f"<tr{attr}>{''.join(td(v) for v in row)}</tr>")
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def td(value: object) -> str:
    """One escaped table cell, right-aligned when it holds a number.

    Aligned digits make a column of statistics easy to scan.
    """
    numeric = isinstance(value, int | float | np.integer | np.floating)
    cls = ' class="num"' if numeric and not isinstance(value, bool | np.bool_) else ""
    return f"<td{cls}>{html.escape(fmt(value))}</td>"


def header(title: str, summary: Mapping[str, str]) -> str:
    """Title and the key facts table.

    The reader first needs to know which model, version and windows this is about.
    """
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary.items()
    )
    facts = f'<table class="facts"><tbody>{rows}</tbody></table>' if rows else ""
    return f"<header><h1>{html.escape(title)}</h1>{facts}</header>"


def svg(fig: Figure) -> str:
    """Serialise a figure to inline SVG markup without prolog, metadata or links.

    Inline SVG in HTML5 needs no namespace declarations; dropping them keeps the
    file free of any URL.
    """
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return DROP.sub("", text[text.index("<svg") :]).strip()


def figure(svg: str, caption: str) -> str:
    """Wrap an SVG in a captioned <figure>.

    The caption names the plot for screen readers and for text search.
    """
    label = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{label}{svg}</figure>"
