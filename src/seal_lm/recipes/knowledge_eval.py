"""`seal eval`: the paper's single-passage table on any passage set.

For each passage and condition, closed-book accuracy on its questions (mode "single", the paper's
single-passage setting, one LoRA update per passage; mode "cpt", continued pretraining, one update
on the pooled training data of `docs` passages, after which all their questions are asked):
  base       - the model as it is;
  passage    - after a LoRA update on the passage alone;
  self-edit  - after a LoRA update on the passage plus the model's own self-edit(s);
  teacher    - after a LoRA update on the passage plus self-edits written by another model.
Every (passage, condition) is one JSON line in the run directory, appended as soon as its group of
passages finishes; rerunning with the same --out resumes and skips what is done.
With `judge` set, an LLM judge (seal_lm.judge) grades every answer as well, and the summary says how
often it agrees with each string grader.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from seal_lm.data import Passage, select_passages
from seal_lm.domains.knowledge import SelfEdit, answer_questions, write_self_edits
from seal_lm.errors import SealError
from seal_lm.formats.knowledge import DEFAULT_FORMAT, get_format, training_sequences
from seal_lm.generation import Generator, SamplingParams, make_generator
from seal_lm.grading import GRADERS
from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob
from seal_lm.judge import (
    CACHE_FILE,
    JUDGE,
    JudgeSettings,
    LLMJudge,
    agreement,
    build_judge,
)
from seal_lm.models import LoadedModel, ModelSettings, display_name, load_model
from seal_lm.runs import RunDir, derived_seed
from seal_lm.stats import mean_with_interval

CONDITIONS = ("base", "passage", "self-edit", "teacher")
MODES = ("single", "cpt")

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Everything that determines a `seal eval` run; written to the run directory as config.json."""

    data: str | None = None  # None: the demo corpus' validation split
    skip: int = 0  # leave out the first passages (e.g. those a training run learns from)
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
    passages_per_batch: int = 8  # passages whose self-edits, inner loops and answers are batched together
    adapters_per_pass: int = 16  # inner loops trained together in one multi-adapter pass (memory vs speed)
    mode: str = "single"  # "single": one update per passage; "cpt": one update per pool of `docs` passages
    docs: int | None = None  # cpt pool size (None: every evaluated passage in one pool)
    judge: JudgeSettings | None = None  # an LLM judge grades every answer too (grader "judge")

    @property
    def graders(self) -> tuple[str, ...]:
        """The scores every question gets: the string graders, and the judge's when there is one."""
        return (*GRADERS, JUDGE) if self.judge else tuple(GRADERS)

    def validate(self) -> None:
        get_format(self.format)
        if self.judge:
            self.judge.validate()
        if self.grader == JUDGE and not self.judge:
            raise SealError("grader 'judge' needs a judge: --judge MODEL, or --judge-url URL --judge-model NAME")
        if self.grader not in self.graders:
            raise SealError(f"unknown grader '{self.grader}' (choose one of: {', '.join(GRADERS)}, {JUDGE})")
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown:
            raise SealError(f"unknown condition(s) {', '.join(unknown)} (choose from: {', '.join(CONDITIONS)})")
        if "teacher" in self.conditions and not self.teacher:
            raise SealError("condition 'teacher' needs --teacher MODEL")
        if min(self.self_edits_per_passage, self.passages_per_batch, self.adapters_per_pass) < 1:
            raise SealError("self_edits_per_passage, passages_per_batch and adapters_per_pass must be at least 1")
        if self.mode not in MODES:
            raise SealError(f"unknown mode '{self.mode}' (choose one of: {', '.join(MODES)})")
        if self.docs is not None and self.docs < 1:
            raise SealError(f"docs must be at least 1 (got {self.docs})")

    def group_size(self, n_passages: int) -> int:
        """Passages handled together: a batch (single mode) or one pooled update (cpt mode)."""
        return (self.docs or n_passages) if self.mode == "cpt" else self.passages_per_batch

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cpt_defaults() -> EvalConfig:
    """Continued pretraining as in SEAL's code: 5 self-edits per passage, 3 epochs, 8 sequences per step
    (their 4 x 2 gradient accumulation), lr 1e-3."""
    return EvalConfig(mode="cpt", self_edits_per_passage=5, inner_loop=InnerLoopSettings(epochs=3, batch_size=8))


