"""Knowledge self-edits: the model restates a passage (implications, rewrites, Q&A) as training data.

Two families of formats and two ways of splitting a completion into training sequences:
- seal-lm's (`implications`, ...): a chat request for instruction-tuned models and a cue for base
  models; `split: seal` cuts a completion into items (blank-line or `---` segments, then lines),
  drops list markers, fragments and duplicates, and joins a self-QA question with its answer;
- SEAL's own (`reference-implications`, ...): the exact base-model prompts of its code, always raw
  text; `split: reference` splits as its code does (`---` segments, then lines, list markers kept,
  the first line dropped when the second starts with "1.", self-QA split before "Question N:").
Either way each item is prefixed with the passage title and the passage itself is one more
sequence. Empty or unusable completions never fail a run: they leave the passage as the only
sequence, and `ParsedSelfEdit.status` records what happened so runs can count it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from seal_lm.domains.knowledge.data import Passage
from seal_lm.errors import SealError
from seal_lm.generation import Prompt
from seal_lm.inner_loop import Example

_SEGMENT_BREAK = re.compile(r"\n\s*(?:-{3,}\s*)?\n|\n\s*-{3,}\s*(?:\n|$)")
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.):]|[A-Za-z][.)])\s+")
_QUESTION_START = re.compile(r"^\s*(?:Q(?:uestion)?\s*\d*\s*[:.])", re.IGNORECASE)
_MIN_WORDS = 3


@dataclass(frozen=True)
class KnowledgeFormat:
    """One way of asking for a self-edit, for chat models (`request`) and base models (`base_cue`)."""

    name: str
    request: str  # what the passage should be turned into
    base_cue: str  # the heading after which a base model continues
    keep_qa_pairs: bool = False  # self-qa: a question and its answer stay one training item
    open_book: bool = False  # the completion is questions, answered afterwards with the passage in view

    def prompt(self, passage: Passage) -> Prompt:
        body = f"Passage:\n{passage.title}\n{passage.context}"
        user = f"Read the following passage and {self.request}\n\n{body}"
        base = f"Let's read the following passage and {self.request}\n\n{body}\n\n{self.base_cue}\n"
        return Prompt(messages=(("user", user),), text=base)


FORMATS: dict[str, KnowledgeFormat | ReferenceFormat] = {
    f.name: f
    for f in (
        KnowledgeFormat(
            "implications",
            "produce a list of implications derived directly or indirectly from its content. "
            "Write each implication on its own line.",
            "Implications:",
        ),
        KnowledgeFormat(
            "implications-long",
            "produce a long list of implications derived directly or indirectly from its content, "
            "covering every fact, name, number and date. Write each implication on its own line.",
            "Implications:",
        ),
        KnowledgeFormat(
            "rewrite",
            "rewrite it in several different ways, keeping every fact. Separate the rewrites with a blank line.",
            "Rewrites:",
        ),
        KnowledgeFormat(
            "self-qa",
            "write questions about it together with their answers, covering every fact. "
            "Write each as 'Question: ...' followed by 'Answer: ...' on the next line.",
            "Questions and answers:",
            keep_qa_pairs=True,
        ),
        KnowledgeFormat(
            "open-book-qa",
            "write questions that its facts answer, one question per line.",
            "Questions:",
            open_book=True,
        ),
    )
}
# SEAL's self-edit prompts, verbatim (knowledge-incorporation/src/data_generation/make_squad_data.py,
# MAKE_SQUAD_DATA_TEMPLATES_BASE); its runs use them as raw text, also with chat models.
REFERENCE_TEMPLATES = {
    "reference-implications": "Let's read the following passage and produce a list of implications derived directly or "
                              "indirectly from the content.\n\nPassage:\n{title}\n{context}\n\nImplications:\n",
    "reference-implications-long": "Let's read the following passage and produce a long list of implications derived "
                                   "directly or indirectly from the content.\n\nPassage:\n{title}\n{context}\n\n"
                                   "Implications:\n",
    "reference-implications-very-long": "Let's read the following passage and produce a very long list of implications "
                                        "derived directly or indirectly from the content.\n\nPassage:\n{title}\n"
                                        "{context}\n\nImplications:\n",
    "reference-rewrite": "Let's read the following passage and rewrite it in a few different ways, each one separated "
                         "by a newline.\n\nPassage:\n{title}\n{context}\n\nRewritten passages:\n",
    "reference-self-qa": "Let's read the following passage and rewrite it in a question-answer format.\n\nPassage:\n"
                         "{title}\n{context}\n\nQuestion 1: ",
}


@dataclass(frozen=True)
class ReferenceFormat:
    """One of SEAL's self-edit prompts: the same raw text for every model."""

    name: str
    template: str
    keep_qa_pairs: bool = False  # only read by `split: seal`

    def prompt(self, passage: Passage) -> Prompt:
        return Prompt.raw_text(self.template.format(title=passage.title, context=passage.context))


