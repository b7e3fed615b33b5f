"""`seal adapt`: teach a model a folder of documents with its own self-edits, and save the result.

Each document (plain text, Markdown or JSON) is learned in turn exactly as in `seal continual`
(self-edit, LoRA update, optional retention guard), and the result is saved as one PEFT adapter
(the exact sum of the accepted updates) or as a merged model. What was learned is checked without
any gold answers: before the first update the model writes a few questions about each document,
with the document in view, and answers them; those answers are the reference. It then answers the
same questions closed-book, before and after the updates.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from seal_lm.adapters import combine_adapters, save_adapter
from seal_lm.data import Passage, Question
from seal_lm.errors import SealError
from seal_lm.formats.knowledge import DEFAULT_FORMAT
from seal_lm.generation import HFGenerator, Prompt, SamplingParams
from seal_lm.inner_loop import InnerLoopSettings
from seal_lm.models import LoadedModel, ModelSettings, display_name, load_model
from seal_lm.recipes.continual import ContinualConfig, ContinualRunner, GuardSettings
from seal_lm.runs import RunDir, derived_seed
from seal_lm.stats import mean_with_interval

DOCUMENT_SUFFIXES = (".txt", ".md", ".json")
SAVE_AS = ("adapter", "merged")
SELF_CHECK_SAMPLES = 3  # completions pooled per document for its self-check questions
_QA = re.compile(r"Question\s*\d*\s*:\s*(.+?)\s*\n\s*Answer\s*\d*\s*:\s*(.+)", re.IGNORECASE)


@dataclass
class AdaptConfig:
    """Everything that determines a `seal adapt` run; written to the run directory as config.json."""

    documents: str = ""
    model: ModelSettings = field(default_factory=ModelSettings)
    seed: int = 0
    format: str = DEFAULT_FORMAT
    self_edit_sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=256))
    inner_loop: InnerLoopSettings = field(default_factory=InnerLoopSettings)
    accumulate: str = "merge"
    guard: bool = False
    guard_settings: GuardSettings = field(default_factory=GuardSettings)
    self_check_questions: int = 5  # per document
    grader: str = "f1"  # the reference is the model's own open-book answer: token overlap, not containment
    save: str = "adapter"  # "adapter": one PEFT adapter; "merged": the whole model with the updates merged

    def as_continual(self) -> ContinualConfig:
        """The sequence of updates, as `seal continual` runs it: one order, the documents' own."""
        return ContinualConfig(
            data=self.documents, limit=None, orders=1, seed=self.seed, model=self.model, format=self.format,
            self_edit_sampling=self.self_edit_sampling, grader=self.grader, inner_loop=self.inner_loop,
            accumulate=self.accumulate, guard="on" if self.guard else "off", guard_settings=self.guard_settings)

    def validate(self) -> None:
        self.as_continual().validate()
        if self.save not in SAVE_AS:
            raise SealError(f"unknown save '{self.save}' (choose one of: {', '.join(SAVE_AS)})")
        if self.self_check_questions < 0:
            raise SealError(f"self_check_questions must be at least 0 (got {self.self_check_questions})")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_documents(path: str | Path) -> list[Passage]:
    """A file, or every .txt/.md/.json file of a folder (sorted by name), as passages without questions.
    JSON: a list of strings, or of objects with "text" (or "context") and an optional "title"."""
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


def self_check_prompt(document: Passage, n: int) -> Prompt:
    request = (f"Read the document and write {n} short questions about its facts, each with a short answer. "
               "Write each as 'Question: ...' followed by 'Answer: ...' on the next line.\n\n"
               f"Document:\n{document.title}\n{document.context}")
    return Prompt.single_turn(request, f"{request}\n\nQuestions and answers:\n")


def parse_self_check(completion: str, n: int) -> list[Question]:
    """The first `n` distinct question/answer pairs of a completion."""
    pairs: dict[str, str] = {}
    for question, answer in _QA.findall(completion):
        if question.strip() and answer.strip():
            pairs.setdefault(question.strip(), answer.strip())  # a repeated question keeps its first answer
    return [Question(q, (a,)) for q, a in list(pairs.items())[:n]]


