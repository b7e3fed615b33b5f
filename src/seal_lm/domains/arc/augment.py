"""Invertible grid augmentations: more test-time-training data from a few demonstrations, and
several views of the test input whose predictions are mapped back and voted on.

A self-edit names augmentation families (`FAMILIES`: "basic", "size", "chain", "repeat"); an
augmentation is applied to every grid of a training example alike, so the example stays a
consistent task (a rotated task, a task in other colours, ...).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seal_lm.domains.arc.grids import (
    MAX_GRID_SIZE,
    Grid,
    grid_to_text,
    task_prompt_text,
)
from seal_lm.errors import SealError

if TYPE_CHECKING:
    from seal_lm.domains.arc.tasks import Task

Pair = tuple[Grid, Grid]
LeaveOneOut = tuple[tuple[Pair, ...], Grid, Grid]  # (context pairs, test input, test output)


@dataclass(frozen=True)
class Augmentation:
    """A named grid transformation with its inverse; equal (and hashed) by name."""

    name: str
    forward: Callable[[Grid], Grid] = field(compare=False, repr=False)
    backward: Callable[[Grid], Grid | None] = field(compare=False, repr=False)

    def apply(self, grid: Grid) -> Grid:
        return self.forward(grid)

    def invert(self, grid: Grid) -> Grid | None:
        """The grid this one came from, or None if no grid maps to its shape (a prediction of the wrong size)."""
        return self.backward(grid)


def _transpose(g: Grid) -> Grid:
    return tuple(zip(*g))


def _flip_h(g: Grid) -> Grid:
    return tuple(row[::-1] for row in g)


def _flip_v(g: Grid) -> Grid:
    return g[::-1]


def _rotate90(g: Grid) -> Grid:
    return tuple(zip(*g[::-1]))


def _rotate180(g: Grid) -> Grid:
    return tuple(row[::-1] for row in g[::-1])


def _rotate270(g: Grid) -> Grid:
    return tuple(zip(*g))[::-1]


def _anti_transpose(g: Grid) -> Grid:
    return _rotate180(_transpose(g))


IDENTITY = Augmentation("identity", lambda g: g, lambda g: g)
ROTATE90 = Augmentation("rotate90", _rotate90, _rotate270)  # clockwise
ROTATE180 = Augmentation("rotate180", _rotate180, _rotate180)
ROTATE270 = Augmentation("rotate270", _rotate270, _rotate90)
FLIP_H = Augmentation("flip_h", _flip_h, _flip_h)  # left <-> right
FLIP_V = Augmentation("flip_v", _flip_v, _flip_v)  # top <-> bottom
TRANSPOSE = Augmentation("transpose", _transpose, _transpose)
ANTI_TRANSPOSE = Augmentation("anti_transpose", _anti_transpose, _anti_transpose)

# The seven non-trivial symmetries of the square: with IDENTITY, the whole dihedral group.
BASIC: tuple[Augmentation, ...] = (ROTATE90, ROTATE180, ROTATE270, FLIP_H, FLIP_V, TRANSPOSE, ANTI_TRANSPOSE)


def translate(dy: int, dx: int) -> Augmentation:
    """Shift the content down `dy` rows and right `dx` columns, wrapping around (so nothing is lost)."""

    def shift(g: Grid, by_y: int, by_x: int) -> Grid:
        h, w = len(g), len(g[0])
        return tuple(tuple(g[(r - by_y) % h][(c - by_x) % w] for c in range(w)) for r in range(h))

    return Augmentation(f"translate({dy},{dx})", lambda g: shift(g, dy, dx), lambda g: shift(g, -dy, -dx))


def upscale(factor: int) -> Augmentation:
    """Each cell becomes a `factor` x `factor` block; the inverse keeps one cell per block."""
    if factor < 2:
        raise ValueError(f"upscale factor must be at least 2, got {factor}")

    def up(g: Grid) -> Grid:
        return tuple(tuple(cell for cell in row for _ in range(factor)) for row in g for _ in range(factor))

    def down(g: Grid) -> Grid | None:
        if len(g) % factor or len(g[0]) % factor:
            return None
        return tuple(row[::factor] for row in g[::factor])

    return Augmentation(f"upscale{factor}", up, down)


def _halve_height(g: Grid) -> Grid | None:
    return g[: len(g) // 2] if len(g) % 2 == 0 else None


def _halve_width(g: Grid) -> Grid | None:
    return tuple(row[: len(row) // 2] for row in g) if len(g[0]) % 2 == 0 else None


# The grid repeated below / beside itself; the inverse keeps the first half.
DOUBLE_HEIGHT = Augmentation("double_height", lambda g: g + g, _halve_height)
DOUBLE_WIDTH = Augmentation("double_width", lambda g: tuple(row + row for row in g), _halve_width)
SIZE: tuple[Augmentation, ...] = (upscale(2), DOUBLE_HEIGHT, DOUBLE_WIDTH)


def colour_permutation(perm: Sequence[int]) -> Augmentation:
    """Recolour cell value v as perm[v]; `perm` must be a permutation of 0..9."""
    perm = tuple(perm)
    if sorted(perm) != list(range(10)):
        raise ValueError(f"colour permutation must be a permutation of 0..9, got {perm}")
    inverse = tuple(perm.index(v) for v in range(10))

    def recolour(g: Grid, table: tuple[int, ...]) -> Grid:
        return tuple(tuple(table[cell] for cell in row) for row in g)

    name = f"colours{''.join(map(str, perm))}"
    return Augmentation(name, lambda g: recolour(g, perm), lambda g: recolour(g, inverse))


def random_colour_permutation(rng: random.Random) -> Augmentation:
    """A random recolouring that keeps 0, the background, in place."""
    colours = list(range(1, 10))
    rng.shuffle(colours)
    return colour_permutation([0, *colours])


def chain(*augmentations: Augmentation) -> Augmentation:
    """Apply `augmentations` in order; invert in reverse order (None as soon as one step cannot)."""

    def forward(g: Grid) -> Grid:
        for a in augmentations:
            g = a.apply(g)
        return g

    def backward(g: Grid) -> Grid | None:
        for a in reversed(augmentations):
            if (g := a.invert(g)) is None:
                return None
        return g

    return Augmentation("+".join(a.name for a in augmentations), forward, backward)


def _basic_family(rng: random.Random) -> list[Augmentation]:
    return list(BASIC)


def _size_family(rng: random.Random) -> list[Augmentation]:
    return list(SIZE)


def _chain_family(rng: random.Random) -> list[Augmentation]:
    """Each basic symmetry followed by a random size change: two basic symmetries would just
    compose to another basic one, adding nothing new."""
    return [chain(b, rng.choice(SIZE)) for b in BASIC]


def _repeat_family(rng: random.Random) -> list[Augmentation]:
    """The basic symmetries again, each with its own random recolouring (background kept), so
    a second pass over them gives new examples rather than duplicates."""
    return [chain(b, random_colour_permutation(rng)) for b in BASIC]


# The self-edit's vocabulary: family name -> the concrete augmentations (drawn with `rng`).
FAMILIES: dict[str, Callable[[random.Random], list[Augmentation]]] = {
    "basic": _basic_family,
    "size": _size_family,
    "chain": _chain_family,
    "repeat": _repeat_family,
}


def family_augmentations(families: Sequence[str], rng: random.Random) -> list[Augmentation]:
    """The augmentations of `families`, in order, without repeats."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise SealError(f"unknown augmentation family '{unknown[0]}' (choose from {', '.join(FAMILIES)})")
    return list(dict.fromkeys(a for f in dict.fromkeys(families) for a in FAMILIES[f](rng)))


