"""The HTML page: escaping, tables, sections, one self-contained file (no scripts, no external assets).

Every string that comes from a run (titles, self-edits, answers: model output) goes through `esc`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from seal_lm.stats import Estimate

DASH = "\u2013"

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1000px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
pre { background: #f7f7f7; border: 1px solid #e4e4e4; padding: 0.6em; white-space: pre-wrap;
      word-wrap: break-word; font-size: 0.85em; max-height: 30em; overflow: auto; }
details { margin: 0.4em 0; }
.meta { color: #555; }
.note { color: #666; font-size: 0.9em; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
.pair h4 { margin: 0.3em 0; font-size: 0.95em; }
table.grid { border-collapse: collapse; margin: 0.3em 0; }
table.grid td { width: 12px; height: 12px; padding: 0; border: 1px solid #555; }
table.grids td { vertical-align: top; padding: 0 1em 0 0; border: none; }
.views { display: flex; flex-wrap: wrap; gap: 0.4em 1em; align-items: flex-start; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, spec: str = ".3f") -> str:
    """A finite number formatted, else a dash."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return DASH
    return format(value, spec)


def estimate_text(estimate: dict[str, Any] | Estimate | None) -> str:
    if isinstance(estimate, dict):
        estimate = Estimate(**estimate)
    if estimate is None or estimate.n == 0 or not math.isfinite(estimate.mean):
        return DASH
    return str(estimate)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int] = frozenset()) -> str:
    """`rows` hold escaped HTML; columns in `numeric` are right-aligned."""
    def cls(i: int) -> str:
        return ' class="num"' if i in numeric else ""

    head = "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row)) + "</tr>\n"
                   for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


def section(anchor: str, title: str, note: str = "", *parts: str) -> str:
    """A titled section; `note` is plain text, `parts` are HTML."""
    head = f'<h2 id="{esc(anchor)}">{esc(title)}</h2>\n'
    return head + (f'<p class="note">{esc(note)}</p>\n' if note else "") + "".join(parts)


def pre(text: str | None) -> str:
    return f"<pre>{esc(text)}</pre>" if text is not None else "<i>(none recorded)</i>"


def page(title: str, meta: Sequence[str], config_text: str, sections: Sequence[str]) -> str:
    """The whole document; `meta` items are HTML."""
    body = "".join(s for s in sections if s) or '<p class="note">This run has no records to report yet.</p>\n'
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n<p class=\"meta\">{' &middot; '.join(meta)}</p>\n"
        f"<details><summary>configuration</summary><pre>{esc(config_text)}</pre></details>\n"
        f"{body}</body>\n</html>\n"
    )
