"""SEAL's few-shot protocol as its code runs it: the self-edit prompt and JSON, the task text, how a
written grid is read back, the hierarchical vote and the task score.

The reference is GitHub Continual-Intelligence/SEAL, folder few-shot/, commit 4cb1e7d; each piece
names its file there. Prompt strings are data that define the protocol and are reproduced verbatim.
The augmentations and the views voted on are in reference_augment.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seal_lm.domains.arc.formats import ParsedConfig, TTTConfig
from seal_lm.domains.arc.grids import Grid
from seal_lm.generation import Prompt

# few-shot/utils/prompts.py, `self_edit_prompt`, verbatim (leading and trailing newlines included).
SELF_EDIT_PROMPT = """
You are configuring a model training pipeline by selecting from predefined tools.

You must make two decisions:

1. **Data Generation Tools** — For each of the following, choose true or false:
    - use_basic_augmentations
    - use_size_augmentations
    - use_chain_augmentations
    - use_repeat_augmentations

2. **Training Configuration** — Choose one of:
    - "train_using_all_tokens"
    - "train_using_output_tokens"

Also specify:
    - learning_rate (float)
    - num_train_epochs (integer)

### Output Format

Respond with a valid JSON object. Do not include any explanation, markdown, or extra text. Use lowercase `true`/`false` for booleans and ensure correct JSON syntax.

Example output:

{
  "data_generation": {
    "use_basic_augmentations": ...,
    "use_size_augmentations": ...,
    "use_chain_augmentations": ...,
    "use_repeat_augmentations": ...
  },
  "training": {
    "strategy": ...,
    "learning_rate": ...,
    "num_train_epochs": ...
  }
}
"""

# few-shot/utils/prompts.py, `system_message`, verbatim.
SYSTEM_MESSAGE = "You are a helpful assistant that provide the correct output for the given task immediately."

# few-shot/arclib/messagers.py, GPTTextMessageRepresenterV2's prompt with no description, then the line it adds
# for PythonListGridRepresenter grids; verbatim.
TASK_INSTRUCTION = ("Figure out the underlying transformation in the following examples and apply it to the test "
                    "case. Here are some examples from this transformation, your answer must follow the format.\n")
ARRAYS_NOTE = "The input-output grids are provided as python arrays:\n"

# few-shot/self-edit.py: the augmentation families a self-edit switches on (get_augmenters' include_* flags) and
# the two training strategies.
FAMILY_KEYS = {"basic": "use_basic_augmentations", "size": "use_size_augmentations",
               "chain": "use_chain_augmentations", "repeat": "use_repeat_augmentations"}
STRATEGIES = {"train_using_all_tokens": "all", "train_using_output_tokens": "output"}
TRAINING_KEYS = ("strategy", "num_train_epochs", "learning_rate")
ATTEMPTS = 2  # few-shot/arclib/voting.py returns (C1, C2); make_submission(number_of_attempts=2)


# ---- the self-edit (few-shot/self-edit.py)

def self_edit_user_message(train_pairs: Sequence[tuple[Grid, Grid]]) -> str:
    """self-edit.py `get_prompt`: the demonstrations with space-separated cells, a rule, then the prompt."""
    def rows(grid: Grid) -> str:
        return "".join(" ".join(map(str, row)) + "\n" for row in grid)

    shown = "".join(f"Input:\n{rows(x)}\nOutput:\n{rows(y)}\n" for x, y in train_pairs)
    return shown + "------\n\n" + SELF_EDIT_PROMPT


def self_edit_prompt(train_pairs: Sequence[tuple[Grid, Grid]]) -> Prompt:
    """The system message and the user message of self-edit.py, in the model's chat template (self-edit.py writes
    Llama 3's template by hand: the same turns, without the template's date lines)."""
    user = self_edit_user_message(train_pairs)
    return Prompt(messages=(("system", SYSTEM_MESSAGE), ("user", user)), text=f"{SYSTEM_MESSAGE}\n\n{user}")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_self_edit(text: str) -> ParsedConfig:
    """A completion read as self-edit.py reads it: `json.loads` of the whole text (else "invalid-json", which
    self-edit.py discards and samples again). Structures its code cannot run (no "data_generation" or "training"
    object, a learning rate or epoch count that is not a non-negative number, fractional epochs) are
    "invalid-config" and also sampled again. Its fall-backs are kept: a missing use_* key means no augmentation
    and 0 epochs, a missing training key or an unknown strategy 0 epochs; 0 epochs (or learning rate 0) is the
    untrained adapter, status "untrained". The use_* values count by truthiness, as its `if include_*` does."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        return ParsedConfig(None, "invalid-json", f"not valid JSON ({getattr(exc, 'msg', 'too deep')})")
    if not isinstance(raw, dict) or not isinstance(raw.get("data_generation"), dict) \
            or not isinstance(raw.get("training"), dict):
        return ParsedConfig(None, "invalid-config", "needs a \"data_generation\" and a \"training\" object")
    generation, training = raw["data_generation"], raw["training"]
    reasons = []
    if all(key in generation for key in FAMILY_KEYS.values()):
        families = tuple(f for f, key in FAMILY_KEYS.items() if generation[key])
    else:
        families = ()
        reasons.append("a use_*_augmentations key is missing")
    if all(key in training for key in TRAINING_KEYS):
        strategy, epochs, lr = training["strategy"], training["num_train_epochs"], training["learning_rate"]
        if not _number(lr) or lr < 0:
            return ParsedConfig(None, "invalid-config", "learning_rate must be a non-negative number")
        if not _number(epochs) or epochs < 0 or epochs != int(epochs):
            return ParsedConfig(None, "invalid-config", "num_train_epochs must be a non-negative integer")
        epochs = int(epochs)
        if strategy not in STRATEGIES:
            reasons.append(f"strategy must be one of {', '.join(STRATEGIES)}")
            epochs = 0
    else:
        strategy, epochs, lr = "train_using_all_tokens", 0, 0.0
        reasons.append(f"a training key ({', '.join(TRAINING_KEYS)}) is missing")
    if not reasons and (epochs == 0 or lr == 0):
        reasons.append("0 epochs or learning rate 0")
    if reasons:
        epochs = 0
    config = TTTConfig(families, STRATEGIES.get(strategy, "all"), float(lr), epochs)
    if epochs == 0:
        return ParsedConfig(config, "untrained", "; ".join(dict.fromkeys(reasons)))
    return ParsedConfig(config, "ok")


