"""`seal continual`'s section: the forgetting matrices as heatmaps, final accuracies, the guard's decisions."""

from __future__ import annotations

from seal_lm.records import StepRecord
from seal_lm.report.page import esc, estimate_text, fmt, section, table
from seal_lm.report.plots import heatmaps
from seal_lm.report.run import Run


def forgetting_section(run: Run) -> str:
    summary = run.summary or {}
    matrices = summary.get("matrices")
    if not matrices:
        return ""
    units = summary["units"]
    rows = [[esc(v), esc(m["orders"]), esc(estimate_text(m["final_first"])), esc(estimate_text(m["final_all"])),
             esc(f"{m['refused']} of {m['updates']}"), esc(m["retried"])] for v, m in matrices.items()]
    parts = [table(["variant", "orders", f"final, first {units['context']} [95% CI]",
                    f"final, all {units['contexts']} [95% CI]", "updates refused", "updates retried"], rows,
                   {1, 2, 3, 4, 5}),
             heatmaps(run.plots, "forgetting", {v: m["mean"] for v, m in matrices.items()},
                      f"{units['context']} (position learned)", "after update")]
    guarded = [r for r in run.of(StepRecord) if any("drop" in a for a in r.attempts)]
    if guarded:
        decisions = [[esc(r.order), esc(r.step + 1), esc(r.title),
                      esc(" / ".join(f"lr {a['learning_rate']:g}: {fmt(a['probe_before'], '.2f')} -> "
                                     f"{fmt(a['probe_after'], '.2f')}" for a in r.attempts)),
                      esc("accepted" if r.accepted else "refused")] for r in guarded]
        parts.append(f'<h3>Guard decisions</h3>\n<p class="note">Probe score (earlier {esc(units["contexts"])} and '
                     "general prompts whose answers must not change) before -> after each attempt.</p>\n")
        parts.append(table(["order", "update", units["context"], "attempts", "decision"], decisions, {0, 1}))
    note = (f"Row i: closed-book accuracy after the i-th update; column j: the j-th {units['context']} learned. Mean "
            "over orders. The last row shows what is left of everything at the end.")
    return section("forgetting", "Forgetting matrix", note, *parts)


def probes_section(run: Run, max_orders: int = 2) -> str:
    """For the first sequences: each context's questions with the closed-book answer right after its own
    update and after the last update of the sequence."""
    steps = [r for r in run.of(StepRecord) if r.answers]
    blocks = []
    for variant, order in sorted({(r.variant, r.order) for r in steps})[: max_orders * 2]:
        mine = sorted((r for r in steps if r.variant == variant and r.order == order), key=lambda r: r.step)
        if not mine:
            continue
        last = mine[-1]
        rows = []
        for position, record in enumerate(mine):
            for j, q in enumerate(record.answers[position]):
                final = last.answers[position][j] if position < len(last.answers) else None
                rows.append([esc(position + 1), esc(record.title), esc(q["question"]), esc(" | ".join(q["answers"])),
                             esc(f"{q['prediction']} ({q['score']:.2f})"),
                             esc(f"{final['prediction']} ({final['score']:.2f})") if final else "\u2013"])
        blocks.append(f"<h3>{esc(variant)}, order {order + 1} (after {len(mine)} updates)</h3>\n"
                      + table(["learned", "title", "question", "gold", "right after its update", "after the last"],
                              rows, {0}))
    if not blocks:
        return ""
    return section("probes", "Questions before forgetting and after", "Each question's closed-book answer (with its "
                   "score) right after its own context was learned, and after the last update.", *blocks)


SECTIONS = (forgetting_section, probes_section)
