"""The evaluation table of any domain: accuracy per condition with its 95% interval, from the summary."""

from __future__ import annotations

from seal_lm.report.page import esc, estimate_text, fmt, section, table
from seal_lm.report.plots import difference_bars, interval_bars
from seal_lm.report.run import Run
from seal_lm.stats import Estimate


def accuracy_section(run: Run) -> str:
    rows = (run.summary or {}).get("conditions") or {}
    if not rows:
        return ""
    grader, units = run.summary["grader"], run.summary["units"]
    with_status = any(row.get("self_edit_status") for row in rows.values())
    header = ["condition", "accuracy [95% CI]", units["contexts"], units["items"], f"s / {units['context']}"]
    body = []
    for row in rows.values():
        cells = [esc(row["label"]), esc(estimate_text(row["accuracy"][grader])), esc(row["contexts"]),
                 esc(row["items"]), esc(fmt(row["seconds_per_context"], ".1f"))]
        if with_status:
            cells.append(esc(", ".join(f"{k} {v}" for k, v in sorted(row.get("self_edit_status", {}).items()))))
        body.append(cells)
    if with_status:
        header.append("self-edits")
    estimates = [Estimate(**row["accuracy"][grader]) for row in rows.values()]
    plotted = [(key, row, e) for (key, row), e in zip(rows.items(), estimates) if e.n]
    plot = interval_bars(run.plots, "accuracy", [row["label"] for _, row, _ in plotted], [e for *_, e in plotted],
                         f"accuracy, % ({grader}; 95% interval)", [key.startswith("round-") for key, *_ in plotted])
    note = (f"Accuracy under the {grader} grader over {units['items']}, with a 95% interval (Wilson for 0/1 scores, "
            f"normal approximation otherwise). {run.summary.get('setting', '')}")
    return section("accuracy", "Accuracy per condition", note, table(header, body, {1, 2, 3, 4}),
                   plot if plotted else "")


def paired_section(run: Run) -> str:
    """Paired differences between conditions that answered the same questions, contexts resampled."""
    summary = run.summary or {}
    paired = summary.get("paired") or {}
    if not paired:
        return ""
    units = summary["units"]
    rows = [[esc(d["label"]), esc(f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"),
             esc(f"{d['p']:.3f}"), esc(d["contexts"]), esc(d["items"]),
             esc("yes" if d["low"] > 0 or d["high"] < 0 else "no")] for d in paired.values()]
    plot = difference_bars(run.plots, "paired", [d["label"] for d in paired.values()],
                           [d["mean"] for d in paired.values()], [d["low"] for d in paired.values()],
                           [d["high"] for d in paired.values()], "difference, points (95% interval)")
    headline = paired.get(summary.get("headline") or "")
    note = (f"A - B over the {units['items']} both conditions answered: 95% interval from a bootstrap that resamples "
            f"{units['contexts']}, two-sided p from flipping the sign of each {units['context']}'s differences.")
    if headline:
        verdict = "significant" if headline["low"] > 0 or headline["high"] < 0 else "not significant"
        note += f" Headline: {headline['label']} is {verdict}."
    return section("paired", "Paired differences", note,
                   table(["A - B", "points [95% CI]", "p", units["contexts"], units["items"], "significant"], rows,
                         {1, 2, 3, 4}), plot)


def judge_section(run: Run) -> str:
    """How often the LLM judge agrees with each string grader (present when the run had a judge)."""
    agreement = (run.summary or {}).get("judge_agreement")
    if not agreement:
        return ""
    rows = [[esc(grader), esc("\u2013" if a["agreement"] is None else f"{100 * a['agreement']:.1f}%"),
             esc(fmt(a["kappa"], ".2f")), esc(a["n"])] for grader, a in agreement.items()]
    note = ("Per question, the LLM judge's verdict against each string grader's score (both 0/1 at 0.5): the share "
            "of questions where they agree, and Cohen's kappa, the agreement beyond chance (1: always agree, 0: no "
            "better than chance).")
    return section("judge", "Judge agreement", note, table(["grader", "agreement", "kappa", "n"], rows, {1, 2, 3}))


SECTIONS = (accuracy_section, paired_section, judge_section)
