"""Graders: does a closed-book answer match the gold answer(s)?

The paper grades with a judge model (GPT-4.1). Without one, three string graders are offered:
- `exact`: SQuAD-normalised exact match. Strict; a small model that answers in a full sentence
  ("The observatory was built in 1902.") scores 0 although it is right.
- `f1`: SQuAD token F1, partial credit. Smooth, but verbose answers are penalised and a wrong
  answer sharing words with the gold one gets credit.
- `contains` (default): the normalised gold answer appears, on word boundaries, inside the
  normalised prediction. Closest to the judge's "conveys the gold answer" for short gold answers;
  it can be gamed by long answers that list many candidates, which is why answers are capped at
  64 new tokens as in the paper.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for answer in answers:
        gold_tokens = normalize_answer(answer).split()
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common == 0:
            continue
        precision, recall = common / len(pred_tokens), common / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains(prediction: str, answers: Sequence[str]) -> float:
    pred = f" {normalize_answer(prediction)} "
    return float(any(gold and f" {gold} " in pred for gold in map(normalize_answer, answers)))


GRADERS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "exact": exact_match,
    "f1": token_f1,
    "contains": contains,
}


def grade_all(prediction: str, answers: Sequence[str]) -> dict[str, float]:
    """Every grader's score, so a run records all of them whichever one is the reward."""
    return {name: fn(prediction, answers) for name, fn in GRADERS.items()}
