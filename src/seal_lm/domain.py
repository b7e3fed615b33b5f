"""The contract between domains and recipes.

A domain (knowledge incorporation, few-shot ARC) knows what a context is, how a self-edit becomes
training data and how an adapted model is scored. A recipe (eval, ReST-EM, continual, adapt) only
orchestrates: it talks to a domain through the protocols below, and reads its own settings from the
blocks that every domain's config carries with that domain's defaults (`rest_em`, `continual`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from seal_lm.config import ConfigError, at_least, one_of
from seal_lm.generation import Generator, Prompt, SamplingParams
from seal_lm.inner_loop import InnerLoopSettings
from seal_lm.models import LoadedModel, ModelSettings
from seal_lm.records import EvalRecord, Record
from seal_lm.runs import RunDir
from seal_lm.stats import mean_with_interval, paired_difference

KEEP_RULES = ("best", "best-over-baseline", "positive", "top-k")
DRAWS = ("reorder", "sample")
ACCUMULATE = ("merge", "stack")
GUARD_MODES = ("off", "on", "both")
GUARD_ACTIONS = ("reject", "retry")
SAVE_AS = ("adapter", "merged")


@dataclass(frozen=True)
class Units:
    """What a domain's summary counts: contexts (passages, tasks) and the items scored in each
    (questions, test cases)."""

    context: str
    contexts: str
    item: str
    items: str


def condition_row(label: str, records: Sequence[EvalRecord], items: int, scores: Mapping[str, Sequence[float]],
                  self_edit_status: Mapping[str, int]) -> dict[str, Any]:
    """One row of a summary: a condition's accuracy under every grader with its 95% interval, over its items."""
    return {
        "label": label, "contexts": len(records), "items": items,
        "seconds_per_context": sum(r.seconds for r in records) / len(records),
        "accuracy": {grader: mean_with_interval(values).as_dict() for grader, values in scores.items()},
        "self_edit_status": dict(self_edit_status),
    }


