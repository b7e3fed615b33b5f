"""`seal adapt`'s section: self-check accuracy per document, closed-book, before and after the updates."""

from __future__ import annotations

from seal_lm.report.page import esc, estimate_text, section, table
from seal_lm.report.plots import before_after_bars
from seal_lm.report.run import Run


def learned_section(run: Run) -> str:
    summary = run.summary
    if not summary or summary.get("recipe") != "adapt":
        return ""
    docs = summary["documents"]
    rows = [[esc(d["title"]), esc(d["questions"]), esc(estimate_text(d["before"])), esc(estimate_text(d["after"])),
             esc("accepted" if d["accepted"] else "refused")] for d in docs]
    rows.append(["<b>all</b>", esc(sum(d["questions"] for d in docs)), esc(estimate_text(summary["before"])),
                 esc(estimate_text(summary["after"])), esc(f"{summary['refused']} refused")])
    plot = before_after_bars(run.plots, "adapt", [d["title"] for d in docs],
                             [d["before"]["mean"] if d["before"] else 0 for d in docs],
                             [d["after"]["mean"] if d["after"] else 0 for d in docs],
                             f"self-check {summary['grader']}, %")
    note = ("Questions the model wrote about each document with the document in view, answered closed-book before "
            f"and after the updates and graded against its own open-book answers ({summary['grader']}); no gold "
            f"answers. Saved: {summary.get('saved') or 'nothing'}.")
    return section("adapt", "What was learned", note,
                   table(["document", "questions", "before [95% CI]", "after [95% CI]", "update"], rows, {1, 2, 3}),
                   plot)


SECTIONS = (learned_section,)
