"""`seal continual`: self-edits applied one after another, the forgetting they cause, and a guard.

For each of several random orders of N contexts (passages), the model writes a self-edit for context 1,
is updated on it (one LoRA update on what the domain makes of it), then writes one for context 2 with the
updated model, and so on. After every update it is scored, closed-book, on every context seen so far:
row i of the forgetting matrix holds the accuracies after update i, column j the context at position j
of the order. Updates accumulate either by merging each one into the weights in turn
("merge", as a deployed model would) or as a stack of separate adapters whose exact sum is applied
("stack"; each adapter can be dropped later).

The retention guard (off by default) looks at every update before accepting it: its probe is the
items of the earlier contexts, plus optional general prompts whose greedy answers must not
change. If the probe score drops by more than `max_drop`, the update is rejected (rolled back) or
retried with a smaller learning rate. Every attempt is recorded with its numbers.

The model's state is never checkpointed as weights: it is rebuilt from the original weights and the
accepted adapters (saved in PEFT format as they are accepted), so a killed run resumes exactly.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from seal_lm.adapters import Adapter, combine_adapters, load_adapter, merge_adapter, save_adapter
from seal_lm.domain import SequentialDomain
from seal_lm.errors import SealError
from seal_lm.generation import GREEDY, HFGenerator, Prompt
from seal_lm.inner_loop import LoraUpdater, TrainJob
from seal_lm.models import LoadedModel, display_name, load_model
from seal_lm.records import StepRecord, record_types
from seal_lm.tracking import Tracker
from seal_lm.runs import RunDir, config_defaults, derived_seed, one_writer, run_config, runtime_info
from seal_lm.stats import mean_with_interval


def read_general_prompts(path: str | Path) -> list[str]:
    """Non-empty lines of a text file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SealError(f"{path}: cannot read general prompts ({exc.strerror})") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise SealError(f"{path}: no general prompts (one per line expected)")
    return prompts


def sequence_indices(pool: int, n: int, draw: str, seed: int, order: int) -> list[int]:
    """Which of the `pool` contexts sequence `order` learns, in turn. reorder: the first n, order 0 as they come
    and the others in seeded shuffles; sample: n drawn without replacement for each sequence (SEAL's
    continual_self_edits.py draws with one global random.seed(42); here each sequence has its own seed, so a
    resumed run draws the same)."""
    rng = random.Random(derived_seed(seed, "order", order))
    if draw == "sample":
        return rng.sample(range(pool), n)
    indices = list(range(n))
    if order:
        rng.shuffle(indices)
    return indices


class ModelState:
    """The original weights plus a list of accepted adapters; `set` makes the model hold exactly that
    state, rebuilt from the originals every time so that rounding never depends on history."""

    def __init__(self, loaded: LoadedModel, accumulate: str):
        self.loaded = loaded
        self.accumulate = accumulate
        self.original = {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}

    def set(self, adapters: Sequence[Adapter]) -> None:
        self.loaded.model.load_state_dict(self.original)
        if not adapters:
            return
        if self.accumulate == "merge":  # one after another, each rounded into the weights
            for adapter in adapters:
                merge_adapter(self.loaded.model, adapter)
        else:  # their exact sum, rounded once
            merge_adapter(self.loaded.model, combine_adapters(adapters))


def probe_score(question_scores: Sequence[float], unchanged: Sequence[bool]) -> float | None:
    """The guard's probe: earlier passages' graded questions and, for each general prompt, 1 if its
    answer did not change. None when there is nothing to probe (the first update)."""
    items = [*question_scores, *map(float, unchanged)]
    return sum(items) / len(items) if items else None