def as_self_edit(config: TTTConfig) -> str:
    """A configuration written as the reference's JSON (e.g. for oracle configurations)."""
    strategy = next(s for s, loss in STRATEGIES.items() if loss == config.loss)
    return json.dumps({"data_generation": {key: f in config.augmentations for f, key in FAMILY_KEYS.items()},
                       "training": {"strategy": strategy, "learning_rate": config.learning_rate,
                                    "num_train_epochs": config.epochs}})


def too_many_steps(epochs: int, examples: int, batch_size: int, max_steps: int) -> bool:
    """self-edit.py: `num_train_epochs * len(train_data) // 2 > 375` (2 = its batch size) trains no adapter."""
    return epochs * examples // batch_size > max_steps


# ---- the task as text (few-shot/arclib/messagers.py GPTTextMessageRepresenterV2 with representers.py's
# TextExampleRepresenter(io_sep=" -> ", output_footer="#", PythonListGridRepresenter), the `--new_format` of
# eval-self-edits.py and the formatter of self-edit.py)

def grid_text(grid: Grid) -> str:
    """PythonListGridRepresenter.encode: `str()` of the numpy array, e.g. "[[1 2]\\n [3 4]]"."""
    return "[" + "\n ".join("[" + " ".join(map(str, row)) + "]" for row in grid) + "]"


def task_prompt(train_pairs: Sequence[tuple[Grid, Grid]], test_input: Grid) -> Prompt:
    """System turn: the instruction and each demonstration as "input -> output#"; user turn: "test input -> "."""
    system = TASK_INSTRUCTION + ARRAYS_NOTE + "".join(f"{grid_text(x)} -> {grid_text(y)}#\n" for x, y in train_pairs)
    user = f"{grid_text(test_input)} -> "
    return Prompt(messages=(("system", system), ("user", user)), text=system + user)


def answer_text(grid: Grid) -> str:
    """The assistant turn: the output grid and the "#" footer."""
    return f"{grid_text(grid)}#"