def load_eval_passages(config: EvalConfig) -> list[Passage]:
    return select_passages(config.data, "validation", config.skip, config.limit)


class KnowledgeEvaluator:
    """Runs one condition for a group of passages at a time: self-edits for all of them in one
    batched generation, all their inner loops in one multi-adapter pass, all answers in one batch."""

    def __init__(self, config: EvalConfig, loaded: LoadedModel, teacher: Generator | None = None,
                 judge: LLMJudge | None = None):
        self.config = config
        self.loaded = loaded
        self.generator = make_generator(loaded)
        self.updater = LoraUpdater(loaded, config.inner_loop, max_adapters=config.adapters_per_pass)
        self.teacher = teacher
        self.judge = judge
        self.fmt = get_format(config.format)

    def run(self, passages: list[Passage], condition: str, round_: int = 0) -> list[dict[str, Any]]:
        """Records for `passages` under `condition`; `round_` > 0 marks a SEAL policy after that RL round."""
        started = time.perf_counter()
        # The seed does not depend on the round: every round's self-edits are sampled with the same
        # random numbers, which makes rounds differ less by chance.
        seed = derived_seed(self.config.seed, condition, *(p.id for p in passages))
        records: list[dict[str, Any]] = [
            {"kind": "eval", "round": round_, "passage_id": p.id, "title": p.title, "condition": condition}
            for p in passages
        ]
        if condition == "base":
            samples = [[graded] for graded in answer_questions(self.generator, passages)]
        else:
            if condition == "passage":
                edits: list[list[SelfEdit]] = [[] for _ in passages]
            else:
                writer = self.teacher if condition == "teacher" else self.generator
                params = dataclasses.replace(self.config.self_edit_sampling, n=self.config.self_edits_per_passage,
                                             seed=seed)
                edits = write_self_edits(writer, passages, self.fmt, params)
            if self.config.mode == "cpt":  # one update on everything the pool's passages contribute
                sequence_sets = [[training_sequences(p, [e.parsed for e in es])] for p, es in zip(passages, edits)]
                pooled = [seq for sets in sequence_sets for seq in sets[0]]
                result, = self.updater.train([TrainJob(pooled, dataclasses.replace(self.config.inner_loop, seed=seed))])
                per_passage = [[result] for _ in passages]
            else:  # one update per passage and self-edit, all trained together
                sequence_sets = [[training_sequences(p, [e.parsed]) for e in es] or [training_sequences(p)]
                                 for p, es in zip(passages, edits)]
                jobs = [TrainJob(seqs, dataclasses.replace(self.config.inner_loop, seed=seed + j))
                        for j, seqs in enumerate(s for sets in sequence_sets for s in sets)]
                results = iter(self.updater.train(jobs))
                per_passage = [[next(results) for _ in sets] for sets in sequence_sets]
            # Answer sample j of every passage in one batch, each passage with its own adapter.
            n_samples = max(len(r) for r in per_passage)
            answered = [answer_questions(self.generator, passages, [r[j].adapter for r in per_passage])
                        for j in range(n_samples)]
            samples = [[answered[j][i] for j in range(len(per_passage[i]))] for i in range(len(passages))]
            for record, es, sets, rs in zip(records, edits, sequence_sets, per_passage):
                record["self_edits"] = [e.as_record() for e in es]
                record["training"] = [
                    {"sequences": seqs, "epoch_losses": r.epoch_losses, "tokens": r.train_tokens, "seconds": r.seconds}
                    for seqs, r in zip(sets, rs)
                ]
        seconds = (time.perf_counter() - started) / len(passages)  # without the judge: grading is not SEAL's cost
        for record, passage_samples in zip(records, samples):
            record["questions"] = _merge_samples(passage_samples)
        if self.judge:
            self._judge([q for record in records for q in record["questions"]])
        for record in records:
            record["accuracy"] = {
                g: sum(q["scores"][g] for q in record["questions"]) / len(record["questions"])
                for g in self.config.graders
            }
            record["seconds"] = seconds
        return records

    def _judge(self, questions: list[dict]) -> None:
        """The judge's score of each question, averaged over its predictions; one batch for the whole group."""
        items = [(q["question"], q["answers"], p) for q in questions for p in q["predictions"]]
        verdicts = iter(self.judge.grade(items))
        for q in questions:
            q["scores"][JUDGE] = sum(next(verdicts) for _ in q["predictions"]) / len(q["predictions"])


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
    run = RunDir(out, config.as_dict())
    evaluate_round(config, None, 0, run, show_progress, label)
    summary = summarize(run.records, config)
    run.write_summary(summary)
    return summary


