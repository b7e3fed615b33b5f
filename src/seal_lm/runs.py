"""Run directories: what decided the results, one record per finished unit of work, and a summary.

- `config.json`: the command, the domain and every setting (a valid `--config` file itself);
- `runtime.json`: per process that worked on the run, the resolved device and dtype, the generation
  backend, and the versions of seal-lm (with its git commit when known), torch, transformers and peft;
  a resumed run resolves `model.dtype: auto` as its first process did (`RunDir.pinned_model`);
- `results.jsonl`: typed records (records.py), appended and flushed as each unit finishes;
- `summary.json`: the recipe's summary, rewritten as the run progresses.

Reopening a directory with the same config resumes it: finished records are kept and skipped.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from seal_lm import __version__
from seal_lm.config import as_dict
from seal_lm.errors import SealError
from seal_lm.records import Record, RecordTypes, append_jsonl, read_records
from seal_lm.tracking import Tracker

CONFIG_FILE = "config.json"
RUNTIME_FILE = "runtime.json"
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"
# What a resumed run warns about when it differs from the run's previous process.
RUNTIME_CHECKED = ("generation_backend", "seal_lm", "torch", "transformers", "peft", "device", "dtype")

if TYPE_CHECKING:
    from seal_lm.models import LoadedModel, ModelSettings

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Record)


def derived_seed(seed: int, *parts: object) -> int:
    """A per-unit seed that depends on what the unit is, not on when it runs (so resume is exact)."""
    return int(hashlib.sha256("|".join(map(str, [seed, *parts])).encode()).hexdigest()[:8], 16)


def read_config(path: str | Path) -> dict[str, Any]:
    """The config.json of an existing run directory (for --resume)."""
    config_path = Path(path) / CONFIG_FILE
    if not config_path.is_file():
        raise SealError(f"{path}: not a run directory (no {CONFIG_FILE})")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SealError(f"{config_path}: not valid JSON ({exc})") from None


@contextmanager
def locked(path: str | Path) -> Iterator[Path]:
    """One writer per run directory: an OS lock (flock) on RUN_DIR/.lock while inside, taken before anything in
    the directory is read or repaired. The OS drops it when its process ends, however it ends, so a killed run
    never blocks its resume; a second process meanwhile gets a one-line error naming the holder's pid."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise SealError(f"{path}: another process (pid {holder}) is running this run directory; wait for it to "
                        "finish or choose another --out") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def one_writer(recipe: Callable[..., Any]) -> Callable[..., Any]:
    """A recipe `recipe(domain, out, ...)` that holds the run directory's lock (`locked`) while it runs."""
    @functools.wraps(recipe)
    def holding(domain: Any, out: str | Path, *args: Any, **kwargs: Any) -> Any:
        with locked(out):
            return recipe(domain, out, *args, **kwargs)

    return holding


class RunDir:
    """A run's directory. `records` holds what finished before, including in an earlier process."""

    def __init__(self, path: str | Path, config: dict[str, Any], types: RecordTypes, tracker: Tracker | None = None,
                 defaults: dict[str, Any] | None = None):
        """`tracker` (seal_lm.tracking) sees every record appended and every summary written from now on.
        `defaults` (the config class's defaults, as `config_defaults` gives them): a setting that an earlier
        seal-lm did not have, and so is absent from the directory's config.json, matches when it has its
        default value; config.json is then completed with it."""
        self.tracker = tracker or Tracker()
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.types = types
        config = json.loads(json.dumps(config, default=str))  # compare as stored (tuples become lists)
        config_path = self.path / CONFIG_FILE
        if config_path.exists():
            previous = read_config(self.path)
            known = _dotted(previous)
            changed = sorted(k for k in known | _dotted(config) if _at(previous, k) != _at(config, k)
                             and not (k not in known and defaults is not None and _at(config, k) == _at(defaults, k)))
            if changed:
                raise SealError(f"{config_path}: run directory holds a run with a different config "
                                f"(fields: {', '.join(changed[:6])}); choose another --out")
            if previous != config:  # only settings added since, at their defaults: record them too
                _write_atomic(config_path, json.dumps(config, indent=2))
        else:
            _write_atomic(config_path, json.dumps(config, indent=2))
        self.records: list[Record] = read_records(self.path / RESULTS_FILE, types, repair=True)

    @classmethod
    def new_path(cls, root: str | Path, kind: str) -> Path:
        return Path(root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}"

    def of(self, kind: type[R]) -> list[R]:
        """The finished records of one type (subclasses included)."""
        return [r for r in self.records if isinstance(r, kind)]

    def append(self, record: Record) -> None:
        append_jsonl(self.path / RESULTS_FILE, [record.to_json()])
        self.records.append(record)
        self.tracker.on_record(record)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.path / SUMMARY_FILE
        _write_atomic(path, json.dumps(summary, indent=2, default=str))
        self.tracker.on_summary(summary)
        return path

    def pinned_model(self, settings: ModelSettings) -> ModelSettings:
        """`settings` with `dtype: auto` pinned to the dtype that this run's first process resolved it to
        (runtime.json): resumed on a machine where auto means another dtype (bfloat16 is native on some CPUs and
        not others), the run goes on computing as it started instead of mixing dtypes. Unchanged for a new run
        or an explicit dtype; config.json keeps `auto`."""
        path = self.path / RUNTIME_FILE
        if settings.dtype != "auto" or not path.exists():
            return settings
        first = json.loads(path.read_text(encoding="utf-8"))[0].get("dtype")
        if first is None:
            return settings
        log.info("%s: model.dtype auto is %s, as when this run started", self.path, first)
        return replace(settings, dtype=first)

    def note_runtime(self, info: dict[str, Any]) -> None:
        """Add this process's runtime to runtime.json; warn in one line where it differs from the last one's."""
        path = self.path / RUNTIME_FILE
        sessions = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
        if sessions:
            last = sessions[-1]
            changed = [f"{k} {info.get(k)} (was {last.get(k)})" for k in RUNTIME_CHECKED if last.get(k) != info.get(k)]
            if changed:
                log.warning("resuming %s with %s", self.path, "; ".join(changed))
        _write_atomic(path, json.dumps([*sessions, info], indent=2))


def run_config(command: str, domain: str, config: Any) -> dict[str, Any]:
    """What config.json holds: the command, the domain and every setting (itself a valid --config file)."""
    return {"command": command, "domain": domain, **as_dict(config)}


def config_defaults(config: Any) -> dict[str, Any] | None:
    """The defaults of `config`'s class as config.json would store them (None if it has required fields)."""
    try:
        return json.loads(json.dumps(as_dict(type(config)()), default=str))
    except TypeError:
        return None


def runtime_info(loaded: LoadedModel, generation_backend: str) -> dict[str, Any]:
    """What besides the config decided a run's results: where and how it computed, with which versions."""
    import peft
    import torch
    import transformers

    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": str(loaded.device),
        "dtype": str(loaded.model.dtype).removeprefix("torch."), "generation_backend": generation_backend, "seal_lm": __version__, "git_commit": _git_commit(),
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "host": platform.node(),
    }


def _git_commit() -> str | None:
    """The commit of the seal-lm checkout this code runs from (an editable install), else None."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _dotted(values: Any, prefix: str = "") -> set[str]:
    if not isinstance(values, dict):
        return {prefix.rstrip(".")}
    return {k for key, v in values.items() for k in _dotted(v, f"{prefix}{key}.")}


def _at(values: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
