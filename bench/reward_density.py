"""Is the loglik reward less noisy than accuracy? Both rewards of the same self-edits, each from several inner loops.

On tuning passages (SQuAD passages 0-99 of squad_dev200.json: `--limit` of them), the model samples `--k`
self-edits per passage; every self-edit is learned by `--repeats` inner loops with different seeds, and each
adapted model is scored both ways: accuracy (the grader's 0/1 on greedy closed-book answers) and loglik (the
mean log-probability per token of the gold answers, teacher-forced). Printed:
  - the correlation of the two rewards across self-edits (means over repeats);
  - each reward's seed-to-seed reliability: the correlation, across self-edits, between the reward of inner
    loop 1 and of inner loop 2 (1: seeds do not matter; 0: the reward is all noise), and the share of its
    variance that lies between self-edits rather than between seeds of one self-edit;
  - both again within passages (each passage's mean over its self-edits subtracted first): ReST-EM compares
    the self-edits of one passage, so that is the comparison a reward must get right; passage difficulty
    alone would correlate the two rewards across passages.
Correlations come with a 95% interval (Fisher z, n = self-edits).

    python bench/reward_density.py [--data squad_dev200.json] [--limit 10] [--k 3] [--repeats 2] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from seal_lm.domains.knowledge import KnowledgeConfig, KnowledgeDomain
from seal_lm.generation import make_generator
from seal_lm.models import load_model

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "squad_dev200.json"


def between_share(runs: list[list[float]]) -> float:
    """Variance of the per-self-edit means over total variance (one-way ANOVA share; nan when constant)."""
    total = statistics.pvariance([v for r in runs for v in r])
    if total == 0 or len(runs) < 2:
        return float("nan")
    return 1 - statistics.fmean(statistics.pvariance(r) for r in runs) / total


def correlation(x: list[float], y: list[float]) -> float:
    return statistics.correlation(x, y) if len(set(x)) > 1 and len(set(y)) > 1 else float("nan")


def with_interval(r: float, n: int) -> list[float]:
    """[r, low, high]: a 95% interval by Fisher's z (nan where r is undefined or n <= 3)."""
    if math.isnan(r) or n <= 3 or abs(r) >= 1:
        return [r, float("nan"), float("nan")]
    z, half = math.atanh(r), 1.96 / math.sqrt(n - 3)
    return [r, math.tanh(z - half), math.tanh(z + half)]


def within_passages(values: list[float], k: int) -> list[float]:
    """`values` (k consecutive self-edits per passage) less their passage's mean."""
    return [v - statistics.fmean(values[i - i % k : i - i % k + k]) for i, v in enumerate(values)]


def summarize(loglik: list[list[float]], accuracy: list[list[float]], k: int) -> dict:
    """The printed statistics from each self-edit's rewards (one value per inner loop), k self-edits a passage."""
    n = len(loglik)
    means = {name: [statistics.fmean(r) for r in runs] for name, runs in (("loglik", loglik), ("accuracy", accuracy))}
    seeds = {name: ([r[0] for r in runs], [r[1] for r in runs]) for name, runs in (("loglik", loglik),
                                                                                 ("accuracy", accuracy))}
    return {
        "self_edits": n,
        "loglik_vs_accuracy": with_interval(correlation(means["loglik"], means["accuracy"]), n),
        "reliability": {name: with_interval(correlation(*pair), n) for name, pair in seeds.items()},
        "between_share": {"loglik": between_share(loglik), "accuracy": between_share(accuracy)},
        "within_passages": {  # centring spends a degree of freedom per passage
            "loglik_vs_accuracy": with_interval(correlation(within_passages(means["loglik"], k),
                                                            within_passages(means["accuracy"], k)), n - n // k),
            "reliability": {name: with_interval(correlation(within_passages(a, k), within_passages(b, k)), n - n // k)
                            for name, (a, b) in seeds.items()},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--limit", type=int, default=10, help="tuning passages (from passage 0)")
    parser.add_argument("--k", type=int, default=3, help="self-edits per passage")
    parser.add_argument("--repeats", type=int, default=2, help="inner loops per self-edit (at least 2)")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--dtype", default="auto", help="model.dtype (auto, float32, bfloat16)")
    parser.add_argument("--out", default=None, help="write the raw rewards here as JSON")
    args = parser.parse_args()
    config = KnowledgeConfig(train_data=args.data, train_limit=args.limit, reward="loglik", reward_baseline="base")
    config.model.name, config.model.dtype = args.model, args.dtype
    config.validate()
    domain = KnowledgeDomain(config)
    passages = domain.training_contexts()
    model = load_model(config.model)
    started = time.perf_counter()
    sampling = config.self_edit_sampling
    sampling.n, sampling.seed = args.k, 0
    completions = make_generator(model).generate([domain.self_edit_prompt(p) for p in passages], sampling)
    scored = domain.score(model, passages, completions, args.repeats, seed=0)
    seconds = time.perf_counter() - started
    loglik = [runs for s in scored for runs in s.details["reward_runs"]]
    accuracy = [runs for s in scored for runs in s.details["accuracy_runs"]]
    rows = {"passages": len(passages), "repeats": args.repeats, "seconds": seconds, "dtype": str(model.model.dtype),
            **summarize(loglik, accuracy, args.k)}
    print(json.dumps(rows, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({**rows, "loglik_runs": loglik, "accuracy_runs": accuracy}, indent=1))


if __name__ == "__main__":
    main()
