"""Run directories: the config, one JSON line per finished unit of work, and a summary.

Each record is appended and flushed to disk as soon as its work finishes, so a run killed at any
moment loses at most the unit in progress; reopening the directory skips what is already there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import typing
from pathlib import Path
from typing import Any, TypeVar

from seal_lm.errors import SealError

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"


def derived_seed(seed: int, *parts: object) -> int:
    """A per-unit seed that depends on what the unit is, not on when it runs (so resume is exact)."""
    return int(hashlib.sha256("|".join(map(str, [seed, *parts])).encode()).hexdigest()[:8], 16)


T = TypeVar("T")


def config_from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Rebuild a (nested) config dataclass from its JSON form, as written to config.json; lists
    become tuples where the field is typed as a tuple. Unknown fields are an error, not ignored."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise SealError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        nested = [t for t in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(t)]
        if nested and isinstance(value, dict):
            value = config_from_dict(nested[0], value, f"{where}.{name}")
        elif isinstance(value, list) and "tuple" in str(hint):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def read_config(path: str | Path) -> dict[str, Any]:
    """The config.json of an existing run directory (for --resume)."""
    config_path = Path(path) / CONFIG_FILE
    if not config_path.is_file():
        raise SealError(f"{path}: not a run directory (no {CONFIG_FILE})")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SealError(f"{config_path}: not valid JSON ({exc})") from None


class RunDir:
    """A run's directory. `records` holds what finished before, including in an earlier process."""

    def __init__(self, path: str | Path, config: dict[str, Any]):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        config = json.loads(json.dumps(config, default=str))  # compare as stored (tuples become lists)
        config_path = self.path / CONFIG_FILE
        if config_path.exists():
            previous = json.loads(config_path.read_text())
            if not _same_config(previous, config):
                changed = sorted(k for k in set(previous) | set(config)
                                 if not _same_config(previous.get(k), config.get(k)))
                raise SealError(
                    f"{config_path}: run directory holds a run with a different config "
                    f"(fields: {', '.join(changed)}); choose another --out"
                )
        else:
            _write_atomic(config_path, json.dumps(config, indent=2, default=str))
        self.records: list[dict[str, Any]] = read_jsonl(self.path / RESULTS_FILE)

    @classmethod
    def new_path(cls, root: str | Path, kind: str) -> Path:
        return Path(root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}"

    def append(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path / RESULTS_FILE, [record])
        self.records.append(record)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.path / SUMMARY_FILE
        _write_atomic(path, json.dumps(summary, indent=2, default=str))
        return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of `path` (none if it does not exist). A last line cut short by a killed process
    is dropped, with everything after it, and cut from the file so that appending goes on cleanly."""
    if not path.exists():
        return []
    records, good_bytes = [], 0
    with path.open("rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good_bytes += len(line)
    if good_bytes != path.stat().st_size:
        os.truncate(path, good_bytes)
    return records


def append_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Append `records` as JSON lines and force them to disk before returning."""
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, default=str) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def _same_config(previous: Any, config: Any) -> bool:
    """Equal, except that a key one side lacks counts as null: a field added later with a None default
    (e.g. `judge`) leaves run directories written before it resumable."""
    if isinstance(previous, dict) and isinstance(config, dict):
        return all(_same_config(previous.get(k), config.get(k)) for k in set(previous) | set(config))
    return previous == config


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
