"""`seal adapt`: teach a model a folder of documents with its own self-edits, and save the result.

Each document is learned in turn exactly as in `seal continual` (self-edit, LoRA update, optional
retention guard), and the result is saved as one PEFT adapter (the exact sum of the accepted
updates) or as a merged model. What was learned is checked without gold answers: before the first
update the model writes a few questions about each document, with the document in view, and answers
them; those answers are the reference. It then answers the same questions closed-book, before and
after the updates. Reading documents and writing those questions is the domain's part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from seal_lm.adapters import combine_adapters, save_adapter
from seal_lm.domain import AdaptableDomain
from seal_lm.errors import SealError
from seal_lm.generation import HFGenerator
from seal_lm.models import display_name, load_model
from seal_lm.recipes.continual import ContinualRunner, read_general_prompts
from seal_lm.records import SelfCheckBeforeRecord, SelfCheckQuestionsRecord, StepRecord, record_types
from seal_lm.tracking import Tracker
from seal_lm.runs import RunDir, config_defaults, one_writer, run_config, runtime_info
from seal_lm.stats import mean_with_interval


@one_writer
def run_adapt(domain: AdaptableDomain, out: str | Path, show_progress: bool = True,
              tracker: Tracker | None = None) -> dict[str, Any]:
    """Learn every document in turn, save the result, and return the summary (also written to `out`)."""
    settings = domain.adapt
    if not settings.documents:
        raise SealError("seal adapt needs DOCUMENTS (a file or folder), or --resume RUN_DIR")
    if domain.continual.guard == "both":
        raise SealError("continual.guard: seal adapt learns one sequence of documents: guard on or off, not both")
    if domain.continual.guard_settings.general_prompts:
        read_general_prompts(domain.continual.guard_settings.general_prompts)
    documents = domain.load_documents(settings.documents)
    run = RunDir(out, run_config("adapt", domain.name, domain.config),
                 record_types(SelfCheckQuestionsRecord, SelfCheckBeforeRecord, StepRecord), tracker,
                 defaults=config_defaults(domain.config))
    loaded = load_model(run.pinned_model(domain.config.model))
    run.note_runtime(runtime_info(loaded, "hf"))
    questions = next(iter(run.of(SelfCheckQuestionsRecord)), None)
    if questions is None:  # written once, before any update
        questions = SelfCheckQuestionsRecord(domain.self_check_questions(HFGenerator(loaded), documents,
                                                                         domain.config.seed))
        run.append(questions)
    documents = domain.with_self_check(documents, questions.questions)
    runner = ContinualRunner(domain, loaded, documents, run, len(documents), "reorder")  # order 0: as given
    before = next(iter(run.of(SelfCheckBeforeRecord)), None)
    if before is None:
        answers = runner.closed_book(documents)
        before = SelfCheckBeforeRecord([[q["score"] for q in qs] for qs in answers], answers)
        run.append(before)
    variant = "guard" if domain.continual.guard == "on" else "no-guard"
    with tqdm(total=len(documents), initial=len(run.of(StepRecord)), desc="adapting", unit="document",
              disable=not show_progress) as bar:
        accepted = runner.run_order(variant, 0, bar)
    saved = run.path / ("adapter" if settings.save == "adapter" else "model")
    if settings.save == "merged":  # the model holds exactly the accepted updates now
        loaded.model.save_pretrained(saved)
        loaded.tokenizer.save_pretrained(saved)
    elif accepted:
        save_adapter(loaded.model, combine_adapters(accepted), saved)
    summary = summarize(run.records, documents, domain)
    summary["saved"] = str(saved) if (settings.save == "merged" or accepted) else None
    run.write_summary(summary)
    return summary


def summarize(records: list[Any], documents: list[Any], domain: AdaptableDomain) -> dict[str, Any]:
    """Per document: self-check accuracy closed-book before and after, and whether its update was accepted."""
    steps = {r.step: r for r in records if isinstance(r, StepRecord)}
    before = next(r for r in records if isinstance(r, SelfCheckBeforeRecord)).scores
    after = steps[len(documents) - 1].scores if len(steps) == len(documents) else None
    rows = []
    for i, doc in enumerate(documents):
        rows.append({"title": doc.title, "questions": len(before[i]), "accepted": steps[i].accepted,
                     "before": _estimate(before[i]), "after": _estimate(after[i]) if after else None})
    pooled = lambda scores: _estimate([s for qs in scores for s in qs])
    return {"recipe": "adapt", "domain": domain.name, "model": display_name(domain.config.model.name),
            "grader": domain.document_grader, "documents": rows, "before": pooled(before),
            "after": pooled(after) if after else None, "refused": sum(not r.accepted for r in steps.values())}


def _estimate(scores: list[float]) -> dict[str, Any] | None:
    return mean_with_interval(scores).as_dict() if scores else None  # None: no self-check question parsed
