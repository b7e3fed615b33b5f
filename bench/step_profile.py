"""Benchmark: where a training step's time goes, per op, and what the LoRA path and attention cost.

The inner-loop jobs of bench/inner_loop.py (one passage, K=5 self-edits) on the embedded model, in one
process: first the step timed plainly (the packed job or the K jobs batched), then the same with LoRA on
q_proj only (the difference is what LoRA on every linear layer costs, its FLOPs being about 9% of the
step's), then A/B, interleaved, best of --trials: the per-sequence attention as seal-lm runs it (float32,
flash kernel) against the reference, the model's dtype with the math kernel (seal-lm's path before
2026-12-04); then one training call under torch.profiler, its ops summed by name and input shapes. The
profiler inflates small ops several times over (a bfloat16 silu on [311, 1536]: 800 us in its table,
176 us timed in the step): read its table for what runs, the timings for seconds.

    python bench/step_profile.py [--dtype bfloat16] [--method packed-job|batched] [--epochs 10] [--rows 30]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from inner_loop import build_jobs, matmul_peak_gflops
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from seal_lm import packed_attention
from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob
from seal_lm.models import ModelSettings, load_model


def _model_dtype_math_attention(module, query, key, value, attention_mask, *args, cu_seq_lens_q=None, **kwargs):
    """The reference for the attention A/B: per sequence as packed_attention does, but in the model's dtype and,
    for bfloat16 and float16, with the math kernel."""
    if cu_seq_lens_q is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
    lengths = [end - start for start, end in zip(cu_seq_lens_q, cu_seq_lens_q[1:])]
    flat = [t.transpose(0, 1).reshape(1, t.shape[1], -1, t.shape[3]).split(lengths, dim=2) for t in (query, key, value)]
    backend = SDPBackend.MATH if query.dtype in (torch.bfloat16, torch.float16) else SDPBackend.FLASH_ATTENTION
    with sdpa_kernel([backend, SDPBackend.MATH]):
        out = torch.cat([sdpa_attention_forward(module, q, k, v, None, *args, **kwargs)[0] for q, k, v in zip(*flat)], 1)
    return out.reshape(query.shape[0], -1, *out.shape[2:]), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--method", choices=("packed-job", "batched"), default="packed-job")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rows", type=int, default=30, help="rows of the per-op table")
    parser.add_argument("--trials", type=int, default=3, help="interleaved trials of the attention A/B")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_peak_gflops("cpu", getattr(torch, args.dtype))
    loaded = load_model(ModelSettings(name="embedded", device="cpu", dtype=args.dtype))
    _, jobs = build_jobs(5)

    def work(settings: InnerLoopSettings) -> list[TrainJob]:
        if args.method == "batched":
            return [TrainJob(sequences, settings) for sequences in jobs]
        return [TrainJob(jobs[0], replace(settings, batch_size=len(jobs[0])))]

    seconds = {}
    for targets in ("all-linear", ("q_proj",)):
        settings = InnerLoopSettings(epochs=args.epochs, target_modules=targets)
        updater = LoraUpdater(loaded, settings)
        updater.train(work(replace(settings, epochs=1)))  # warm-up
        started = time.perf_counter()
        updater.train(work(settings))
        seconds[targets] = time.perf_counter() - started
    steps = args.epochs * (max(map(len, jobs)) if args.method == "batched" else 1)  # batch 1: a step per sequence
    full, q_only = seconds["all-linear"], seconds[("q_proj",)]
    print(f"{args.method}, {args.dtype}, {args.threads} threads, matmul peak {peak:.0f} GFLOP/s: {steps} steps in "
          f"{full:.2f} s ({1000 * full / steps:.0f} ms a step) with LoRA on every linear layer, {q_only:.2f} s with "
          f"LoRA on q_proj only: the LoRA path costs {100 * (full - q_only) / full:.0f}% of the step")
    settings = InnerLoopSettings(epochs=args.epochs)
    updater = LoraUpdater(loaded, settings)
    attention = {"float32 flash (seal-lm)": packed_attention._per_sequence_sdpa,
                 "model dtype, math kernel (reference)": _model_dtype_math_attention}
    trials: dict[str, list[float]] = {name: [] for name in attention}
    for _ in range(args.trials):
        for name, function in attention.items():
            AttentionInterface.register(packed_attention.NAME, function)
            started = time.perf_counter()
            updater.train(work(settings))
            trials[name].append(time.perf_counter() - started)
    AttentionInterface.register(packed_attention.NAME, packed_attention._per_sequence_sdpa)
    ours, reference = (min(t) for t in trials.values())
    print("attention A/B, best of %d interleaved: %s; seal-lm %.2fx the reference" % (args.trials, "; ".join(
        f"{name} {min(t):.2f} s ({', '.join(f'{x:.2f}' for x in t)})" for name, t in trials.items()), reference / ours))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        updater.train(work(settings))
    print(profiler.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=28, max_shapes_column_width=60))


if __name__ == "__main__":
    main()
