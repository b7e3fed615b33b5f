"""Result tables for the terminal: accuracy with its 95% interval and the counts behind it."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from seal_lm.stats import Estimate, PairedDifference

PAIRED_FIELDS = ("mean", "low", "high", "p", "contexts", "items")


def eval_table(summary: dict[str, Any]) -> Table:
    """One row per condition, counted in the domain's units (passages and questions, tasks and test cases)."""
    grader, units = summary["grader"], summary["units"]
    table = Table(title=f"{summary['title']} ({summary['model']}, grader: {grader})", caption=summary.get("setting"))
    columns = [("condition", "left"), ("accuracy [95% CI]", "right"), (units["contexts"], "right"),
               (units["items"], "right"), (f"s / {units['context']}", "right")]
    for name, justify in columns:  # the label wraps, so that narrow terminals keep every number whole
        table.add_column(name, justify=justify, no_wrap=name != "condition", min_width=len(name))
    for row in summary["conditions"].values():
        estimate = Estimate(**row["accuracy"][grader])
        table.add_row(row["label"], str(estimate), str(row["contexts"]), str(row["items"]),
                      f"{row['seconds_per_context']:.1f}")
    return table


def print_eval_table(summary: dict[str, Any], console: Console | None = None) -> None:
    """The table, then how many self-edits were usable per row (valid JSON in range, for few-shot)."""
    console = console or Console()
    console.print(eval_table(summary))
    for row in summary["conditions"].values():
        statuses = row.get("self_edit_status") or {}
        if statuses:
            console.print(f"{row['label']}: usable self-edits {statuses.get('ok', 0)} of {sum(statuses.values())} "
                          f"({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))})")
        if row.get("invalid_samples") is not None:  # few-shot with SEAL's format: invalid JSON is drawn again
            console.print(f"{row['label']}: {row['invalid_samples']} invalid self-edit samples drawn again")
    if "judge_agreement" in summary:
        console.print(judge_agreement_line(summary["judge_agreement"]))
    print_paired(summary, console)


def print_paired(summary: dict[str, Any], console: Console) -> None:
    """Each paired difference (same questions, contexts resampled), then the run's headline comparison."""
    paired = summary.get("paired") or {}
    items = summary["units"]["items"]
    for key, d in paired.items():
        console.print(f"{d['label']}: {PairedDifference(**{k: d[k] for k in PAIRED_FIELDS})} "
                      f"({d['contexts']} {summary['units']['contexts']}, {d['items']} {items})")
    headline = summary.get("headline")
    if headline:
        d = PairedDifference(**{k: paired[headline][k] for k in PAIRED_FIELDS})
        verdict = ("significant: the 95% interval excludes 0" if d.significant else
                   "not significant: the 95% interval includes 0")
        console.print(f"[bold]headline[/bold]: {paired[headline]['label']} {d}, {verdict}")


def print_rounds(summary: dict[str, Any], console: Console | None = None) -> None:
    """One line per ReST-EM round: mean reward against the baseline, and for how many contexts the keep rule kept
    a self-edit (the rule `best` keeps one whatever its reward, so this is not how often one beat the baseline)."""
    console = console or Console()
    unit = summary["units"]["contexts"]
    for row in summary.get("rounds", []):
        console.print(f"round {row['round']}: mean reward {100 * row['mean_reward']:.1f}% vs baseline "
                      f"{100 * row['mean_baseline']:.1f}%; self-edits kept for {row['kept']} of {row['contexts']} "
                      f"{unit}")


def judge_agreement_line(agreement: dict[str, dict[str, Any]]) -> str:
    """How often the judge agrees with each string grader, with Cohen's kappa, in one line."""
    n = max((a["n"] for a in agreement.values()), default=0)
    if not n:
        return "judge agreement: no judged questions"
    kappa = lambda k: "n/a" if k is None else f"{k:.2f}"
    parts = [f"{g} {100 * a['agreement']:.1f}% (kappa {kappa(a['kappa'])})" for g, a in agreement.items()]
    return f"judge agreement with the string graders over {n} questions: {', '.join(parts)}"


def print_forgetting(summary: dict[str, Any], console: Console | None = None) -> None:
    """The forgetting matrix of each variant (rows: after update i; columns: context at position j),
    mean over orders with the spread, then final accuracies with their intervals and the refusals."""
    console = console or Console()
    grader, n, units = summary["grader"], summary["contexts"], summary["units"]
    for variant, m in summary["matrices"].items():
        table = Table(title=f"Forgetting matrix, {variant} ({summary['model']}, grader: {grader}, "
                            f"{m['orders']} orders, updates {summary['accumulate']}d)",
                      caption=f"row i: after update i; column j: the j-th {units['context']} learned; "
                              "mean ± sd over orders")
        table.add_column("after", justify="right")
        for j in range(n):
            table.add_column(f"p{j + 1}", justify="right")
        for i, (row, spread) in enumerate(zip(m["mean"], m["std"])):
            table.add_row(f"{i + 1}", *(f"{100 * v:.0f}±{100 * s:.0f}" if v is not None else "" for v, s in zip(row, spread)))
        console.print(table)
        console.print(f"{variant}: final accuracy on the first {units['context']} {Estimate(**m['final_first'])} "
                      f"(n={m['final_first']['n']} {units['items']}), on all {units['contexts']} "
                      f"{Estimate(**m['final_all'])} "
                      f"(n={m['final_all']['n']}); updates refused: {m['refused']} of {m['updates']}"
                      + (f", retried: {m['retried']}" if m["retried"] else ""))


def print_adapt(summary: dict[str, Any], console: Console | None = None) -> None:
    """What `seal adapt` learned: self-check accuracy per document, closed-book, before and after."""
    console = console or Console()
    show = lambda e: str(Estimate(**e)) if e else "no questions"
    table = Table(title=f"Self-check, closed-book ({summary['model']}, grader: {summary['grader']})",
                  caption="questions the model wrote about each document, graded against its own open-book answers")
    for name in ("document", "questions", "before [95% CI]", "after [95% CI]", "update"):
        table.add_column(name, justify="left" if name == "document" else "right")
    for row in summary["documents"]:
        table.add_row(row["title"], str(row["questions"]), show(row["before"]), show(row["after"]),
                      "accepted" if row["accepted"] else "refused by the guard")
    table.add_row("all", str(sum(r["questions"] for r in summary["documents"])), show(summary["before"]),
                  show(summary["after"]), f"{summary['refused']} refused")
    console.print(table)
    console.print(f"saved: {summary['saved'] or 'nothing (every update was refused)'}")
