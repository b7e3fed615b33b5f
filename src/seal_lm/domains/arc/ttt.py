"""Test-time training on one task and prediction by voting over invertible views.

A configuration (from a self-edit, or from the oracle's search) becomes one inner-loop job: LoRA
on the task's augmented leave-one-out examples. The adapted model then answers the test input
under every voting view (rotations, flips, ...); each answer is mapped back and the majority wins.
All jobs of a batch train together and all their views are answered in one batched generation.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from seal_lm.adapters import Adapter
from seal_lm.domains.arc.augment import Augmentation, build_training_examples, vote
from seal_lm.domains.arc.grids import Grid, task_prompt_text, text_to_grid
from seal_lm.domains.arc.tasks import Task
from seal_lm.domains.arc.formats import TTTConfig
from seal_lm.generation import Generator, Prompt, SamplingParams
from seal_lm.inner_loop import Example, InnerLoopSettings, TrainJob


def grid_prompt(train_pairs: Sequence[tuple[Grid, Grid]], test_input: Grid) -> Prompt:
    """The same text for training examples and predictions, so test-time training matches its use."""
    text = task_prompt_text(train_pairs, test_input)
    return Prompt(messages=(("user", text),), text=text)


def ttt_job(task: Task, config: TTTConfig, settings: InnerLoopSettings, max_examples: int, seed: int) -> TrainJob:
    """The inner-loop job a configuration asks for: its augmentations, loss, learning rate and epochs."""
    pairs = build_training_examples(task, config.augmentations, random.Random(seed), max_examples)
    sequences = [Example(Prompt(messages=(("user", p),), text=p), c, train_on_prompt=config.loss == "all")
                 for p, c in pairs]
    return TrainJob(sequences, dataclasses.replace(settings, learning_rate=config.learning_rate,
                                                   epochs=config.epochs, seed=seed))


def answer_length(task: Task) -> int:
    """New tokens enough for the largest grid in sight, one token per cell and row end, plus slack."""
    grids = [g for pair in task.train for g in pair] + [task.test_input]
    side = max(max(len(g), len(g[0])) for g in grids)
    return min(2 * side * (side + 1) + 16, 2048)


def predict(generator: Generator, tasks: Sequence[Task], adapters: Sequence[Adapter | None],
            views: Sequence[Augmentation]) -> list[Grid | None]:
    """One voted prediction per (task, adapter) pair; all views of all pairs in one batched call."""
    prompts, routed = [], []
    for task, adapter in zip(tasks, adapters):
        for view in views:
            shown = [(view.apply(x), view.apply(y)) for x, y in task.train]
            prompts.append(grid_prompt(shown, view.apply(task.test_input)))
            routed.append(adapter)
    longest = max(answer_length(t) for t in tasks)
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=longest, stop=("\n\n",))
    outputs = generator.generate(prompts, params, routed)
    predictions = []
    for i in range(len(tasks)):
        answers = outputs[i * len(views) : (i + 1) * len(views)]
        mapped = []
        for view, (text,) in zip(views, answers):
            grid = text_to_grid(text)
            mapped.append(view.invert(grid) if grid is not None else None)
        predictions.append(vote(mapped))
    return predictions
