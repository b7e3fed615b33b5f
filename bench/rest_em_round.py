"""Benchmark: one ReST-EM round of the cpu-demo preset, before and after the fast inner loops.

  before - the inner loops one by one (`--adapters_per_pass 1`), float32: how the round ran
           before multi-adapter training and bfloat16;
  after  - the defaults: inner loops trained together, `--model.dtype auto` (bfloat16 where native).

Each variant runs `seal train` in its own fresh process (peak memory is its own) for one round
on the same training passages with the same seed; the held-out evaluation is cut to one passage
and the base condition, so the time is the round's: self-edit generation, inner loops (rewards),
policy update, evaluation of the new policy. Prints both, per phase, and the ratios.

    python bench/rest_em_round.py [--passages 4] [--samples 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# `seal` itself, printing its own peak resident memory at exit (RUSAGE_CHILDREN would give the largest
# child so far, not this one's).
PEAK_REPORTING_CLI = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: print('PEAK_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))\n"
    "from seal_lm.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
VARIANTS = {
    "before": ["--adapters_per_pass", "1", "--model.dtype", "float32"],
    "after": [],
}


def run_variant(name: str, args: argparse.Namespace, root: Path) -> dict:
    out = root / name
    command = [sys.executable, "-c", PEAK_REPORTING_CLI, "train", "--preset", "cpu-demo", "--rest_em.rounds", "1",
               "--rest_em.contexts_per_round", str(args.passages), "--rest_em.samples_per_context", str(args.samples),
               "--limit", "1", "--conditions", "[base]", "--no-progress", "--out", str(out), *VARIANTS[name]]
    started = time.perf_counter()
    done = subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    peak_mib = int(done.stderr.rsplit("PEAK_KIB ", 1)[1].split()[0]) / 1024
    summary = json.loads((out / "summary.json").read_text())
    round_ = summary["rounds"][0]
    return {"variant": name, "total": seconds, "peak_mib": peak_mib, **round_["seconds"],
            "mean_reward": round_["mean_reward"], "kept": round_["kept"], "contexts": round_["contexts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=4, help="training passages in the round (default 4)")
    parser.add_argument("--samples", type=int, default=3, help="self-edits per passage (default 3)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("after", "before"):
            rows.append(run_variant(name, args, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    after, before = rows
    phases = ("generation", "rewards", "policy_update", "evaluation", "total")
    print(f"\nOne cpu-demo ReST-EM round: {args.passages} passages x {args.samples} self-edits "
          "(+ 1 passage-only baseline each), 1 reward repeat\n")
    print(f"{'phase':<16}{'before s':>10}{'after s':>10}{'speed-up':>10}")
    for phase in phases:
        print(f"{phase:<16}{before[phase]:>10.1f}{after[phase]:>10.1f}{before[phase] / max(after[phase], 1e-9):>9.2f}x")
    print(f"{'peak MiB':<16}{before['peak_mib']:>10.0f}{after['peak_mib']:>10.0f}")
    print(f"mean reward: before {before['mean_reward']:.3f}, after {after['mean_reward']:.3f} "
          f"(same seeds; bf16 and batching change the samples, not the method)")


if __name__ == "__main__":
    main()
