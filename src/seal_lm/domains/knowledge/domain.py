"""Knowledge incorporation as the recipes see it: its config, and the `Domain` they talk to.

A context is a passage; a self-edit restates it (implications, rewrites, Q&A); the reward is
closed-book accuracy on the passage's questions after a LoRA update on passage + self-edit, and the
baseline is the same after an update on the passage alone (what a self-edit has to beat to be kept).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from seal_lm.config import ConfigError, at_least, one_of
from seal_lm.domain import (
    AdaptSettings,
    ContinualSettings,
    RestEmSettings,
    Scored,
    Units,
    Update,
    headline_pair,
    paired_differences,
    sample_completions,
    summary,
)
from seal_lm.domains.knowledge.data import (
    DataColumns,
    Passage,
    Question,
    load_documents,
    select_passages,
)
from seal_lm.domains.knowledge.evaluation import (
    CONDITIONS,
    PassageEval,
    QuestionSettings,
    answer_logliks,
    answer_questions,
    comparisons,
    evaluate_round,
    judge_agreement,
    paired_scores,
    parse_all,
    summary_rows,
    write_self_edits,
)
from seal_lm.domains.knowledge.formats import (
    DEFAULT_FORMAT,
    FORMATS,
    SPLITS,
    get_format,
    teacher_context,
    training_sequences,
)
from seal_lm.errors import SealError
from seal_lm.generation import Generator, Prompt, SamplingParams, make_generator
from seal_lm.grading import GRADERS
from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob
from seal_lm.judge import JUDGE, JudgeSettings
from seal_lm.models import LoadedModel, ModelSettings, display_name
from seal_lm.records import Record
from seal_lm.runs import RunDir, derived_seed

MODES = ("single", "cpt")
REWARD_BASELINES = ("passage", "base")
REWARDS = ("accuracy", "loglik")
UPDATES = ("sft", "distill")
UNITS = Units(context="passage", contexts="passages", item="question", items="questions")
_SELF_CHECK_QA = re.compile(r"Question\s*\d*\s*:\s*(.+?)\s*\n\s*Answer\s*\d*\s*:\s*(.+)", re.IGNORECASE)


def _self_edit_sampling() -> SamplingParams:
    return SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=256)


def _policy_update() -> InnerLoopSettings:
    """The paper's policy SFT for knowledge incorporation: LoRA r64/alpha128, lr 3e-4, 2 epochs, batch 10."""
    return InnerLoopSettings(rank=64, alpha=128, learning_rate=3e-4, epochs=2, batch_size=10)


@dataclass
class CptSettings:
    """Continued pretraining (`mode: cpt`): one update on the pooled self-edits of many passages, then every
    question of them. Defaults follow SEAL's code: 5 self-edits per passage, 3 epochs, 8 sequences per step
    (its 4 x 2 gradient accumulation), lr 1e-3."""

    docs: int | None = None
    """passages pooled into one update (null: every evaluated passage)"""
    self_edits_per_passage: int = 5
    """self-edits sampled per pooled passage"""
    inner_loop: InnerLoopSettings = field(default_factory=lambda: InnerLoopSettings(epochs=3, batch_size=8))
    """the pooled update"""
    split: str = "seal"
    """seal: a passage adds its training sequences (split into items, the passage once); reference: as SEAL's
    src/query/CPT.py, each completion one sequence (split only at ---) and the passage once per completion"""

    def validate(self, key: str) -> None:
        one_of(f"{key}.split", self.split, SPLITS)
        if self.docs is not None:
            at_least(f"{key}.docs", self.docs, 1)
        at_least(f"{key}.self_edits_per_passage", self.self_edits_per_passage, 1)
        self.inner_loop.validate(f"{key}.inner_loop")


@dataclass
class SelfCheckSettings:
    """`seal adapt`: how the model checks what it learned without gold answers."""

    questions: int = 5
    """questions the model writes per document, with the document in view (0: none)"""
    samples: int = 3
    """completions pooled per document for them (greedy decoding of a small model repeats one question)"""
    grader: str = "f1"
    """how closed-book answers are graded against the model's own open-book answers"""

    def validate(self, key: str) -> None:
        at_least(f"{key}.questions", self.questions, 0)
        at_least(f"{key}.samples", self.samples, 1)
        one_of(f"{key}.grader", self.grader, GRADERS)


