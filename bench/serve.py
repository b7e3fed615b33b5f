"""Benchmark: `seal serve` under concurrent load, with request batching vs without (max_batch=1).

Both runs serve the same model in this process (uvicorn in a background thread, on 127.0.0.1) and
receive the same N concurrent /v1/completions requests (distinct short prompts, greedy, at most
32 new tokens) from a thread pool; only the server's batching differs. The reference runs first,
so the peak memory printed after it is its own (ru_maxrss only grows). Greedy decoding makes
both runs' answers comparable: the script says whether they are identical.

    python bench/serve.py [--n 200] [--concurrency 200] [--max-tokens 32] [--max-batch 32]
                          [--model embedded] [--dtype auto] [--device auto]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import torch

from seal_lm.models import LoadedModel, ModelSettings, load_model
from seal_lm.serve import create_app, running


def fire(url: str, prompts: list[str], max_tokens: int, concurrency: int) -> tuple[float, list[float], list[str | None]]:
    """Send every prompt at once; return wall seconds, per-request latencies and texts (None: failed)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(timeout=600, limits=limits) as client:
        def one(prompt: str) -> tuple[float, str | None]:
            started = time.perf_counter()
            try:
                answer = client.post(f"{url}/v1/completions", json={
                    "model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
                text = answer.json()["choices"][0]["text"] if answer.status_code == 200 else None
            except (httpx.HTTPError, ValueError, KeyError):
                text = None
            return time.perf_counter() - started, text

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(pool.map(one, prompts))
        wall = time.perf_counter() - started
    return wall, [latency for latency, _ in results], [text for _, text in results]


def run(loaded: LoadedModel, prompts: list[str], max_tokens: int, concurrency: int, max_batch: int) -> dict:
    app = create_app(loaded, "bench", max_batch=max_batch)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with running(app) as url:
        fire(url, prompts[:2], max_tokens, 2)  # warm-up: first-call costs stay out of the measurement
        calls_before = app.state.batcher.stats.generate_calls
        wall, latencies, texts = fire(url, prompts, max_tokens, concurrency)
        calls = app.state.batcher.stats.generate_calls - calls_before
    ordered = sorted(latencies)
    return {
        "rps": len(prompts) / wall, "wall": wall, "texts": texts, "calls": calls,
        "p50": statistics.median(ordered), "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "failures": sum(text is None for text in texts),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="requests per run")
    parser.add_argument("--concurrency", type=int, default=None, help="client threads (default: n)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    concurrency = args.concurrency or args.n
    loaded = load_model(ModelSettings(name=args.model, dtype=args.dtype, device=args.device))
    prompts = [f"Request {i}: name one fact about the number {i}." for i in range(args.n)]

    print(f"{loaded.name} on {loaded.device} ({next(loaded.model.parameters()).dtype}): {args.n} concurrent "
          f"/v1/completions from {concurrency} threads, greedy, at most {args.max_tokens} new tokens")
    rows = [("max_batch=1", run(loaded, prompts, args.max_tokens, concurrency, 1)),
            (f"max_batch={args.max_batch}", run(loaded, prompts, args.max_tokens, concurrency, args.max_batch))]
    print(f"{'server':<14}{'req/s':>8}{'p50 s':>8}{'p95 s':>8}{'calls':>7}{'failed':>8}{'peak RSS MiB':>14}"
          f"{'peak GPU MiB':>14}")
    for name, r in rows:
        gpu = f"{r['peak_gpu_mib']:.0f}" if r["peak_gpu_mib"] is not None else "-"
        print(f"{name:<14}{r['rps']:>8.2f}{r['p50']:>8.2f}{r['p95']:>8.2f}{r['calls']:>7}{r['failures']:>8}"
              f"{r['peak_rss_mib']:>14.0f}{gpu:>14}")
    (_, single), (_, batched) = rows
    same = sum(a == b for a, b in zip(single["texts"], batched["texts"]) if a is not None)
    print(f"batched / unbatched throughput: {batched['rps'] / single['rps']:.2f}x; "
          f"identical answers: {same}/{args.n}")
    sys.exit(1 if single["failures"] or batched["failures"] else 0)


if __name__ == "__main__":
    main()
