"""`seal eval`: the paper's single-passage table on any passage set.

For each passage and condition, closed-book accuracy on its questions:
  base       - the model as it is;
  passage    - after a LoRA update on the passage alone;
  self-edit  - after a LoRA update on the passage plus the model's own self-edit(s);
  teacher    - after a LoRA update on the passage plus self-edits written by another model.
Every (passage, condition) is one JSON line in the run directory, written as it finishes; rerunning
with the same --out resumes and skips what is done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from seal_lm.data import Passage, load_demo_corpus, load_passages
from seal_lm.domains.knowledge import answer_questions, write_self_edits
from seal_lm.errors import SealError
from seal_lm.formats.knowledge import DEFAULT_FORMAT, get_format, training_sequences
from seal_lm.generation import Generator, HFGenerator, SamplingParams
from seal_lm.grading import GRADERS
from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob
from seal_lm.models import LoadedModel, ModelSettings, display_name, load_model
from seal_lm.runs import RunDir
from seal_lm.stats import mean_with_interval

CONDITIONS = ("base", "passage", "self-edit", "teacher")


@dataclass
class EvalConfig:
    """Everything that determines a `seal eval` run; written to the run directory as config.json."""

    data: str | None = None  # None: the demo corpus' validation split
    limit: int | None = None
    seed: int = 0
    model: ModelSettings = field(default_factory=ModelSettings)
    teacher: str | None = None
    conditions: tuple[str, ...] = ("base", "passage", "self-edit")
    format: str = DEFAULT_FORMAT
    self_edits_per_passage: int = 1
    self_edit_sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=256)
    )
    grader: str = "contains"
    inner_loop: InnerLoopSettings = field(default_factory=InnerLoopSettings)

    def validate(self) -> None:
        get_format(self.format)
        if self.grader not in GRADERS:
            raise SealError(f"unknown grader '{self.grader}' (choose one of: {', '.join(GRADERS)})")
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown:
            raise SealError(f"unknown condition(s) {', '.join(unknown)} (choose from: {', '.join(CONDITIONS)})")
        if "teacher" in self.conditions and not self.teacher:
            raise SealError("condition 'teacher' needs --teacher MODEL")
        if self.self_edits_per_passage < 1:
            raise SealError("self_edits_per_passage must be at least 1")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_eval_passages(config: EvalConfig) -> list[Passage]:
    passages = load_passages(config.data) if config.data else load_demo_corpus("validation")
    passages = passages[: config.limit] if config.limit else passages
    if not passages:
        raise SealError(f"{config.data or 'demo corpus'}: no passages to evaluate")
    return passages


def derived_seed(seed: int, *parts: str) -> int:
    """A per-unit seed that depends on what the unit is, not on when it runs (so resume is exact)."""
    return int(hashlib.sha256("|".join([str(seed), *parts]).encode()).hexdigest()[:8], 16)


class KnowledgeEvaluator:
    """Runs the conditions for one passage at a time against one loaded model."""

    def __init__(self, config: EvalConfig, loaded: LoadedModel, teacher: Generator | None = None):
        self.config = config
        self.loaded = loaded
        self.generator = HFGenerator(loaded)
        self.updater = LoraUpdater(loaded, config.inner_loop)
        self.teacher = teacher
        self.fmt = get_format(config.format)

    def run(self, passage: Passage, condition: str) -> dict[str, Any]:
        started = time.perf_counter()
        seed = derived_seed(self.config.seed, passage.id, condition)
        record: dict[str, Any] = {"passage_id": passage.id, "title": passage.title, "condition": condition}
        if condition == "base":
            samples = [answer_questions(self.generator, [passage])[0]]
        else:
            writer = self.teacher if condition == "teacher" else self.generator
            edits = [] if condition == "passage" else self._self_edits(writer, passage, seed)
            record["self_edits"] = [e.as_record() for e in edits]
            sequence_sets = [training_sequences(passage, [e.parsed]) for e in edits] or [training_sequences(passage)]
            jobs = [
                TrainJob(seqs, dataclasses.replace(self.config.inner_loop, seed=seed + i))
                for i, seqs in enumerate(sequence_sets)
            ]
            results = self.updater.train(jobs)
            record["training"] = [
                {"sequences": seqs, "epoch_losses": r.epoch_losses, "tokens": r.train_tokens, "seconds": r.seconds}
                for seqs, r in zip(sequence_sets, results)
            ]
            samples = [answer_questions(self.generator, [passage], r.adapter)[0] for r in results]
        record["questions"] = _merge_samples(samples)
        record["accuracy"] = {
            g: sum(q["scores"][g] for q in record["questions"]) / len(record["questions"]) for g in GRADERS
        }
        record["seconds"] = time.perf_counter() - started
        return record

    def _self_edits(self, writer: Generator, passage: Passage, seed: int):
        params = dataclasses.replace(self.config.self_edit_sampling, n=self.config.self_edits_per_passage, seed=seed)
        return write_self_edits(writer, [passage], self.fmt, params)[0]


def _merge_samples(samples: list[list[dict]]) -> list[dict]:
    """One entry per question: every sample's prediction, and scores averaged over samples."""
    merged = []
    for per_sample in zip(*samples):
        first = per_sample[0]
        merged.append({
            "question": first["question"],
            "answers": first["answers"],
            "predictions": [q["prediction"] for q in per_sample],
            "scores": {g: sum(q["scores"][g] for q in per_sample) / len(per_sample) for g in GRADERS},
        })
    return merged


