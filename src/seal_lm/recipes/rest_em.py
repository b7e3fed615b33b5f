"""ReST-EM, the outer loop: teach the model to write self-edits that help it learn.

Each round, for every training context (a passage, a few-shot task):
  1. E-step: sample K self-edits from the current policy, score each by an inner loop (the domain
     runs it and says how well the updated model does: the reward) and compare with the domain's
     baseline (e.g. training on the passage alone);
  2. keep the self-edits that beat the baseline (the best one per context, by default);
  3. M-step: finetune the policy on (self-edit prompt -> kept self-edit) with LoRA, merge the update
     into a new policy checkpoint (safetensors) that writes and is adapted by the next round's edits;
  4. evaluate the new policy on held-out contexts.

This module only talks to the `Domain` protocol: it never knows what a context or a reward means.
Everything finished is appended to the run directory at once (rollouts per group of contexts, the
policy update once its checkpoint is saved, evaluations per group), so a killed run resumes where it
stopped and ends with the same results as an uninterrupted one: every sample and every inner loop is
seeded by what it is, never by when it runs, and the policy is always reloaded from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from seal_lm.adapters import merge_adapter
from seal_lm.errors import SealError
from seal_lm.executors import Executor, ExecutorSettings
from seal_lm.generation import Prompt, SamplingParams, make_generator
from seal_lm.inner_loop import Example, InnerLoopSettings, LoraUpdater, TrainJob
from seal_lm.models import LoadedModel, ModelSettings, load_model
from seal_lm.runs import RunDir, derived_seed

KEEP_RULES = ("best", "positive", "top-k")


def policy_update_defaults() -> InnerLoopSettings:
    """The paper's policy SFT for knowledge incorporation: LoRA r64/alpha128, lr 3e-4, 2 epochs, batch 10."""
    return InnerLoopSettings(rank=64, alpha=128, learning_rate=3e-4, epochs=2, batch_size=10)


@dataclass
class RestEmSettings:
    """Outer-loop settings; defaults are the paper's knowledge-incorporation ones."""

    rounds: int = 2
    contexts_per_round: int = 50  # round r takes the next contexts of the training set (wrapping around)
    samples_per_context: int = 5  # K self-edits per context
    reward_repeats: int = 3  # each reward is the mean over this many independently seeded inner loops
    keep: str = "best"  # best: the best self-edit if it beats the baseline; positive: all that beat it; top-k
    keep_k: int = 2
    adapt: str = "policy"  # the inner loop adapts the current policy (paper) or the original "base" model
    contexts_per_batch: int = 4  # contexts whose sampling and inner loops run batched together
    policy_update: InnerLoopSettings = field(default_factory=policy_update_defaults)

    def validate(self) -> None:
        if self.keep not in KEEP_RULES:
            raise SealError(f"unknown keep rule '{self.keep}' (choose one of: {', '.join(KEEP_RULES)})")
        if self.adapt not in ("policy", "base"):
            raise SealError(f"adapt must be 'policy' or 'base', not '{self.adapt}'")
        for name in ("rounds", "contexts_per_round", "samples_per_context", "reward_repeats", "keep_k",
                     "contexts_per_batch"):
            if getattr(self, name) < 1:
                raise SealError(f"rest_em.{name} must be at least 1 (got {getattr(self, name)})")


@dataclass
class Scored:
    """A domain's verdict on one context's self-edits: reward per self-edit and the baseline to beat."""

    baseline: float
    rewards: list[float]
    details: dict[str, Any] = field(default_factory=dict)  # anything worth keeping in the record


class Domain(Protocol):
    """What the outer loop needs from a domain. Contexts only need a stable `id` and a `title`."""

    sampling: SamplingParams  # how self-edits are sampled (n is set by the outer loop)

    def training_contexts(self) -> Sequence[Any]: ...

    def self_edit_prompt(self, context: Any) -> Prompt: ...

    def score(self, model: LoadedModel, contexts: Sequence[Any], completions: list[list[str]],
              repeats: int, seed: int) -> list[Scored]: ...

    def evaluate(self, model: LoadedModel, round_: int, run: RunDir, show_progress: bool) -> None:
        """Evaluate `model` as round `round_` (0: before RL) and append what is not in `run` yet."""

    def summarize(self, records: list[dict[str, Any]]) -> dict[str, Any]: ...


