"""Benchmark: ReST-EM reward jobs (inner loops) on 1 and 2 Ray workers, against the in-process executor.

Each job is what one worker does for one group of contexts in `seal train`: the knowledge domain's
`score` on one demo training passage with one self-edit (a fixed text, so no generation is timed):
two inner loops (passage alone, passage + self-edit) and their closed-book answers. Variants, in one
script, on the same jobs:
  local      - the in-process executor (this process, all its torch threads);
  ray x1     - one Ray worker with 1 CPU slot;
  ray x2     - two Ray workers with 1 CPU slot each.
Prints wall time, jobs per minute, the speed-up and scaling efficiency of 2 workers over 1, the
per-job dispatch overhead (a no-op job) and each worker's model load time, then uses those numbers
to estimate one paper-size ReST-EM round (50 passages x 5 self-edits, 7B model) on 64 GPUs.

    python bench/ray_scaling.py [--jobs 8] [--epochs 3]
"""

from __future__ import annotations

import argparse
import functools
import math
import resource
import time

import ray

from seal_lm.executors import LocalExecutor, RayExecutor
from seal_lm.inner_loop import InnerLoopSettings
from seal_lm.models import ModelSettings, load_model
from seal_lm.domains.knowledge import KnowledgeConfig, KnowledgeDomain
from seal_lm.recipes.rest_em import _score_group


def _noop(loaded, payload):
    return payload


def time_executor(executor, work, model, payloads, loaded=None) -> float:
    started = time.perf_counter()
    results = dict(executor.map(work, model, payloads, loaded=loaded))
    assert sorted(results) == list(range(len(payloads)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8, help="reward jobs, one training passage each (default 8)")
    parser.add_argument("--epochs", type=int, default=3, help="inner-loop epochs (default 3; the paper's 10 is slower)")
    args = parser.parse_args()

    config = KnowledgeConfig(inner_loop=InnerLoopSettings(epochs=args.epochs), train_limit=args.jobs)
    domain = KnowledgeDomain(config)
    passages = list(domain.training_contexts())
    # A fixed self-edit per passage: its own sentences, one per line (the timing is the inner loops').
    payloads = [([p], [[p.context.replace(". ", ".\n")]], 1000 + i) for i, p in enumerate(passages)]
    work = functools.partial(_score_group, domain, 1)
    model = ModelSettings()

    loaded = load_model(model)
    results = {"local": time_executor(LocalExecutor(), work, model, payloads, loaded)}
    del loaded
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    for workers in (1, 2):
        executor = RayExecutor(workers=workers)
        warm = time.perf_counter()
        list(executor.map(_noop, model, list(range(workers))))  # each worker loads the model once
        load = time.perf_counter() - warm
        results[f"ray x{workers}"] = time_executor(executor, work, model, payloads)
        if workers == 2:
            n = 200
            started = time.perf_counter()
            list(executor.map(_noop, model, list(range(n))))
            overhead = (time.perf_counter() - started) / n
        executor.close()
        results[f"load x{workers}"] = load
    ray.shutdown()

    print(f"{args.jobs} reward jobs (2 inner loops of {args.epochs} epochs + answers each), embedded model")
    print(f"{'variant':<10} {'wall s':>8} {'jobs/min':>9}")
    for name in ("local", "ray x1", "ray x2"):
        print(f"{name:<10} {results[name]:>8.1f} {60 * args.jobs / results[name]:>9.2f}")
    speedup = results["ray x1"] / results["ray x2"]
    print(f"2 workers vs 1: {speedup:.2f}x, scaling efficiency {100 * speedup / 2:.0f}%; "
          f"ray x2 vs in-process: {results['local'] / results['ray x2']:.2f}x")
    print(f"dispatch overhead per job (no-op, 2 workers): {1000 * overhead:.1f} ms; "
          f"first-use model load: {results['load x1']:.1f} s (1 worker), {results['load x2']:.1f} s (2 in parallel)")
    print(f"peak memory of this driver: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
          "(each worker holds its own replica on top)")

    # A paper-size round: 50 passages x 5 self-edits (+1 passage-only baseline each) = 300 inner loops of
    # 30-45 s each on one GPU for a 7B model (the paper), one per worker at a time.
    jobs, gpus = 50 * 6, 64
    waves = math.ceil(jobs / gpus)
    for per_job in (30.0, 45.0):
        one_gpu = jobs * per_job
        cluster = waves * per_job + jobs / gpus * overhead + 120  # + ~2 min to load 7B on every worker, in parallel
        print(f"paper round, {per_job:.0f} s per inner loop: 1 GPU {one_gpu / 3600:.1f} h; {gpus} GPUs "
              f"{cluster / 60:.1f} min ({waves} waves of {gpus}; efficiency {100 * one_gpu / (gpus * cluster):.0f}%, "
              "limited by the last partial wave and the model load)")


if __name__ == "__main__":
    main()