@dataclass
class KnowledgeConfig:
    """Knowledge incorporation: every setting of `seal eval`, `seal train`, `seal continual` and `seal adapt`."""

    data: str | None = None
    """held-out passages: SEAL grouping or SQuAD v1.1 JSON, a .jsonl, .parquet or .csv table or a datasets folder
    (see data_columns); null: the demo corpus' validation split"""
    data_columns: DataColumns = field(default_factory=DataColumns)
    """for tables: which columns hold the title, context, question and answer (data and train_data alike)"""
    skip: int = 0
    """leave out the first N passages (e.g. those a training run learns from)"""
    limit: int | None = None
    """evaluate only the first N passages"""
    seed: int = 0
    """seed of every sample and inner loop (each derives its own from it)"""
    model: ModelSettings = field(default_factory=ModelSettings)
    """the model that writes self-edits and is adapted"""
    conditions: tuple[str, ...] = ("base", "passage", "self-edit")
    """rows of the table: base, passage, self-edit, teacher"""
    teacher: str | None = None
    """model that writes the self-edits of the teacher condition (any model.name value)"""
    format: str = DEFAULT_FORMAT
    """self-edit format: implications, implications-long, rewrite, self-qa, open-book-qa (questions the model then
    answers with the passage in view, learned as closed-book question -> answer pairs: no gold answer used)
    (seal-lm's), or SEAL's own prompts
    reference-implications, reference-implications-long, reference-implications-very-long, reference-rewrite,
    reference-self-qa"""
    split: str = "seal"
    """how a completion becomes training sequences: seal (items without list markers, fragments or duplicates)
    or reference (SEAL's split: lines with their markers, self-QA by "Question N:")"""
    self_edits_per_passage: int = 1
    """self-edits sampled per evaluated passage; accuracy is averaged over them"""
    self_edit_sampling: SamplingParams = field(default_factory=_self_edit_sampling)
    """how self-edits are sampled"""
    question: QuestionSettings = field(default_factory=QuestionSettings)
    """how closed-book questions are asked, everywhere (evaluation, rewards, CPT, continual, the judge)"""
    grader: str = "contains"
    """which grader is the accuracy (all are recorded): contains, exact, f1, or judge (needs judge.model or
    judge.url)"""
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    """an LLM judge that grades every answer too"""
    inner_loop: InnerLoopSettings = field(default_factory=InnerLoopSettings)
    """the LoRA update on a passage and its self-edit"""
    passages_per_batch: int = 8
    """passages whose self-edits, inner loops and answers run batched together"""
    adapters_per_pass: int = 16
    """inner loops trained together in one forward and backward pass (memory against speed; 1: one by one)"""
    mode: str = "single"
    """single: one LoRA update per passage (the paper's main setting); cpt: continued pretraining"""
    cpt: CptSettings = field(default_factory=CptSettings)
    """mode cpt's pooled update"""
    update: str = "sft"
    """how a self-edit is learned (in eval and in rewards): sft (next-token cross-entropy on its sequences, SEAL's)
    or distill (context distillation: the closed-book model matches the next-token distributions of the base model
    reading the passage first, on the same sequences; question-answer pairs stay sft). Training on the passage
    alone is always sft: it is the baseline"""
    reward: str = "accuracy"
    """seal train: a self-edit's reward: accuracy (the grader's score of greedy closed-book answers) or loglik (the
    mean log-probability per token of the gold answers under the adapted model, teacher-forced: denser, no
    generation)"""
    reward_baseline: str = "passage"
    """seal train: what a self-edit's reward is compared with: passage (after an update on the passage alone)
    or base (the model before any update, SEAL's reported baseline); the keep rule best ignores it"""
    train_data: str | None = None
    """seal train: passages the policy learns from (null: the demo corpus' train split)"""
    train_skip: int = 0
    """seal train: leave out the first N training passages"""
    train_limit: int | None = None
    """seal train: use only the first N training passages"""
    rest_em: RestEmSettings = field(default_factory=lambda: RestEmSettings(policy_update=_policy_update()))
    """seal train: the outer loop"""
    continual: ContinualSettings = field(default_factory=ContinualSettings)
    """seal continual and seal adapt: updates one after another"""
    self_check: SelfCheckSettings = field(default_factory=SelfCheckSettings)
    """seal adapt: questions the model writes to check itself"""
    adapt: AdaptSettings = field(default_factory=AdaptSettings)
    """seal adapt: documents and what to save"""

    @property
    def graders(self) -> tuple[str, ...]:
        """The scores every question gets: the string graders, and the judge's when there is one."""
        return (*GRADERS, JUDGE) if self.judge.enabled else tuple(GRADERS)

    def validate(self) -> None:
        one_of("format", self.format, FORMATS)
        one_of("split", self.split, SPLITS)
        one_of("mode", self.mode, MODES)
        one_of("reward_baseline", self.reward_baseline, REWARD_BASELINES)
        one_of("reward", self.reward, REWARDS)
        one_of("update", self.update, UPDATES)
        if self.update == "distill" and (self.mode == "cpt" or self.inner_loop.labels == "padded"):
            raise ConfigError("update", "distill needs mode single and inner_loop.labels content")
        self.question.validate("question")
        self.judge.validate("judge")
        if self.grader == JUDGE and not self.judge.enabled:
            raise ConfigError("grader", "judge needs a judge: judge.model MODEL, or judge.url URL and "
                                        "judge.endpoint_model NAME")
        if self.grader != JUDGE:
            one_of("grader", self.grader, GRADERS)
        for condition in self.conditions:
            one_of("conditions", condition, CONDITIONS)
        if "teacher" in self.conditions and not self.teacher:
            raise ConfigError("teacher", "condition 'teacher' needs a teacher model")
        for name in ("self_edits_per_passage", "passages_per_batch", "adapters_per_pass"):
            at_least(name, getattr(self, name), 1)
        for name in ("skip", "train_skip"):
            at_least(name, getattr(self, name), 0)
        self.model.validate("model")
        self.self_edit_sampling.validate("self_edit_sampling")
        self.inner_loop.validate("inner_loop")
        self.cpt.validate("cpt")
        self.rest_em.validate("rest_em")
        self.continual.validate("continual")
        self.self_check.validate("self_check")
        self.adapt.validate("adapt")


