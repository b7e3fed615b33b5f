"""Typed run records, and the one reader and writer of `results.jsonl`.

A run appends one JSON line per finished unit of work and flushes it to disk at once, so a run
killed at any moment loses at most the unit in progress. Each line is a record with a `kind`; a
domain adds its own evaluation record (a subclass of `EvalRecord`), and every reader of a run
(resume, summaries, the report) reads it through `read_records` with the run's record types.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from seal_lm.errors import SealError

R = TypeVar("R", bound="Record")


@dataclass
class Record:
    kind: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls: type[R], data: dict[str, Any], where: str = "record") -> R:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"kind"})
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in data
                         and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if unknown or missing:
            problem = f"unknown field(s) {', '.join(unknown)}" if unknown else f"missing field(s) {', '.join(missing)}"
            raise SealError(f"{where}: a '{cls.kind}' record with {problem}")
        return cls(**{k: v for k, v in data.items() if k != "kind"})


@dataclass
class EvalRecord(Record):
    """One context evaluated under one condition, in one round (0: before RL). Domains subclass it
    with what they record besides (questions and answers, grids and votes)."""

    kind: ClassVar[str] = "eval"
    round: int
    context_id: str
    title: str
    condition: str
    accuracy: dict[str, float]  # grader -> score of this context
    seconds: float
    self_edits: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RolloutRecord(Record):
    """ReST-EM's E-step for one training context: the K self-edits, their rewards and which were kept."""

    kind: ClassVar[str] = "rollout"
    round: int
    context_id: str
    title: str
    completions: list[str]
    rewards: list[float]
    baseline: float
    gains: list[float]
    kept: list[int]
    details: dict[str, Any]
    seconds: dict[str, float]  # generation and rewards, per context


@dataclass
class PolicyUpdateRecord(Record):
    """ReST-EM's M-step of one round: the policy SFT on the kept self-edits and its checkpoint."""

    kind: ClassVar[str] = "sft"
    round: int
    contexts: int
    contexts_kept: int
    examples: int
    epoch_losses: list[float] | None
    nll_before: float | None  # mean loss of the kept completions under the policy, before and after
    nll_after: float | None
    checkpoint: str | None  # directory in the run, None when nothing was kept
    seconds: float
    step_losses: list[float] = field(default_factory=list)  # each optimizer step's loss


@dataclass
class StepRecord(Record):
    """One update of a continual sequence: the self-edit, every attempt, and the scores afterwards."""

    kind: ClassVar[str] = "step"
    variant: str  # "guard" or "no-guard"
    order: int
    step: int
    context_id: str
    title: str
    order_ids: list[str]
    self_edit: dict[str, Any]
    attempts: list[dict[str, Any]]
    accepted: bool
    scores: list[list[float]]  # per context seen so far, its items' scores
    accuracy: list[float | None]
    seconds: float
    answers: list[list[dict[str, Any]]] = field(default_factory=list)  # per context seen so far: each item answered


@dataclass
class SelfCheckQuestionsRecord(Record):
    """`seal adapt`: the questions the model wrote about each document, with its open-book answers."""

    kind: ClassVar[str] = "self-check-questions"
    questions: dict[str, list[list[str]]]  # document id -> [question, reference answer] pairs


@dataclass
class SelfCheckBeforeRecord(Record):
    """`seal adapt`: closed-book scores of the self-check questions before any update."""

    kind: ClassVar[str] = "self-check-before"
    scores: list[list[float]]
    answers: list[list[dict[str, Any]]] = field(default_factory=list)  # per document: each question answered


RecordTypes = Mapping[str, type[Record]]


def record_types(*types: type[Record]) -> dict[str, type[Record]]:
    return {t.kind: t for t in types}


def read_jsonl(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The JSON objects of `path`, one per line (none if it does not exist). A last line cut short by a
    killed process is dropped, and with `repair` also cut from the file, so that appending goes on
    cleanly; any other bad line is an error naming the file and the line."""
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines(keepends=True)
    out, good_bytes = [], 0
    for number, line in enumerate(lines, 1):
        try:
            data = json.loads(line) if line.endswith(b"\n") else None
        except json.JSONDecodeError:
            data = None
        if data is None and number == len(lines):
            break  # torn: the process was killed while writing it
        if not isinstance(data, dict):
            raise SealError(f"{path}: line {number} is not a JSON object")
        out.append(data)
        good_bytes += len(line)
    if repair and good_bytes != path.stat().st_size:
        os.truncate(path, good_bytes)
    return out


def read_records(path: Path, types: RecordTypes, repair: bool = False) -> list[Record]:
    """The typed records of a `results.jsonl` (see `read_jsonl`); a record of a kind not in `types`, or
    with fields its type does not have, is an error naming the file and the line."""
    records = []
    for number, data in enumerate(read_jsonl(path, repair), 1):
        where = f"{path}: line {number}"
        if data.get("kind") not in types:
            raise SealError(f"{where}: unknown record kind {data.get('kind')!r} (expected one of: {', '.join(types)})")
        records.append(types[data["kind"]].from_json(data, where))
    return records


def append_jsonl(path: Path, items: Iterable[dict[str, Any]]) -> None:
    """Append JSON lines and force them to disk before returning."""
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(json.dumps(item, default=str) + "\n" for item in items))
        f.flush()
        os.fsync(f.fileno())
