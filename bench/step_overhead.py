"""Benchmark: what a multi-adapter training step costs beyond its arithmetic, as K grows.

On a GPU, a small model's step is bound by kernel launches and Python/autograd overhead, not by
arithmetic (measured on an H200: about 39 ms of kernels in a 394 ms step), so K adapters in one
pass are cheap only if that overhead does not grow with K. This bench makes the overhead visible
anywhere: it keeps the model's depth and architecture (default: the embedded model's 30 layers,
7 adapted projections each) but shrinks the width (`--width`, default 64) and the sequences
(`--chars`), so arithmetic is negligible and a step costs what its ops cost to dispatch. The
reference, side by side, is the same step with one adapter: the ratio says what K adapters cost
against one (1.0: K for the price of one).

    python bench/step_overhead.py [--ks 1,4,16] [--width 64] [--device cpu|cuda]
    python bench/step_overhead.py --width 0   # the model at its real width
"""

from __future__ import annotations

import argparse
import copy
import resource
import time

import torch
from transformers import AutoModelForCausalLM

from seal_lm.domains.knowledge.data import load_demo_corpus
from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob
from seal_lm.models import LoadedModel, ModelSettings, load_model


def narrow(loaded: LoadedModel, width: int) -> LoadedModel:
    """The same architecture and depth at `width`, randomly initialised (speed does not depend on the values)."""
    config = copy.deepcopy(loaded.model.config)
    heads = 4
    grouped = getattr(config, "num_key_value_heads", None) not in (None, config.num_attention_heads)
    config.update({"hidden_size": width, "intermediate_size": 2 * width, "num_attention_heads": heads,
                   "num_key_value_heads": 2 if grouped else heads, "head_dim": width // heads})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=loaded.model.dtype).to(loaded.device)
    return LoadedModel(model.eval().requires_grad_(False), loaded.tokenizer, f"{loaded.name} at width {width}",
                       loaded.source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="hub id, directory or .gguf (default: the embedded model)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--ks", default="1,4,16", help="numbers of adapters trained together; the first is the reference")
    parser.add_argument("--width", type=int, default=64, help="hidden size of the stand-in (0: the model as it is)")
    parser.add_argument("--chars", type=int, default=20, help="characters of each training sequence")
    parser.add_argument("--epochs", type=int, default=3, help="each job has 4 sequences: 4 steps per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="trainings per K; the fastest is reported")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(ModelSettings(name=args.model, device=args.device, dtype=args.dtype))
    if args.width:
        loaded = narrow(loaded, args.width)
    sequences = [p.context[: args.chars] for p in load_demo_corpus("validation")[:4]]
    settings = InnerLoopSettings(epochs=args.epochs)
    steps = args.epochs * len(sequences)
    updater = LoraUpdater(loaded, settings)
    print(f"{loaded.name}: {loaded.model.config.num_hidden_layers} layers, {args.device}, {args.dtype}, "
          f"{args.threads} threads; {steps} steps per training, fastest of {args.repeats}")
    print(f"{'K':>4}{'ms/step':>10}{'vs K=' + args.ks.split(',')[0]:>10}{'peak MiB':>10}")
    reference = None
    for k in map(int, args.ks.split(",")):
        jobs = [TrainJob(sequences, InnerLoopSettings(epochs=args.epochs, seed=i)) for i in range(k)]
        updater.train(jobs)  # warm-up: allocator, kernels, lazily built state
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        best = float("inf")
        for _ in range(args.repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            updater.train(jobs)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - started)
        ms = 1000 * best / steps
        reference = reference or ms
        peak = (torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda")
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(f"{k:>4}{ms:>10.1f}{ms / reference:>9.2f}x{peak:>10.0f}", flush=True)
    print("ms/step includes each training's set-up (adapter init, optimizer state, reading the adapters back), "
          "spread over its steps.")


if __name__ == "__main__":
    main()