class KnowledgeDomain:
    """Knowledge incorporation for every recipe (see `seal_lm.domain`)."""

    name = "knowledge"
    config_class = KnowledgeConfig
    units = UNITS
    eval_record = PassageEval

    def __init__(self, config: KnowledgeConfig):
        self.config = config
        self.fmt = get_format(config.format)
        self.sampling = config.self_edit_sampling
        self.rest_em = config.rest_em
        self.continual = config.continual
        self.adapt = config.adapt
        self.inner_loop = config.inner_loop
        self.grader = config.grader
        self.document_grader = config.self_check.grader
        self._eval_passages: list[Passage] | None = None
        self._train_passages: list[Passage] | None = None
        self._documents: set[str] = set()  # ids of seal adapt's documents: graded with self_check.grader

    # ---- evaluation (seal eval, and every round of seal train)

    def eval_passages(self) -> list[Passage]:
        if self._eval_passages is None:
            self._eval_passages = select_passages(self.config.data, "validation", self.config.skip,
                                                  self.config.limit, self.config.data_columns)
        return self._eval_passages

    def evaluate(self, model: LoadedModel, round_: int, run: RunDir, show_progress: bool) -> None:
        label = "evaluation" if round_ == 0 else f"round {round_}: evaluation"
        evaluate_round(self.config, self.fmt, self.eval_passages(), model, round_, run, show_progress, label)

    def summarize(self, records: Sequence[Record]) -> dict[str, Any]:
        wanted = {p.id for p in self.eval_passages()}
        evals = [r for r in records if isinstance(r, PassageEval) and r.context_id in wanted]
        config = self.config
        setting = ("single passage: one LoRA update per passage" if config.mode == "single" else
                   f"continued pretraining: one LoRA update per {config.cpt.docs or len(wanted)} pooled passages")
        rows = summary_rows(evals, config)
        out = summary(self.name, "Closed-book accuracy", self.units, display_name(config.model.name), config.grader,
                      setting, rows)
        pairs = comparisons(list(rows))
        out["paired"] = paired_differences(paired_scores(evals, config), pairs,
                                           {k: row["label"] for k, row in rows.items()})
        out["headline"] = headline_pair(out["paired"], [f"{a} - {b}" for a, b in pairs])
        if config.judge.enabled:
            out["judge_agreement"] = judge_agreement(evals)
        return out

    # ---- the outer loop (seal train)

    def training_contexts(self) -> Sequence[Passage]:
        if self.config.grader == JUDGE:  # thousands of rewards per round: judging each would dwarf the inner loops
            raise SealError("seal train: ReST-EM rewards need a string grader (exact, f1, contains); "
                            "configure judge.model or judge.url to have held-out answers judged as well")
        if self._train_passages is None:
            self._train_passages = select_passages(self.config.train_data, "train", self.config.train_skip,
                                                   self.config.train_limit, self.config.data_columns)
        return self._train_passages

    def self_edit_prompt(self, context: Passage) -> Prompt:
        return self.fmt.prompt(context)

    def sample_self_edits(self, generator: Generator, contexts: Sequence[Passage], n: int,
                          seed: int) -> tuple[list[list[str]], list[int]]:
        """Every completion counts (an unusable one is learned as nothing and scored as such), as in SEAL."""
        return sample_completions(self, generator, contexts, n, seed), [0] * len(contexts)

    def score(self, model: LoadedModel, contexts: Sequence[Passage], completions: list[list[str]],
              repeats: int, seed: int) -> list[Scored]:
        """All inner loops of the group in one multi-adapter pass: per passage, `repeats` updates per self-edit
        and, for the passage baseline, `repeats` on the passage alone; then every adapted model answers (and,
        for the base baseline, the model as it is)."""
        config = self.config
        settings = config.inner_loop
        split = config.split
        units: list[tuple[int, int, list[str]]] = []  # (passage, self-edit or -1 for the baseline, sequences)
        generator = make_generator(model)
        parsed = parse_all(generator, contexts, completions, self.fmt, split)
        for i, passage in enumerate(contexts):
            if config.reward_baseline == "passage":
                units.append((i, -1, training_sequences(passage, (), split)))
            units.extend((i, j, training_sequences(passage, [p], split, config.question.asker(passage)))
                         for j, p in enumerate(parsed[i]))
        distill = config.update == "distill"
        jobs = [TrainJob(seqs, dataclasses.replace(settings, seed=seed + n * repeats + r),
                         teacher_context=teacher_context(contexts[i]) if distill and j >= 0 else None)
                for n, (i, j, seqs) in enumerate(units) for r in range(repeats)]
        results = LoraUpdater(model, settings, max_adapters=config.adapters_per_pass).train(jobs)
        answered = [contexts[i] for i, _, _ in units for _ in range(repeats)]
        adapters = [r.adapter for r in results]
        if config.reward_baseline == "base":  # the model as it is, once per passage (greedy answers repeat)
            answered += list(contexts)
            adapters += [None] * len(contexts)
        graded = answer_questions(generator, answered, adapters, config.question)
        accuracy = [sum(q["scores"][config.grader] for q in g) / len(g) for g in graded]
        loglik = (answer_logliks(model, answered, adapters, config.question) if config.reward == "loglik"
                  else [None] * len(accuracy))
        runs: dict[tuple[int, int], list[int]] = {}  # (passage, self-edit or -1) -> indices into the lists above
        for n, (i, j, _) in enumerate(units):
            runs[(i, j)] = list(range(n * repeats, (n + 1) * repeats))
        if config.reward_baseline == "base":
            for i in range(len(contexts)):
                runs[(i, -1)] = [len(units) * repeats + i]
        reward = loglik if config.reward == "loglik" else accuracy
        out = []
        for i, outs in enumerate(completions):
            pick = lambda values, key: [values[n] for n in runs[key]]  # noqa: E731
            out.append(Scored(
                baseline=_mean(pick(reward, (i, -1))),
                rewards=[_mean(pick(reward, (i, j))) for j in range(len(outs))],
                details={"status": [p.status for p in parsed[i]], "items": [len(p.items) for p in parsed[i]],
                         "baseline_runs": pick(reward, (i, -1)),
                         "reward_runs": [pick(reward, (i, j)) for j in range(len(outs))],
                         "accuracy_runs": [pick(accuracy, (i, j)) for j in range(len(outs))],
                         "baseline_accuracy_runs": pick(accuracy, (i, -1))},
            ))
        return out

    # ---- updates one after another (seal continual, seal adapt)

    def sequence_contexts(self) -> list[Passage]:
        """The passages sequences are made of: all of the data after `skip` (up to `limit`)."""
        passages = select_passages(self.config.data, "validation", self.config.skip, self.config.limit,
                                   self.config.data_columns)
        if len(passages) < max(2, self.continual.passages):
            raise SealError(f"{self.config.data or 'demo corpus'}: continual learning of {self.continual.passages} "
                            f"passages needs that many (and at least 2), it has {len(passages)}")
        return passages

    def write_update(self, generator: Generator, context: Passage, seed: int) -> Update:
        params = dataclasses.replace(self.config.self_edit_sampling, n=1, seed=seed)
        edit = write_self_edits(generator, [context], self.fmt, params, self.config.split)[0][0]
        return Update(edit.as_record(), training_sequences(context, [edit.parsed], self.config.split,
                                                           self.config.question.asker(context)))

    def closed_book(self, generator: Generator, contexts: Sequence[Passage]) -> list[list[dict[str, Any]]]:
        graded = answer_questions(generator, contexts, None, self.config.question)
        return [[{"question": q["question"], "answers": q["answers"], "prediction": q["prediction"],
                  "score": q["scores"][self._grader_of(p)]} for q in qs] for p, qs in zip(contexts, graded)]

    def _grader_of(self, passage: Passage) -> str:
        return self.document_grader if passage.id in self._documents else self.grader

    def load_documents(self, path: str) -> list[Passage]:
        return load_documents(path)

    def self_check_questions(self, generator: Generator, documents: Sequence[Passage],
                             seed: int) -> dict[str, list[list[str]]]:
        """Per document, the first `self_check.questions` distinct question/answer pairs the model writes
        with the document in view, pooled over `self_check.samples` seeded completions."""
        check = self.config.self_check
        if not check.questions:
            return {d.id: [] for d in documents}
        params = SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=48 * check.questions, n=check.samples,
                                seed=derived_seed(seed, "self-check"))
        outs = generator.generate([self_check_prompt(d, check.questions) for d in documents], params)
        return {d.id: [[q.question, q.answers[0]] for q in parse_self_check("\n\n".join(o), check.questions)]
                for d, o in zip(documents, outs)}

    def with_self_check(self, documents: Sequence[Passage], questions: Mapping[str, Any]) -> list[Passage]:
        self._documents.update(d.id for d in documents)
        return [dataclasses.replace(d, questions=tuple(Question(q, (a,)) for q, a in questions[d.id]))
                for d in documents]


def self_check_prompt(document: Passage, n: int) -> Prompt:
    request = (f"Read the document and write {n} short questions about its facts, each with a short answer. "
               "Write each as 'Question: ...' followed by 'Answer: ...' on the next line.\n\n"
               f"Document:\n{document.title}\n{document.context}")
    return Prompt.single_turn(request, f"{request}\n\nQuestions and answers:\n")


def parse_self_check(completion: str, n: int) -> list[Question]:
    """The first `n` distinct question/answer pairs of a completion."""
    pairs: dict[str, str] = {}
    for question, answer in _SELF_CHECK_QA.findall(completion):
        if question.strip() and answer.strip():
            pairs.setdefault(question.strip(), answer.strip())  # a repeated question keeps its first answer
    return [Question(q, (a,)) for q, a in list(pairs.items())[:n]]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