def leave_one_out(train_pairs: Sequence[Pair]) -> list[LeaveOneOut]:
    """Each demonstration in turn becomes the test pair, the others its context."""
    if len(train_pairs) < 2:
        raise ValueError(f"leave-one-out needs at least 2 demonstration pairs, got {len(train_pairs)}")
    pairs = tuple(train_pairs)
    return [(pairs[:i] + pairs[i + 1:], x, y) for i, (x, y) in enumerate(pairs)]


def _augment_example(
    example: LeaveOneOut, augmentation: Augmentation, rng: random.Random, permute_colours: bool, shuffle: bool
) -> LeaveOneOut | None:
    """`example` with every grid transformed alike; None if a grid would grow past ARC's size limit."""
    if permute_colours:
        augmentation = chain(augmentation, random_colour_permutation(rng))
    context, x, y = example
    pairs = [(augmentation.apply(i), augmentation.apply(o)) for i, o in context]
    if shuffle:
        rng.shuffle(pairs)
    grids = [g for pair in pairs for g in pair] + [augmentation.apply(x), augmentation.apply(y)]
    if any(len(g) > MAX_GRID_SIZE or len(g[0]) > MAX_GRID_SIZE for g in grids):
        return None
    return tuple(pairs), grids[-2], grids[-1]


def _as_text(example: LeaveOneOut) -> tuple[str, str]:
    context, x, y = example
    return task_prompt_text(context, x), grid_to_text(y)


def build_training_examples(
    task: Task,
    families: Sequence[str],
    rng: random.Random,
    max_examples: int = 250,
    permute_colours: bool = True,
    shuffle_demonstrations: bool = True,
    render: Callable[[Sequence[Pair], Grid, Grid], tuple[Any, str]] | None = None,
) -> list[tuple[Any, str]]:
    """(prompt, completion) pairs for test-time training on `task`'s demonstrations.

    The plain leave-one-out examples come first; then, in a seeded random order, each of them under
    identity and every augmentation of `families`, each with its own random recolouring and
    context order when enabled. Duplicates are dropped and the list is cut at `max_examples`.
    `render(context, test input, test output)` writes an example (default: seal's prompt text and grid text).
    """
    if len(task.train) < 2:
        raise SealError(f"task '{task.id}': test-time training needs at least 2 demonstration pairs, "
                        f"it has {len(task.train)}")
    examples = leave_one_out(task.train)
    as_text = _as_text if render is None else (lambda e: render(*e))
    plain = [as_text(e) for e in examples]
    augmentations = [IDENTITY, *family_augmentations(families, rng)]
    augmented = [
        _augment_example(e, a, rng, permute_colours, shuffle_demonstrations) for a in augmentations for e in examples
    ]
    extra = [as_text(e) for e in augmented if e is not None]
    rng.shuffle(extra)
    return list(dict.fromkeys(plain + extra))[:max_examples]


def voting_augmentations() -> list[Augmentation]:
    """The views of a test input to predict from: identity first, then the other symmetries of the square."""
    return [IDENTITY, *BASIC]


def vote(predictions: Sequence[Grid | None]) -> Grid | None:
    """The most frequent prediction (already mapped back); ties go to the earliest, so identity wins them."""
    counts = Counter(p for p in predictions if p is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(p for p in predictions if p is not None and counts[p] == best)
