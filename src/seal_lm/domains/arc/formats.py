"""Few-shot self-edits: a JSON configuration of test-time training, parsed against a bounded schema.

The model reads a task's demonstrations and answers with one JSON object, e.g.
    {"augmentations": ["basic", "size"], "loss": "output", "learning_rate": 0.0001, "epochs": 3}
The prompt writes the object's opening (`RESPONSE_PREFIX`) for the model, so that even a small
model answers in JSON rather than prose; the self-edit is that prefix plus the completion.
It is only ever parsed as data (`json`), never evaluated. Invalid JSON or a value out of bounds
makes the self-edit unusable: its reward is 0, and its status and error are recorded and counted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from seal_lm.domains.arc.augment import FAMILIES
from seal_lm.domains.arc.grids import grid_to_text
from seal_lm.domains.arc.tasks import Task
from seal_lm.generation import Prompt

LOSSES = ("all", "output")  # train on every token of an example, or on its output grid only
LEARNING_RATE_BOUNDS = (1e-6, 1e-2)
EPOCH_BOUNDS = (1, 10)
_FIELDS = ("augmentations", "loss", "learning_rate", "epochs")
RESPONSE_PREFIX = '{"augmentations": ["'


@dataclass(frozen=True)
class TTTConfig:
    """What a few-shot self-edit decides: augmentation families, loss, learning rate, epochs."""

    augmentations: tuple[str, ...]
    loss: str
    learning_rate: float
    epochs: int

    def as_json(self) -> str:
        return json.dumps({**asdict(self), "augmentations": list(self.augmentations)})


@dataclass(frozen=True)
class ParsedConfig:
    config: TTTConfig | None
    status: str  # "ok", "invalid-json" or "invalid-config"
    error: str = ""


# Shown in the prompt: small models copy the format of an example far better than they follow a description.
EXAMPLE = TTTConfig(("basic",), "output", 0.0001, 2)


def self_edit_prompt(task: Task, max_epochs: int = EPOCH_BOUNDS[1]) -> Prompt:
    """Show the demonstrations and ask for a training configuration as JSON (nothing else)."""
    shown = "\n\n".join(f"Input:\n{grid_to_text(x)}\nOutput:\n{grid_to_text(y)}" for x, y in task.train)
    request = (
        "Here are examples of a grid puzzle: each output is made from its input by the same rule.\n\n"
        f"{shown}\n\n"
        "Before solving it, you will train yourself on these examples. Choose how, and reply with only a "
        "JSON object with these keys:\n"
        f'"augmentations": a list from {json.dumps(sorted(FAMILIES))} (extra training data made by '
        "rotating, flipping, resizing or recolouring the examples);\n"
        '"loss": "all" (learn whole examples) or "output" (learn only the output grids);\n'
        f'"learning_rate": a number from {LEARNING_RATE_BOUNDS[0]:g} to {LEARNING_RATE_BOUNDS[1]:g};\n'
        f'"epochs": an integer from {EPOCH_BOUNDS[0]} to {max_epochs}.\n'
        f"For example: {EXAMPLE.as_json()}"
    )
    return Prompt(messages=(("user", request),), text=f"{request}\n\nConfiguration:\n", response_prefix=RESPONSE_PREFIX)


def self_edit_text(completion: str) -> str:
    """The whole self-edit: the prefix the prompt wrote, then what the model wrote after it."""
    return RESPONSE_PREFIX + completion


def parse_config(completion: str, max_epochs: int = EPOCH_BOUNDS[1]) -> ParsedConfig:
    """The first JSON object in the completion, checked field by field against the schema
    (`max_epochs` lowers the epoch bound, e.g. to keep CPU runs short)."""
    start = completion.find("{")
    if start < 0:
        return ParsedConfig(None, "invalid-json", "no JSON object")
    try:
        raw, _ = json.JSONDecoder().raw_decode(completion[start:])
    except json.JSONDecodeError as exc:
        return ParsedConfig(None, "invalid-json", f"not valid JSON ({exc.msg})")
    if not isinstance(raw, dict):
        return ParsedConfig(None, "invalid-json", "not a JSON object")
    problem = _check(raw, max_epochs)
    if problem:
        return ParsedConfig(None, "invalid-config", problem)
    config = TTTConfig(tuple(dict.fromkeys(raw["augmentations"])), raw["loss"], float(raw["learning_rate"]),
                       int(raw["epochs"]))
    return ParsedConfig(config, "ok")


def _check(raw: dict, max_epochs: int) -> str:
    """The first schema violation, as a one-line message; empty when the object is valid."""
    missing = [f for f in _FIELDS if f not in raw]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}"
    families = raw["augmentations"]
    if not isinstance(families, list) or not all(isinstance(f, str) and f in FAMILIES for f in families):
        return f"augmentations must be a list drawn from {', '.join(sorted(FAMILIES))}"
    if raw["loss"] not in LOSSES:
        return f"loss must be one of {', '.join(LOSSES)}"
    lr = raw["learning_rate"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not LEARNING_RATE_BOUNDS[0] <= lr <= LEARNING_RATE_BOUNDS[1]:
        return f"learning_rate must be a number in [{LEARNING_RATE_BOUNDS[0]:g}, {LEARNING_RATE_BOUNDS[1]:g}]"
    epochs = raw["epochs"]
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not EPOCH_BOUNDS[0] <= epochs <= max_epochs:
        return f"epochs must be an integer in [{EPOCH_BOUNDS[0]}, {max_epochs}]"
    return ""
