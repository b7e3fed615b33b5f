"""Benchmark: what the multi-adapter LoRA path adds to one adapted layer's forward and backward pass.

The layer shapes of the embedded model (hidden 576, MLP 1536, key/value 192), the bench's step sizes:
K=5 adapters with 20 tokens each (a batched step over the self-edits' implications) and 210 each (over
the passage). Per layer and step size, best of --trials, interleaved: the frozen base layer alone; the
layer wrapped by `MultiLoraLinear` with the K adapters' tokens routed as a batched training step routes
them (scatter, two batched matmuls, gather); the same tokens owned by one adapter (plain matmuls); and,
timed alone, the six rank-r batched matmuls that forward and backward of the batched path need. The
difference between the routed layer and the base is the LoRA path's cost; the six matmuls are its
arithmetic.

    python bench/lora_path.py [--dtype bfloat16] [--rank 32] [--trials 3]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from seal_lm.multi_lora import STRIDED_GRADIENTS_WARNING, MultiLora, TokenRouting

SHAPES = ((576, 1536), (1536, 576), (576, 576), (576, 192))  # gate/up, down, q/o, k/v
K = 5


def microseconds(fn: Callable[[], object], calls: int) -> float:
    """Per call, after 10 warm-up calls."""
    for _ in range(10):
        fn()
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def layer_times(width_in: int, width_out: int, tokens_each: int, rank: int, dtype: torch.dtype,
                trials: int) -> dict[str, float]:
    tokens = K * tokens_each
    model = nn.Sequential(nn.Linear(width_in, width_out, bias=False)).to(dtype).requires_grad_(False)
    lora = MultiLora(model, K, rank, 2 * rank)
    lora.optimizer_rows()
    with torch.no_grad():
        lora.weights.normal_(std=0.02)
    x = torch.randn(1, tokens, width_in, dtype=dtype, requires_grad=True)
    grad = torch.randn(1, tokens, width_out, dtype=dtype)
    routings = {"base layer": None,
                "K adapters routed": TokenRouting.from_owners(torch.arange(K).repeat_interleave(tokens_each), "cpu"),
                "one adapter": TokenRouting.from_owners(torch.zeros(tokens, dtype=torch.long), "cpu")}
    slots = tokens_each + 2
    padded = torch.randn(K, slots, width_in, dtype=dtype)
    a, b = torch.randn(K, rank, width_in, dtype=dtype), torch.randn(K, width_out, rank, dtype=dtype)
    low, out_grad = torch.randn(K, slots, rank, dtype=dtype), torch.randn(K, slots, width_out, dtype=dtype)

    def six_matmuls() -> None:
        torch.bmm(padded, a.transpose(1, 2)), torch.bmm(low, b.transpose(1, 2))  # forward
        torch.bmm(out_grad, b), torch.bmm(out_grad.transpose(1, 2), low)  # backward through B
        torch.bmm(low, a), torch.bmm(low.transpose(1, 2), padded)  # backward through A

    def routed(routing: TokenRouting | None) -> Callable[[], None]:
        def step() -> None:
            lora.route(routing)
            model(x).backward(grad)
            x.grad = None
        return step

    calls = max(20, 20_000 // tokens)
    times = {name: float("inf") for name in (*routings, "six rank-r matmuls")}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=STRIDED_GRADIENTS_WARNING)
        for _ in range(trials):  # interleaved: the VM's drift hits every variant alike
            variants = {**{name: routed(routing) for name, routing in routings.items()}, "six rank-r matmuls": six_matmuls}
            for name, fn in variants.items():
                times[name] = min(times[name], microseconds(fn, calls))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--tokens", type=int, nargs="+", default=[20, 210], help="tokens per adapter in a step")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, rank {args.rank}, K={K}; "
          "microseconds per forward+backward of one layer")
    print("| layer | tokens | base layer | K adapters routed | one adapter | six rank-r matmuls alone | LoRA path share |")
    print("|---|---|---|---|---|---|---|")
    for tokens_each in args.tokens:
        for width_in, width_out in SHAPES:
            t = layer_times(width_in, width_out, tokens_each, args.rank, dtype, args.trials)
            added = t["K adapters routed"] - t["base layer"]
            print(f"| {width_in}x{width_out} | {K}x{tokens_each} | {t['base layer']:.0f} | {t['K adapters routed']:.0f} | "
                  f"{t['one adapter']:.0f} | {t['six rank-r matmuls']:.0f} | "
                  f"{added / t['K adapters routed']:.0%} (matmuls {t['six rank-r matmuls'] / added:.0%} of it) |")


if __name__ == "__main__":
    main()
