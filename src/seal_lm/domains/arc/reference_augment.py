"""SEAL's test-time-training data and prediction views, as its few-shot code builds them.

Augmenters follow few-shot/arclib/augmenters.py (GitHub Continual-Intelligence/SEAL, commit 4cb1e7d),
the families a self-edit switches on follow self-edit.py `get_augmenters`, the training tasks
self-edit.py `get_test_time_train_data` and `process_task`, the views inference/preprocess.py
`get_leave_n_test_task`. Random draws use numpy's RandomState(0) in the same sequence of calls as
there. One thing differs by necessity: the reference deduplicates with Python sets of tasks whose
hashes are of numpy bytes, which Python randomises per process, so the order in which later random
draws (colour permutations, which view a geometric transform starts from) meet the tasks changes
from run to run there; here tasks keep the order in which they were first made.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.random import RandomState

from seal_lm.domains.arc.grids import MAX_GRID_SIZE, Grid
from seal_lm.domains.arc.reference import answer_text, as_grid, task_prompt
from seal_lm.generation import Prompt

Pair = tuple[Grid, Grid | None]  # a test pair's output is None where it is not known
RefTask = tuple[tuple[Pair, ...], Pair]  # (demonstrations, test pair)
GridFn = Callable[[np.ndarray, RandomState | None], np.ndarray]
DATA_SEED = 0  # self-edit.py process_task(..., seed=0); preprocess.py get_leave_n_test_task(seed=0)
MAX_EXAMPLES = 250  # self-edit.py process_task(Nmax=250)
LEAVE_OUT = (1, 2)  # self-edit.py process_task(leave_n=[1, 2])
VIEW_PERMUTATIONS = 2  # eval-self-edits.py --permute_n default 2
VIEW_LEAVE_OUT = 1  # README.md and launch.sh: eval-self-edits.py --include_n=1


@dataclass(frozen=True)
class Augmenter:
    """One of arclib/augmenters.py's augmenters, named as its `str()`; a Chain has `parts` instead of `fn`."""

    name: str
    fn: GridFn | None = field(default=None, compare=False, repr=False)
    share_rng: bool = False  # every example gets its own copy of the generator (RandomTranslateXY)
    parts: tuple[Augmenter, ...] = ()

    def grid(self, grid: Grid, rng: RandomState | None = None) -> Grid:
        if self.parts:
            for part in self.parts:
                grid = part.grid(grid, rng)
            return grid
        return as_grid(self.fn(np.array(grid), rng))

    def apply_to_task(self, task: RefTask, rng: RandomState | None) -> RefTask:
        """Augmenter.apply_to_task (Chain: each part's in turn): every grid of every example, input first."""
        if self.parts:
            for part in self.parts:
                task = part.apply_to_task(task, rng)
            return task
        train, test = task
        if self.share_rng:  # copies: the caller's generator is not advanced
            rngs = [copy.deepcopy(rng) for _ in train]
            test_rng = copy.deepcopy(rng)
        else:
            rngs, test_rng = [rng] * len(train), rng
        return tuple(self._pair(p, r) for p, r in zip(train, rngs)), self._pair(test, test_rng)

    def _pair(self, pair: Pair, rng: RandomState | None) -> Pair:
        x, y = pair
        x = self.grid(x, rng)
        return x, (self.grid(y, rng) if y is not None else None)


