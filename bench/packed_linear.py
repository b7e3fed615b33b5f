"""Benchmark: frozen weights packed once for oneDNN (src/seal_lm/packed_linear.py) against torch's plain
linear layers, which repack the weight at every call. Side by side in one process, interleaved, best of
--trials:

1. one matmul of the embedded model's shapes, `x W^T` and the input gradient `g W`, at several token counts;
2. whole inner loops (bench/inner_loop.py's jobs): the packed job and the K=5 jobs batched,
   `model.prepack_weights` on against off (also: whether the adapters come out the same);
3. answering the passage's 5 questions with the 5 adapters (25 greedy answers of up to 64 tokens),
   `model.prepack_weights` on against off (also: whether the answers are the same).

    python bench/packed_linear.py [--dtype bfloat16] [--trials 3] [--parts matmul,inner-loop,answers]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from inner_loop import build_jobs, matmul_peak_gflops

from seal_lm.domains.knowledge.evaluation import answer_questions
from seal_lm.generation import HFGenerator
from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob
from seal_lm.models import ModelSettings, load_model
from seal_lm.packed_linear import PackedLinear, linear_forward, linear_input_grad


def best_seconds(fn, trials: int, repeats: int = 1) -> float:
    fn()
    best = float("inf")
    for _ in range(trials):
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - started) / repeats)
    return best


def interleaved(run, trials: int) -> dict[bool, float]:
    """Best seconds of `run(packed)` for packed False and True, alternating, after one warm-up call each."""
    run(False), run(True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(trials):
        for packed in (False, True):
            started = time.perf_counter()
            run(packed)
            times[packed].append(time.perf_counter() - started)
    return {packed: min(t) for packed, t in times.items()}


def matmuls(dtype: torch.dtype, trials: int, peak: float) -> None:
    print(f"{'weight':>12}{'tokens':>8}{'x W^T us':>10}{'packed':>8}{'ratio':>7}{'g W us':>9}{'packed':>8}{'ratio':>7}"
          f"{'% peak packed':>15}")
    for out_features, in_features in [(1536, 576), (576, 1536), (576, 576), (192, 576), (49152, 576)]:
        layer = torch.nn.Linear(in_features, out_features, bias=False).to(dtype).requires_grad_(False)
        packed = PackedLinear(layer)
        for tokens in (8, 100, 250, 800):
            x, g = torch.randn(tokens, in_features, dtype=dtype), torch.randn(tokens, out_features, dtype=dtype)
            repeats = max(1, int(2e8 / (tokens * in_features * out_features)))
            plain_f = best_seconds(lambda: linear_forward(layer, x), trials, repeats)
            packed_f = best_seconds(lambda: linear_forward(packed, x), trials, repeats)
            plain_b = best_seconds(lambda: linear_input_grad(layer, g), trials, repeats)
            packed_b = best_seconds(lambda: linear_input_grad(packed, g), trials, repeats)
            share = 2 * tokens * in_features * out_features / packed_f / 1e9 / peak
            print(f"{out_features:>6}x{in_features:<5}{tokens:>8}{plain_f * 1e6:>10.0f}{packed_f * 1e6:>8.0f}"
                  f"{plain_f / packed_f:>7.2f}{plain_b * 1e6:>9.0f}{packed_b * 1e6:>8.0f}{plain_b / packed_b:>7.2f}"
                  f"{100 * share:>15.0f}", flush=True)


def inner_loops(loaded, trials: int, epochs: int) -> list:
    passage, jobs = build_jobs(5)
    adapters = []
    for method in ("packed-job", "batched"):
        results = {}

        def run(packed: bool) -> None:
            settings = InnerLoopSettings(epochs=epochs)
            updater = LoraUpdater(replace(loaded, prepack_weights=packed), settings)
            if method == "packed-job":
                results[packed] = updater.train([TrainJob(jobs[0], replace(settings, batch_size=len(jobs[0])))])
            else:
                results[packed] = updater.train([TrainJob(seqs) for seqs in jobs])

        best = interleaved(run, trials)
        difference = max((a - b).abs().max().item() for r0, r1 in zip(results[False], results[True])
                         for name in r0.adapter.weights
                         for a, b in zip(r0.adapter.weights[name], r1.adapter.weights[name]))
        print(f"{method:<11} {epochs} epochs: plain {best[False]:.2f} s, packed {best[True]:.2f} s, "
              f"{best[False] / best[True]:.2f}x; largest adapter weight difference {difference:.2g}", flush=True)
        if method == "batched":
            adapters = [r.adapter for r in results[True]]
    return [passage, adapters]


def answers(loaded, passage, adapters, trials: int) -> None:
    outputs = {}

    def run(packed: bool) -> None:
        outputs[packed] = answer_questions(HFGenerator(replace(loaded, prepack_weights=packed)),
                                           [passage] * len(adapters), adapters)

    best = interleaved(run, trials)
    print(f"answers ({len(adapters)} adapters x {len(passage.questions)} questions): plain {best[False]:.2f} s, "
          f"packed {best[True]:.2f} s, {best[False] / best[True]:.2f}x; same answers: {outputs[False] == outputs[True]}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="of each timed inner loop")
    parser.add_argument("--parts", default="matmul,inner-loop,answers")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    peak = matmul_peak_gflops("cpu", dtype)
    print(f"cpu, {torch.get_num_threads()} threads, {args.dtype}; torch.matmul peak (2048^3) {peak:.0f} GFLOP/s",
          flush=True)
    parts = args.parts.split(",")
    if "matmul" in parts:
        matmuls(dtype, args.trials, peak)
    if "inner-loop" in parts or "answers" in parts:
        loaded = load_model(ModelSettings(dtype=args.dtype))
        passage, adapters = inner_loops(loaded, args.trials, args.epochs)
        if "answers" in parts:
            answers(loaded, passage, adapters, args.trials)


if __name__ == "__main__":
    main()
