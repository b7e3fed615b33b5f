"""Knowledge incorporation: learn a passage from self-edits, then answer questions about it closed-book.

This module ties the layers together for one passage: ask for self-edits, turn them into
training sequences, and grade closed-book answers (the passage is never in the question prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from seal_lm.adapters import Adapter
from seal_lm.data import Passage
from seal_lm.formats.knowledge import KnowledgeFormat, ParsedSelfEdit, parse_completion
from seal_lm.generation import Generator, Prompt, SamplingParams
from seal_lm.grading import GRADERS, grade_all

# The paper's evaluation: greedy decoding, at most 64 new tokens, question only.
ANSWER_SAMPLING = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=64, stop=("\nQuestion:",))


def question_prompt(question: str) -> Prompt:
    """The paper's closed-book prompt: no passage, just the question."""
    return Prompt(
        messages=(("user", f"Answer the question directly and concisely.\nQuestion: {question}"),),
        text=f"Let's answer a question directly and concisely.\nQuestion: {question}\nAnswer:",
    )


@dataclass
class SelfEdit:
    completion: str
    parsed: ParsedSelfEdit

    def as_record(self) -> dict:
        return {"completion": self.completion, "status": self.parsed.status, "items": list(self.parsed.items)}


def write_self_edits(
    generator: Generator, passages: Sequence[Passage], fmt: KnowledgeFormat, params: SamplingParams
) -> list[list[SelfEdit]]:
    """`params.n` self-edits for each passage, parsed; unusable ones are kept (and counted) too."""
    completions = generator.generate([fmt.prompt(p) for p in passages], params)
    return [[SelfEdit(c, parse_completion(c, fmt)) for c in per_passage] for per_passage in completions]


def answer_questions(
    generator: Generator, passages: Sequence[Passage], adapters: Sequence[Adapter | None] | None = None
) -> list[list[dict]]:
    """Closed-book answers to every question of `passages` (passage i answered by `adapters[i]`,
    all in one batched call), graded by every grader."""
    per_passage = list(adapters) if adapters is not None else [None] * len(passages)
    questions = [q for p in passages for q in p.questions]
    per_question = [a for p, a in zip(passages, per_passage) for _ in p.questions]
    answers = generator.generate([question_prompt(q.question) for q in questions], ANSWER_SAMPLING, per_question)
    graded = iter(
        {"question": q.question, "answers": list(q.answers), "prediction": a[0].strip(),
         "scores": grade_all(a[0], q.answers)}
        for q, a in zip(questions, answers)
    )
    return [[next(graded) for _ in p.questions] for p in passages]


def accuracy(graded_questions: Sequence[dict], grader: str) -> float:
    if grader not in GRADERS:
        raise KeyError(grader)
    return sum(q["scores"][grader] for q in graded_questions) / max(len(graded_questions), 1)