def rotate(angle: int) -> Augmenter:
    """Rotate(angle): np.rot90, i.e. counter-clockwise."""
    return Augmenter(f"Rotate({angle})", lambda g, rng: np.rot90(g, k=angle // 90))


def flip(axis: int) -> Augmenter:
    """Flip(0): upside down; Flip(1): left to right."""
    return Augmenter(f"Flip({axis})", lambda g, rng: np.flipud(g) if axis == 0 else np.fliplr(g))


def reflect(axis: int, reverse: bool) -> Augmenter:
    """Reflect(axis, reverse): the grid and its mirror image joined along `axis` (0: below, 1: beside), the
    mirror image first when `reverse`."""
    def fn(g: np.ndarray, rng: RandomState | None) -> np.ndarray:
        mirrored = np.flipud(g) if axis == 0 else np.fliplr(g)
        return np.concatenate((mirrored, g) if reverse else (g, mirrored), axis=axis)

    return Augmenter(f"Reflect({axis}, reverse={reverse})", fn)


def _translate(g: np.ndarray, rng: RandomState | None) -> np.ndarray:
    shift_x = rng.randint(0, min(4, g.shape[0]))
    shift_y = rng.randint(0, min(4, g.shape[1]))
    return np.roll(g, (shift_x, shift_y), axis=(0, 1))


# RandomTranslateXY(): a random cyclic shift of 0-3 rows and 0-3 columns; each example draws from its own copy of
# the generator, its input first, so every example's input moves alike (same shape), and every output alike.
RANDOM_TRANSLATE = Augmenter("RandomTranslateXY()", _translate, share_rng=True)
TRANSPOSE = Augmenter("Transpose()", lambda g, rng: np.transpose(g))


def increase_resolution(factor: int) -> Augmenter:
    """IncreaseResolution(f): every cell an f x f block."""
    return Augmenter(f"IncreaseResolution({factor})",
                     lambda g, rng: np.repeat(np.repeat(g, factor, axis=0), factor, axis=1))


def increase_height(factor: int) -> Augmenter:
    """IncreaseHeight(f): every row f times (stretched in height)."""
    return Augmenter(f"IncreaseHeight({factor})", lambda g, rng: np.repeat(g, factor, axis=0))


def increase_width(factor: int) -> Augmenter:
    """IncreaseWidth(f): every column f times (stretched in width)."""
    return Augmenter(f"IncreaseWidth({factor})", lambda g, rng: np.repeat(g, factor, axis=1))


def repeat(axis: int, n: int) -> Augmenter:
    """Repeat(axis, n): the grid tiled n times below itself (0), beside itself (1), or n x n (2)."""
    def fn(g: np.ndarray, rng: RandomState | None) -> np.ndarray:
        if axis == 2:
            return np.concatenate([np.concatenate([g] * n, axis=0)] * n, axis=1)
        return np.concatenate([g] * n, axis=axis)

    return Augmenter(f"Repeat({axis}, {n})", fn)


def chain(*parts: Augmenter) -> Augmenter:
    return Augmenter(f"Chain([{', '.join(p.name for p in parts)}])", parts=parts)


# self-edit.py get_augmenters: what each family of a self-edit switches on, in its order (include_concat False).
FAMILY_AUGMENTERS: dict[str, tuple[Augmenter, ...]] = {
    "basic": (rotate(90), rotate(270), rotate(180), flip(0), flip(1), reflect(0, True), reflect(1, True),
              reflect(0, False), reflect(1, False), RANDOM_TRANSLATE, TRANSPOSE),
    "size": (increase_resolution(2), increase_height(2), increase_width(2)),
    "chain": tuple(chain(a, increase_resolution(2)) for a in (rotate(90), rotate(270), rotate(180), flip(0), flip(1),
                                                              TRANSPOSE)),
    "repeat": (repeat(0, 2), repeat(1, 2), repeat(2, 2)),
}


def get_augmenters(families: Sequence[str]) -> list[Augmenter]:
    """The augmenters of the families switched on, basic, size, chain, repeat in that order."""
    return [a for family, augmenters in FAMILY_AUGMENTERS.items() if family in families for a in augmenters]


def permute_colours(task: RefTask, rng: RandomState) -> RefTask:
    """PermuteColors: every colour but 0 that the task uses (test output included) goes to an unused colour while
    there are any, else swaps with another used one; the same map for every grid."""
    train, test = task
    colors: list[int] = []
    for x, y in train:
        colors += [v for row in x for v in row] + [v for row in y for v in row]
    colors += [v for row in test[0] for v in row] + ([v for row in test[1] for v in row] if test[1] is not None else [])
    used = set(colors) - {0}
    remaining = list(set(range(1, 10)) - used)
    colors = list(used)
    rng.shuffle(remaining)
    permuted = rng.permutation(colors).tolist()
    colour_map = {0: 0}
    for colour in colors:
        if colour in colour_map:
            continue
        if remaining:
            new = remaining.pop()
        else:
            new = permuted.pop()
            colour_map[new] = colour
            if colour in permuted:
                permuted.remove(colour)
        colour_map[colour] = new

    def recolour(grid: Grid | None) -> Grid | None:
        return None if grid is None else tuple(tuple(colour_map.get(v, v) for v in row) for row in grid)

    return tuple((recolour(x), recolour(y)) for x, y in train), (recolour(test[0]), recolour(test[1]))


def permute_examples(task: RefTask, rng: RandomState) -> RefTask:
    """PermuteExamples: the demonstrations in a random order."""
    train, test = task
    return tuple(train[i] for i in rng.permutation(len(train))), test


def _fits(task: RefTask) -> bool:
    """Task.max_height() <= 30 and max_width() <= 30, test pair included."""
    grids = [g for pair in (*task[0], task[1]) for g in pair if g is not None]
    return all(len(g) <= MAX_GRID_SIZE and len(g[0]) <= MAX_GRID_SIZE for g in grids)


def _unique(tasks: Sequence[RefTask]) -> list[RefTask]:
    return list(dict.fromkeys(tasks))


def leave_n_tasks(train: Sequence[Pair], n: int) -> list[RefTask]:
    """get_test_time_train_data's initial tasks: each demonstration i in turn is the test pair, shown with all
    the others but n - 1 of them (every choice of those), in their original order."""
    examples = tuple(train)
    tasks = []
    for i in range(len(examples)):
        indices = set(range(len(examples))) - {i}
        for comb in [indices - set(c) for c in itertools.combinations(indices, n - 1)]:
            tasks.append((tuple(examples[j] for j in comb), examples[i]))
    return tasks


def ttt_tasks(train: Sequence[Pair], augmenters: Sequence[Augmenter], n: int, permute_n: int = 1,
              seed: int = DATA_SEED) -> list[RefTask]:
    """self-edit.py get_test_time_train_data: the leave-n tasks, each under every augmenter (dropped where a grid
    grows past 30), deduplicated; then as many colour- (when there are augmenters) and example-permuted copies of
    each; the copies first, deduplicated again."""
    rng = RandomState(seed)
    initial = leave_n_tasks(train, n)
    augmented = []
    for augmenter in augmenters:
        for task in initial:
            task = augmenter.apply_to_task(task, rng)
            if _fits(task):
                augmented.append(task)
    augmented = _unique(augmented + initial)
    permuted = []
    for _ in range(permute_n):
        for task in augmented:
            new = permute_colours(task, rng) if augmenters else task
            permuted.append(permute_examples(new, rng))
    return _unique(permuted + augmented)


def task_example(task: RefTask) -> tuple[Prompt, str]:
    """A training task as the prompt and completion its messages make (arclib/messagers.py V2)."""
    train, (x, y) = task
    return task_prompt(train, x), answer_text(y)


def ttt_examples(train: Sequence[Pair], families: Sequence[str], max_examples: int = MAX_EXAMPLES,
                 fits: Callable[[Prompt, str], bool] | None = None, seed: int = DATA_SEED,
                 render: Callable[[RefTask], tuple[Prompt, str]] = task_example) -> list[tuple[Prompt, str]]:
    """self-edit.py process_task: leave-one-out then leave-two-out tasks (each list built with its own
    RandomState(seed)), those whose text `fits` (there: fewer than 8192 tokens) kept; more than `max_examples`
    are shuffled by a fresh RandomState(seed) and cut, fewer stay in order. `render` writes a task as text."""
    augmenters = get_augmenters(families)
    out: list[tuple[Prompt, str]] = []
    for n in LEAVE_OUT:
        examples = [render(t) for t in ttt_tasks(train, augmenters, n, permute_n=1, seed=seed)]
        out += [e for e in examples if fits is None or fits(*e)]
    if len(out) > max_examples:
        RandomState(seed).shuffle(out)
        out = out[:max_examples]
    return out


# ---- prediction views (inference/preprocess.py get_leave_n_test_task)

# The geometric views and the inverse that maps an answer back (augmenters.py `inverse`), named as the vote's
# categories are.
GEOMETRIC_VIEWS: tuple[tuple[Augmenter, str], ...] = (
    (TRANSPOSE, "Transpose()"), (flip(0), "Flip(0)"), (flip(1), "Flip(1)"), (rotate(90), "Rotate(270)"),
    (rotate(180), "Rotate(180)"))
INVERTERS: dict[str, Augmenter] = {"Transpose()": TRANSPOSE, "Flip(0)": flip(0), "Flip(1)": flip(1),
                                   "Rotate(270)": rotate(270), "Rotate(180)": rotate(180)}


@dataclass(frozen=True)
class View:
    """One prompt a test input is answered under: which demonstrations in which order, and the transform."""

    examples: tuple[int, ...]  # indices into the task's demonstrations, in the order shown
    transform: str | None  # the augmenter applied to every grid; None: as given
    inverter: str | None  # its inverse's name, the vote's category; None: "identity"
    train: tuple[tuple[Grid, Grid], ...] = field(repr=False)
    test_input: Grid = field(repr=False)

    @property
    def content(self) -> tuple:
        return self.train, self.test_input

    def prompt(self) -> Prompt:
        return task_prompt(self.train, self.test_input)

    def invert(self, grid: Grid) -> Grid:
        return INVERTERS[self.inverter].grid(grid) if self.inverter else grid


def prediction_views(train: Sequence[tuple[Grid, Grid]], test_input: Grid, n: int = VIEW_LEAVE_OUT,
                     permute_n: int = VIEW_PERMUTATIONS, seed: int = DATA_SEED) -> list[View]:
    """get_leave_n_test_task: every leave-n subset of the demonstrations and `permute_n` random reorderings of
    each, deduplicated; then Transpose, Flip(0), Flip(1), Rotate(90), Rotate(180), each applied to one of those
    drawn at random, unless that gives one already there. The test pair is compared by its input only (the
    reference also compares the true test output, which a prediction should not see)."""
    rng = RandomState(seed)
    pairs = tuple(train)
    indices = list(range(len(pairs)))
    orders = []
    for comb in [set(indices) - set(c) for c in itertools.combinations(indices, n)]:
        order = tuple(comb)
        orders.append(order)
        for _ in range(permute_n):
            orders.append(tuple(order[i] for i in rng.permutation(len(order))))
    plain = _unique_views([View(o, None, None, tuple(pairs[i] for i in o), test_input) for o in orders])
    seen = {v.content for v in plain}
    augmented = []
    for augmenter, inverter in GEOMETRIC_VIEWS:
        base = plain[rng.randint(0, len(plain))]  # rng.choice(test_tasks)
        view = View(base.examples, augmenter.name, inverter,
                    tuple((augmenter.grid(x), augmenter.grid(y)) for x, y in base.train), augmenter.grid(test_input))
        if view.content in seen:
            continue
        augmented.append(view)
    return _unique_views(augmented + plain)


def _unique_views(views: Sequence[View]) -> list[View]:
    first: dict[tuple, View] = {}
    for view in views:
        first.setdefault(view.content, view)
    return list(first.values())
