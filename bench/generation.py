"""Benchmark: self-edit generation throughput, batched across passages and samples vs one by one.

Both runs use the same prompts (demo-corpus passages, the `implications` format) and sampling
settings on the KV-cached `HFGenerator`; only the batching differs. `--backend vllm` (CUDA with
vLLM installed) adds a third row: the same batched request through the vLLM backend. Tokens are counted by
re-tokenising the completions (what a user gets back), so both sides are counted the same way.

    python bench/generation.py [--passages 8] [--samples 3] [--max-new-tokens 128] [--dtype float32]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from seal_lm.domains.knowledge.data import load_demo_corpus
from seal_lm.domains.knowledge.formats import get_format
from seal_lm.generation import HFGenerator, SamplingParams, make_generator
from seal_lm.models import ModelSettings, load_model


def count_tokens(tokenizer, completions: list[list[str]]) -> int:
    return sum(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for outs in completions for c in outs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="hub id, directory or .gguf (default: the embedded model)")
    parser.add_argument("--passages", type=int, default=8)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf", help="vllm: also time the vLLM backend")
    args = parser.parse_args()
    loaded = load_model(ModelSettings(name=args.model, dtype=args.dtype, device=args.device))
    vllm = make_generator(loaded, "vllm") if args.backend == "vllm" else None  # fails here, before any timing
    fmt = get_format("implications")
    prompts = [fmt.prompt(p) for p in load_demo_corpus("validation")[: args.passages]]
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=args.max_new_tokens, n=args.samples, seed=0)
    single = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=args.max_new_tokens, n=1, seed=0)

    HFGenerator(loaded).generate(prompts[:1], SamplingParams(temperature=0.0, max_new_tokens=4))  # warm-up
    started = time.perf_counter()
    one_gen = HFGenerator(loaded, batch_size=1)
    one_by_one = [[one_gen.generate([p], single)[0][0] for _ in range(args.samples)] for p in prompts]
    one_seconds = time.perf_counter() - started
    started = time.perf_counter()
    batched = HFGenerator(loaded, batch_size=args.batch_size).generate(prompts, params)
    batched_seconds = time.perf_counter() - started

    rows = [("one by one", one_by_one, one_seconds), ("batched", batched, batched_seconds)]
    if vllm is not None:
        vllm.generate(prompts[:1], SamplingParams(temperature=0.0, max_new_tokens=4))  # engine start, not timed
        started = time.perf_counter()
        rows.append(("vllm", vllm.generate(prompts, params), time.perf_counter() - started))
    print(f"{loaded.name} on {loaded.device}, {args.dtype}: {len(prompts)} passages x {args.samples} samples, "
          f"at most {args.max_new_tokens} new tokens, temperature 1.0")
    print(f"{'mode':<12}{'seconds':>9}{'tokens':>8}{'tokens/s':>10}")
    rates = {}
    for name, completions, seconds in rows:
        tokens = count_tokens(loaded.tokenizer, completions)
        rates[name] = tokens / seconds
        print(f"{name:<12}{seconds:>9.1f}{tokens:>8}{rates[name]:>10.1f}")
    print(f"batched vs one by one: {rates['batched'] / rates['one by one']:.2f}x tokens/s")
    if "vllm" in rates:
        print(f"vllm vs batched transformers: {rates['vllm'] / rates['batched']:.2f}x tokens/s")
    if loaded.device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