def read_grid(text: str) -> Grid | None:
    """A model's answer read as eval-self-edits.py reads it: "#" dropped, double spaces made single, the part
    between the first two ``` fences if there are any, then representers.py `parse_numpy_from_str`: brackets
    dropped, integers split on white space, as many rows as lines. None where that fails; also for an empty grid
    or a value outside 0-9 (no such grid can be right; the reference would still count it in the vote)."""
    text = text.replace("#", "").replace("  ", " ")
    if "```" in text:
        text = text.split("```")[1].strip()
    text = text.strip()
    try:
        cells = [int(v) for v in text.replace("[", "").replace("]", "").split()]
    except ValueError:
        return None
    rows = text.count("\n") + 1
    width = len(cells) // rows
    if not cells or width * rows != len(cells) or not all(0 <= v <= 9 for v in cells):
        return None
    return tuple(tuple(cells[r * width : (r + 1) * width]) for r in range(rows))


# ---- the vote (few-shot/arclib/voting.py), with Python's sets and numpy's argmax/argsort as it uses them, so
# that ties break as they do there

def as_grid(array: np.ndarray) -> Grid:
    return tuple(tuple(int(v) for v in row) for row in np.asarray(array))


def _row_majority(outputs: list[Grid], transpose: bool = False) -> Grid:
    """voting.py `row_base_majority_voting`: the most common shape, then the most common row at each height."""
    if transpose:
        outputs = [as_grid(np.array(o).T) for o in outputs]
    shapes = [np.array(o).shape for o in outputs]
    shape = max(set(shapes), key=shapes.count)
    rows = []
    for r in range(shape[0]):
        candidates = [o[r] for o in outputs if len(o) > r and len(o[r]) == shape[1]]
        rows.append(max(set(candidates), key=candidates.count))
    array = np.array(rows)
    return as_grid(array.T if transpose else array)


def _top_three(outputs: list[Grid]) -> tuple[Grid | None, Grid | None, Grid | None]:
    """voting.py `get_all_type_of_votingsv2`: the three most common outputs, row- and column-wise majorities
    filling in where there are fewer distinct ones."""
    if not outputs:
        return None, None, None
    unique = list(set(outputs))
    counts = [outputs.count(o) for o in unique]
    first = unique[int(np.argmax(counts))]
    second = third = first
    by_row, by_column = _row_majority(outputs), _row_majority(outputs, transpose=True)
    if len(unique) > 2:
        second = unique[int(np.argsort(counts)[-2])]
        third = unique[int(np.argsort(counts)[-3])]
    elif len(unique) > 1:
        second = unique[int(np.argsort(counts)[-2])]
    if second == first:
        second = by_row if by_row != first else by_column
    if third in (first, second):
        third = by_row if by_row not in (first, second) else by_column
    return first, second, third


# voting.py `vote`: the categories whose top three become candidates, in this order.
VOTE_CATEGORIES = ("all", "identity", "Transpose()", "Flip(0)", "Flip(1)", "Rotate(180)", "Rotate(270)")


def vote(outputs: Sequence[tuple[str | None, Grid]]) -> tuple[Grid | None, Grid | None]:
    """voting.py `vote`: outputs (inverter name or None for an untransformed view, grid mapped back) grouped by
    inverter; the top three of all of them and of each category are the candidates, whose top two are the two
    attempts, a tie between the second and third going to the one the untransformed views gave more often.
    (None, None) when there is nothing to vote on (eval-self-edits.py then submits [[0]] twice)."""
    by_category: dict[str, list[Grid]] = {}
    for inverter, grid in outputs:
        by_category.setdefault(inverter or "identity", []).append(grid)
    by_category["all"] = [g for grids in list(by_category.values()) for g in grids]
    candidates = [c for key in VOTE_CATEGORIES if key in by_category
                  for c in _top_three(by_category[key]) if c is not None]
    c1, c2, c3 = _top_three(candidates)
    if candidates.count(c2) == candidates.count(c3) and "identity" in by_category:
        identity = by_category["identity"]
        if identity.count(c2) > identity.count(c3):
            c3 = c2
        else:
            c2 = c3
    return c1, c2


@dataclass(frozen=True)
class CaseResult:
    """One test case: what each view answered (mapped back), the two attempts, and whether one of them is right."""

    views: list[dict]  # {"examples": [...], "transform": name or None, "text": raw answer, "grid": mapped back}
    attempts: tuple[Grid | None, Grid | None]
    solved: bool


def solved(attempts: tuple[Grid | None, Grid | None], expected: Grid | None) -> bool:
    """eval.py `accuracy`: the true output is one of the attempts."""
    return expected is not None and expected in attempts


def task_solved(results: Sequence[CaseResult]) -> bool:
    """eval.py `evaluate`: a task counts only when every one of its test cases is solved (all_true and
    all_submitted)."""
    return bool(results) and all(r.solved for r in results)