def evaluate_round(config: EvalConfig, model: LoadedModel | None, round_: int, run: RunDir,
                   show_progress: bool = True, label: str = "evaluation") -> None:
    """Append the records of round `round_` that `run` lacks: the configured conditions before RL
    (round 0), the self-edit condition of the round's policy after it. `model` None: load config.model."""
    passages = load_eval_passages(config)
    conditions = config.conditions if round_ == 0 else ("self-edit",)
    done = {(r["passage_id"], r["condition"]) for r in run.records if _is_eval(r) and r.get("round", 0) == round_}
    size = config.group_size(len(passages))
    groups = [passages[i : i + size] for i in range(0, len(passages), size)]
    # A (group, condition) unit is redone whole if any of its passages is missing, so that a resumed
    # run samples exactly what an uninterrupted one would; only the missing records are appended.
    todo = [(g, c) for g in groups for c in conditions if any((p.id, c) not in done for p in g)]
    if not todo:
        return
    loaded = model or load_model(config.model)
    teacher = None
    if any(c == "teacher" for _, c in todo):
        teacher = make_generator(load_model(dataclasses.replace(config.model, name=config.teacher)))
    judge = build_judge(config.judge, config.model, run.path / CACHE_FILE) if config.judge else None
    evaluator = KnowledgeEvaluator(config, loaded, teacher, judge)
    total = len(passages) * len(conditions)
    try:
        with tqdm(total=total, initial=total - sum(len(g) for g, _ in todo), desc=label, unit="passage",
                  disable=not show_progress) as bar:
            for group, condition in todo:
                bar.set_postfix_str(condition)
                for record in evaluator.run(group, condition, round_):
                    if (record["passage_id"], condition) not in done:
                        run.append(record)
                bar.update(len(group))
    finally:
        if judge:
            judge.close()
            log.info("judge %s: %d prompts sent, %d answers from the cache, %d unparsed (counted as no)",
                     judge.name, judge.stats.calls, judge.stats.cache_hits, judge.stats.unparsed)


def _is_eval(record: dict[str, Any]) -> bool:
    return record.get("kind", "eval") == "eval"  # records of early runs carry no kind


def summarize(records: list[dict], config: EvalConfig) -> dict[str, Any]:
    """Per condition (and per SEAL round): accuracy under every grader with 95% intervals, counts and
    time per passage."""
    wanted = {p.id for p in load_eval_passages(config)}
    evals = [r for r in records if _is_eval(r) and r["passage_id"] in wanted]
    rounds = sorted({r.get("round", 0) for r in evals} - {0})
    rows = {}
    for key, round_, condition in [(c, 0, c) for c in config.conditions] + [(f"round-{n}", n, "self-edit") for n in rounds]:
        recs = [r for r in evals if r["condition"] == condition and r.get("round", 0) == round_]
        if not recs:
            continue
        questions = [q for r in recs for q in r["questions"]]
        statuses = Counter(e["status"] for r in recs for e in r.get("self_edits", []))
        rows[key] = {
            "label": condition_label(condition, config) if round_ == 0 else f"SEAL round {round_}",
            "passages": len(recs),
            "questions": len(questions),
            "seconds_per_passage": sum(r["seconds"] for r in recs) / len(recs),
            "accuracy": {g: mean_with_interval([q["scores"][g] for q in questions]).as_dict() for g in config.graders},
            "self_edit_status": dict(statuses),
        }
    setting = ("single passage: one LoRA update per passage" if config.mode == "single" else
               f"continued pretraining: one LoRA update per {config.docs or len(wanted)} pooled passages")
    summary = {"grader": config.grader, "model": display_name(config.model.name), "setting": setting,
               "conditions": rows}
    if config.judge:
        summary["judge_agreement"] = agreement(evals)
    return summary


def condition_label(condition: str, config: EvalConfig) -> str:
    return {
        "base": "base model",
        "passage": "train on passage",
        "self-edit": "passage + self-edit",
        "teacher": f"passage + self-edit by {config.teacher}",
    }[condition]
