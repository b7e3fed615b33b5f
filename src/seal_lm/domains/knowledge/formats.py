"""Knowledge self-edits: the model restates a passage (implications, rewrites, Q&A) as training data.

As in the paper, a completion is split into items (blank-line or `---` segments, then lines),
each item is prefixed with the passage title, and the passage itself is always one more
training sequence. Empty or unusable completions never fail a run: they leave the passage as
the only sequence, and `ParsedSelfEdit.status` records what happened so runs can count it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from seal_lm.domains.knowledge.data import Passage
from seal_lm.errors import SealError
from seal_lm.generation import Prompt

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

    def prompt(self, passage: Passage) -> Prompt:
        body = f"Passage:\n{passage.title}\n{passage.context}"
        user = f"Read the following passage and {self.request}\n\n{body}"
        base = f"Let's read the following passage and {self.request}\n\n{body}\n\n{self.base_cue}\n"
        return Prompt(messages=(("user", user),), text=base)


FORMATS: dict[str, KnowledgeFormat] = {
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
    )
}
DEFAULT_FORMAT = "implications"


def get_format(name: str) -> KnowledgeFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise SealError(f"unknown self-edit format '{name}' (choose one of: {', '.join(FORMATS)})") from None


@dataclass(frozen=True)
class ParsedSelfEdit:
    items: tuple[str, ...]  # usable items, before the title prefix
    status: str  # "ok", "empty" (nothing generated) or "unusable" (nothing usable in it)


def parse_completion(completion: str, fmt: KnowledgeFormat) -> ParsedSelfEdit:
    """Split a completion into training items; drop list markers, fragments and duplicates."""
    if not completion.strip():
        return ParsedSelfEdit((), "empty")
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


def passage_sequence(passage: Passage) -> str:
    return f"{passage.title}\n{passage.context}"


def training_sequences(passage: Passage, parsed: list[ParsedSelfEdit] | tuple[ParsedSelfEdit, ...] = ()) -> list[str]:
    """The passage itself, then every item of every self-edit, each prefixed with the title."""
    return [passage_sequence(passage)] + [f"{passage.title}\n{item}" for p in parsed for item in p.items]