def _self_check_questions(loaded: LoadedModel, documents: list[Passage], n: int, seed: int,
                          run: RunDir) -> list[Passage]:
    """Documents with the model's own open-book questions attached, written once (before any update).
    Several seeded samples are pooled: greedy decoding of a small model repeats one question."""
    stored = next((r for r in run.records if r.get("kind") == "self-check-questions"), None)
    if stored is None:
        if n:
            params = SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=48 * n, n=SELF_CHECK_SAMPLES,
                                    seed=derived_seed(seed, "self-check"))
            outs = HFGenerator(loaded).generate([self_check_prompt(d, n) for d in documents], params)
            found = [parse_self_check("\n\n".join(o), n) for o in outs]
        else:
            found = [[] for _ in documents]
        stored = {"kind": "self-check-questions",
                  "questions": {d.id: [[q.question, q.answers[0]] for q in qs] for d, qs in zip(documents, found)}}
        run.append(stored)
    return [dataclasses.replace(d, questions=tuple(Question(q, (a,)) for q, a in stored["questions"][d.id]))
            for d in documents]


def run_adapt(config: AdaptConfig, out: str | Path, show_progress: bool = True) -> dict[str, Any]:
    """Learn every document in turn, save the result, and return the summary (also written to `out`)."""
    config.validate()
    documents = load_documents(config.documents)
    run = RunDir(out, config.as_dict())
    loaded = load_model(config.model)
    documents = _self_check_questions(loaded, documents, config.self_check_questions, config.seed, run)
    runner = ContinualRunner(config.as_continual(), loaded, documents, run)
    before = next((r for r in run.records if r.get("kind") == "self-check-before"), None)
    if before is None:
        before = {"kind": "self-check-before", "scores": runner.closed_book_scores(documents)}
        run.append(before)
    variant = "guard" if config.guard else "no-guard"
    finished = sum(r.get("kind") == "step" for r in run.records)
    with tqdm(total=len(documents), initial=finished, desc="adapting", unit="document",
              disable=not show_progress) as bar:
        accepted = runner.run_order(variant, 0, bar)
    saved = run.path / ("adapter" if config.save == "adapter" else "model")
    if config.save == "merged":  # the model holds exactly the accepted updates now
        loaded.model.save_pretrained(saved)
        loaded.tokenizer.save_pretrained(saved)
    elif accepted:
        save_adapter(loaded.model, combine_adapters(accepted), saved)
    summary = summarize(run.records, documents, config)
    summary["saved"] = str(saved) if (config.save == "merged" or accepted) else None
    run.write_summary(summary)
    return summary


def summarize(records: list[dict[str, Any]], documents: list[Passage], config: AdaptConfig) -> dict[str, Any]:
    """Per document: self-check accuracy closed-book before and after, and whether its update was accepted."""
    steps = {r["step"]: r for r in records if r.get("kind") == "step"}
    before = next(r for r in records if r.get("kind") == "self-check-before")["scores"]
    after = steps[len(documents) - 1]["scores"] if len(steps) == len(documents) else None
    rows = []
    for i, doc in enumerate(documents):
        rows.append({"title": doc.title, "questions": len(doc.questions), "accepted": steps[i]["accepted"],
                     "before": _estimate(before[i]), "after": _estimate(after[i]) if after else None})
    pooled = lambda scores: _estimate([s for qs in scores for s in qs])
    return {"kind": "adapt", "model": display_name(config.model.name), "grader": config.grader,
            "documents": rows, "before": pooled(before), "after": pooled(after) if after else None,
            "refused": sum(not r["accepted"] for r in steps.values())}


def _estimate(scores: list[float]) -> dict[str, Any] | None:
    return mean_with_interval(scores).as_dict() if scores else None  # None: no self-check question parsed