def paired_differences(scores: Mapping[str, Mapping[str, Sequence[float]]], pairs: Sequence[tuple[str, str]],
                       labels: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """For each (A, B) pair of condition keys present in `scores` (key -> context id -> its items' scores, in
    the same item order for every key): the paired difference A - B over the contexts both have."""
    out = {}
    for a, b in pairs:
        if a not in scores or b not in scores:
            continue
        shared = [c for c in scores[a] if c in scores[b]]
        diffs = [[x - y for x, y in zip(scores[a][c], scores[b][c])] for c in shared]
        out[f"{a} - {b}"] = {"a": a, "b": b, "label": f"{labels[a]} - {labels[b]}",
                             **paired_difference(diffs).as_dict()}
    return out


def headline_pair(paired: Mapping[str, dict[str, Any]], keys: Sequence[str]) -> str | None:
    """The comparison a run is about: the last SEAL round against training on the context alone if there
    were rounds, else the self-edit against it (the first of `keys` present)."""
    return next((k for k in keys if k in paired), None)


def summary(domain: str, title: str, units: Units, model: str, grader: str, setting: str,
            rows: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The summary every domain writes: rows keyed by condition (and `round-R` after RL), in display order;
    `title` names what the accuracy measures."""
    return {"domain": domain, "title": title, "units": dataclasses.asdict(units), "model": model, "grader": grader,
            "setting": setting, "conditions": dict(rows)}


class Context(Protocol):
    """A passage, a task, a document: recipes only need a stable id and a title to show."""

    @property
    def id(self) -> str: ...

    @property
    def title(self) -> str: ...


@dataclass
class Scored:
    """A domain's verdict on one context's self-edits: reward per self-edit and the baseline to beat."""

    baseline: float
    rewards: list[float]
    details: dict[str, Any] = field(default_factory=dict)  # anything worth keeping in the record


@dataclass
class RestEmSettings:
    """The outer loop (ReST-EM)."""

    rounds: int = 2
    """RL rounds"""
    contexts_per_round: int = 50
    """training contexts per round; round r takes the next ones, wrapping around"""
    samples_per_context: int = 5
    """K: self-edits sampled per training context"""
    reward_repeats: int = 3
    """inner loops averaged per reward, each with its own seed"""
    keep: str = "best-over-baseline"
    """which self-edits train the policy: best (the one with the highest reward per context, whatever its value,
    the first of those tied: SEAL's rule), best-over-baseline (that one only if it beats the baseline), positive
    (all that beat it) or top-k (the keep_k best that beat it)"""
    keep_k: int = 2
    """k of keep top-k"""
    adapt: str = "policy"
    """which model the inner loop adapts: the current policy (as the paper does) or the original base model"""
    contexts_per_batch: int = 4
    """training contexts whose self-edits are sampled and scored together"""
    policy_update: InnerLoopSettings = field(default_factory=InnerLoopSettings)
    """LoRA SFT of the policy on the kept self-edits, merged into a new checkpoint after each round"""

    def validate(self, key: str = "rest_em") -> None:
        one_of(f"{key}.keep", self.keep, KEEP_RULES)
        one_of(f"{key}.adapt", self.adapt, ("policy", "base"))
        for name in ("rounds", "contexts_per_round", "samples_per_context", "reward_repeats", "keep_k",
                     "contexts_per_batch"):
            at_least(f"{key}.{name}", getattr(self, name), 1)
        self.policy_update.validate(f"{key}.policy_update")


@dataclass
class GuardSettings:
    """The retention guard: when an update is refused, and what happens then."""

    max_drop: float = 0.1
    """largest allowed drop of the probe score (0-1, absolute)"""
    action: str = "reject"
    """reject: roll the update back; retry: train it again with a smaller learning rate"""
    retry_factor: float = 0.3
    """learning-rate multiplier per retry"""
    max_retries: int = 2
    """retries before the update is rejected"""
    general_prompts: str | None = None
    """text file, one prompt per line, whose greedy answers must not change (part of the probe)"""
    general_max_new_tokens: int = 32
    """length of the greedy answers to the general prompts"""

    def validate(self, key: str) -> None:
        one_of(f"{key}.action", self.action, GUARD_ACTIONS)
        if not 0 <= self.max_drop <= 1:
            raise ConfigError(f"{key}.max_drop", f"must be in [0, 1] (got {self.max_drop})")
        at_least(f"{key}.max_retries", self.max_retries, 0)


@dataclass
class ContinualSettings:
    """Self-edits applied one after another (`seal continual`, and `seal adapt` in one order)."""

    passages: int = 8
    """N, the contexts learned in turn (paper: 8)"""
    orders: int = 3
    """sequences of N updates to average over"""
    draw: str = "reorder"
    """reorder: every sequence learns the data's first N contexts, the first in the data's order, the others in
    seeded shuffles; sample: every sequence draws its own N contexts from all of the data (as SEAL's code does)"""
    accumulate: str = "merge"
    """merge: each update is merged into the weights in turn; stack: updates stay separate adapters whose exact
    sum is applied"""
    guard: str = "off"
    """off; on: check every update before accepting it; both: every order with and without the guard"""
    guard_settings: GuardSettings = field(default_factory=GuardSettings)
    """when the guard refuses an update"""

    def validate(self, key: str = "continual") -> None:
        one_of(f"{key}.accumulate", self.accumulate, ACCUMULATE)
        one_of(f"{key}.guard", self.guard, GUARD_MODES)
        one_of(f"{key}.draw", self.draw, DRAWS)
        at_least(f"{key}.orders", self.orders, 1)
        at_least(f"{key}.passages", self.passages, 2)
        self.guard_settings.validate(f"{key}.guard_settings")

    def variants(self) -> list[str]:
        return {"off": ["no-guard"], "on": ["guard"], "both": ["no-guard", "guard"]}[self.guard]


@dataclass
class AdaptSettings:
    """`seal adapt`: which documents, and how to save what was learned."""

    documents: str = ""
    """a file, or a folder of .txt, .md and .json documents"""
    save: str = "adapter"
    """adapter: one PEFT adapter, the exact sum of the accepted updates; merged: the whole model"""

    def validate(self, key: str) -> None:
        one_of(f"{key}.save", self.save, SAVE_AS)


class DomainConfig(Protocol):
    """The fields of a domain's config that recipes read."""

    model: ModelSettings
    seed: int
    rest_em: RestEmSettings


class Domain(Protocol):
    """What `seal eval` and ReST-EM need from a domain."""

    name: str  # as the registry (`seal_lm.domains`) and config.json call it
    config: DomainConfig
    units: Units
    eval_record: type[EvalRecord]  # the domain's typed evaluation record
    sampling: SamplingParams  # how self-edits are sampled (n is set by the outer loop)

    def training_contexts(self) -> Sequence[Context]: ...

    def self_edit_prompt(self, context: Any) -> Prompt: ...

    def sample_self_edits(self, generator: Generator, contexts: Sequence[Any], n: int,
                          seed: int) -> tuple[list[list[str]], list[int]]:
        """`n` self-edit completions per context (what the model wrote after the self-edit prompt, as `score` and
        the policy update take them), and per context how many invalid samples were drawn and discarded (for
        domains that draw again until enough are valid, as SEAL's ARC code does; 0 elsewhere)."""

    def score(self, model: LoadedModel, contexts: Sequence[Any], completions: list[list[str]],
              repeats: int, seed: int) -> list[Scored]:
        """Per context: the reward of each completion after its inner loop(s), and the baseline."""

    def evaluate(self, model: LoadedModel, round_: int, run: RunDir, show_progress: bool) -> None:
        """Evaluate `model` as round `round_` (0: before RL) and append what is not in `run` yet."""

    def summarize(self, records: Sequence[Record]) -> dict[str, Any]:
        """The summary of a run (`summary.json`): one row per condition, with the domain's labels and units."""


def sample_completions(domain: Domain, generator: Generator, contexts: Sequence[Any], n: int,
                       seed: int) -> list[list[str]]:
    """`n` completions of each context's self-edit prompt, sampled as the domain samples self-edits."""
    return generator.generate([domain.self_edit_prompt(c) for c in contexts],
                              dataclasses.replace(domain.sampling, n=n, seed=seed))


@dataclass
class Update:
    """One context learned in a sequence: its self-edit as recorded, and the sequences to train on."""

    self_edit: dict[str, Any]
    sequences: list[Any]


class SequentialDomain(Domain, Protocol):
    """What `seal continual` and `seal adapt` need besides: a self-edit per context written by the model as it
    is now, and closed-book scores of contexts' items."""

    continual: ContinualSettings
    inner_loop: InnerLoopSettings  # each update's LoRA training
    grader: str  # what the scores are

    def sequence_contexts(self) -> list[Context]:
        """The contexts `seal continual` learns in turn."""

    def write_update(self, generator: Generator, context: Any, seed: int) -> Update: ...

    def closed_book(self, generator: Generator, contexts: Sequence[Any]) -> list[list[dict[str, Any]]]:
        """Per context, each of its items answered by the model as it is now: question, answers (the reference),
        prediction, score."""


class AdaptableDomain(SequentialDomain, Protocol):
    """What `seal adapt` needs besides: the user's documents, and checks of them without gold answers."""

    adapt: AdaptSettings
    document_grader: str  # how closed-book answers are graded against the model's own open-book ones

    def load_documents(self, path: str) -> list[Context]: ...

    def self_check_questions(self, generator: Generator, documents: Sequence[Any], seed: int) -> Mapping[str, Any]:
        """Per document id, questions with reference answers that the model writes with the document in view."""

    def with_self_check(self, documents: Sequence[Any], questions: Mapping[str, Any]) -> list[Context]:
        """The documents with their self-check questions attached, as contexts to score."""
