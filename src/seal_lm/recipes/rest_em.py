"""`seal train`: ReST-EM, the outer loop that teaches the model to write self-edits that help it learn.

Each round, for the round's training contexts (a passage, a few-shot task):
  1. E-step: sample K self-edits from the current policy, score each by an inner loop (the domain
     runs it and says how well the updated model does: the reward) and compare with the domain's
     baseline (e.g. training on the passage alone);
  2. keep the self-edits that beat the baseline (the best one per context, by default);
  3. M-step: finetune the policy on (self-edit prompt -> kept self-edit) with LoRA and merge the
     update into a new policy checkpoint (safetensors), which writes, and is adapted by, the next
     round's self-edits;
  4. evaluate the new policy on held-out contexts.

This module only talks to the `Domain` protocol: it never knows what a context or a reward means.
Everything finished is appended to the run directory at once (rollouts per group of contexts, the
policy update once its checkpoint is saved, evaluations per group), so a killed run resumes where it
stopped and ends with the same results as an uninterrupted one: every sample and every inner loop is
seeded by what it is, never by when it runs. One policy is in memory: the update is merged into its
checkpoint tensor by tensor and into its weights in place.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from seal_lm.adapters import save_merged
from seal_lm.domain import Domain, RestEmSettings, Scored
from seal_lm.errors import SealError
from seal_lm.executors import Executor, ExecutorSettings
from seal_lm.generation import backend_name, make_generator
from seal_lm.inner_loop import Example, LoraUpdater, TrainJob
from seal_lm.models import LoadedModel, ModelSettings, load_model
from seal_lm.records import EvalRecord, PolicyUpdateRecord, RolloutRecord, record_types
from seal_lm.tracking import Tracker
from seal_lm.runs import RunDir, config_defaults, derived_seed, one_writer, run_config, runtime_info

log = logging.getLogger(__name__)


def kept_indices(rewards: Sequence[float], baseline: float, rule: str, k: int = 2) -> list[int]:
    """Which self-edits of one context go into the policy update: the best whatever its reward (rule "best",
    SEAL's src/EM/build_SFT_dataset.py: ties go to the first), or only ever those beating the baseline."""
    if rule == "best":
        return [min(range(len(rewards)), key=lambda i: (-rewards[i], i))] if rewards else []
    better = sorted((i for i, r in enumerate(rewards) if r > baseline), key=lambda i: (-rewards[i], i))
    if rule == "best-over-baseline":
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


@one_writer
def run_rest_em(domain: Domain, out: str | Path, show_progress: bool = True,
                executor: ExecutorSettings | None = None, tracker: Tracker | None = None) -> dict[str, Any]:
    """Run (or resume) all rounds into `out`; return the summary that is also written there. The rewards'
    inner loops run on `executor` (default: in this process); everything else runs here."""
    settings, seed = domain.config.rest_em, domain.config.seed
    run = RunDir(out, run_config("train", domain.name, domain.config),
                 record_types(domain.eval_record, RolloutRecord, PolicyUpdateRecord), tracker,
                 defaults=config_defaults(domain.config))
    model_settings = run.pinned_model(domain.config.model)
    domain.training_contexts()  # a bad training set fails before any work
    executor_ = (executor or ExecutorSettings()).create()
    try:
        policy = load_model(model_settings)
        run.note_runtime(runtime_info(policy, backend_name(policy)))
        domain.evaluate(policy, 0, run, show_progress)
        _write_summary(domain, run, settings)
        base = policy if settings.adapt == "base" else None  # kept only when the inner loop adapts it
        for round_ in range(1, settings.rounds + 1):
            adapted = base or policy
            _collect_rollouts(settings, domain, executor_, dataclasses.replace(model_settings, name=adapted.source),
                              adapted, policy, round_, run, seed, show_progress)
            del adapted
            policy, checkpoint = _update_policy(settings, domain, model_settings, policy, base, round_, run, seed)
            if checkpoint is not None and Path(policy.source) != checkpoint:  # resumed after this round's update
                policy = None  # one policy in memory: the old one goes before the new one loads
                policy = load_model(dataclasses.replace(model_settings, name=str(checkpoint)))
            domain.evaluate(policy, round_, run, show_progress)
            _write_summary(domain, run, settings)
    finally:
        executor_.close()
    return _write_summary(domain, run, settings)


def _write_summary(domain: Domain, run: RunDir, settings: RestEmSettings) -> dict[str, Any]:
    summary = domain.summarize(run.records)
    summary["rounds"] = round_summaries(run.records, settings.rounds)
    run.write_summary(summary)
    return summary


def _collect_rollouts(settings: RestEmSettings, domain: Domain, executor: Executor, adapted_settings: ModelSettings,
                      adapted: LoadedModel, policy: LoadedModel, round_: int, run: RunDir, seed: int,
                      show_progress: bool) -> None:
    """Sample every missing group's self-edits here, then score the groups on the executor, appending
    each group's records as soon as its rewards arrive."""
    contexts = contexts_for_round(domain.training_contexts(), round_, settings.contexts_per_round)
    done = {r.context_id for r in run.of(RolloutRecord) if r.round == round_}
    groups = [contexts[i : i + settings.contexts_per_batch] for i in range(0, len(contexts), settings.contexts_per_batch)]
    todo = [g for g in groups if any(c.id not in done for c in g)]
    if not todo:
        return
    generator = make_generator(policy)  # the policy's weights equal its checkpoint, so vLLM may serve it
    payloads, generation_seconds, discarded_samples = [], [], []
    for group in tqdm(todo, desc=f"round {round_}: self-edits", unit="group", disable=not show_progress):
        unit_seed = derived_seed(seed, "rollout", round_, *(c.id for c in group))
        started = time.perf_counter()
        completions, invalid = domain.sample_self_edits(generator, group, settings.samples_per_context, unit_seed)
        payloads.append((group, completions, unit_seed))
        discarded_samples.append(invalid)
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
            for context, outs, result, discarded in zip(group, completions, scored, discarded_samples[index]):
                if context.id in done:
                    continue
                run.append(RolloutRecord(
                    round=round_, context_id=context.id, title=context.title, completions=outs,
                    rewards=result.rewards, baseline=result.baseline,
                    gains=[r - result.baseline for r in result.rewards],
                    kept=kept_indices(result.rewards, result.baseline, settings.keep, settings.keep_k),
                    details={**result.details, "invalid_samples": discarded}, seconds=per_context,
                ))
            bar.update(len(group))


def _update_policy(settings: RestEmSettings, domain: Domain, model: ModelSettings, policy: LoadedModel,
                   base: LoadedModel | None, round_: int, run: RunDir, seed: int) -> tuple[LoadedModel, Path | None]:
    """The M-step, unless the run did it already; returns the policy (updated in place when it trains here)
    and the round's checkpoint (None when nothing was kept). A finished update whose checkpoint is missing
    (a run directory kept without its weights, e.g. under version control) is redone: it is seeded, so it
    rebuilds the same checkpoint, and its record stays the first one."""
    finished = next((r for r in run.of(PolicyUpdateRecord) if r.round == round_), None)
    if finished is not None and (finished.checkpoint is None or (run.path / finished.checkpoint).is_dir()):
        return policy, run.path / finished.checkpoint if finished.checkpoint else None
    if finished is not None:
        log.warning("%s: %s is missing; rebuilding it from round %d's kept self-edits", run.path, finished.checkpoint,
                    round_)
    started = time.perf_counter()
    contexts = {c.id: c for c in domain.training_contexts()}
    rollouts = [r for r in run.of(RolloutRecord) if r.round == round_]
    examples = [Example(domain.self_edit_prompt(contexts[r.context_id]), r.completions[i])
                for r in rollouts for i in r.kept]
    record = PolicyUpdateRecord(round=round_, contexts=len(rollouts), contexts_kept=sum(bool(r.kept) for r in rollouts),
                                examples=len(examples), epoch_losses=None, nll_before=None, nll_after=None,
                                checkpoint=None, seconds=0.0)
    if examples:
        if policy is base:  # the inner loop keeps adapting the original: the policy becomes a model of its own
            policy = load_model(model)
        updater = LoraUpdater(policy, settings.policy_update)
        record.nll_before = updater.mean_loss(examples)
        update_seed = dataclasses.replace(settings.policy_update, seed=derived_seed(seed, "policy", round_))
        result, = updater.train([TrainJob(examples, update_seed)])
        record.epoch_losses = result.epoch_losses
        record.step_losses = result.step_losses
        record.checkpoint = f"policy-round-{round_}"
        save_merged(policy, result.adapter, run.path / record.checkpoint)
        record.nll_after = updater.mean_loss(examples)
    record.seconds = time.perf_counter() - started
    if finished is None:
        run.append(record)
    return policy, run.path / record.checkpoint if record.checkpoint else None


def round_summaries(records: Sequence[Any], rounds: int) -> list[dict[str, Any]]:
    """Per round: rewards against baselines, how many contexts were kept, and where the time went."""
    out = []
    for round_ in range(1, rounds + 1):
        rollouts = [r for r in records if isinstance(r, RolloutRecord) and r.round == round_]
        updates = [r for r in records if isinstance(r, PolicyUpdateRecord) and r.round == round_]
        evals = [r for r in records if isinstance(r, EvalRecord) and r.round == round_]
        if not rollouts:
            continue
        rewards = [x for r in rollouts for x in r.rewards]
        out.append({
            "round": round_,
            "contexts": len(rollouts),
            "kept": sum(bool(r.kept) for r in rollouts),
            "mean_reward": sum(rewards) / len(rewards),
            "mean_baseline": sum(r.baseline for r in rollouts) / len(rollouts),
            "mean_best_gain": sum(max(r.gains) for r in rollouts) / len(rollouts),
            "seconds": {
                "generation": sum(r.seconds["generation"] for r in rollouts),
                "rewards": sum(r.seconds["rewards"] for r in rollouts),
                "policy_update": sum(r.seconds for r in updates),
                "evaluation": sum(r.seconds for r in evals),
            },
        })
    return out
