"""Grids as immutable tuples (hashable, so predictions can be voted on) and their text form.

A grid is written one row per line, digits without separators ("012\n340"): every cell is one
character, which small tokenizers split predictably.
"""

from __future__ import annotations

from collections.abc import Sequence

Grid = tuple[tuple[int, ...], ...]

MAX_GRID_SIZE = 30  # ARC's limit on either side
_DIGITS = frozenset("0123456789")


def grid_to_text(grid: Grid) -> str:
    return "\n".join("".join(str(cell) for cell in row) for row in grid)


def text_to_grid(text: str) -> Grid | None:
    """The grid a model wrote, or None if it is malformed; never raises, since model output is arbitrary.

    Reads lines until the first blank or non-digit line, so chatter after the grid is ignored.
    """
    rows: list[tuple[int, ...]] = []
    for line in text.strip().split("\n"):
        if not line or not _DIGITS.issuperset(line):
            break
        rows.append(tuple(int(c) for c in line))
    if not rows or any(len(row) != len(rows[0]) for row in rows):
        return None
    return tuple(rows)


def task_prompt_text(train_pairs: Sequence[tuple[Grid, Grid]], test_input: Grid) -> str:
    """Demonstrations then the test input, ending where the model should write the output grid."""
    shown = "".join(f"Input:\n{grid_to_text(i)}\nOutput:\n{grid_to_text(o)}\n\n" for i, o in train_pairs)
    return f"{shown}Input:\n{grid_to_text(test_input)}\nOutput:\n"
