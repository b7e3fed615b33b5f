"""Result tables for the terminal: accuracy with its 95% interval and the counts behind it."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from seal_lm.stats import Estimate


def eval_table(summary: dict[str, Any], title: str = "Closed-book accuracy") -> Table:
    grader = summary["grader"]
    table = Table(title=f"{title} ({summary['model']}, grader: {grader})", caption=summary.get("setting"))
    for name, justify in [("condition", "left"), ("accuracy [95% CI]", "right"), ("passages", "right"),
                          ("questions", "right"), ("s / passage", "right")]:
        table.add_column(name, justify=justify, no_wrap=True)
    for row in summary["conditions"].values():
        estimate = Estimate(**row["accuracy"][grader])
        table.add_row(row["label"], str(estimate), str(row["passages"]), str(row["questions"]),
                      f"{row['seconds_per_passage']:.1f}")
    return table


def print_eval_table(summary: dict[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(eval_table(summary))
