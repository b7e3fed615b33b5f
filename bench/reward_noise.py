"""How much of a ReST-EM reward is noise? Re-score a finished round with fresh inner-loop seeds.

For the rollouts of one round of a `seal train` run (knowledge domain), every self-edit and the
passage-only baseline are scored again by `--repeats` new inner loops (new LoRA seeds and
sequence orders, same completions). If the rewards that chose the kept self-edits were signal,
the kept ones still beat the baseline on fresh seeds; if they were noise, their gain regresses
towards zero. Prints the correlation between original and fresh rewards, and the fresh gain of
kept against not-kept self-edits.

    python bench/reward_noise.py RUN_DIR [--round 1] [--repeats 2] [--limit 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

from seal_lm.config import parse_values
from seal_lm.domains.knowledge import KnowledgeConfig, KnowledgeDomain
from seal_lm.models import load_model
from seal_lm.runs import read_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="fresh inner loops per self-edit (default 2)")
    parser.add_argument("--limit", type=int, default=5, help="training passages to re-score (default 5)")
    args = parser.parse_args()
    run_dir = Path(args.run_dir)
    stored = {k: v for k, v in read_config(run_dir).items() if k not in ("command", "domain")}
    config = parse_values(KnowledgeConfig, stored, str(run_dir / "config.json"))
    rollouts = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    rollouts = [r for r in rollouts if r.get("kind") == "rollout" and r["round"] == args.round][: args.limit]
    domain = KnowledgeDomain(config)
    passages = {p.id: p for p in domain.training_contexts()}
    # The round's inner loops adapted the policy that wrote these self-edits (round r-1's checkpoint).
    model_name = str(run_dir / f"policy-round-{args.round - 1}") if args.round > 1 else config.model.name
    if args.round > 1 and not Path(model_name).is_dir():
        model_name = config.model.name  # nothing was kept in that round: the policy did not change
    model = load_model(dataclasses.replace(config.model, name=model_name))
    started = time.perf_counter()
    fresh = domain.score(model, [passages[r["context_id"]] for r in rollouts], [r["completions"] for r in rollouts],
                         args.repeats, seed=987654)
    seconds = time.perf_counter() - started
    old, new, kept_gain, other_gain = [], [], [], []
    for record, scored in zip(rollouts, fresh):
        for i, (reward, again) in enumerate(zip(record["rewards"], scored.rewards)):
            old.append(reward - record["baseline"])
            new.append(again - scored.baseline)
            (kept_gain if i in record["kept"] else other_gain).append(again - scored.baseline)
        print(f"{record['title'][:32]:<32} baseline {record['baseline']:.2f} -> {scored.baseline:.2f}   "
              f"rewards {record['rewards']} -> {[round(x, 2) for x in scored.rewards]}   kept {record['kept']}")
    correlation = statistics.correlation(old, new) if len(set(old)) > 1 and len(set(new)) > 1 else float("nan")
    print(f"\n{len(rollouts)} passages, {len(old)} self-edits, {args.repeats} fresh inner loops each, {seconds:.0f} s")
    print(f"correlation of gains, original vs fresh seeds: {correlation:.2f}")
    print(f"fresh gain over passage-only: kept {statistics.fmean(kept_gain) if kept_gain else float('nan'):+.3f} "
          f"(n={len(kept_gain)}), not kept {statistics.fmean(other_gain) if other_gain else float('nan'):+.3f} "
          f"(n={len(other_gain)})")


if __name__ == "__main__":
    main()