class ContinualRunner:
    """Runs one (variant, order) sequence of updates, resuming from what the run directory holds."""

    def __init__(self, domain: SequentialDomain, loaded: LoadedModel, contexts: list[Any], run: RunDir,
                 count: int, draw: str):
        """Each sequence learns `count` of `contexts`, chosen by `draw` (see `sequence_indices`)."""
        self.count, self.draw = count, draw
        self.domain = domain
        self.settings = domain.continual
        self.seed = domain.config.seed
        self.loaded = loaded
        self.contexts = contexts
        self.run = run
        self.generator = HFGenerator(loaded)  # not vLLM: updates are merged into the weights in memory
        self.updater = LoraUpdater(loaded, domain.inner_loop)
        self.state = ModelState(loaded, self.settings.accumulate)
        path = self.settings.guard_settings.general_prompts
        self.general = [Prompt.single_turn(p) for p in read_general_prompts(path)] if path else []

    def adapter_dir(self, variant: str, order: int, step: int) -> Path:
        return self.run.path / "adapters" / variant / f"order-{order}" / f"step-{step}"

    def run_order(self, variant: str, order: int, bar: tqdm) -> list[Adapter]:
        """Do the steps of this order that the run lacks; return the accepted adapters (the model holds them)."""
        sequence = [self.contexts[i] for i in sequence_indices(len(self.contexts), self.count, self.draw, self.seed,
                                                               order)]
        done = {r.step: r for r in self.run.of(StepRecord) if r.variant == variant and r.order == order}
        accepted = [load_adapter(self.adapter_dir(variant, order, s)) for s in sorted(done) if done[s].accepted]
        self.state.set(accepted)
        previous = done[max(done)].answers if done else []
        for step in range(len(sequence)):
            if step in done:
                continue
            record = self._step(variant, order, step, sequence, accepted, previous)
            previous = record.answers
            self.run.append(record)
            bar.update(1)
        return accepted

    def closed_book(self, contexts: Sequence[Any]) -> list[list[dict[str, Any]]]:
        """Each context's items answered closed-book by the model as it is now (with their scores)."""
        return self.domain.closed_book(self.generator, contexts)

    def _general_answers(self) -> list[str]:
        """Greedy answers to the general prompts with the model as it is now."""
        if not self.general:
            return []
        params = dataclasses.replace(GREEDY, max_new_tokens=self.settings.guard_settings.general_max_new_tokens)
        return [outs[0] for outs in self.generator.generate(self.general, params)]

    def _step(self, variant: str, order: int, step: int, sequence: list[Any], accepted: list[Adapter],
              previous: list[list[dict[str, Any]]]) -> StepRecord:
        started = time.perf_counter()
        context = sequence[step]
        seed = derived_seed(self.seed, "continual", order, step, context.id)
        guarded = variant == "guard"
        # The model is as the previous step left it; `previous` holds its answers on the earlier contexts.
        general_before = self._general_answers() if guarded else []
        score_before = probe_score([q["score"] for qs in previous for q in qs], [True] * len(general_before))
        update = self.domain.write_update(self.generator, context, seed)
        guard = self.settings.guard_settings
        attempts, learning_rate = [], self.domain.inner_loop.learning_rate
        tries = 1 + (guard.max_retries if guarded and guard.action == "retry" else 0)
        adapter = None
        for attempt in range(tries):
            settings = dataclasses.replace(self.domain.inner_loop, learning_rate=learning_rate, seed=seed + attempt)
            result, = self.updater.train([TrainJob(update.sequences, settings)])
            self.state.set([*accepted, result.adapter])
            answers = self.closed_book(sequence[: step + 1])  # the earlier contexts are the probe
            scores = [[q["score"] for q in qs] for qs in answers]
            info: dict[str, Any] = {"learning_rate": learning_rate, "final_loss": result.epoch_losses[-1]}
            if guarded:
                unchanged = [a == b for a, b in zip(self._general_answers(), general_before)]
                score_after = probe_score([s for qs in scores[:step] for s in qs], unchanged)
                drop = (score_before - score_after) if score_before is not None else 0.0
                info.update(probe_before=score_before, probe_after=score_after, drop=drop,
                            accepted=drop <= guard.max_drop)
            else:
                info["accepted"] = True
            attempts.append(info)
            if info["accepted"]:
                adapter = result.adapter
                break
            learning_rate *= guard.retry_factor
        if adapter is None:  # refused: back to the model before this update
            self.state.set(accepted)
            answers = previous + self.closed_book([context])
            scores = [[q["score"] for q in qs] for qs in answers]
        else:
            save_adapter(self.loaded.model, adapter, self.adapter_dir(variant, order, step))
            accepted.append(adapter)
        return StepRecord(
            variant=variant, order=order, step=step, context_id=context.id, title=context.title,
            order_ids=[c.id for c in sequence], self_edit=update.self_edit, attempts=attempts,
            accepted=adapter is not None, scores=scores,
            accuracy=[sum(qs) / len(qs) if qs else None for qs in scores], seconds=time.perf_counter() - started,
            answers=answers,
        )


