"""A run directory as the report reads it: its config, typed records and summary, never modified."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from seal_lm.domains import domain_class
from seal_lm.errors import SealError
from seal_lm.records import (
    PolicyUpdateRecord,
    Record,
    RolloutRecord,
    SelfCheckBeforeRecord,
    SelfCheckQuestionsRecord,
    StepRecord,
    read_records,
    record_types,
)
from seal_lm.report.plots import Plots
from seal_lm.runs import CONFIG_FILE, RESULTS_FILE, SUMMARY_FILE, read_config

R = TypeVar("R", bound=Record)


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    records: list[Record]
    summary: dict[str, Any] | None  # None while the run has not written one
    plots: Plots

    @property
    def command(self) -> str:
        return self.config.get("command", "eval")

    @property
    def domain(self) -> str:
        return self.config.get("domain", "knowledge")

    def of(self, kind: type[R]) -> list[R]:
        return [r for r in self.records if isinstance(r, kind)]


def open_run(path: Path, out_dir: Path) -> Run:
    for name in (CONFIG_FILE, RESULTS_FILE):
        if not (path / name).is_file():
            raise SealError(f"{path / name}: not a run directory (no {name})")
    config = read_config(path)
    types = record_types(domain_class(config.get("domain", "knowledge")).eval_record, RolloutRecord,
                         PolicyUpdateRecord, StepRecord, SelfCheckQuestionsRecord, SelfCheckBeforeRecord)
    summary = None
    if (path / SUMMARY_FILE).is_file():
        try:
            summary = json.loads((path / SUMMARY_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SealError(f"{path / SUMMARY_FILE}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return Run(path, config, read_records(path / RESULTS_FILE, types), summary, Plots(out_dir))
