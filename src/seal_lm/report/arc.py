"""Few-shot ARC's section: a few tasks' test input, true output and each condition's voted prediction; with SEAL's
prediction (`prediction: reference`), each configuration's views, what each answered, and the vote's two attempts."""

from __future__ import annotations

from seal_lm.domains.arc.domain import TaskEval
from seal_lm.report.page import esc, section
from seal_lm.report.run import Run

MAX_TASKS = 4
MAX_CONFIGURATIONS = 3  # per condition, whose views are shown
ARC_COLOURS = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF",
               "#870C25")  # the usual ARC palette, colour 0 to 9


def grid_html(text: str | None) -> str:
    """A grid (rows of digits) as a small table of coloured cells; '(no grid)' for a missing prediction."""
    if not text:
        return '<span class="note">(no grid)</span>'
    rows = "".join("<tr>" + "".join(f'<td style="background:{ARC_COLOURS[int(c)]}"></td>' for c in line) + "</tr>"
                   for line in text.splitlines() if line.isdigit())
    return f'<table class="grid">{rows}</table>'


def _view_label(view: dict) -> str:
    order = ",".join(str(i + 1) for i in view["examples"]) or "none"
    return f"examples {order}" + (f", {view['transform']}" if view["transform"] else "")


def votes_html(cases: list[dict]) -> str:
    """Each test case: the vote's two attempts (marked where right), then every view's answer mapped back."""
    parts = []
    for k, case in enumerate(cases):
        cells = [f'<div><b>attempt {i + 1}</b>{" (right)" if a is not None and a == case["expected"] else ""}'
                 f"<br>{grid_html(a)}</div>" for i, a in enumerate(case["attempts"])]
        cells += [f'<div class="note">{esc(_view_label(v))}<br>{grid_html(v["grid"])}</div>' for v in case["views"]]
        verdict = "solved" if case["solved"] else "wrong"
        parts.append(f"<p>test case {k + 1} of {len(cases)}: {verdict}, {len(case['views'])} views</p>\n"
                     f'<div class="views">{"".join(cells)}</div>\n')
    return "".join(parts)


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
            verdict = "solved" if (r.outcomes[0] == 1.0 if r.outcomes else prediction == r.expected) else "wrong"
            cells.append(f"<td><b>{esc(label)}</b>: {verdict}<br>{grid_html(prediction)}</td>")
        parts.append(f"<h3>{esc(task_id)}</h3>\n<table class=\"grids\"><tr>{''.join(cells)}</tr></table>\n")
        for r in sorted(records, key=lambda r: (r.round, r.condition)):
            label = r.condition + (f" (round {r.round})" if r.round else "")
            for j, cases in enumerate(r.test_cases[:MAX_CONFIGURATIONS]):
                which = f", configuration {j + 1} of {len(r.test_cases)}" if len(r.test_cases) > 1 else ""
                parts.append(f"<details><summary>{esc(label)}{which}: views and vote</summary>\n"
                             f"{votes_html(cases)}</details>\n")
    return section("grids", "Grid tasks: test input, true output and predictions", "", *parts)


SECTIONS = (grids_section,)