def forgetting_matrices(records: Sequence[StepRecord], n: int) -> dict[str, dict[str, Any]]:
    """Per variant: mean and spread (standard deviation) over orders of accuracy[i][j], after update i
    on the context at position j <= i (None above the diagonal); final accuracy on the first context
    and on all contexts, with 95% intervals over their items in every order; the guard's refusals."""
    out = {}
    for variant in sorted({r.variant for r in records}, key=lambda v: v != "no-guard"):
        recs = [r for r in records if r.variant == variant]
        mean: list[list[float | None]] = [[None] * n for _ in range(n)]
        spread: list[list[float | None]] = [[None] * n for _ in range(n)]
        for i in range(n):
            rows = [r.accuracy for r in recs if r.step == i]
            for j in range(i + 1):
                values = [row[j] for row in rows if row[j] is not None]
                if values:
                    mean[i][j] = sum(values) / len(values)
                    spread[i][j] = statistics.pstdev(values)
        last = [r.scores for r in recs if r.step == n - 1]
        out[variant] = {
            "orders": len({r.order for r in recs}), "mean": mean, "std": spread,
            "final_first": mean_with_interval([s for scores in last for s in scores[0]]).as_dict(),
            "final_all": mean_with_interval([s for scores in last for qs in scores for s in qs]).as_dict(),
            "updates": len(recs), "refused": sum(not r.accepted for r in recs),
            "retried": sum(len(r.attempts) > 1 for r in recs),
        }
    return out


def summarize(records: Sequence[Any], domain: SequentialDomain, n: int) -> dict[str, Any]:
    steps = [r for r in records if isinstance(r, StepRecord)]
    settings = domain.continual
    return {"recipe": "continual", "domain": domain.name, "units": dataclasses.asdict(domain.units),
            "grader": domain.grader, "model": display_name(domain.config.model.name), "contexts": n,
            "accumulate": settings.accumulate, "max_drop": settings.guard_settings.max_drop,
            "matrices": forgetting_matrices(steps, n)}


@one_writer
def run_continual(domain: SequentialDomain, out: str | Path, show_progress: bool = True,
                  tracker: Tracker | None = None) -> dict[str, Any]:
    """Every variant and order, resumable; returns the summary also written to the run directory."""
    settings = domain.continual
    if settings.guard_settings.general_prompts:
        read_general_prompts(settings.guard_settings.general_prompts)  # a bad file fails before any work
    contexts = domain.sequence_contexts()  # the pool: each sequence learns `passages` of them
    run = RunDir(out, run_config("continual", domain.name, domain.config), record_types(StepRecord), tracker,
                 defaults=config_defaults(domain.config))
    variants = settings.variants()
    total = len(variants) * settings.orders * settings.passages
    finished = len(run.of(StepRecord))
    if finished < total:
        loaded = load_model(run.pinned_model(domain.config.model))
        run.note_runtime(runtime_info(loaded, "hf"))
        runner = ContinualRunner(domain, loaded, contexts, run, settings.passages, settings.draw)
        with tqdm(total=total, initial=finished, desc="continual updates", unit="update",
                  disable=not show_progress) as bar:
            for variant in variants:
                for order in range(settings.orders):
                    bar.set_postfix_str(f"{variant}, order {order + 1}")
                    runner.run_order(variant, order, bar)
    summary = summarize(run.records, domain, settings.passages)
    run.write_summary(summary)
    return summary
