"""Benchmark: peak memory of a ReST-EM round, as a multiple of the model's weight bytes.

1. The whole round: `seal train --preset cpu-demo` for one round (sampling, rewards, policy update,
   evaluation of the new policy) in a fresh process; the peak resident memory of each phase (and the
   device's, on CUDA), with `model.prepack_weights` true (the default: on the CPU, packed copies of the
   frozen weights) and false, side by side. "load" is loading the model, "other" the time between phases.
2. The policy update side by side, each variant in its own fresh process after the same LoRA SFT
   on the same examples:
   - reference: how a round updated its policy before one policy stayed in memory: merge the update
     into a float32 copy of the policy loaded from its checkpoint, save that copy, then load the new
     checkpoint for the loss after the update and again for the next round, the old policy still held;
   - seal-lm: `save_merged`, the update merged into the checkpoint tensor by tensor and into the
     policy's weights in place.
   A third process that stops after the SFT gives the memory both variants start from.

    python bench/round_memory.py [--model embedded | --shape llama-3.2-1b] [--passages 2] [--samples 2] [--epochs N]

Every step shape of an inner loop occurs in its first epoch, so `--epochs` (the inner loops' epochs; default the
preset's 10) shortens a round on a slow machine without changing its peak.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs in a child process: load, train the policy update, merge one way, print the peak resident memory.
POLICY_UPDATE = r'''
import dataclasses, json, resource, sys
from pathlib import Path
from seal_lm.adapters import merge_adapter, save_merged
from seal_lm.domains.knowledge.data import load_demo_corpus
from seal_lm.domains.knowledge.formats import get_format
from seal_lm.inner_loop import Example, InnerLoopSettings, LoraUpdater, TrainJob
from seal_lm.models import ModelSettings, load_model

variant, model_name, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
settings = ModelSettings(name=model_name)
policy = load_model(settings)
weight_bytes = sum(p.numel() * p.element_size() for p in policy.model.parameters())
fmt = get_format("implications")
examples = [Example(fmt.prompt(p), p.context) for p in load_demo_corpus("train")[:4]]
update = InnerLoopSettings(rank=64, alpha=128, learning_rate=3e-4, epochs=1, batch_size=4)
adapter = LoraUpdater(policy, update).train([TrainJob(examples, update)])[0].adapter
before_merge = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if variant == "reference":
    copy = load_model(dataclasses.replace(settings, name=policy.source, dtype="float32", device="cpu"))
    merge_adapter(copy.model, adapter)
    copy.model.save_pretrained(out)
    copy.tokenizer.save_pretrained(out)
    updated = load_model(dataclasses.replace(settings, name=str(out)))  # the loss after the update
    LoraUpdater(updated, update).mean_loss(examples)
    del copy, updated
    following = load_model(dataclasses.replace(settings, name=str(out)))  # the next round's policy
elif variant == "seal-lm":
    save_merged(policy, adapter, out)
    LoraUpdater(policy, update).mean_loss(examples)
import torch
print(json.dumps({"variant": variant, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "device_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0,
                  "before_merge_kib": before_merge, "weight_bytes": weight_bytes,
                  "dtype": str(policy.model.dtype)}))
'''

# Runs `seal train` in a child process with the round's phases marked: each phase's peak resident memory (Linux's
# VmHWM, reset at every phase boundary through /proc/self/clear_refs) and, on CUDA, its peak allocated device memory.
PHASED_CLI = r'''
import atexit, functools, json, re, sys, torch
from seal_lm.recipes import rest_em

peaks, current, depth = {}, ["load"], [0]

def close_phase():
    host = int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024
    device = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    old = peaks.get(current[0], (0.0, 0.0))
    peaks[current[0]] = (max(old[0], host), max(old[1], device))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

def phase(label, function):
    @functools.wraps(function)
    def marked(*args, **kwargs):
        if depth[0]:
            return function(*args, **kwargs)
        close_phase()
        current[0] = label(args) if callable(label) else label
        depth[0] += 1
        try:
            return function(*args, **kwargs)
        finally:
            depth[0] -= 1
            close_phase()
            current[0] = "other"
    return marked

run_rest_em = rest_em.run_rest_em
def run_with_phases(domain, *args, **kwargs):
    domain.evaluate = phase(lambda a: f"evaluation, round {a[1]}", domain.evaluate)
    domain.sample_self_edits = phase("sampling", domain.sample_self_edits)
    return run_rest_em(domain, *args, **kwargs)
rest_em.run_rest_em = run_with_phases
rest_em._score_group = phase("rewards", rest_em._score_group)
rest_em._update_policy = phase("policy update", rest_em._update_policy)

def report():
    close_phase()
    print("PHASES", json.dumps(peaks), file=sys.stderr)
atexit.register(report)
from seal_lm.cli import main
sys.exit(main(sys.argv[1:]))
'''


def policy_update(variant: str, model: str, root: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", POLICY_UPDATE, variant, model, str(root / variant)], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def whole_round(args: argparse.Namespace, root: Path, prepack: bool) -> tuple[dict[str, list[float]], float]:
    """Each phase's peak host and device MiB, in the order the phases first ran, and the round's seconds."""
    command = [sys.executable, "-c", PHASED_CLI, "train", "--preset", "cpu-demo", "--model.name", args.model,
               "--model.prepack_weights", str(prepack).lower(),
               "--rest_em.rounds", "1", "--rest_em.contexts_per_round", str(args.passages),
               "--rest_em.samples_per_context", str(args.samples), "--limit", "1", "--no-progress",
               *(["--inner_loop.epochs", str(args.epochs)] if args.epochs else []),
               "--out", str(root / f"round-{prepack}")]
    started = time.perf_counter()
    done = subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    phases = json.loads(done.stderr.rsplit("PHASES ", 1)[1].splitlines()[0])
    return phases, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="any model.name value (default: embedded)")
    parser.add_argument("--shape", help="instead of --model: a random-weight architecture from shapes.py (timing and "
                                        "memory only), e.g. llama-3.2-1b")
    parser.add_argument("--passages", type=int, default=2, help="training passages in the round (default 2)")
    parser.add_argument("--samples", type=int, default=2, help="self-edits per passage (default 2)")
    parser.add_argument("--epochs", type=int, help="the round's inner-loop epochs (default: the preset's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.shape:
            from shapes import save_random_model

            args.model = save_random_model(args.shape, str(root / "model"))
        rows = [policy_update(v, args.model, root) for v in ("sft-only", "reference", "seal-lm")]
        rounds = {prepack: whole_round(args, root, prepack) for prepack in (True, False)}
    weight_mib = rows[0]["weight_bytes"] / 2**20
    print(f"model {args.shape or args.model}: weights {weight_mib:.0f} MiB in {rows[0]['dtype']}\n")
    print(f"{'policy update':<14}{'peak MiB':>10}{'x weights':>11}{'merge adds MiB':>16}{'device MiB':>12}")
    for row in rows:
        peak = row["peak_kib"] / 1024
        added = peak - row["before_merge_kib"] / 1024
        print(f"{row['variant']:<14}{peak:>10.0f}{peak / weight_mib:>11.1f}{added:>16.0f}"
              f"{row['device_peak_mib']:>12.0f}")
    reference, ours = rows[1]["peak_kib"], rows[2]["peak_kib"]
    print(f"\nreference / seal-lm peak: {reference / ours:.2f}x")
    epochs = f", {args.epochs} inner-loop epochs" if args.epochs else ""
    print(f"\nwhole cpu-demo round ({args.passages} passages x {args.samples} self-edits, 1 held-out passage{epochs}):")
    for prepack, (phases, round_s) in rounds.items():
        host = max(h for h, _ in phases.values())
        device = max(d for _, d in phases.values())
        print(f"  model.prepack_weights {str(prepack).lower():<6} peak {host:.0f} MiB = "
              f"{host / weight_mib:.1f}x the weights, {round_s:.0f} s"
              + (f"; device peak {device:.0f} MiB = {device / weight_mib:.1f}x" if device else ""))
        for name, (host, device) in phases.items():
            print(f"    {name:<22}{host:>8.0f} MiB {host / weight_mib:>5.1f}x"
                  + (f"   device {device:>8.0f} MiB {device / weight_mib:>5.1f}x" if device else ""))


if __name__ == "__main__":
    main()
