"""Reports of a run: terminal tables (terminal.py) and `seal report`'s HTML page.

`write_report` reads a run directory (run.py), picks the sections of its recipe and domain, each a
small module over the typed records and the summary (eval, rest_em, knowledge, arc, continual,
adapt), and writes `report/index.html` with every plot embedded, plus the plots as PNG files.
"""

from __future__ import annotations

import json
from pathlib import Path

from seal_lm.report import accuracy, adapt, arc, continual, knowledge, rest_em
from seal_lm.report.page import esc, page
from seal_lm.report.run import open_run

REPORT_DIR = "report"
RECIPE_SECTIONS = {"eval": accuracy.SECTIONS, "demo": accuracy.SECTIONS, "train": accuracy.SECTIONS + rest_em.SECTIONS,
                   "continual": continual.SECTIONS, "adapt": adapt.SECTIONS}
DOMAIN_SECTIONS = {"knowledge": knowledge.SECTIONS, "arc": arc.SECTIONS}


def write_report(run_dir: str | Path) -> Path:
    """Write `run_dir/report/index.html` (self-contained) and the plots as PNG files; return the HTML path."""
    path = Path(run_dir)
    out_dir = path / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    run = open_run(path, out_dir)
    sections = RECIPE_SECTIONS.get(run.command, ())
    if run.command in ("eval", "demo", "train"):
        sections += DOMAIN_SECTIONS.get(run.domain, ())
    summary = run.summary or {}
    meta = [f"{esc(run.command)} &middot; {esc(run.domain)}", f"model: <b>{esc(summary.get('model', '?'))}</b>",
            f"run: <b>{esc(path.resolve().name)}</b>", f"records: {len(run.records)}"]
    if "grader" in summary:
        meta.insert(2, f"grader: <b>{esc(summary['grader'])}</b>")
    if run.summary is None:
        meta.append("no summary.json yet: the run has not finished a phase")
    html = page(f"SEAL report: {path.resolve().name}", meta, json.dumps(run.config, indent=2, ensure_ascii=False),
                [section(run) for section in sections])
    target = out_dir / "index.html"
    target.write_text(html, encoding="utf-8")
    return target


__all__ = ["write_report"]