def run_eval(config: EvalConfig, out: str | Path, show_progress: bool = True, label: str = "seal eval") -> dict[str, Any]:
    """Run (or resume) an evaluation into `out`; return the summary that is also written there."""
    config.validate()
    passages = load_eval_passages(config)
    run = RunDir(out, config.as_dict())
    done = {(r["passage_id"], r["condition"]) for r in run.records}
    todo = [(p, c) for p in passages for c in config.conditions if (p.id, c) not in done]
    if todo:
        loaded = load_model(config.model)
        teacher = None
        if any(c == "teacher" for _, c in todo):
            teacher = HFGenerator(load_model(dataclasses.replace(config.model, name=config.teacher)))
        evaluator = KnowledgeEvaluator(config, loaded, teacher)
        for passage, condition in tqdm(todo, desc=label, unit="unit", disable=not show_progress):
            run.append(evaluator.run(passage, condition))
    summary = summarize(run.records, config, passages)
    run.write_summary(summary)
    return summary


def summarize(records: list[dict], config: EvalConfig, passages: list[Passage]) -> dict[str, Any]:
    """Per condition: accuracy under every grader with 95% intervals, counts and time per passage."""
    wanted = {p.id for p in passages}
    rows = {}
    for condition in config.conditions:
        recs = [r for r in records if r["condition"] == condition and r["passage_id"] in wanted]
        if not recs:
            continue
        questions = [q for r in recs for q in r["questions"]]
        statuses = Counter(e["status"] for r in recs for e in r.get("self_edits", []))
        rows[condition] = {
            "label": condition_label(condition, config),
            "passages": len(recs),
            "questions": len(questions),
            "seconds_per_passage": sum(r["seconds"] for r in recs) / len(recs),
            "accuracy": {g: mean_with_interval([q["scores"][g] for q in questions]).as_dict() for g in GRADERS},
            "self_edit_status": dict(statuses),
        }
    return {"grader": config.grader, "model": display_name(config.model.name), "conditions": rows}


def condition_label(condition: str, config: EvalConfig) -> str:
    return {
        "base": "base model",
        "passage": "train on passage",
        "self-edit": "passage + self-edit",
        "teacher": f"passage + self-edit by {config.teacher}",
    }[condition]
