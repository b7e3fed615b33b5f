"""Few-shot ARC's section: a few tasks' test input, true output and each condition's voted prediction."""

from __future__ import annotations

from seal_lm.domains.arc.domain import TaskEval
from seal_lm.report.page import esc, section
from seal_lm.report.run import Run

MAX_TASKS = 4
ARC_COLOURS = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF",
               "#870C25")  # the usual ARC palette, colour 0 to 9


def grid_html(text: str | None) -> str:
    """A grid (rows of digits) as a small table of coloured cells; '(no grid)' for a missing prediction."""
    if not text:
        return '<span class="note">(no grid)</span>'
    rows = "".join("<tr>" + "".join(f'<td style="background:{ARC_COLOURS[int(c)]}"></td>' for c in line) + "</tr>"
                   for line in text.splitlines() if line.isdigit())
    return f'<table class="grid">{rows}</table>'


def grids_section(run: Run) -> str:
    by_task: dict[str, list[TaskEval]] = {}
    for r in run.of(TaskEval):
        by_task.setdefault(r.context_id, []).append(r)
    if not by_task:
        return ""
    parts = []
    for task_id, records in list(by_task.items())[:MAX_TASKS]:
        cells = [f"<td><b>test input</b><br>{grid_html(records[0].test_input)}</td>",
                 f"<td><b>true output</b><br>{grid_html(records[0].expected)}</td>"]
        for r in sorted(records, key=lambda r: (r.round, r.condition)):
            label = r.condition + (f" (round {r.round})" if r.round else "")
            prediction = (r.predictions or [None])[0]
            verdict = "solved" if prediction == r.expected else "wrong"
            cells.append(f"<td><b>{esc(label)}</b>: {verdict}<br>{grid_html(prediction)}</td>")
        parts.append(f"<h3>{esc(task_id)}</h3>\n<table class=\"grids\"><tr>{''.join(cells)}</tr></table>\n")
    return section("grids", "Grid tasks: test input, true output and predictions", "", *parts)


SECTIONS = (grids_section,)
