"""The Ray executor against a real local Ray cluster (2 CPU slots, started by the tests)."""

import json
import os
import sys

import pytest

ray = pytest.importorskip("ray")

from seal_lm.cli import main  # noqa: E402
from seal_lm.executors import LocalExecutor, RayExecutor  # noqa: E402
from seal_lm.models import ModelSettings  # noqa: E402

TRAIN = ["train", "--rest_em.rounds", "1", "--rest_em.contexts_per_round", "2", "--rest_em.contexts_per_batch", "1",
         "--rest_em.samples_per_context", "2", "--rest_em.reward_repeats", "1", "--limit", "1", "--grader", "f1",
         "--inner_loop.epochs", "1", "--inner_loop.rank", "4", "--inner_loop.alpha", "8",
         "--self_edit_sampling.max_new_tokens", "16", "--no-progress"]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # Workers cannot import this test module: ship its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _records(path):
    lines = [_without_times(json.loads(line)) for line in (path / "results.jsonl").read_text().splitlines()]
    return sorted(lines, key=lambda r: (r["kind"], r.get("round", 0), r.get("context_id", ""),
                                        r.get("condition", "")))


def test_train_on_ray_workers_gives_the_in_process_results(cluster, tiny_model_dir, tmp_path):
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert main([*TRAIN, "--model.name", str(tiny_model_dir), "--out", str(local)]) == 0
    assert main([*TRAIN, "--model.name", str(tiny_model_dir), "--out", str(distributed), "--executor.kind", "ray",
                 "--executor.workers", "2"]) == 0
    ours, theirs = _records(local), _records(distributed)
    assert [r["kind"] for r in theirs].count("rollout") == 2
    assert ours == theirs


def _square_or_crash(marker_dir: str, loaded, payload: int) -> tuple[int, int]:
    """Job 1 kills its worker process the first time it runs, as a crashed machine would."""
    marker = os.path.join(marker_dir, f"ran-{payload}")
    if payload == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return payload * payload, loaded.model.config.hidden_size


def test_a_worker_dying_mid_job_is_replaced_and_no_result_is_lost_or_doubled(cluster, tiny_model_dir, tmp_path):
    import functools

    executor = RayExecutor(workers=2)
    try:
        model = ModelSettings(name=str(tiny_model_dir), device="cpu", dtype="float32")
        work = functools.partial(_square_or_crash, str(tmp_path))
        results = list(executor.map(work, model, list(range(5))))
    finally:
        executor.close()
    assert sorted(i for i, _ in results) == [0, 1, 2, 3, 4]  # every job once, the crashed one retried
    assert dict(results) == {i: (i * i, 64) for i in range(5)}
    assert os.path.exists(tmp_path / "ran-1")
    local = dict(LocalExecutor().map(work, model, [0, 2, 3]))
    assert local == {0: (0, 64), 1: (4, 64), 2: (9, 64)}
