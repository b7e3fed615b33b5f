"""Knowledge incorporation's evaluation: learn a passage, then answer its questions closed-book.

For each passage and condition, closed-book accuracy on its questions (the passage is never in the
question prompt). Mode "single" (the paper's single-passage setting) makes one LoRA update per
passage; mode "cpt" (continued pretraining) one update on the pooled training data of `cpt.docs`
passages, after which all their questions are asked. Conditions:
  base       - the model as it is;
  passage    - after a LoRA update on the passage alone;
  self-edit  - after a LoRA update on the passage plus the model's own self-edit(s);
  teacher    - after a LoRA update on the passage plus self-edits written by another model.
Each (passage, condition) is one `PassageEval` record, appended as soon as its group of passages
finishes. With a judge configured, an LLM judge grades every answer as well.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from seal_lm.adapters import Adapter, using
from seal_lm.config import at_least, one_of
from seal_lm.domain import condition_row
from seal_lm.domains.knowledge.data import Passage
from seal_lm.domains.knowledge.formats import (
    KnowledgeFormat,
    ParsedSelfEdit,
    ReferenceFormat,
    parse_completion,
    reference_items,
    teacher_context,
    training_sequences,
)
from seal_lm.generation import Generator, Prompt, SamplingParams, encode_prompt, make_generator
from seal_lm.grading import GRADERS, grade_all
from seal_lm.inner_loop import LoraUpdater, Tokens, TrainJob
from seal_lm.judge import CACHE_FILE, JUDGE, LLMJudge, agreement, build_judge
from seal_lm.models import LoadedModel, load_model
from seal_lm.records import EvalRecord
from seal_lm.runs import RunDir, derived_seed

if TYPE_CHECKING:
    from seal_lm.domains.knowledge.domain import KnowledgeConfig

CONDITIONS = ("base", "passage", "self-edit", "teacher")
QUESTION_TEMPLATES = ("seal", "reference")
# SEAL's closed-book prompt, verbatim (knowledge-incorporation/src/utils.py, SQUAD_ANSWER_TEMPLATE_BASE), sent as
# raw text (src/inner/TTT_server.py); the question in it carries the topic line (src/query/query_server.py).
REFERENCE_QUESTION_TEMPLATE = "Let's answer a question directly and concisely.\nQuestion: {question}\nAnswer:\n"


@dataclass
class QuestionSettings:
    """How a closed-book question is asked (greedy decoding; the passage is never in the prompt)."""

    topic: bool = True
    """put "Topic: {title}" on the line before the question, as SEAL's code does in evaluation, rewards, CPT
    and continual, and in what the judge sees"""
    template: str = "seal"
    """seal: an instruction in the chat template for chat models (plain text for base models), the answer cut
    where the model starts a new "Question:"; reference: SEAL's base-model text for every model, raw, the answer
    ending only at EOS"""
    max_new_tokens: int = 64
    """length limit of an answer"""

    def validate(self, key: str) -> None:
        one_of(f"{key}.template", self.template, QUESTION_TEMPLATES)
        at_least(f"{key}.max_new_tokens", self.max_new_tokens, 1)

    def asked(self, question: str, title: str) -> str:
        """The question as the model (and a judge) reads it."""
        return f"Topic: {title}\n{question}" if self.topic else question

    def asker(self, passage: Passage) -> Callable[[str], Prompt]:
        """The closed-book prompt of a question about `passage` (for training on question -> answer pairs)."""
        return lambda question: question_prompt(self.asked(question, passage.title), self.template)

    def sampling(self) -> SamplingParams:
        stop = ("\nQuestion:",) if self.template == "seal" else ()
        return SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=self.max_new_tokens, stop=stop)

log = logging.getLogger(__name__)


@dataclass
class PassageEval(EvalRecord):
    """A passage under one condition: its self-edits, what each update trained on, every answer."""

    training: list[dict[str, Any]] = field(default_factory=list)  # per update: sequences, losses, tokens, seconds
    questions: list[dict[str, Any]] = field(default_factory=list)  # question, answers, predictions, scores


def question_prompt(asked: str, template: str = "seal") -> Prompt:
    """The closed-book prompt: no passage, just the question (as `QuestionSettings.asked` writes it)."""
    if template == "reference":
        return Prompt.raw_text(REFERENCE_QUESTION_TEMPLATE.format(question=asked))
    return Prompt(
        messages=(("user", f"Answer the question directly and concisely.\nQuestion: {asked}"),),
        text=f"Let's answer a question directly and concisely.\nQuestion: {asked}\nAnswer:",
    )


@dataclass
class SelfEdit:
    completion: str
    parsed: ParsedSelfEdit

    def as_record(self) -> dict:
        record = {"completion": self.completion, "status": self.parsed.status, "items": list(self.parsed.items)}
        if self.parsed.pairs:
            record["pairs"] = [list(pair) for pair in self.parsed.pairs]
        return record


def write_self_edits(generator: Generator, passages: Sequence[Passage], fmt: KnowledgeFormat | ReferenceFormat,
                     params: SamplingParams, split: str = "seal") -> list[list[SelfEdit]]:
    """`params.n` self-edits for each passage, parsed; unusable ones are kept (and counted) too."""
    completions = generator.generate([fmt.prompt(p) for p in passages], params)
    parsed = parse_all(generator, passages, completions, fmt, split)
    return [[SelfEdit(c, e) for c, e in zip(outs, edits)] for outs, edits in zip(completions, parsed)]


def parse_all(generator: Generator, passages: Sequence[Passage], completions: Sequence[Sequence[str]],
              fmt: KnowledgeFormat | ReferenceFormat, split: str) -> list[list[ParsedSelfEdit]]:
    """Each completion parsed; for the open-book format its questions are then answered by the same model with
    the passage in view (greedily, all in one batch), and those answers, not gold ones, are what it learns."""
    parsed = [[parse_completion(c, fmt, split) for c in outs] for outs in completions]
    if not getattr(fmt, "open_book", False):
        return parsed
    asked = [(i, j, q) for i, edits in enumerate(parsed) for j, e in enumerate(edits) for q in e.items]
    answers = generator.generate([open_book_prompt(passages[i], q) for i, _, q in asked],
                                 QuestionSettings().sampling())
    pairs: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for (i, j, q), (answer,) in zip(asked, answers):
        if answer.strip():
            pairs.setdefault((i, j), []).append((q, answer.strip()))
    return [[dataclasses.replace(e, pairs=tuple(pairs.get((i, j), ())),
                                 status=e.status if pairs.get((i, j)) or e.status != "ok" else "unusable")
             for j, e in enumerate(edits)] for i, edits in enumerate(parsed)]


def open_book_prompt(passage: Passage, question: str) -> Prompt:
    """A question asked with the passage in view (open-book self-QA's answers)."""
    body = f"Passage:\n{passage.title}\n{passage.context}\n\nQuestion: {question}"
    return Prompt(messages=(("user", f"Answer the question directly and concisely, from the passage.\n\n{body}"),),
                  text=f"Let's answer a question directly and concisely, from the passage.\n\n{body}\nAnswer:")


def answer_questions(
    generator: Generator, passages: Sequence[Passage], adapters: Sequence[Adapter | None] | None = None,
    settings: QuestionSettings | None = None,
) -> list[list[dict]]:
    """Closed-book answers to every question of `passages` (passage i answered by `adapters[i]`,
    all in one batched call), graded by every grader; "question" records the text asked."""
    settings = settings or QuestionSettings()
    per_passage = list(adapters) if adapters is not None else [None] * len(passages)
    asked = [(settings.asked(q.question, p.title), q) for p in passages for q in p.questions]
    per_question = [a for p, a in zip(passages, per_passage) for _ in p.questions]
    answers = generator.generate([question_prompt(text, settings.template) for text, _ in asked],
                                 settings.sampling(), per_question)
    graded = iter(
        {"question": text, "answers": list(q.answers), "prediction": a[0].strip(), "scores": grade_all(a[0], q.answers)}
        for (text, q), a in zip(asked, answers)
    )
    return [[next(graded) for _ in p.questions] for p in passages]


class KnowledgeEvaluator:
    """Runs one condition for a group of passages at a time: self-edits for all of them in one
    batched generation, all their inner loops in one multi-adapter pass, all answers in one batch."""

    def __init__(self, config: KnowledgeConfig, fmt: KnowledgeFormat | ReferenceFormat, loaded: LoadedModel,
                 teacher: Generator | None = None, judge: LLMJudge | None = None):
        self.config = config
        self.fmt = fmt
        self.generator = make_generator(loaded)
        self.updater = LoraUpdater(loaded, config.inner_loop, max_adapters=config.adapters_per_pass)
        self.teacher = teacher
        self.judge = judge

    def run(self, passages: list[Passage], condition: str, round_: int = 0) -> list[PassageEval]:
        """Records for `passages` under `condition`; `round_` > 0 marks a SEAL policy after that RL round."""
        started = time.perf_counter()
        config = self.config
        # The seed does not depend on the round: every round's self-edits are sampled with the same
        # random numbers, which makes rounds differ less by chance.
        seed = derived_seed(config.seed, condition, *(p.id for p in passages))
        records = [PassageEval(round=round_, context_id=p.id, title=p.title, condition=condition, accuracy={},
                               seconds=0.0) for p in passages]
        questions = config.question
        if condition == "base":
            samples = [[graded] for graded in answer_questions(self.generator, passages, None, questions)]
        else:
            cpt = config.mode == "cpt"
            if condition == "passage":
                edits: list[list[SelfEdit]] = [[] for _ in passages]
            else:
                writer = self.teacher if condition == "teacher" else self.generator
                n = config.cpt.self_edits_per_passage if cpt else config.self_edits_per_passage
                edits = write_self_edits(writer, passages, self.fmt,
                                         dataclasses.replace(config.self_edit_sampling, n=n, seed=seed), config.split)
            if cpt:  # one update on everything the pool's passages contribute
                sequence_sets = [[cpt_sequences(p, es, config.cpt.split)] for p, es in zip(passages, edits)]
                pooled = [seq for sets in sequence_sets for seq in sets[0]]
                result, = self.updater.train([TrainJob(pooled, dataclasses.replace(config.cpt.inner_loop, seed=seed))])
                per_passage = [[result] for _ in passages]
            else:  # one update per passage and self-edit, all trained together
                sequence_sets = [[training_sequences(p, [e.parsed], config.split, questions.asker(p)) for e in es]
                                 or [training_sequences(p, (), config.split)] for p, es in zip(passages, edits)]
                distill = config.update == "distill" and condition != "passage"
                contexts = [teacher_context(p) if distill else None for p, sets in zip(passages, sequence_sets)
                            for _ in sets]
                jobs = [TrainJob(seqs, dataclasses.replace(config.inner_loop, seed=seed + j), teacher_context=context)
                        for j, (seqs, context) in enumerate(zip((s for sets in sequence_sets for s in sets), contexts))]
                results = iter(self.updater.train(jobs))
                per_passage = [[next(results) for _ in sets] for sets in sequence_sets]
            # Answer sample j of every passage in one batch, each passage with its own adapter.
            n_samples = max(len(r) for r in per_passage)
            answered = [answer_questions(self.generator, passages, [r[j].adapter for r in per_passage], questions)
                        for j in range(n_samples)]
            samples = [[answered[j][i] for j in range(len(per_passage[i]))] for i in range(len(passages))]
            for record, es, sets, rs in zip(records, edits, sequence_sets, per_passage):
                record.self_edits = [e.as_record() for e in es]
                record.training = [
                    {"sequences": seqs, "epoch_losses": r.epoch_losses, "step_losses": r.step_losses,
                     "tokens": r.train_tokens, "seconds": r.seconds}
                    for seqs, r in zip(sets, rs)
                ]
        seconds = (time.perf_counter() - started) / len(passages)  # without the judge: grading is not SEAL's cost
        for record, passage_samples in zip(records, samples):
            record.questions = _merge_samples(passage_samples)
        if self.judge:
            self._judge([q for record in records for q in record.questions])
        for record in records:
            record.accuracy = {g: sum(q["scores"][g] for q in record.questions) / len(record.questions)
                               for g in config.graders}
            record.seconds = seconds
        return records

    def _judge(self, questions: list[dict]) -> None:
        """The judge's score of each question, averaged over its predictions; one batch for the whole group."""
        items = [(q["question"], q["answers"], p) for q in questions for p in q["predictions"]]
        verdicts = iter(self.judge.grade(items))
        for q in questions:
            q["scores"][JUDGE] = sum(next(verdicts) for _ in q["predictions"]) / len(q["predictions"])


def cpt_sequences(passage: Passage, edits: Sequence[SelfEdit], split: str) -> list[str]:
    """What one passage adds to a pooled CPT update: seal-lm's training sequences of all its self-edits
    (the passage once), or SEAL's (src/query/CPT.py): each completion split only at `---`, the passage
    added once per completion, and for a passage without completions its title line and the passage."""
    if split == "seal":
        return training_sequences(passage, [e.parsed for e in edits])
    completions = [e.completion for e in edits if e.completion.strip()] or [""]
    return [seq for c in completions
            for seq in training_sequences(passage, [ParsedSelfEdit(tuple(reference_items(c, False)), "ok")],
                                          "reference")]


def answer_logliks(model: LoadedModel, passages: Sequence[Passage], adapters: Sequence[Adapter | None],
                   settings: QuestionSettings) -> list[float]:
    """Per (passage, adapter): the mean over its questions of the gold answer's mean log-probability per token,
    teacher-forced in the closed-book prompt (the first gold answer of each question). The answer's tokens only:
    counting an end-of-turn token after them, a short span's score would be mostly how unlikely the model is
    to stop right there (docs/results.md measures both)."""
    updater = LoraUpdater(model)
    out = []
    for passage, adapter in zip(passages, adapters):
        ask = settings.asker(passage)
        answers = []
        for q in passage.questions:
            prompt = encode_prompt(model, ask(q.question))
            answers.append(Tokens(prompt + model.tokenizer(q.answers[0], add_special_tokens=False)["input_ids"],
                                  len(prompt)))
        with using(model.model, adapter) if adapter is not None else nullcontext():
            out.append(-sum(updater.tokens_loss([t]) for t in answers) / len(answers))
    return out


def _merge_samples(samples: list[list[dict]]) -> list[dict]:
    """One entry per question: every sample's prediction, and scores averaged over samples."""
    merged = []
    for per_sample in zip(*samples):
        first = per_sample[0]
        merged.append({
            "question": first["question"],
            "answers": first["answers"],
            "predictions": [q["prediction"] for q in per_sample],
            "scores": {g: sum(q["scores"][g] for q in per_sample) / len(per_sample) for g in GRADERS},
        })
    return merged


def evaluate_round(config: KnowledgeConfig, fmt: KnowledgeFormat | ReferenceFormat, passages: list[Passage], model: LoadedModel,
                   round_: int, run: RunDir, show_progress: bool, label: str) -> None:
    """Append the records of round `round_` that `run` lacks: the configured conditions before RL
    (round 0), the self-edit condition of the round's policy after it."""
    conditions = config.conditions if round_ == 0 else ("self-edit",)
    done = {(r.context_id, r.condition) for r in run.of(PassageEval) if r.round == round_}
    size = (config.cpt.docs or len(passages)) if config.mode == "cpt" else config.passages_per_batch
    groups = [passages[i : i + size] for i in range(0, len(passages), size)]
    # A (group, condition) unit is redone whole if any of its passages is missing, so that a resumed
    # run samples exactly what an uninterrupted one would; only the missing records are appended.
    todo = [(g, c) for g in groups for c in conditions if any((p.id, c) not in done for p in g)]
    if not todo:
        return
    teacher = None
    if any(c == "teacher" for _, c in todo):
        teacher = make_generator(load_model(dataclasses.replace(config.model, name=config.teacher)))
    judge = build_judge(config.judge, config.model, run.path / CACHE_FILE) if config.judge.enabled else None
    evaluator = KnowledgeEvaluator(config, fmt, model, teacher, judge)
    total = len(passages) * len(conditions)
    try:
        with tqdm(total=total, initial=total - sum(len(g) for g, _ in todo), desc=label, unit="passage",
                  disable=not show_progress) as bar:
            for group, condition in todo:
                bar.set_postfix_str(condition)
                for record in evaluator.run(group, condition, round_):
                    if (record.context_id, condition) not in done:
                        run.append(record)
                bar.update(len(group))
    finally:
        if judge:
            judge.close()
            log.info("judge %s: %d prompts sent, %d answers from the cache, %d unparsed (counted as no)",
                     judge.name, judge.stats.calls, judge.stats.cache_hits, judge.stats.unparsed)


def summary_rows(records: Sequence[PassageEval], config: KnowledgeConfig) -> dict[str, dict[str, Any]]:
    """Per condition (and per SEAL round): accuracy under every grader with 95% intervals over questions."""
    rounds = sorted({r.round for r in records} - {0})
    rows = {}
    keys = [(c, 0, c) for c in config.conditions] + [(f"round-{n}", n, "self-edit") for n in rounds]
    for key, round_, condition in keys:
        recs = [r for r in records if r.condition == condition and r.round == round_]
        if not recs:
            continue
        questions = [q for r in recs for q in r.questions]
        statuses = Counter(e["status"] for r in recs for e in r.self_edits)
        label = condition_label(condition, config.teacher) if round_ == 0 else f"SEAL round {round_}"
        rows[key] = condition_row(label, recs, len(questions),
                                  {g: [q["scores"][g] for q in questions] for g in config.graders}, statuses)
    return rows


def paired_scores(records: Sequence[PassageEval], config: KnowledgeConfig) -> dict[str, dict[str, list[float]]]:
    """Row key (as in `summary_rows`) -> passage id -> its questions' scores under the headline grader."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in records:
        key = r.condition if r.round == 0 else f"round-{r.round}"
        if r.round == 0 or r.condition == "self-edit":
            out.setdefault(key, {})[r.context_id] = [q["scores"][config.grader] for q in r.questions]
    return out


def comparisons(keys: Sequence[str]) -> list[tuple[str, str]]:
    """The pairs that matter: self-edit and teacher against the passage alone and each other, every SEAL round
    against the self-edit before RL and against the passage alone."""
    rounds = sorted((k for k in keys if k.startswith("round-")), key=lambda k: int(k.split("-")[1]), reverse=True)
    pairs = [(r, b) for r in rounds for b in ("passage", "self-edit")]
    return pairs + [("self-edit", "passage"), ("teacher", "self-edit"), ("teacher", "passage"), ("passage", "base")]


def judge_agreement(records: Sequence[PassageEval]) -> dict[str, Any]:
    return agreement(q for r in records for q in r.questions)


def condition_label(condition: str, teacher: str | None) -> str:
    return {
        "base": "base model",
        "passage": "train on passage",
        "self-edit": "passage + self-edit",
        "teacher": f"passage + self-edit by {teacher}",
    }[condition]
