"""Run directories: the config, one JSON line per finished unit of work, and a summary.

Each record is appended and flushed to disk as soon as its work finishes, so a run killed at any
moment loses at most the unit in progress; reopening the directory skips what is already there.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seal_lm.errors import SealError

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"


class RunDir:
    """A run's directory. `records` holds what finished before, including in an earlier process."""

    def __init__(self, path: str | Path, config: dict[str, Any]):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        config = json.loads(json.dumps(config, default=str))  # compare as stored (tuples become lists)
        config_path = self.path / CONFIG_FILE
        if config_path.exists():
            previous = json.loads(config_path.read_text())
            if previous != config:
                changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
                raise SealError(
                    f"{config_path}: run directory holds a run with a different config "
                    f"(fields: {', '.join(changed)}); choose another --out"
                )
        else:
            _write_atomic(config_path, json.dumps(config, indent=2, default=str))
        self.records: list[dict[str, Any]] = list(self._read_results())

    @classmethod
    def new_path(cls, root: str | Path, kind: str) -> Path:
        return Path(root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}"

    def _read_results(self) -> Iterator[dict[str, Any]]:
        path = self.path / RESULTS_FILE
        if not path.exists():
            return
        good_bytes = 0
        with path.open("rb") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut short by a killed process: drop it and everything after
                if not line.endswith(b"\n"):
                    break
                good_bytes += len(line)
                yield record
        if good_bytes != path.stat().st_size:
            os.truncate(path, good_bytes)

    def append(self, record: dict[str, Any]) -> None:
        with (self.path / RESULTS_FILE).open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.path / SUMMARY_FILE
        _write_atomic(path, json.dumps(summary, indent=2, default=str))
        return path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
