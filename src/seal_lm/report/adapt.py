"""`seal adapt`'s section: self-check accuracy per document, closed-book, before and after the updates."""

from __future__ import annotations

from seal_lm.records import SelfCheckBeforeRecord, StepRecord
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


def answers_section(run: Run) -> str:
    """Per document: each self-check question with the model's own open-book answer (the reference) and its
    closed-book answers before the first update and after the last."""
    before = next(iter(run.of(SelfCheckBeforeRecord)), None)
    steps = sorted(run.of(StepRecord), key=lambda r: r.step)
    if before is None or not before.answers:
        return ""
    after = steps[-1].answers if steps and len(steps[-1].answers) == len(before.answers) else []
    titles = [d["title"] for d in (run.summary or {}).get("documents", [])] or [str(i + 1) for i in range(len(before.answers))]
    blocks = []
    for i, (title, questions) in enumerate(zip(titles, before.answers)):
        rows = []
        for j, q in enumerate(questions):
            later = after[i][j] if after else None
            rows.append([esc(q["question"]), esc(" | ".join(q["answers"])), esc(f"{q['prediction']} ({q['score']:.2f})"),
                         esc(f"{later['prediction']} ({later['score']:.2f})") if later else "\u2013"])
        blocks.append(f"<h3>{esc(title)}</h3>\n" + table(["question", "reference (open-book)", "before", "after"],
                                                         rows))
    return section("self-check", "Self-check questions and answers", "Closed-book answers with their scores against "
                   "the model's own open-book answer, before the first update and after the last.", *blocks)


SECTIONS = (learned_section, answers_section)
