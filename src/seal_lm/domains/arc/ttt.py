"""Test-time training on one task and prediction by voting over views.

A configuration (from a self-edit, or from the oracle's search) becomes one inner-loop job: LoRA
on the task's augmented leave-one-out examples, built as seal-lm builds them (augment.py) or as
SEAL's code does (reference_augment.py). The adapted model then answers the test input under
several views; each answer is mapped back and voted on: seal-lm's majority over the 8 symmetries of
the square (`predict`), or SEAL's leave-one-out and geometric views with its hierarchical vote and
two attempts, every test case of the task (`predict_reference`). A task is written as text in one of
two formats (`TASK_FORMATS`), the same for training and prediction so that training matches its use.
All jobs of a batch train together and all their views are answered in one batched generation.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import seal_lm.domains.arc.reference as reference  # noqa: PLR0402 (the package imports this module)
from seal_lm.adapters import Adapter
from seal_lm.domains.arc.augment import Augmentation, build_training_examples, vote
from seal_lm.domains.arc.formats import TTTConfig
from seal_lm.domains.arc.grids import Grid, grid_to_text, task_prompt_text, text_to_grid
from seal_lm.domains.arc.reference_augment import prediction_views, ttt_examples
from seal_lm.domains.arc.tasks import Task
from seal_lm.generation import Generator, Prompt, SamplingParams
from seal_lm.inner_loop import Example, InnerLoopSettings, TrainJob

MAX_RAW_CHARS = 400  # of each view's raw answer kept in a record


def grid_prompt(train_pairs: Sequence[tuple[Grid, Grid]], test_input: Grid) -> Prompt:
    """The same text for training examples and predictions, so test-time training matches its use."""
    text = task_prompt_text(train_pairs, test_input)
    return Prompt(messages=(("user", text),), text=text)


@dataclass(frozen=True)
class TaskFormat:
    """How a task is written for test-time training and prediction, and how an answer is read back."""

    prompt: Callable[[Sequence[tuple[Grid, Grid]], Grid], Prompt]
    answer: Callable[[Grid], str]  # the completion trained on
    read: Callable[[str], Grid | None]
    stop: tuple[str, ...]  # where a predicted answer ends (besides EOS)
    chars_per_side: Callable[[int], int]  # length of the answer text for a side x side grid


TASK_FORMATS = {
    # rows of digits after "Input:" / "Output:", in one user turn; the answer ends at a blank line
    "seal": TaskFormat(grid_prompt, grid_to_text, text_to_grid, ("\n\n",), lambda side: 2 * side * (side + 1)),
    # SEAL's messages (arclib/messagers.py GPTTextMessageRepresenterV2, `--new_format`): numpy-printed arrays, the
    # answer "[[...]]#", ending at EOS only (inference/engine_vllm.py get_sampling_params)
    "reference": TaskFormat(reference.task_prompt, reference.answer_text, reference.read_grid, (),
                            lambda side: side * (2 * side + 1) + 1),
}


def training_pairs(task: Task, config: TTTConfig, data: str, task_format: TaskFormat, max_examples: int, seed: int,
                   fits: Callable[[Prompt, str], bool] | None = None) -> list[tuple[Prompt, str]]:
    """The (prompt, completion) pairs a configuration trains on: seal-lm's augmentations (`data` "seal", drawn
    with `seed`) or SEAL's (`data` "reference": its own fixed seed, `fits` filtering by length as its 8192-token
    limit does)."""
    if data == "reference":
        render = lambda t: (task_format.prompt(t[0], t[1][0]), task_format.answer(t[1][1]))
        return ttt_examples(task.train, config.augmentations, max_examples, fits, render=render)
    return build_training_examples(task, config.augmentations, random.Random(seed), max_examples,
                                   render=lambda context, x, y: (task_format.prompt(context, x), task_format.answer(y)))


def ttt_job(task: Task, config: TTTConfig, settings: InnerLoopSettings, max_examples: int, seed: int,
            data: str = "seal", task_format: str = "seal",
            fits: Callable[[Prompt, str], bool] | None = None) -> TrainJob:
    """The inner-loop job a configuration asks for: its augmentations, loss, learning rate and epochs."""
    pairs = training_pairs(task, config, data, TASK_FORMATS[task_format], max_examples, seed, fits)
    sequences = [Example(p, c, train_on_prompt=config.loss == "all") for p, c in pairs]
    return TrainJob(sequences, dataclasses.replace(settings, learning_rate=config.learning_rate,
                                                   epochs=config.epochs, seed=seed))


def answer_length(task: Task, task_format: str = "seal") -> int:
    """New tokens enough for the largest grid in sight, one token per character of its text, plus slack."""
    grids = [g for pair in task.train for g in pair] + [x for x, _ in task.tests]
    side = max(max(len(g), len(g[0])) for g in grids)
    return min(TASK_FORMATS[task_format].chars_per_side(side) + 16, 4096)


def predict(generator: Generator, tasks: Sequence[Task], adapters: Sequence[Adapter | None],
            views: Sequence[Augmentation], task_format: str = "seal") -> list[Grid | None]:
    """One voted prediction per (task, adapter) pair; all views of all pairs in one batched call."""
    fmt = TASK_FORMATS[task_format]
    prompts, routed = [], []
    for task, adapter in zip(tasks, adapters):
        for view in views:
            shown = [(view.apply(x), view.apply(y)) for x, y in task.train]
            prompts.append(fmt.prompt(shown, view.apply(task.test_input)))
            routed.append(adapter)
    longest = max(answer_length(t, task_format) for t in tasks)
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=longest, stop=fmt.stop)
    outputs = generator.generate(prompts, params, routed)
    predictions = []
    for i in range(len(tasks)):
        answers = outputs[i * len(views) : (i + 1) * len(views)]
        mapped = []
        for view, (text,) in zip(views, answers):
            grid = fmt.read(text)
            mapped.append(view.invert(grid) if grid is not None else None)
        predictions.append(vote(mapped))
    return predictions


def predict_reference(generator: Generator, tasks: Sequence[Task], adapters: Sequence[Adapter | None],
                      task_format: str = "reference") -> list[list[reference.CaseResult]]:
    """Per (task, adapter) pair, per test case of the task: SEAL's views answered greedily, each answer mapped
    back, the hierarchical vote's two attempts, and whether one is right (eval-self-edits.py, voting.py)."""
    fmt = TASK_FORMATS[task_format]
    prompts, routed, where = [], [], []
    for t, (task, adapter) in enumerate(zip(tasks, adapters)):
        for c, (test_input, _) in enumerate(task.tests):
            for view in prediction_views(task.train, test_input):
                prompts.append(fmt.prompt(view.train, view.test_input))
                routed.append(adapter)
                where.append((t, c, view))
    longest = max(answer_length(t, task_format) for t in tasks)
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=longest, stop=fmt.stop)
    outputs = generator.generate(prompts, params, routed)
    answered: dict[tuple[int, int], list[tuple[dict, tuple[str | None, Grid] | None]]] = {}
    for (t, c, view), (text,) in zip(where, outputs):
        grid = fmt.read(text)
        mapped = view.invert(grid) if grid is not None else None
        shown = {"examples": list(view.examples), "transform": view.transform, "text": text[:MAX_RAW_CHARS],
                 "grid": grid_to_text(mapped) if mapped is not None else None}
        answered.setdefault((t, c), []).append((shown, (view.inverter, mapped) if mapped is not None else None))
    results = []
    for t, task in enumerate(tasks):
        cases = []
        for c, (_, expected) in enumerate(task.tests):
            views = answered[(t, c)]
            attempts = reference.vote([o for _, o in views if o is not None])
            cases.append(reference.CaseResult([v for v, _ in views], attempts, reference.solved(attempts, expected)))
        results.append(cases)
    return results
