"""An LLM judge as a grader, as in the paper (which asks GPT-4.1): given the question, the gold
answer(s) and the student's answer, is the student answer correct? Yes or no.

The string graders (grading.py) miss right answers phrased differently and credit wrong ones that
share words with the gold answer; a judge reads the answer. It is only as good as its model, so
`agreement` puts its verdicts next to every string grader's (rate and Cohen's kappa).

The judge is a `Generator`: a local model or any OpenAI-compatible endpoint (`seal serve`, vLLM, a
hosted API). Verdicts are cached in the run directory, one JSON line per judged answer, so that a
resumed run asks the judge nothing it already answered (a hosted judge costs money).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from seal_lm.config import ConfigError, at_least, one_of
from seal_lm.errors import SealError
from seal_lm.generation import Generator, Prompt, SamplingParams, make_generator
from seal_lm.grading import GRADERS
from seal_lm.models import ModelSettings, load_model
from seal_lm.records import append_jsonl, read_jsonl

JUDGE = "judge"  # its name among the graders
CACHE_FILE = "judge_cache.jsonl"

INSTRUCTION = (
    "You are grading a student's answer against the gold answer. Judge by the gold answer alone, without "
    "outside knowledge: the student answer is correct if it conveys the gold answer and does not contradict it; "
    "extra details, wording and style do not matter. Reply with yes or no only."
)
_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_YES, _NO = re.compile(r"\b(yes)\b", re.IGNORECASE), re.compile(r"\b(no)\b", re.IGNORECASE)
TEMPLATES = ("seal", "reference")
# SEAL's judge prompt, verbatim (knowledge-incorporation/src/utils.py, SQUAD_GRADE_TEMPLATE), sent to GPT-4.1.
REFERENCE_TEMPLATE = (
    "You are a grading assistant. Your job is to determine whether a student's answer correctly answers the question "
    "based solely on the provided gold answer. Do not use any outside knowledge. The student answer can include "
    "additional information, but it must at least fully convey the gold answer and must not contradict it. Ignore "
    "style, phrasing, or extra details that do not affect correctness. Respond ONLY with 'yes' or 'no'.\n\n"
    "Question: {question}\nGold answer: {gold}\nStudent answer: {pred}\nIs the student answer correct based solely "
    "on the gold answer? Respond 'yes' or 'no'."
)


@dataclass
class JudgeSettings:
    """Which judge, if any: a local `model`, or an OpenAI-compatible `url` serving `endpoint_model`, its API
    key read from the environment variable `api_key_env` (never stored)."""

    model: str | None = None
    """a local judge model (any model.name value; loaded with the model's dtype and device)"""
    url: str | None = None
    """an OpenAI-compatible endpoint as judge (seal serve, vLLM, a hosted API)"""
    endpoint_model: str | None = None
    """the model the endpoint serves, e.g. gpt-4.1"""
    api_key_env: str = "OPENAI_API_KEY"
    """environment variable holding the endpoint's API key (the key itself is never stored)"""
    max_new_tokens: int = 16
    """length of a verdict"""
    retries: int = 2
    """re-asks, sampled, when a verdict is neither yes nor no; then it counts as no"""
    template: str = "seal"
    """seal: seal-lm's prompt, any gold answer counts, the first yes or no decides, unclear verdicts re-asked;
    reference: SEAL's prompt with the first gold answer, yes only if the reply says yes and not no, an empty
    answer wrong without asking"""

    @property
    def enabled(self) -> bool:
        return self.model is not None or self.url is not None or self.endpoint_model is not None

    def validate(self, key: str = "judge") -> None:
        if not self.enabled:
            return
        if (self.model is None) == (self.url is None):
            raise ConfigError(key, "a judge is either a local model (judge.model) or an endpoint (judge.url), "
                                   "not both or neither")
        if self.url is not None and not self.endpoint_model:
            raise ConfigError(f"{key}.endpoint_model", "judge.url needs the name of the model it serves")
        at_least(f"{key}.retries", self.retries, 0)
        one_of(f"{key}.template", self.template, TEMPLATES)
        at_least(f"{key}.max_new_tokens", self.max_new_tokens, 1)

    @property
    def name(self) -> str:
        """What identifies the judge in its cache: a verdict of another judge or prompt is not reused."""
        name = self.model or f"{self.endpoint_model}@{self.url}"
        return name if self.template == "seal" else f"{name} ({self.template} prompt)"


def judge_prompt(question: str, answers: Sequence[str], prediction: str, template: str = "seal") -> Prompt:
    if template == "reference":
        return Prompt.single_turn(REFERENCE_TEMPLATE.format(question=question, gold=answers[0], pred=prediction.strip()))
    gold = (f"Gold answer: {answers[0]}" if len(answers) == 1 else
            "Gold answers (matching any one is enough): " + " | ".join(answers))
    text = (f"{INSTRUCTION}\n\nQuestion: {question}\n{gold}\nStudent answer: {prediction}\n"
            "Is the student answer correct? Answer yes or no.")
    return Prompt(messages=(("user", text),), text=f"{text}\nAnswer:")


def parse_verdict(text: str, template: str = "seal") -> float | None:
    """1.0 for yes, 0.0 for no, from the first of the two words in `text`; None if neither occurs. SEAL's rule
    (src/utils.py) with `template` "reference": yes only if "yes" occurs and "no" does not, never None."""
    if template == "reference":
        return float(bool(_YES.search(text)) and not _NO.search(text))
    match = _VERDICT.search(text)
    return None if match is None else float(match.group(1).lower() == "yes")


@dataclass
class JudgeStats:
    calls: int = 0  # prompts sent to the judge, re-asks included
    cache_hits: int = 0
    unparsed: int = 0  # answers judged 'no' because no attempt said yes or no


class LLMJudge:
    """Grades (question, gold answers, prediction) items with one batched generate call per attempt."""

    def __init__(self, generator: Generator, name: str, cache_path: Path | None = None, max_new_tokens: int = 16,
                 retries: int = 2, template: str = "seal"):
        self.generator = generator
        self.name = name
        self.template = template
        self.cache_path = cache_path
        self.params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens)
        self.retries = retries
        self.stats = JudgeStats()
        self._cache: dict[str, float] = {}
        if cache_path is not None:
            self._cache = {entry["key"]: entry["verdict"] for entry in read_jsonl(cache_path, repair=True)}

    def key(self, question: str, answers: Sequence[str], prediction: str) -> str:
        text = json.dumps([self.name, question, list(answers), prediction], ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def grade(self, items: Sequence[tuple[str, Sequence[str], str]]) -> list[float]:
        """1.0 (yes) or 0.0 (no) per item; items the cache lacks are judged, equal ones once."""
        keys = [self.key(*item) for item in items]
        self.stats.cache_hits += sum(k in self._cache for k in keys)
        todo = {k: item for k, item in zip(keys, items) if k not in self._cache}
        if self.template == "reference":  # SEAL counts an empty answer wrong without asking
            self._remember([{"key": k, "verdict": 0.0, "parsed": True, "text": ""}
                            for k, (_, _, prediction) in list(todo.items()) if not prediction.strip()])
            todo = {k: item for k, item in todo.items() if k not in self._cache}
        attempt = 0
        while todo:
            # First greedy; a re-ask of a greedy judge would say the same thing again, so re-asks sample.
            params = self.params if attempt == 0 else replace(self.params, temperature=1.0, seed=attempt)
            prompts = [judge_prompt(*item, self.template) for item in todo.values()]
            completions = self.generator.generate(prompts, params)
            self.stats.calls += len(prompts)
            last = attempt == self.retries
            settled = []
            for (k, _), (text,) in zip(list(todo.items()), completions):
                verdict = parse_verdict(text, self.template)
                if verdict is None and not last:
                    continue
                if verdict is None:
                    self.stats.unparsed += 1
                settled.append({"key": k, "verdict": 0.0 if verdict is None else verdict,
                                "parsed": verdict is not None, "text": text})
                del todo[k]
            self._remember(settled)
            attempt += 1
        return [self._cache[k] for k in keys]

    def _remember(self, entries: list[dict[str, Any]]) -> None:
        """Keep verdicts, and write them to the cache file at once: a killed run loses none it paid for."""
        self._cache.update((e["key"], e["verdict"]) for e in entries)
        if self.cache_path is not None and entries:
            append_jsonl(self.cache_path, entries)

    def close(self) -> None:
        """Release an endpoint's HTTP connections (a local model needs nothing)."""
        close = getattr(self.generator, "close", None)
        if close is not None:
            close()


def build_judge(settings: JudgeSettings, model: ModelSettings, cache_path: Path | None) -> LLMJudge:
    """The judge `settings` describe; a local one is loaded with `model`'s dtype and device."""
    if settings.model is not None:
        generator: Generator = make_generator(load_model(replace(model, name=settings.model)))
    else:
        try:  # httpx is in the serve extra: only an endpoint judge needs it
            from seal_lm.openai_client import OpenAIGenerator
        except ImportError as exc:
            raise SealError(f"a judge behind --judge-url needs httpx: pip install 'seal-lm[serve]' "
                            f"({exc.name} is missing)") from None
        api_key = os.environ.get(settings.api_key_env)
        generator = OpenAIGenerator(settings.url, settings.endpoint_model, api_key=api_key)
    return LLMJudge(generator, settings.name, cache_path, settings.max_new_tokens, settings.retries, settings.template)


def agreement(questions: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per string grader: how often it agrees with the judge on a graded question (both scores binarised
    at 0.5), Cohen's kappa (agreement beyond chance; None when chance alone explains it) and n."""
    pairs = [(q["scores"][JUDGE] >= 0.5, {g: q["scores"][g] >= 0.5 for g in GRADERS})
             for q in questions if JUDGE in q["scores"]]
    n = len(pairs)
    out = {}
    for grader in GRADERS:
        if not n:
            out[grader] = {"agreement": None, "kappa": None, "n": 0}
            continue
        observed = sum(j == g[grader] for j, g in pairs) / n
        judge_yes = sum(j for j, _ in pairs) / n
        grader_yes = sum(g[grader] for _, g in pairs) / n
        chance = judge_yes * grader_yes + (1 - judge_yes) * (1 - grader_yes)
        kappa = (observed - chance) / (1 - chance) if chance < 1 else None
        out[grader] = {"agreement": observed, "kappa": kappa, "n": n}
    return out