def kept_indices(rewards: Sequence[float], baseline: float, rule: str, k: int = 2) -> list[int]:
    """Which self-edits of one context go into the policy update: only ever those beating the baseline."""
    better = sorted((i for i, r in enumerate(rewards) if r > baseline), key=lambda i: (-rewards[i], i))
    if rule == "best":
        return better[:1]
    if rule == "top-k":
        return sorted(better[:k])
    return sorted(better)


def contexts_for_round(contexts: Sequence[Any], round_: int, per_round: int) -> list[Any]:
    """Round r (from 1) takes the next `per_round` contexts, wrapping around a small training set."""
    if not contexts:
        raise SealError("no training contexts")
    start = (round_ - 1) * per_round
    return [contexts[(start + i) % len(contexts)] for i in range(min(per_round, len(contexts)))]


def _score_group(domain: Domain, repeats: int, model: LoadedModel, payload: tuple) -> list[Scored]:
    """One executor job: the inner loops (rewards) of one group of contexts."""
    contexts, completions, seed = payload
    return domain.score(model, contexts, completions, repeats, seed)


def run_rest_em(settings: RestEmSettings, domain: Domain, model: ModelSettings, run: RunDir, seed: int = 0,
                show_progress: bool = True, executor: ExecutorSettings | None = None) -> dict[str, Any]:
    """Run (or resume) all rounds into `run`; return the summary that is also written there. The rewards'
    inner loops run on `executor` (default: in this process); everything else runs here."""
    settings.validate()
    executor = (executor or ExecutorSettings()).create()
    try:
        base = load_model(model)
        domain.evaluate(base, 0, run, show_progress)
        policy, policy_source = base, base.source
        for round_ in range(1, settings.rounds + 1):
            adapted = policy if settings.adapt == "policy" else base
            adapted_settings = dataclasses.replace(model, name=adapted.source)
            _collect_rollouts(settings, domain, executor, adapted_settings, adapted, policy, round_, run, seed,
                              show_progress)
            policy_source = _update_policy(settings, domain, model, policy, policy_source, round_, run, seed)
            if policy_source != policy.source:
                policy = load_model(dataclasses.replace(model, name=policy_source))
            domain.evaluate(policy, round_, run, show_progress)
    finally:
        executor.close()
    summary = domain.summarize(run.records)
    summary["rounds"] = _round_summaries(run.records, settings.rounds)
    run.write_summary(summary)
    return summary


def _collect_rollouts(settings: RestEmSettings, domain: Domain, executor: Executor, adapted_settings: ModelSettings,
                      adapted: LoadedModel, policy: LoadedModel, round_: int, run: RunDir, seed: int,
                      show_progress: bool) -> None:
    """Sample every missing group's self-edits here, then score the groups on the executor, appending
    each group's records as soon as its rewards arrive."""
    contexts = contexts_for_round(domain.training_contexts(), round_, settings.contexts_per_round)
    done = {r["context_id"] for r in run.records if r.get("kind") == "rollout" and r["round"] == round_}
    groups = [contexts[i : i + settings.contexts_per_batch] for i in range(0, len(contexts), settings.contexts_per_batch)]
    todo = [g for g in groups if any(c.id not in done for c in g)]
    if not todo:
        return
    generator = make_generator(policy)  # the policy is read from its checkpoint, so vLLM may serve it
    payloads, generation_seconds = [], []
    for group in tqdm(todo, desc=f"round {round_}: self-edits", unit="group", disable=not show_progress):
        unit_seed = derived_seed(seed, "rollout", round_, *(c.id for c in group))
        started = time.perf_counter()
        params = dataclasses.replace(domain.sampling, n=settings.samples_per_context, seed=unit_seed)
        payloads.append((group, generator.generate([domain.self_edit_prompt(c) for c in group], params), unit_seed))
        generation_seconds.append((time.perf_counter() - started) / len(group))
    work = functools.partial(_score_group, domain, settings.reward_repeats)
    with tqdm(total=len(contexts), initial=len(contexts) - sum(map(len, todo)), unit="context",
              desc=f"round {round_}: rewards", disable=not show_progress) as bar:
        started = time.perf_counter()
        for index, scored in executor.map(work, adapted_settings, payloads, loaded=adapted):
            group, completions, _ = payloads[index]
            # Wall time since the previous group's rewards arrived, per context (on parallel workers the
            # groups share the round's reward time).
            per_context = {"generation": generation_seconds[index],
                           "rewards": (time.perf_counter() - started) / len(group)}
            started = time.perf_counter()
            for context, outs, result in zip(group, completions, scored):
                if context.id in done:
                    continue
                run.append({
                    "kind": "rollout", "round": round_, "context_id": context.id, "title": context.title,
                    "completions": outs, "rewards": result.rewards, "baseline": result.baseline,
                    "gains": [r - result.baseline for r in result.rewards],
                    "kept": kept_indices(result.rewards, result.baseline, settings.keep, settings.keep_k),
                    "details": result.details, "seconds": per_context,
                })
            bar.update(len(group))


