"""Where inner loops run: in this process (the default) or on a Ray cluster.

An executor maps a work function over payloads (e.g. a domain's `score` on one group of
contexts) and yields `(index, result)` as each finishes, so callers write results to the run
directory as they arrive. A work function receives a loaded model and one payload; the model is
named by `ModelSettings`, so a Ray worker loads it once and keeps it for every payload that names
the same model (a new policy checkpoint is loaded when a new round names it).

Payloads are independent and seeded by what they are, so results do not depend on which worker
runs them or in what order. A Ray worker that dies mid-job has the job retried on a fresh worker;
each index is yielded exactly once.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from seal_lm.errors import SealError
from seal_lm.models import LoadedModel, ModelSettings, load_model

WorkFn = Callable[[LoadedModel, Any], Any]  # must be picklable for Ray (a module-level function or partial)
EXECUTORS = ("local", "ray")


class Executor(Protocol):
    def map(self, fn: WorkFn, model: ModelSettings, payloads: Sequence[Any],
            loaded: LoadedModel | None = None) -> Iterator[tuple[int, Any]]:
        """Yield (index, fn(model, payloads[index])) in completion order; `loaded` may serve `model` locally."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs payloads one after another in this process (each payload already batches its inner loops)."""

    def __init__(self) -> None:
        self._cached: tuple[ModelSettings, LoadedModel] | None = None

    def map(self, fn: WorkFn, model: ModelSettings, payloads: Sequence[Any],
            loaded: LoadedModel | None = None) -> Iterator[tuple[int, Any]]:
        if loaded is None:
            if self._cached is None or self._cached[0] != model:
                self._cached = (model, load_model(model))
            loaded = self._cached[1]
        for index, payload in enumerate(payloads):
            yield index, fn(loaded, payload)

    def close(self) -> None:
        self._cached = None


class _Worker:
    """A Ray actor: one model replica, loaded on first use and kept while jobs name the same model."""

    def __init__(self) -> None:
        self.settings: ModelSettings | None = None
        self.loaded: LoadedModel | None = None

    def run(self, fn: WorkFn, model: ModelSettings, payload: Any) -> Any:
        if self.loaded is None or self.settings != model:
            self.loaded, self.settings = load_model(model), model
        return fn(self.loaded, payload)


class RayExecutor:
    """Jobs on a Ray cluster: `workers` actors (each `cpus` CPU slots and `gpus` GPUs), one job in flight
    per actor. `address` None starts a local cluster; "auto" or "ray://host:port" joins an existing one."""

    def __init__(self, address: str | None = None, workers: int = 2, cpus: float = 1, gpus: float = 0,
                 max_attempts: int = 3):
        if workers < 1:
            raise SealError(f"workers must be at least 1 (got {workers})")
        try:
            import ray
        except ImportError:
            raise SealError("--executor ray needs Ray: pip install 'seal-lm[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        # Workers choose their generation backend as the driver was told to (--generation-backend).
        options: dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus}
        if "SEAL_GENERATION_BACKEND" in os.environ:
            options["runtime_env"] = {"env_vars": {"SEAL_GENERATION_BACKEND": os.environ["SEAL_GENERATION_BACKEND"]}}
        self.remote_worker = ray.remote(**options)(_Worker)
        self.actors = [self.remote_worker.remote() for _ in range(workers)]
        self.max_attempts = max_attempts

    def map(self, fn: WorkFn, model: ModelSettings, payloads: Sequence[Any],
            loaded: LoadedModel | None = None) -> Iterator[tuple[int, Any]]:
        ray = self.ray
        pending = list(range(len(payloads)))[::-1]  # pop() takes them in order
        attempts = [0] * len(payloads)
        in_flight: dict[Any, tuple[int, int]] = {}  # object ref -> (index, actor slot)
        idle = list(range(len(self.actors)))
        while pending or in_flight:
            while pending and idle:
                index, slot = pending.pop(), idle.pop()
                attempts[index] += 1
                in_flight[self.actors[slot].run.remote(fn, model, payloads[index])] = (index, slot)
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            index, slot = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                if attempts[index] >= self.max_attempts:
                    raise SealError(f"job {index} failed on {attempts[index]} workers; last error: "
                                    f"{str(exc).splitlines()[0]}") from None
                self.actors[slot] = self.remote_worker.remote()  # replace the dead worker
                pending.append(index)
            else:
                yield index, result
            idle.append(slot)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


@dataclasses.dataclass
class ExecutorSettings:
    """Where the rewards' inner loops run; not part of a run's config (a run may be resumed on another)."""

    kind: str = "local"
    """local: in this process; ray: on a Ray cluster, one model replica per worker"""
    address: str | None = None
    """join this Ray cluster (auto, or ray://host:10001); null: start a local one"""
    workers: int = 2
    """Ray workers, each holding one model"""
    cpus_per_worker: float = 1
    """CPU slots per Ray worker"""
    gpus_per_worker: float = 0
    """GPUs per Ray worker (1 puts each replica on its own GPU)"""

    def create(self) -> Executor:
        if self.kind == "local":
            return LocalExecutor()
        if self.kind == "ray":
            return RayExecutor(self.address, self.workers, self.cpus_per_worker, self.gpus_per_worker)
        raise SealError(f"unknown executor '{self.kind}' (choose one of: {', '.join(EXECUTORS)})")
