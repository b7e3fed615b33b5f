"""ReST-EM's sections: rewards against baselines per round, how often a self-edit beat its baseline, the
gain per training context, the policy updates and the time per round."""

from __future__ import annotations

from seal_lm.records import PolicyUpdateRecord, RolloutRecord
from seal_lm.report.page import DASH, esc, estimate_text, fmt, section, table
from seal_lm.report.plots import fraction_bars, gain_bars, paired_boxes
from seal_lm.report.run import Run
from seal_lm.stats import mean_with_interval


def _by_round(run: Run) -> dict[int, list[RolloutRecord]]:
    rounds: dict[int, list[RolloutRecord]] = {}
    for r in run.of(RolloutRecord):
        rounds.setdefault(r.round, []).append(r)
    return dict(sorted(rounds.items()))


def _contexts(run: Run, key: str = "contexts") -> str:
    """The domain's word for its contexts ("passages", "tasks"), or for one (`key` "context")."""
    return (run.summary or {}).get("units", {}).get(key, key)


def rewards_section(run: Run) -> str:
    rounds = _by_round(run)
    if not rounds:
        return ""
    rows = []
    for rnd, rollouts in rounds.items():
        rewards = [x for r in rollouts for x in r.rewards]
        rows.append([esc(rnd), esc(len(rollouts)), esc(len(rewards)), esc(fmt(_mean(rewards))),
                     esc(fmt(_mean([r.baseline for r in rollouts]))), esc(fmt(_mean([max(r.rewards) for r in rollouts]))),
                     esc(sum(len(r.kept) for r in rollouts))])
    plot = paired_boxes(run.plots, "rewards", [f"round {rnd}" for rnd in rounds],
                        [[x for r in rs for x in r.rewards] for rs in rounds.values()],
                        [[r.baseline for r in rs] for rs in rounds.values()], ("rewards (all K)", "baseline"),
                        "reward")
    note = ("Rewards: the score after the inner-loop update on each sampled self-edit (all K per context); the "
            "baseline is what a self-edit has to beat.")
    return section("rewards", "Reward distribution per round", note,
                   table(["round", _contexts(run), "rewards", "mean reward", "mean baseline", "mean best reward",
                          "kept completions"], rows, set(range(7))), plot)


def beat_section(run: Run) -> str:
    rounds = _by_round(run)
    if not rounds:
        return ""
    outcomes = {rnd: [float(max(r.rewards) > r.baseline + 1e-12) for r in rs if r.rewards] for rnd, rs in rounds.items()}
    estimates = [mean_with_interval(o) for o in outcomes.values()]
    counts = [(int(sum(o)), len(o)) for o in outcomes.values()]
    rows = [[esc(rnd), esc(f"{k} of {n}"), esc(estimate_text(e))] for rnd, (k, n), e in zip(rounds, counts, estimates)]
    plot = fraction_bars(run.plots, "beat_baseline", [f"round {rnd}" for rnd in rounds], estimates, counts,
                         f"{_contexts(run)} where best > baseline, %")
    note = ("A context counts when the highest reward among its K self-edits is strictly above its baseline; 95% "
            "Wilson interval.")
    return section("beat-baseline", f"Training {_contexts(run)} whose best self-edit beat the baseline", note,
                   table(["round", _contexts(run), "fraction [95% CI]"], rows, {0, 1, 2}), plot)


def gains_section(run: Run) -> str:
    rounds = _by_round(run)
    if not rounds:
        return ""
    panels, rows = {}, []
    for rnd, rollouts in rounds.items():
        entries = sorted(((r.context_id, max(r.gains), _mean(r.gains)) for r in rollouts if r.gains),
                         key=lambda e: e[1], reverse=True)
        panels[f"round {rnd} (n={len(entries)})"] = entries
        rows.append([esc(rnd), esc(len(entries)), esc(fmt(_mean([e[1] for e in entries]), "+.3f")),
                     esc(fmt(_mean([e[2] for e in entries]), "+.3f")), esc(sum(e[1] > 1e-12 for e in entries)),
                     esc(sum(e[1] < -1e-12 for e in entries))])
    note = "Best gain: highest reward minus the baseline; mean gain: mean reward minus the baseline. Sorted by best gain."
    return section("gains", f"Gain per training {_contexts(run, 'context')}", note, table(["round", _contexts(run), "mean best gain", "mean of mean gain", "best gain > 0",
                                "best gain < 0"], rows, set(range(6))),
                   gain_bars(run.plots, "gains", panels, "gain over baseline"))


def policy_section(run: Run) -> str:
    updates = sorted(run.of(PolicyUpdateRecord), key=lambda r: r.round)
    timing = {row["round"]: row["seconds"] for row in (run.summary or {}).get("rounds", [])}
    if not updates and not timing:
        return ""
    parts = []
    if updates:
        rows = [[esc(u.round), esc(f"{u.contexts_kept} of {u.contexts}"), esc(u.examples),
                 esc(", ".join(f"{x:.3f}" for x in u.epoch_losses) if u.epoch_losses else DASH),
                 esc(DASH if u.nll_before is None else f"{fmt(u.nll_before)} \u2192 {fmt(u.nll_after)}"),
                 esc(fmt(u.seconds, ".1f")), esc(u.checkpoint or DASH)] for u in updates]
        parts.append(table(["round", f"{_contexts(run)} kept", "examples", "epoch losses", "NLL before \u2192 after",
                            "seconds", "checkpoint"], rows, {0, 1, 2, 3, 4, 5}))
    if timing:
        phases = ["generation", "rewards", "policy_update", "evaluation"]
        rows = [[esc(rnd)] + [esc(fmt(t.get(p), ".1f")) for p in phases] + [esc(fmt(sum(t.values()), ".1f"))]
                for rnd, t in sorted(timing.items())]
        parts.append("<h3>Time per round (seconds)</h3>\n")
        parts.append(table(["round"] + [p.replace("_", " ") for p in phases] + ["total"], rows, set(range(6))))
    note = ("Supervised update of the policy on the kept self-edits, merged into the next round's checkpoint; NLL of "
            "the kept completions under the policy before and after the update.")
    return section("policy", "Policy updates", note, *parts)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


SECTIONS = (rewards_section, beat_section, gains_section, policy_section)
