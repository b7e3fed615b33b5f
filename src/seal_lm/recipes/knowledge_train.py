"""`seal train`: ReST-EM for knowledge incorporation, with the `seal eval` table before and after each round.

The knowledge domain for the outer loop: a context is a training passage, a self-edit is a list of
implications (or another format), the reward is closed-book accuracy on the passage's questions
after a LoRA update on passage + self-edit, and the baseline is the same after an update on the
passage alone (what a self-edit has to beat to be kept).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seal_lm.data import Passage, select_passages
from seal_lm.domains.knowledge import answer_questions
from seal_lm.errors import SealError
from seal_lm.formats.knowledge import get_format, parse_completion, training_sequences
from seal_lm.generation import Prompt, SamplingParams, make_generator
from seal_lm.inner_loop import LoraUpdater, TrainJob
from seal_lm.models import LoadedModel
from seal_lm.recipes.knowledge_eval import EvalConfig, evaluate_round, summarize
from seal_lm.executors import ExecutorSettings
from seal_lm.recipes.rest_em import RestEmSettings, Scored, run_rest_em
from seal_lm.runs import RunDir


@dataclass
class TrainConfig:
    """Everything that determines a `seal train` run; written to the run directory as config.json.

    `eval` holds the model, self-edit format and sampling, inner loop, grader and the held-out
    passages; `rest_em` the outer loop."""

    eval: EvalConfig = field(default_factory=EvalConfig)
    rest_em: RestEmSettings = field(default_factory=RestEmSettings)
    train_data: str | None = None  # None: the demo corpus' train split
    train_skip: int = 0
    train_limit: int | None = None
    domain: str = "knowledge"

    def validate(self) -> None:
        self.eval.validate()
        self.rest_em.validate()
        if self.eval.grader == "judge":  # thousands of rewards per round: judging each would dwarf the inner loops
            raise SealError("seal train: ReST-EM rewards need a string grader (exact, f1, contains); "
                            "add --judge to have held-out answers judged as well")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def preset(name: str) -> TrainConfig:
    """Named starting configurations; command-line flags override them."""
    if name == "paper":
        return TrainConfig()
    if name == "cpu-demo":
        # The whole loop on the embedded model and the demo corpus in under 30 minutes on 2 CPU cores:
        # fewer passages, samples and inner-loop repeats than the paper, same algorithm and LoRA settings.
        return TrainConfig(
            eval=EvalConfig(limit=6, self_edit_sampling=SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=160)),
            rest_em=RestEmSettings(contexts_per_round=5, samples_per_context=3, reward_repeats=1, contexts_per_batch=5),
        )
    raise SealError(f"unknown preset '{name}' (choose one of: {', '.join(PRESETS)})")


PRESETS = ("paper", "cpu-demo")


class KnowledgeDomain:
    """Knowledge incorporation as the outer loop sees it (see `rest_em.Domain`)."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.fmt = get_format(config.eval.format)
        self.sampling = config.eval.self_edit_sampling
        self._passages = select_passages(config.train_data, "train", config.train_skip, config.train_limit)

    def training_contexts(self) -> Sequence[Passage]:
        return self._passages

    def self_edit_prompt(self, context: Passage) -> Prompt:
        return self.fmt.prompt(context)

    def score(self, model: LoadedModel, contexts: Sequence[Passage], completions: list[list[str]],
              repeats: int, seed: int) -> list[Scored]:
        """All inner loops of the group in one multi-adapter pass: per passage, `repeats` updates on the
        passage alone (the baseline) and `repeats` per self-edit; then every adapted model answers."""
        settings = self.config.eval.inner_loop
        units: list[tuple[int, int, list[str]]] = []  # (passage, self-edit or -1 for the baseline, sequences)
        parsed = [[parse_completion(c, self.fmt) for c in outs] for outs in completions]
        for i, passage in enumerate(contexts):
            units.append((i, -1, training_sequences(passage)))
            units.extend((i, j, training_sequences(passage, [p])) for j, p in enumerate(parsed[i]))
        jobs = [TrainJob(seqs, dataclasses.replace(settings, seed=seed + n * repeats + r))
                for n, (_, _, seqs) in enumerate(units) for r in range(repeats)]
        results = LoraUpdater(model, settings, max_adapters=self.config.eval.adapters_per_pass).train(jobs)
        graded = answer_questions(make_generator(model), [contexts[i] for i, _, _ in units for _ in range(repeats)],
                                  [r.adapter for r in results])
        grader = self.config.eval.grader
        accuracy = [sum(q["scores"][grader] for q in g) / len(g) for g in graded]
        runs: dict[tuple[int, int], list[float]] = {}
        for n, (i, j, _) in enumerate(units):
            runs[(i, j)] = accuracy[n * repeats : (n + 1) * repeats]
        out = []
        for i, outs in enumerate(completions):
            out.append(Scored(
                baseline=_mean(runs[(i, -1)]),
                rewards=[_mean(runs[(i, j)]) for j in range(len(outs))],
                details={"status": [p.status for p in parsed[i]], "items": [len(p.items) for p in parsed[i]],
                         "baseline_runs": runs[(i, -1)], "reward_runs": [runs[(i, j)] for j in range(len(outs))]},
            ))
        return out

    def evaluate(self, model: LoadedModel, round_: int, run: RunDir, show_progress: bool) -> None:
        label = "evaluation before RL" if round_ == 0 else f"round {round_}: evaluation"
        evaluate_round(self.config.eval, model, round_, run, show_progress, label)

    def summarize(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return summarize(records, self.config.eval)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def run_train(config: TrainConfig, out: str | Path, show_progress: bool = True,
              executor: ExecutorSettings | None = None) -> dict[str, Any]:
    """Run (or resume) ReST-EM into `out`; return the summary that is also written there."""
    config.validate()
    run = RunDir(out, config.as_dict())
    return run_rest_em(config.rest_em, KnowledgeDomain(config), config.eval.model, run, config.eval.seed, show_progress,
                       executor)