FORMATS.update({name: ReferenceFormat(name, template, keep_qa_pairs=name.endswith("self-qa"))
                for name, template in REFERENCE_TEMPLATES.items()})
DEFAULT_FORMAT = "implications"
SPLITS = ("seal", "reference")


def get_format(name: str) -> KnowledgeFormat | ReferenceFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise SealError(f"unknown self-edit format '{name}' (choose one of: {', '.join(FORMATS)})") from None


@dataclass(frozen=True)
class ParsedSelfEdit:
    items: tuple[str, ...]  # usable items, before the title prefix (open-book-qa: the questions)
    status: str  # "ok", "empty" (nothing generated) or "unusable" (nothing usable in it)
    pairs: tuple[tuple[str, str], ...] = ()  # open-book-qa: (question, answer written with the passage in view)


def parse_completion(completion: str, fmt: KnowledgeFormat | ReferenceFormat, split: str = "seal") -> ParsedSelfEdit:
    """Split a completion into training items: seal-lm's way (drop list markers, fragments and duplicates)
    or, with `split` "reference", SEAL's (`reference_items`)."""
    if not completion.strip():
        return ParsedSelfEdit((), "empty")
    if split == "reference":
        return ParsedSelfEdit(tuple(reference_items(completion)), "ok")
    if getattr(fmt, "open_book", False):
        lines = [_LIST_MARKER.sub("", line).strip() for line in completion.splitlines()]
        questions = [q for q in dict.fromkeys(lines) if q.endswith("?") and len(re.findall(r"\w+", q)) >= _MIN_WORDS]
        return ParsedSelfEdit(tuple(questions), "ok" if questions else "unusable")
    items: list[str] = []
    for segment in _SEGMENT_BREAK.split(completion.strip()):
        lines = [_LIST_MARKER.sub("", line).strip() for line in segment.splitlines()]
        lines = [line for line in lines if line]
        items.extend(_join_qa_pairs(lines) if fmt.keep_qa_pairs else lines)
    usable = [i for i in dict.fromkeys(items) if len(re.findall(r"\w+", i)) >= _MIN_WORDS]
    return ParsedSelfEdit(tuple(usable), "ok" if usable else "unusable")


def _join_qa_pairs(lines: list[str]) -> list[str]:
    pairs: list[list[str]] = []
    for line in lines:
        if not pairs or _QUESTION_START.match(line):
            pairs.append([line])
        else:
            pairs[-1].append(line)
    return ["\n".join(p) for p in pairs]


def reference_items(completion: str, split_newlines: bool = True) -> list[str]:
    """The items SEAL's `build_train_sequences` makes of a (stripped) completion, before the title prefix
    (knowledge-incorporation/src/utils.py; `split_newlines` as in scripts/query_server.sh and continual,
    off in CPT): `---` segments; then, with `split_newlines`, either the self-QA split before every
    "Question N:" (when the text also has "Answer:"; segments keep their trailing newline) or every
    non-blank line, list markers kept, the first line dropped when the second starts with "1."."""
    text = completion.strip()
    segments = [s.strip() for s in text.split("---") if s.strip()] or [text]
    if not split_newlines:
        return segments
    if re.search(r"Question\s+\d+:", text) and re.search(r"Answer\s*:", text):
        segments = re.split(r"\n(?=Question\s+\d+:)", text)
        if not segments[0].lstrip().startswith("Question"):
            segments[0] = "Question 1: " + segments[0].strip()
        return segments
    lines = [line.strip() for segment in segments for line in segment.splitlines() if line.strip()]
    return lines[1:] if len(lines) > 1 and lines[1].startswith("1.") else lines


def teacher_context(passage: Passage) -> str:
    """What the teacher of context distillation reads before each training sequence: the passage."""
    return f"{passage.title}\n{passage.context.strip()}\n\n"


def training_sequences(passage: Passage, parsed: list[ParsedSelfEdit] | tuple[ParsedSelfEdit, ...] = (),
                       split: str = "seal", ask: Callable[[str], Prompt] | None = None) -> list[str | Example]:
    """Every item of every self-edit, each prefixed with the title, and the passage itself: first (seal-lm's
    order) or, with `split` "reference", last and stripped, as SEAL's code adds it. Open-book pairs become
    question -> answer examples in the closed-book prompt `ask` makes of a question (the evaluation's own)."""
    if any(p.pairs for p in parsed):
        if ask is None:
            raise ValueError("open-book pairs need the closed-book prompt to train them in")
        examples = [Example(ask(q), a) for p in parsed for q, a in p.pairs]
        return [f"{passage.title}\n{passage.context}", *examples]
    items = [f"{passage.title}\n{item}" for p in parsed for item in p.items]
    if split == "reference":
        return items + [f"{passage.title}\n{passage.context.strip()}"]
    return [f"{passage.title}\n{passage.context}"] + items