def _update_policy(settings: RestEmSettings, domain: Domain, model: ModelSettings, policy: LoadedModel,
                   policy_source: str, round_: int, run: RunDir, seed: int) -> str:
    """The M-step; returns the directory (or id) of the policy for the next round."""
    finished = [r for r in run.records if r.get("kind") == "sft" and r["round"] == round_]
    if finished:
        checkpoint = finished[0]["checkpoint"]
        return str(run.path / checkpoint) if checkpoint else policy_source
    started = time.perf_counter()
    contexts = {c.id: c for c in domain.training_contexts()}
    rollouts = [r for r in run.records if r.get("kind") == "rollout" and r["round"] == round_]
    examples = [Example(domain.self_edit_prompt(contexts[r["context_id"]]), r["completions"][i])
                for r in rollouts for i in r["kept"]]
    record: dict[str, Any] = {
        "kind": "sft", "round": round_, "contexts": len(rollouts), "contexts_kept": sum(bool(r["kept"]) for r in rollouts),
        "examples": len(examples), "epoch_losses": None, "nll_before": None, "nll_after": None, "checkpoint": None,
    }
    if examples:
        updater = LoraUpdater(policy, settings.policy_update)
        record["nll_before"] = updater.mean_loss(examples)
        update_seed = dataclasses.replace(settings.policy_update, seed=derived_seed(seed, "policy", round_))
        result, = updater.train([TrainJob(examples, update_seed)])
        record["epoch_losses"] = result.epoch_losses
        checkpoint = f"policy-round-{round_}"
        _save_merged(model, policy_source, result.adapter, run.path / checkpoint)
        policy_source = str(run.path / checkpoint)
        updated = load_model(dataclasses.replace(model, name=policy_source))
        record["nll_after"] = LoraUpdater(updated, settings.policy_update).mean_loss(examples)
        record["checkpoint"] = checkpoint
    record["seconds"] = time.perf_counter() - started
    run.append(record)
    return policy_source


def _save_merged(model: ModelSettings, source: str, adapter, target: Path) -> None:
    """Merge the update into a float32 copy of the current policy and save it (safetensors) atomically."""
    full = load_model(dataclasses.replace(model, name=source, dtype="float32", device="cpu"))
    merge_adapter(full.model, adapter)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        full.model.save_pretrained(staging)
        full.tokenizer.save_pretrained(staging)
        shutil.rmtree(target, ignore_errors=True)  # a checkpoint left by a run killed before its record
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _round_summaries(records: list[dict[str, Any]], rounds: int) -> list[dict[str, Any]]:
    """Per round: rewards against baselines, how many contexts were kept, and where the time went."""
    out = []
    for round_ in range(1, rounds + 1):
        rollouts = [r for r in records if r.get("kind") == "rollout" and r["round"] == round_]
        updates = [r for r in records if r.get("kind") == "sft" and r["round"] == round_]
        evals = [r for r in records if r.get("kind") == "eval" and r.get("round") == round_]
        if not rollouts:
            continue
        rewards = [x for r in rollouts for x in r["rewards"]]
        out.append({
            "round": round_,
            "contexts": len(rollouts),
            "kept": sum(bool(r["kept"]) for r in rollouts),
            "mean_reward": sum(rewards) / len(rewards),
            "mean_baseline": sum(r["baseline"] for r in rollouts) / len(rollouts),
            "mean_best_gain": sum(max(r["gains"]) for r in rollouts) / len(rollouts),
            "seconds": {
                "generation": sum(r["seconds"]["generation"] for r in rollouts),
                "rewards": sum(r["seconds"]["rewards"] for r in rollouts),
                "policy_update": sum(r["seconds"] for r in updates),
                "evaluation": sum(r["seconds"] for r in evals),
            },
        })
    return out
