"""Passages with questions (the SEAL grouping, the official SQuAD v1.1 format, the demo corpus), and
a user's documents for `seal adapt` (passages without questions).

SEAL grouping: `[{"title", "context", "questions": [{"question", "answer"}]}]`.
SQuAD v1.1:    `{"data": [{"title", "paragraphs": [{"context", "qas": [{"question", "answers": [{"text"}]}]}]}]}`.
Malformed files raise `SealError` naming the file, the passage and the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from seal_lm.errors import SealError

DEMO_SPLITS = ("train", "validation")
DOCUMENT_SUFFIXES = (".txt", ".md", ".json")


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


TABLE_SUFFIXES = {".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class DataColumns:
    """Where the fields are in a table (.jsonl, .parquet or .csv, or a folder written by
    `datasets.Dataset.save_to_disk`): one row per question; the rows of a passage share its title and context."""

    title: str = "title"
    """the passage's title"""
    context: str = "context"
    """the passage"""
    question: str = "question"
    """the question"""
    answer: str = "answers"
    """the gold answer(s): a string, a list of strings, or SQuAD's {"text": [...]} (the Hub's squad)"""


def select_passages(path: str | None, demo_split: str, skip: int = 0, limit: int | None = None,
                    columns: DataColumns | None = None) -> list[Passage]:
    """Passages from a file or folder (or the demo corpus' split when `path` is None), minus the first
    `skip`, at most `limit`; an empty selection is an error naming the source."""
    passages = load_passages(path, columns or DataColumns()) if path else load_demo_corpus(demo_split)
    selected = passages[skip:][:limit] if limit else passages[skip:]
    if not selected:
        raise SealError(f"{path or f'demo corpus ({demo_split})'}: no passages selected "
                        f"(it has {len(passages)}; skip {skip}, limit {limit})")
    return selected


def load_passages(path: str | Path, columns: DataColumns | None = None) -> list[Passage]:
    """Read a SEAL-grouping or SQuAD v1.1 JSON file, or a table the `datasets` library reads (`load_table`)."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() in TABLE_SUFFIXES:
        return load_table(path, columns or DataColumns())
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


def load_table(path: Path, columns: DataColumns) -> list[Passage]:
    """A .jsonl, .parquet or .csv file, or a `save_to_disk` folder, read with `datasets`, one row per question;
    passages in the order their first question appears."""
    import datasets

    if not path.exists():
        raise SealError(f"data file not found: {path}")
    try:
        if path.is_dir():
            table = datasets.load_from_disk(str(path))
            if isinstance(table, datasets.DatasetDict):
                table = table[next(iter(table))]
        else:
            table = datasets.load_dataset(TABLE_SUFFIXES[path.suffix.lower()], data_files=str(path), split="train")
    except Exception as exc:  # datasets raises many kinds; the message is what matters
        raise SealError(f"{path}: cannot read it with datasets ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    wanted = {"title": columns.title, "context": columns.context, "question": columns.question,
              "answer": columns.answer}
    missing = [f"{column} (data_columns.{field})" for field, column in wanted.items() if column not in table.column_names]
    if missing:
        raise SealError(f"{path}: no column {missing[0]} (columns: {', '.join(table.column_names)})")
    grouped: dict[tuple[str, str], list[Question]] = {}
    for i, row in enumerate(table):
        where = f"{path}: row {i}"
        title, context, question = (row[wanted[k]] for k in ("title", "context", "question"))
        for name, value in (("title", title), ("context", context), ("question", question)):
            if not isinstance(value, str) or not value.strip():
                raise SealError(f"{where}: column {wanted[name]} must be a non-empty string")
        grouped.setdefault((title, context), []).append(Question(question, _answers(row[wanted["answer"]], where,
                                                                                   wanted["answer"])))
    return [Passage(title.replace("_", " "), context, tuple(qs)) for (title, context), qs in grouped.items()]


def _answers(value: Any, where: str, column: str) -> tuple[str, ...]:
    if isinstance(value, dict):
        value = value.get("text")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise SealError(f"{where}: column {column} must hold an answer string, a list of them, or {{\"text\": [...]}}")
    return tuple(dict.fromkeys(texts))


def load_demo_corpus(split: str = "validation") -> list[Passage]:
    """The invented passages shipped with seal-lm (no model can know their answers in advance)."""
    if split not in DEMO_SPLITS:
        raise SealError(f"unknown demo split '{split}' (choose {' or '.join(DEMO_SPLITS)})")
    text = resources.files(__package__).joinpath("demo_corpus", f"{split}.json").read_text(encoding="utf-8")
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


def load_documents(path: str | Path) -> list[Passage]:
    """A file, or every .txt/.md/.json file of a folder (sorted by name), as passages without questions.
    JSON: a list of strings, or of objects with "text" (or "context") and an optional "title"; a Markdown
    file's first heading is its title."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES)
        if not files:
            raise SealError(f"{path}: no documents ({', '.join(DOCUMENT_SUFFIXES)} files) in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise SealError(f"documents not found: {path}")
    documents = [doc for f in files for doc in _read_documents(f)]
    ids = [d.id for d in documents]
    if len(set(ids)) != len(ids):
        raise SealError(f"{path}: the same document appears twice")
    return documents


def _read_documents(path: Path) -> list[Passage]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SealError(f"{path}: not UTF-8 text") from None
    if path.suffix.lower() != ".json":
        if not text.strip():
            raise SealError(f"{path}: empty document")
        heading = re.match(r"\s*#+\s*(.+)", text)
        return [Passage(heading.group(1).strip() if heading else path.stem, text.strip(), ())]
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SealError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, list) or not raw:
        raise SealError(f"{path}: expected a non-empty JSON list of documents")
    documents = []
    for i, item in enumerate(raw):
        if isinstance(item, dict):
            body, title = item.get("text", item.get("context")), item.get("title", f"{path.stem} {i + 1}")
        else:
            body, title = item, f"{path.stem} {i + 1}"
        if not isinstance(body, str) or not body.strip():
            raise SealError(f"{path}: document {i}: field 'text' must be a non-empty string")
        if not isinstance(title, str):
            raise SealError(f"{path}: document {i}: field 'title' must be a string")
        documents.append(Passage(title, body.strip(), ()))
    return documents
