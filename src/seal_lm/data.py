"""Passages with questions: the SEAL grouping, the official SQuAD v1.1 format, and the demo corpus.

SEAL grouping: `[{"title", "context", "questions": [{"question", "answer"}]}]`.
SQuAD v1.1:    `{"data": [{"title", "paragraphs": [{"context", "qas": [{"question", "answers": [{"text"}]}]}]}]}`.
Malformed files raise `SealError` naming the file, the passage and the field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from seal_lm.errors import SealError

DEMO_SPLITS = ("train", "validation")


@dataclass(frozen=True)
class Question:
    question: str
    answers: tuple[str, ...]  # any of them counts as correct


@dataclass(frozen=True)
class Passage:
    title: str
    context: str
    questions: tuple[Question, ...]

    @property
    def id(self) -> str:
        """Stable across runs and files, so a resumed run recognises finished passages."""
        return hashlib.sha1(f"{self.title}\n{self.context}".encode()).hexdigest()[:12]


def select_passages(path: str | None, demo_split: str, skip: int = 0, limit: int | None = None) -> list[Passage]:
    """Passages from a file (or the demo corpus' split when `path` is None), minus the first `skip`,
    at most `limit`; an empty selection is an error naming the source."""
    passages = load_passages(path) if path else load_demo_corpus(demo_split)
    selected = passages[skip:][:limit] if limit else passages[skip:]
    if not selected:
        raise SealError(f"{path or f'demo corpus ({demo_split})'}: no passages selected "
                        f"(it has {len(passages)}; skip {skip}, limit {limit})")
    return selected


def load_passages(path: str | Path) -> list[Passage]:
    """Read a SEAL-grouping or SQuAD v1.1 JSON file."""
    path = Path(path)
    if not path.is_file():
        raise SealError(f"data file not found: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SealError(f"{path}: not valid JSON ({exc})") from None
    return parse_passages(raw, str(path))


def parse_passages(raw: Any, source: str) -> list[Passage]:
    if isinstance(raw, dict) and "data" in raw:
        return _parse_squad(raw["data"], source)
    if isinstance(raw, list):
        return [_parse_grouped(item, f"{source}: passage {i}") for i, item in enumerate(raw)]
    raise SealError(f"{source}: expected a list of passages (SEAL grouping) or an object with 'data' (SQuAD v1.1)")


def load_demo_corpus(split: str = "validation") -> list[Passage]:
    """The invented passages shipped with seal-lm (no model can know their answers in advance)."""
    if split not in DEMO_SPLITS:
        raise SealError(f"unknown demo split '{split}' (choose {' or '.join(DEMO_SPLITS)})")
    text = resources.files("seal_lm").joinpath("demo_corpus", f"{split}.json").read_text(encoding="utf-8")
    return parse_passages(json.loads(text), f"demo corpus ({split})")


def _field(obj: Any, name: str, where: str, kind: type = str) -> Any:
    if not isinstance(obj, dict):
        raise SealError(f"{where}: expected an object, got {type(obj).__name__}")
    if name not in obj:
        raise SealError(f"{where}: missing field '{name}'")
    value = obj[name]
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise SealError(f"{where}: field '{name}' must be a non-empty {kind.__name__}")
    return value


def _parse_grouped(item: Any, where: str) -> Passage:
    questions = []
    for j, q in enumerate(_field(item, "questions", where, list)):
        qwhere = f"{where}, question {j}"
        answer = q.get("answer") if isinstance(q, dict) else None
        answers = (answer,) if isinstance(answer, str) else answer
        if not isinstance(answers, (list, tuple)) or not answers or not all(isinstance(a, str) for a in answers):
            raise SealError(f"{qwhere}: field 'answer' must be a string or a list of strings")
        questions.append(Question(_field(q, "question", qwhere), tuple(answers)))
    return Passage(_field(item, "title", where), _field(item, "context", where), tuple(questions))


def _parse_squad(articles: Any, source: str) -> list[Passage]:
    if not isinstance(articles, list):
        raise SealError(f"{source}: field 'data' must be a list of articles")
    passages = []
    for i, article in enumerate(articles):
        awhere = f"{source}: article {i}"
        title = _field(article, "title", awhere)
        for j, paragraph in enumerate(_field(article, "paragraphs", awhere, list)):
            pwhere = f"{awhere}, paragraph {j}"
            questions = []
            for k, qa in enumerate(_field(paragraph, "qas", pwhere, list)):
                qwhere = f"{pwhere}, question {k}"
                answers = _field(qa, "answers", qwhere, list)
                texts = tuple(dict.fromkeys(_field(a, "text", f"{qwhere}, answer {m}") for m, a in enumerate(answers)))
                if not texts:
                    raise SealError(f"{qwhere}: field 'answers' is empty")
                questions.append(Question(_field(qa, "question", qwhere), texts))
            passages.append(Passage(title.replace("_", " "), _field(paragraph, "context", pwhere), tuple(questions)))
    return passages
