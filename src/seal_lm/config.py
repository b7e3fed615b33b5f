"""Typed configs as files: presets shipped with seal-lm, a user's YAML or JSON file, and command-line
overrides with dotted names (`--inner_loop.learning_rate 3e-4`).

Parsing is jsonargparse's: it builds the command line from the config dataclasses (nested ones as dotted
names, attribute docstrings as help) and checks files against the same type hints, so a new field needs no
flag code. Ranges and cross-field rules are each config's `validate()`, which raises `ConfigError` naming
the key; every error becomes one line that also names the file.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from jsonargparse import ArgumentParser, Namespace, set_parsing_settings

from seal_lm.errors import SealError

set_parsing_settings(docstring_parse_attribute_docstrings=True)

PRESETS = resources.files("seal_lm").joinpath("configs")
T = TypeVar("T")


class ConfigError(SealError):
    """A setting out of range, or settings that do not fit together; `key` is its dotted name."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


def at_least(key: str, value: int | float, low: int | float) -> None:
    if value < low:
        raise ConfigError(key, f"must be at least {low} (got {value})")


def one_of(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(key, f"unknown value {value!r} (choose one of: {', '.join(map(str, choices))})")


# ---- presets and files


def preset_names(domain: str) -> list[str]:
    folder = PRESETS.joinpath(domain)
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_source(domain: str, name: str) -> tuple[dict[str, Any], str]:
    """A shipped preset's values and what to call it in messages."""
    if name not in preset_names(domain):
        raise SealError(f"unknown preset '{name}' for the {domain} domain (choose one of: "
                        f"{', '.join(preset_names(domain))})")
    text = PRESETS.joinpath(domain, f"{name}.yaml").read_text(encoding="utf-8")
    return _mapping(yaml.safe_load(text), f"preset {domain}/{name}"), f"preset {domain}/{name}"


def read_file(path: str | Path) -> dict[str, Any]:
    """A config file's values: YAML (JSON is YAML too)."""
    path = Path(path)
    if not path.is_file():
        raise SealError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SealError(f"{path}: not valid YAML or JSON ({_first_line(exc)})") from None
    return _mapping(data, str(path))


def _mapping(data: Any, source: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SealError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    return data


# ---- dataclasses and their dotted names


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"inner_loop": {"rank": 8}} -> {"inner_loop.rank": 8}"""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def as_dict(config: Any) -> dict[str, Any]:
    """A config as JSON-ready values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a (nested) config dataclass from checked values; lists become tuples where the field says so."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        nested = [t for t in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(t)]
        if nested and isinstance(value, dict):
            value = from_dict(nested[0], value)
        elif isinstance(value, list) and "tuple" in str(hint):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


def unknown_keys(cls: type, data: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of `data` that `cls` has no field for."""
    hints = typing.get_type_hints(cls)
    unknown = []
    for key, value in data.items():
        if key not in hints:
            unknown.append(f"{prefix}{key}")
            continue
        nested = [t for t in (hints[key], *typing.get_args(hints[key])) if dataclasses.is_dataclass(t)]
        if nested and isinstance(value, dict):
            unknown += unknown_keys(nested[0], value, f"{prefix}{key}.")
    return unknown


# ---- parsing


def config_parser(cls: type, prog: str = "seal", description: str | None = None,
                  paper: dict[str, Any] | None = None, usage: str | None = None) -> ArgumentParser:
    """The arguments of `cls` (nested dataclasses as dotted names); each field in `paper` (the values the
    paper preset sets) also says the paper's value in its help."""
    parser = ArgumentParser(prog=prog, description=description, usage=usage, exit_on_error=False)
    parser.add_class_arguments(cls, None)
    flat = flatten(paper or {})
    for action in parser._actions:  # jsonargparse keeps argparse's action list
        if action.dest in flat:
            action.help = f"{action.help or ''} [paper: {_show(flat[action.dest])}]".strip()
    return parser


def parse_values(cls: type[T], values: dict[str, Any], source: str, defaults: T | None = None) -> T:
    """`values` (from a file or a run directory) on top of `defaults` (else the class defaults), checked
    against the types and each config's `validate()`; errors name `source` and the key."""
    unknown = unknown_keys(cls, values)
    if unknown:
        raise SealError(f"{source}: unknown key {unknown[0]}")
    parser = config_parser(cls)
    if defaults is not None:
        parser.set_defaults(flatten(as_dict(defaults)))
    try:
        namespace = parser.parse_object(values)
    except Exception as exc:  # jsonargparse raises argparse.ArgumentError and others, multi-line
        raise SealError(f"{source}: {describe_parse_error(exc, cls, flatten(values))}") from None
    return checked(cls, namespace, source)


def parse_command_line(parser: ArgumentParser, cls: type, args: list[str]) -> Namespace:
    """`args` parsed by `parser` (built by `config_parser`); a bad value is one line naming the option."""
    try:
        return parser.parse_args(args)
    except SystemExit:
        raise
    except Exception as exc:  # jsonargparse raises argparse.ArgumentError, multi-line
        raise SealError(f"command line: {describe_parse_error(exc, cls, {})}") from None


def checked(cls: type[T], namespace: Namespace, source: str) -> T:
    config = from_dict(cls, namespace.as_dict())
    try:
        config.validate()
    except ConfigError as exc:
        raise SealError(f"{source}: {exc}") from None
    return config


def describe_parse_error(exc: BaseException, cls: type, given: dict[str, Any]) -> str:
    """jsonargparse's multi-line message as one line: the key, what it expects and what it got."""
    text = str(exc)
    match = re.search(r'Parser key "([^"]+)"', text)
    if match:
        key = match.group(1)
        expected = _type_name(_hint_at(cls, key))
        got = given.get(key, _given_value(text))
        return f"{key}: expected {expected}, got {got!r}"
    match = re.search(r"unrecognized arguments: (\S+)", text)
    if match:
        return f"unknown option {match.group(1)}"
    return _first_line(exc)


def _hint_at(cls: type, dotted: str) -> Any:
    hint: Any = cls
    for part in dotted.split("."):
        owner = next((t for t in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(t)), None)
        if owner is None:
            return None
        hint = typing.get_type_hints(owner).get(part)
    return hint


def _type_name(hint: Any) -> str:
    if hint is None:
        return "a value"
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is tuple or origin is list:
        return "a list in brackets, e.g. [a,b]"
    if args:
        return " or ".join(_type_name(a) for a in args)
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def _given_value(text: str) -> str:
    match = re.search(r"(?:Given value|Got value): (.*)", text)
    return match.group(1).strip() if match else "?"


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return "null" if value is None else str(value)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
