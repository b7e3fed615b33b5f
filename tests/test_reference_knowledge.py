"""The `paper` preset of knowledge incorporation does what SEAL's code does (knowledge-incorporation/, commit
4cb1e7d of GitHub Continual-Intelligence/SEAL), item by item; each test fails on seal-lm's own settings."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from seal_lm.config import parse_values, preset_source
from seal_lm.domain import RestEmSettings
from seal_lm.domains.knowledge import KnowledgeConfig, KnowledgeDomain
from seal_lm.domains.knowledge.data import Passage, Question, load_demo_corpus
from seal_lm.domains.knowledge.evaluation import SelfEdit, answer_questions, cpt_sequences, question_prompt
from seal_lm.domains.knowledge.formats import get_format, parse_completion, reference_items, training_sequences
from seal_lm.generation import HFGenerator, render_prompt
from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob, _clip_per_adapter, _clip_plan
from seal_lm.judge import judge_prompt, parse_verdict
from seal_lm.models import ModelSettings

PAPER = parse_values(KnowledgeConfig, *preset_source("knowledge", "paper"))
GENGHIS = Passage("Genghis Khan", "The Shah's army was split by diverse internecine feuds.",
                  (Question("What metal was used in Inalchuq's execution?", ("silver",)),))
# knowledge-incorporation/data/synthetic_data/eval/base_val.json, item 0, completions[0], verbatim
BASE_VAL_0 = (
    "1. The Shah's decision to fragment his army led to its downfall, as the Mongols were able to defeat small "
    "groups instead of facing a unified defense.\n2. The Mongol army was known for its superior strategy and "
    "tactics, even after a long journey.\n3. The Mongols executed Inalchuq for his actions by pouring molten silver "
    "into his ears and eyes.\n4. Genghis Khan sent Subutai and Jebe on a mission to hunt down the Shah, giving them "
    "20,000 men and two years to do so.\n5. The Shah's death remains mysterious, as he died under unknown "
    "circumstances on a small island within his empire.\n\nSources:\n1. Khan, G. (2002). Genghis Khan. W.W. Norton & "
    "Company.\n2. Man, J. (2004). Genghis Khan: Life, Death and Resurrection. HarperCollins.\n3. Saunders, J.J. (1971)."
    " The History of the Mongol Conquests. Routledge & Kegan Paul.\n4. Zhao, Y. (2006). The great manchu empire: and "
    "its successive decline. Lambert Academic Publishing."
)


# ---- 1. closed-book questions carry the topic, in SEAL's raw prompt; the judge sees the same question

def test_the_paper_question_is_topic_line_then_question_in_seals_raw_prompt(tiny):
    assert PAPER.question.topic and PAPER.question.template == "reference"
    asked = PAPER.question.asked(GENGHIS.questions[0].question, GENGHIS.title)
    prompt = question_prompt(asked, PAPER.question.template)
    assert render_prompt(tiny, prompt) == ("Let's answer a question directly and concisely.\nQuestion: Topic: Genghis "
                                           "Khan\nWhat metal was used in Inalchuq's execution?\nAnswer:\n")
    assert PAPER.question.sampling().stop == () and PAPER.question.sampling().max_new_tokens == 64
    graded, = answer_questions(HFGenerator(tiny), [GENGHIS], None, PAPER.question)
    assert graded[0]["question"] == "Topic: Genghis Khan\nWhat metal was used in Inalchuq's execution?"
    seal = dataclasses.replace(PAPER.question, template="seal", topic=False)
    assert "Topic:" not in render_prompt(tiny, question_prompt(seal.asked("Q?", "T"), seal.template))


def test_the_reference_judge_prompt_and_its_yes_and_not_no_rule():
    text = judge_prompt("Topic: Genghis Khan\nWhat metal?", ["silver"], " It was silver. ", "reference").text
    assert text.startswith("You are a grading assistant. Your job is to determine whether a student's answer")
    assert text.endswith("Question: Topic: Genghis Khan\nWhat metal?\nGold answer: silver\nStudent answer: It was "
                         "silver.\nIs the student answer correct based solely on the gold answer? Respond 'yes' or 'no'.")
    assert parse_verdict("Yes.", "reference") == 1.0
    assert parse_verdict("yes, no doubt", "reference") == 0.0 and parse_verdict("yes, no doubt") == 1.0
    assert parse_verdict("maybe", "reference") == 0.0 and parse_verdict("maybe") is None


# ---- 2. the keep rule keeps the best self-edit whatever its value; the baseline is the model before any update

def test_the_paper_keeps_a_best_self_edit_below_its_baseline_and_reports_the_un_adapted_baseline(tiny_model_dir):
    from seal_lm.models import load_model
    from seal_lm.recipes.rest_em import kept_indices

    assert PAPER.rest_em.keep == "best" and PAPER.reward_baseline == "base"
    assert kept_indices([0.1, 0.2, 0.2], 0.5, PAPER.rest_em.keep) == [1]
    assert kept_indices([0.1, 0.2, 0.2], 0.5, RestEmSettings().keep) == []  # seal-lm's default rule keeps none
    model = load_model(ModelSettings(name=str(tiny_model_dir), device="cpu", dtype="float32"))
    config = KnowledgeConfig(model=model_settings(tiny_model_dir), reward_baseline="base",
                             inner_loop=InnerLoopSettings(rank=4, alpha=8, epochs=1))
    passages = load_demo_corpus("train")[:2]
    scored = KnowledgeDomain(config).score(model, passages, [["a b c d"], ["e f g h"]], repeats=1, seed=0)
    before = answer_questions(HFGenerator(model), passages, None, config.question)
    for s, graded in zip(scored, before):
        assert s.baseline == sum(q["scores"]["contains"] for q in graded) / len(graded)


def model_settings(path) -> ModelSettings:
    return ModelSettings(name=str(path), device="cpu", dtype="float32")


# ---- 3. the inner loop: PEFT's default targets, gradient norm 1.0, labels padded with EOS to max_length

def test_the_paper_inner_loop_adapts_peft_default_targets_with_clipped_gradients_and_padded_labels(tiny):
    inner = PAPER.inner_loop
    assert (inner.target_modules, inner.max_grad_norm, inner.labels, inner.max_length, inner.schedule) == (
        "peft-default", 1.0, "padded", 2048, "linear")
    small = dataclasses.replace(inner, rank=4, alpha=8, epochs=1, max_length=64)
    result, = LoraUpdater(tiny, small).train([TrainJob(training_sequences(GENGHIS, (), "reference"), small)])
    assert sorted({name.rsplit(".", 1)[-1] for name in result.adapter.weights}) == ["q_proj", "v_proj"]
    gradients = torch.randn(3, 50) * 10
    _clip_per_adapter(gradients, _clip_plan([1.0, None, 1.0], active=[0, 1, 2], device="cpu"))
    norms = gradients.norm(dim=1)
    assert norms[0] <= 1.0 and norms[2] <= 1.0 and norms[1] > 1.0  # the unclipped adapter is left alone


# ---- 4. SEAL's self-edit prompts, and its split of a completion into training sequences

def test_the_reference_implications_prompt_is_seals_text_even_for_a_chat_model(tiny):
    prompt = get_format(PAPER.format).prompt(GENGHIS)
    assert render_prompt(tiny, prompt) == (
        "Let's read the following passage and produce a list of implications derived directly or indirectly from the "
        "content.\n\nPassage:\nGenghis Khan\nThe Shah's army was split by diverse internecine feuds.\n\nImplications:\n")
    assert tiny.has_chat_template  # the chat template is not applied to it
    assert get_format("reference-self-qa").prompt(GENGHIS).text.endswith("\n\nQuestion 1: ")


def test_a_released_completion_splits_into_the_sequences_seals_code_makes():
    """base_val.json item 0 (worked through src/utils.py build_train_sequences with split_newlines): every
    non-blank line one sequence, markers and the "Sources:" junk kept, the passage last."""
    parsed = parse_completion(BASE_VAL_0, get_format("reference-implications"), "reference")
    sequences = training_sequences(GENGHIS, [parsed], "reference")
    assert len(sequences) == 11
    assert sequences[0] == ("Genghis Khan\n1. The Shah's decision to fragment his army led to its downfall, as the "
                            "Mongols were able to defeat small groups instead of facing a unified defense.")
    assert sequences[5] == "Genghis Khan\nSources:"
    assert sequences[9] == ("Genghis Khan\n4. Zhao, Y. (2006). The great manchu empire: and its successive decline. "
                            "Lambert Academic Publishing.")
    assert sequences[10] == f"Genghis Khan\n{GENGHIS.context}"
    seal = training_sequences(GENGHIS, [parse_completion(BASE_VAL_0, get_format("implications"))])
    assert seal != sequences and not any(s.startswith("Genghis Khan\n1. ") for s in seal)  # seal-lm drops markers


@pytest.mark.parametrize("completion, items", [
    # a preamble line before "1." is dropped, one line only
    ("**Implications:**\n\n1. First fact here.\n2. Second fact here.", ["1. First fact here.", "2. Second fact here."]),
    # not when the second line is no "1." (SEAL's gpt4_1_val item 91 pattern)
    ("Certainly! Here:\n\n---\n\n**Implications:**\n\n1. A fact.\n\n---",
     ["Certainly! Here:", "**Implications:**", "1. A fact."]),
    # "Answer 1:" is not "Answer:": the line-by-line branch, question and answer apart
    ("What happened?\nAnswer 1: It split.\n\nQuestion 2:  Why?\nAnswer 2: Feuds.",
     ["What happened?", "Answer 1: It split.", "Question 2:  Why?", "Answer 2: Feuds."]),
    # "Answer:" takes the self-QA branch: split before "Question N:", later segments keep their trailing
    # newline, the first is stripped and gets "Question 1: "
    ("What did he use?\nAnswer: Many cultures.\n\nQuestion 2:  How?\nAnswer: Mixed.\n\nQuestion 3: Who?\nAnswer: X",
     ["Question 1: What did he use?\nAnswer: Many cultures.", "Question 2:  How?\nAnswer: Mixed.\n",
      "Question 3: Who?\nAnswer: X"]),
])
def test_seals_split_rules(completion, items):
    assert reference_items(completion) == items


def test_seals_split_of_rewrites_at_dashes_with_and_without_newline_splitting():
    text = "---\n\nKenya: The Republic of Kenya\n\n---\n\nKenya\n\nKenya is a country.\n\n---"
    assert reference_items(text) == ["Kenya: The Republic of Kenya", "Kenya", "Kenya is a country."]
    assert reference_items(text, split_newlines=False) == ["Kenya: The Republic of Kenya", "Kenya\n\nKenya is a country."]


# ---- 5. CPT: each completion one sequence, the passage once per completion

def test_cpt_as_seal_adds_the_passage_once_per_completion():
    fmt = get_format("reference-implications")
    edits = [SelfEdit(c, parse_completion(c, fmt, "reference")) for c in ("1. A.\n2. B.", "", "Only one line.")]
    assert cpt_sequences(GENGHIS, edits, "reference") == [
        "Genghis Khan\n1. A.\n2. B.", f"Genghis Khan\n{GENGHIS.context}",
        "Genghis Khan\nOnly one line.", f"Genghis Khan\n{GENGHIS.context}"]
    assert cpt_sequences(GENGHIS, [], "reference") == ["Genghis Khan\n", f"Genghis Khan\n{GENGHIS.context}"]
    assert cpt_sequences(GENGHIS, edits, "seal").count(f"Genghis Khan\n{GENGHIS.context}") == 1
    assert PAPER.cpt.split == "reference" and PAPER.cpt.self_edits_per_passage == 5
    assert (PAPER.cpt.inner_loop.epochs, PAPER.cpt.inner_loop.learning_rate, PAPER.cpt.inner_loop.batch_size) == (
        3, 1e-3, 8)


# ---- 6. continual: every sequence draws its own passages

def test_the_paper_continual_draws_passages_per_sequence():
    assert PAPER.continual.draw == "sample" and PAPER.continual.passages == 8 and PAPER.continual.orders == 8


def test_the_loglik_reward_is_the_gold_answers_mean_log_probability(tiny_model_dir):
    from seal_lm.domains.knowledge.evaluation import answer_logliks
    from seal_lm.models import load_model

    model = load_model(model_settings(tiny_model_dir))
    config = KnowledgeConfig(model=model_settings(tiny_model_dir), reward="loglik", reward_baseline="base",
                             inner_loop=InnerLoopSettings(rank=4, alpha=8, epochs=1))
    passages = load_demo_corpus("train")[:2]
    scored = KnowledgeDomain(config).score(model, passages, [["a b c d", "e f g"], ["h i j k"]], repeats=1, seed=0)
    before = answer_logliks(model, passages, [None, None], config.question)
    assert [s.baseline for s in scored] == pytest.approx(before) and all(b < 0 for b in before)
    assert all(r < 0 for s in scored for r in s.rewards)  # log-probabilities
    assert len(scored[0].details["accuracy_runs"]) == 2  # accuracy is recorded beside it
    # by hand: the log-probabilities of the first gold answer's tokens (not of an end-of-turn after them)
    from seal_lm.generation import encode_prompt

    passage = passages[0]
    expected = []
    for q in passage.questions:
        prompt = encode_prompt(model, config.question.asker(passage)(q.question))
        answer = model.tokenizer(q.answers[0], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model.model(input_ids=torch.tensor([prompt + answer])).logits[0].float()
        steps = logits[len(prompt) - 1 : -1].log_softmax(-1)
        expected.append(steps.gather(1, torch.tensor(answer)[:, None]).mean().item())
    assert before[0] == pytest.approx(sum(expected) / len(expected), abs=1e-4)
