"""The `paper` preset of few-shot ARC does what SEAL's code does (few-shot/, commit 4cb1e7d of GitHub
Continual-Intelligence/SEAL), item by item. Expected values are worked out by reading that code and written
literally; the random draws are numpy's RandomState(0), as there."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import seal_lm.domains.arc.domain as arc_domain
from conftest import ScriptedGenerator
from seal_lm.cli import main
from seal_lm.config import ConfigError, parse_values, preset_source
from seal_lm.domains.arc import ArcConfig, ArcDomain, reference
from seal_lm.domains.arc import reference_augment as ra
from seal_lm.domains.arc.formats import TTTConfig
from seal_lm.domains.arc.tasks import Task, group_test_cases, load_seal_subset
from seal_lm.domains.arc.ttt import predict_reference
from seal_lm.generation import render_prompt

PAPER = parse_values(ArcConfig, *preset_source("arc", "paper"))
CPU_PAPER = parse_values(ArcConfig, *preset_source("arc", "cpu-paper"))

# few-shot/utils/prompts.py `self_edit_prompt`, copied from the reference by hand (not from seal-lm's module)
PROMPTS_PY = (
    "\nYou are configuring a model training pipeline by selecting from predefined tools.\n\nYou must make two "
    "decisions:\n\n1. **Data Generation Tools** \u2014 For each of the following, choose true or false:\n    - "
    "use_basic_augmentations\n    - use_size_augmentations\n    - use_chain_augmentations\n    - "
    "use_repeat_augmentations\n\n2. **Training Configuration** \u2014 Choose one of:\n    - "
    "\"train_using_all_tokens\"\n    - \"train_using_output_tokens\"\n\nAlso specify:\n    - learning_rate (float)\n"
    "    - num_train_epochs (integer)\n\n### Output Format\n\nRespond with a valid JSON object. Do not include any "
    "explanation, markdown, or extra text. Use lowercase `true`/`false` for booleans and ensure correct JSON syntax."
    "\n\nExample output:\n\n{\n  \"data_generation\": {\n    \"use_basic_augmentations\": ...,\n    "
    "\"use_size_augmentations\": ...,\n    \"use_chain_augmentations\": ...,\n    \"use_repeat_augmentations\": ...\n"
    "  },\n  \"training\": {\n    \"strategy\": ...,\n    \"learning_rate\": ...,\n    \"num_train_epochs\": ...\n  }"
    "\n}\n"
)
SYSTEM = "You are a helpful assistant that provide the correct output for the given task immediately."
G = ((1, 2, 3), (4, 5, 6))  # a 2x3 grid: a rotation or transposition changes its shape
SMALL = Task("hand", ((((1, 2), (3, 4)), ((5,),)),), ((0, 1),), ((1,),))
SELF_EDIT = json.dumps({"data_generation": {"use_basic_augmentations": True, "use_size_augmentations": False,
                                            "use_chain_augmentations": False, "use_repeat_augmentations": True},
                        "training": {"strategy": "train_using_output_tokens", "learning_rate": 1e-4,
                                     "num_train_epochs": 2}})


# ---- (a) the self-edit prompt

def test_the_paper_self_edit_prompt_is_seals_text(tiny):
    assert PAPER.self_edit_format == "reference"
    assert reference.SELF_EDIT_PROMPT == PROMPTS_PY and reference.SYSTEM_MESSAGE == SYSTEM
    prompt = ArcDomain(PAPER).self_edit_prompt(SMALL)
    # self-edit.py get_prompt: cells joined by spaces, "\nOutput:\n", a blank line after each example, "------"
    assert prompt.messages == (("system", SYSTEM), ("user", "Input:\n1 2\n3 4\n\nOutput:\n5\n\n------\n\n" + PROMPTS_PY))
    assert not prompt.response_prefix  # the model writes the whole object
    assert render_prompt(tiny, prompt).endswith(PROMPTS_PY + "<|im_end|>\n<|im_start|>assistant\n")
    assert (PAPER.self_edit_sampling.temperature, PAPER.self_edit_sampling.top_p,
            PAPER.self_edit_sampling.max_new_tokens, PAPER.self_edit_sampling.stop) == (0.8, 1.0, 128, ())


@pytest.mark.parametrize("text, status, config", [
    (SELF_EDIT, "ok", TTTConfig(("basic", "repeat"), "output", 1e-4, 2)),
    (f"```json\n{SELF_EDIT}\n```", "invalid-json", None),  # json.loads of the whole completion
    (('{"data_generation": {}, "training": {"strategy": "train_using_all_tokens", "learning_rate": 0.001, '
     '"num_train_epochs": 3}}'), "untrained", TTTConfig((), "all", 0.001, 0)),  # missing use_*: no augmentation, 0 epochs
    (('{"data_generation": {"use_basic_augmentations": "false", "use_size_augmentations": 0, '
     '"use_chain_augmentations": true, "use_repeat_augmentations": null}, "training": {"strategy": "sgd", '
     '"learning_rate": 0.001, "num_train_epochs": 3}}'), "untrained", TTTConfig(("basic", "chain"), "all", 0.001, 0)),
    ('{"data_generation": {"use_basic_augmentations": true}, "training": {}}', "untrained",
     TTTConfig((), "all", 0.0, 0)),
    ('{"training": {}}', "invalid-config", None),
    (('{"data_generation": {}, "training": {"strategy": "train_using_all_tokens", "learning_rate": "fast", '
     '"num_train_epochs": 3}}'), "invalid-config", None),
])
def test_reference_self_edits_are_read_as_self_edit_py_reads_them(text, status, config):
    parsed = reference.parse_self_edit(text)
    assert parsed.status == status and parsed.config == config


# ---- (b) invalid self-edits are drawn again, counted, and capped

def test_invalid_self_edits_are_drawn_again_until_k_are_valid_and_counted(monkeypatch):
    domain = ArcDomain(dataclasses.replace(CPU_PAPER, self_edits_per_task=2, self_edit_attempts=3))
    script = ["{bad", SELF_EDIT, "Here is my answer", SELF_EDIT.replace("0.0001", "0.001")]
    generator = ScriptedGenerator(lambda prompt, i: script[i])
    texts, invalid = domain.sample_self_edits(generator, domain.eval_tasks[:1], 2, seed=0)
    assert texts == [[SELF_EDIT, script[3]]] and invalid == [2]
    assert generator.calls == [(1, 2), (1, 1), (1, 1)]  # 2 wanted, then one at a time as they fail


def test_the_attempt_cap_stops_redrawing_and_the_summary_counts_every_invalid_sample(monkeypatch):
    domain = ArcDomain(dataclasses.replace(CPU_PAPER, self_edits_per_task=2, self_edit_attempts=3))
    generator = ScriptedGenerator(lambda prompt, i: f"not json {i}")
    monkeypatch.setattr(arc_domain, "make_generator", lambda model: generator)
    tasks = domain.eval_tasks[:2]
    records = domain._evaluate_group(None, tasks, "ttt", 0)  # nothing valid: nothing is trained or predicted
    assert generator.count == 2 * 6 and all(r.invalid_samples == 6 for r in records)
    # draws of 2, 2, 2 for each task (6 each, then the cap); the task keeps its last invalid ones
    assert [e["completion"] for e in records[0].self_edits] == ["not json 8", "not json 9"]
    assert all(r.accuracy["exact"] == 0.0 for r in records)
    row = domain.summarize(records)["conditions"]["ttt"]
    assert row["invalid_samples"] == 12 and row["self_edit_status"] == {"invalid-json": 4}


# ---- (c) the augmenters, grid by grid

EXPECTED_AUGMENTED = {  # arclib/augmenters.py applied to G by hand
    "Rotate(90)": ((3, 6), (2, 5), (1, 4)),  # np.rot90: counter-clockwise
    "Rotate(270)": ((4, 1), (5, 2), (6, 3)),
    "Rotate(180)": ((6, 5, 4), (3, 2, 1)),
    "Flip(0)": ((4, 5, 6), (1, 2, 3)),
    "Flip(1)": ((3, 2, 1), (6, 5, 4)),
    "Reflect(0, reverse=True)": ((4, 5, 6), (1, 2, 3), (1, 2, 3), (4, 5, 6)),
    "Reflect(1, reverse=True)": ((3, 2, 1, 1, 2, 3), (6, 5, 4, 4, 5, 6)),
    "Reflect(0, reverse=False)": ((1, 2, 3), (4, 5, 6), (4, 5, 6), (1, 2, 3)),
    "Reflect(1, reverse=False)": ((1, 2, 3, 3, 2, 1), (4, 5, 6, 6, 5, 4)),
    "Transpose()": ((1, 4), (2, 5), (3, 6)),
    "IncreaseResolution(2)": ((1, 1, 2, 2, 3, 3), (1, 1, 2, 2, 3, 3), (4, 4, 5, 5, 6, 6), (4, 4, 5, 5, 6, 6)),
    "IncreaseHeight(2)": ((1, 2, 3), (1, 2, 3), (4, 5, 6), (4, 5, 6)),
    "IncreaseWidth(2)": ((1, 1, 2, 2, 3, 3), (4, 4, 5, 5, 6, 6)),
    "Chain([Rotate(90), IncreaseResolution(2)])": ((3, 3, 6, 6), (3, 3, 6, 6), (2, 2, 5, 5), (2, 2, 5, 5),
                                                   (1, 1, 4, 4), (1, 1, 4, 4)),
    "Chain([Transpose(), IncreaseResolution(2)])": ((1, 1, 4, 4), (1, 1, 4, 4), (2, 2, 5, 5), (2, 2, 5, 5),
                                                    (3, 3, 6, 6), (3, 3, 6, 6)),
    "Repeat(0, 2)": ((1, 2, 3), (4, 5, 6), (1, 2, 3), (4, 5, 6)),
    "Repeat(1, 2)": ((1, 2, 3, 1, 2, 3), (4, 5, 6, 4, 5, 6)),
    "Repeat(2, 2)": ((1, 2, 3, 1, 2, 3), (4, 5, 6, 4, 5, 6), (1, 2, 3, 1, 2, 3), (4, 5, 6, 4, 5, 6)),
}


def test_the_families_switch_on_self_edit_pys_augmenters_in_its_order():
    assert [a.name for a in ra.get_augmenters(["basic"])] == [
        "Rotate(90)", "Rotate(270)", "Rotate(180)", "Flip(0)", "Flip(1)", "Reflect(0, reverse=True)",
        "Reflect(1, reverse=True)", "Reflect(0, reverse=False)", "Reflect(1, reverse=False)", "RandomTranslateXY()",
        "Transpose()"]
    assert [a.name for a in ra.get_augmenters(["repeat", "size"])] == [
        "IncreaseResolution(2)", "IncreaseHeight(2)", "IncreaseWidth(2)", "Repeat(0, 2)", "Repeat(1, 2)", "Repeat(2, 2)"]
    assert len(ra.get_augmenters(["chain"])) == 6 and ra.get_augmenters([]) == []


def test_a_task_augments_into_exactly_the_grids_of_seals_augmenters():
    task = (((G, G),), (G, None))
    names = {a.name: a for f in ra.FAMILY_AUGMENTERS for a in ra.get_augmenters([f])}
    for name, expected in EXPECTED_AUGMENTED.items():
        (train,), test = names[name].apply_to_task(task, np.random.RandomState(0))
        assert train == (expected, expected) and test == (expected, None), name


def test_random_translation_shifts_every_input_alike_from_a_copy_of_the_generator():
    out = ((7, 8), (9, 0), (1, 1))
    rng = np.random.RandomState(0)
    train, test = ra.RANDOM_TRANSLATE.apply_to_task((((G, out), (G, out)), (G, out)), rng)
    # RandomState(0): randint(0, 2) = 0, randint(0, 3) = 1 for the (2x3) input; then randint(0, 3) = 0 and
    # randint(0, 2) = 1 for the (3x2) output; np.roll shifts cyclically
    shifted_in, shifted_out = ((3, 1, 2), (6, 4, 5)), ((8, 7), (0, 9), (1, 1))
    assert train == ((shifted_in, shifted_out), (shifted_in, shifted_out)) and test == (shifted_in, shifted_out)
    assert rng.randint(0, 2**31) == np.random.RandomState(0).randint(0, 2**31)  # the caller's generator untouched


def test_colour_permutation_maps_used_colours_to_unused_ones_alike_in_every_grid():
    task = (((((1, 0), (2, 2)), ((2,),)),), (((1, 1),), ((0, 2),)))
    train, test = ra.permute_colours(task, np.random.RandomState(0))
    # colours {1, 2}, 0 kept; RandomState(0) shuffles the unused [3, ..., 9] to [9, 5, 4, 6, 3, 8, 7], and each used
    # colour in turn pops the last: 1 -> 7, 2 -> 8
    assert train == ((((7, 0), (8, 8)), ((8,),)),) and test == (((7, 7),), ((0, 8),))


# ---- (d) leave-one-out and leave-two-out tasks, and the cap

def test_leave_one_out_and_leave_two_out_tasks_as_get_test_time_train_data_makes_them():
    a, b, c = [(((i,),), ((i + 5,),)) for i in (1, 2, 3)]
    assert ra.leave_n_tasks([a, b, c], 1) == [((b, c), a), ((a, c), b), ((a, b), c)]
    assert ra.leave_n_tasks([a, b, c], 2) == [((c,), a), ((b,), a), ((c,), b), ((a,), b), ((b,), c), ((a,), c)]
    four = [(((i, i),), ((i,),)) for i in range(1, 5)]
    assert len(ra.leave_n_tasks(four, 1)) == 4 and len(ra.leave_n_tasks(four, 2)) == 12
    # no augmenter: the tasks and an example-permuted copy of each (no recolouring), duplicates dropped
    tasks = ra.ttt_tasks(four, [], 1)
    assert set(ra.leave_n_tasks(four, 1)) <= set(tasks) and 4 < len(tasks) <= 8 and len(set(tasks)) == len(tasks)


def test_more_than_250_examples_are_shuffled_and_cut_fewer_stay_in_order():
    task = load_seal_subset(None, "train")[0]  # 44f52bb0: 6 demonstrations
    everything = ra.ttt_examples(task.train, ["basic", "size", "chain", "repeat"], max_examples=10**6)
    capped = ra.ttt_examples(task.train, ["basic", "size", "chain", "repeat"])
    assert len(everything) > 250 and len(capped) == 250 and set(capped) <= set(everything)
    assert capped != everything[:250]  # shuffled before the cut
    few = ra.ttt_examples(task.train, [], max_examples=10**6)
    assert len(few) < 250 and ra.ttt_examples(task.train, []) == few  # in order
    prompt, completion = capped[0]
    assert prompt.messages[0][0] == "system" and completion.endswith("]]#")


# ---- (e) more than 375 steps: no adapter

def test_more_than_375_steps_trains_no_adapter(tiny):
    assert PAPER.max_ttt_steps == 375 and PAPER.ttt.batch_size == 2
    assert not reference.too_many_steps(3, 250, 2, 375) and reference.too_many_steps(4, 250, 2, 375)
    assert reference.too_many_steps(3, 251, 2, 375)  # 753 // 2 = 376
    assert not reference.too_many_steps(1, 751, 2, 375)  # 751 // 2 = 375: floored, as self-edit.py computes it
    domain = ArcDomain(ArcConfig(ttt_data="reference", task_format="reference", max_examples=8, max_ttt_steps=12,
                                 ttt=PAPER.ttt))
    task = domain.eval_tasks[0]
    job, note = domain._job(tiny, task, TTTConfig(("basic",), "output", 1e-3, 3), seed=0)
    assert job is not None and note == {"examples": 8, "steps": 12, "trained": True}
    job, note = domain._job(tiny, task, TTTConfig(("basic",), "output", 1e-3, 4), seed=0)
    assert job is None and note["trained"] is False and note["why"] == "16 steps > 12"


def test_rewards_of_reference_self_edits_in_training(tiny):
    domain = ArcDomain(dataclasses.replace(CPU_PAPER, procedural_count=1, max_examples=4))
    long = SELF_EDIT.replace('"num_train_epochs": 2', '"num_train_epochs": 50')  # 50 x 4 // 2 = 100 steps > 9
    scored, = domain.score(tiny, domain.training_contexts(), [[SELF_EDIT, long, "{bad"]], repeats=1, seed=0)
    assert scored.details["status"] == ["ok", "untrained", "invalid-json"]
    assert scored.details["errors"][1] == "100 steps > 9" and scored.rewards[2] == 0.0
    assert all(r in (0.0, 1.0) for r in scored.rewards) and scored.baseline == 0.0


# ---- (f) the task as text

def test_grids_are_written_as_numpy_prints_them_and_read_back_as_eval_self_edits_reads_them():
    assert reference.grid_text(((1, 2), (3, 4))) == "[[1 2]\n [3 4]]" and reference.grid_text(((7,),)) == "[[7]]"
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (1, 30), (30, 1), (30, 30), (5, 7)]:
        grid = tuple(tuple(int(v) for v in row) for row in rng.integers(0, 10, (h, w)))
        assert reference.grid_text(grid) == str(np.array(grid))
        assert reference.read_grid(reference.answer_text(grid)) == grid
    prompt = reference.task_prompt(SMALL.train, SMALL.test_input)
    assert prompt.messages == (
        ("system", ("Figure out the underlying transformation in the following examples and apply it to the test case. "
                   "Here are some examples from this transformation, your answer must follow the format.\nThe "
                   "input-output grids are provided as python arrays:\n[[1 2]\n [3 4]] -> [[5]]#\n")),
        ("user", "[[0 1]] -> "))
    assert reference.answer_text(((1,),)) == "[[1]]#"
    assert reference.read_grid("[[1 2]\n [3  4]]#") == ((1, 2), (3, 4))
    assert reference.read_grid("```\n[[1 2]]\n```") == ((1, 2),)
    assert reference.read_grid("[[1 2]\n [3]]") is None and reference.read_grid("[[1 2]]#\nDone") is None


# ---- (g) the hierarchical vote

A, B, C = ((1,),), ((2,),), ((3,),)


def test_the_vote_prefers_what_several_categories_put_first_and_breaks_ties_by_the_untransformed_views():
    outputs = [(None, A)] * 4 + [(None, B)] * 2 + [(None, C), ("Transpose()", B)]
    # all: A 4, B 3, C 1 -> (A, B, C); identity: A 4, B 2, C 1 -> (A, B, C); Transpose(): only B -> (B, B, B).
    # Candidates: B 5, A 2, C 2: B first; A and C tie, and A is the more common untransformed answer.
    assert reference.vote(outputs) == (B, A)


def test_the_vote_without_untransformed_views_and_with_one_answer():
    assert reference.vote([("Flip(0)", A), ("Flip(0)", A), ("Flip(0)", B), ("Flip(1)", A)]) == (A, B)
    assert reference.vote([("Flip(0)", A)]) == (A, A)  # no second answer: the majorities give the first again
    assert reference.vote([]) == (None, None)


def test_row_majority_builds_a_grid_no_view_gave():
    grids = [((1,), (7,)), ((1,), (8,)), ((5,), (9,)), ((6,), (9,))]
    assert reference._row_majority(grids) == ((1,), (9,))


def test_the_paper_views_are_leave_one_out_subsets_in_three_orders_and_five_geometric_views():
    task = load_seal_subset(None, "eval")[0]  # 358ba94e: 4 demonstrations
    views = ra.prediction_views(task.train, task.test_input)
    plain = [v for v in views if v.transform is None]
    assert {len(v.examples) for v in plain} == {3} and len(plain) <= 12
    assert {tuple(sorted(v.examples)) for v in plain} == {(1, 2, 3), (0, 2, 3), (0, 1, 3), (0, 1, 2)}
    assert [v.transform for v in views if v.transform] == ["Transpose()", "Flip(0)", "Flip(1)", "Rotate(90)",
                                                          "Rotate(180)"]
    assert {v.inverter for v in views} == {None, "Transpose()", "Flip(0)", "Flip(1)", "Rotate(270)", "Rotate(180)"}
    rotated = next(v for v in views if v.transform == "Rotate(90)")
    assert rotated.invert(rotated.test_input) == task.test_input


# ---- (h) a task is solved only when all its test cases are

def echo(prompt, i):
    """A model whose rule is identity: it answers each test input with itself."""
    return prompt.messages[1][1].removesuffix(" -> ") + "#"


def test_a_task_with_two_test_cases_one_wrong_is_unsolved(monkeypatch):
    x0, x1 = ((1, 2), (3, 4)), ((5, 6), (7, 8))
    demos = ((((1, 1),), ((1, 1),)), (((2, 0),), ((2, 0),)), (((0, 3),), ((0, 3),)))
    both_right = group_test_cases([Task("t", demos, x0, x0), Task("t-1", demos, x1, x1, 1)])
    one_wrong = group_test_cases([Task("t", demos, x0, x0), Task("t-1", demos, x1, x0, 1)])
    assert len(both_right) == 1 and both_right[0].tests == ((x0, x0), (x1, x1))
    right, wrong = predict_reference(ScriptedGenerator(echo), [*both_right, *one_wrong], [None, None])
    assert [c.solved for c in right] == [True, True] and reference.task_solved(right)
    assert [c.solved for c in wrong] == [True, False] and not reference.task_solved(wrong)
    assert right[1].attempts[0] == x1 and all(v["grid"] == "56\n78" for v in right[1].views)
    # the domain records every view and the vote, and scores the task 0
    domain = ArcDomain(PAPER)
    monkeypatch.setattr(arc_domain, "make_generator", lambda model: ScriptedGenerator(echo))
    (score, first, cases), = domain._predict(None, one_wrong, [None])
    assert score == 0.0 and first == x0 and [c["solved"] for c in cases] == [True, False]
    assert cases[1]["attempts"][0] == "56\n78" and cases[1]["expected"] == "12\n34"
    assert {v["transform"] for v in cases[0]["views"]} >= {None, "Transpose()"}


def test_the_paper_evaluation_groups_an_arc_tasks_test_cases():
    domain = ArcDomain(PAPER)
    assert [len(t.tests) for t in domain.eval_tasks] == [1, 1, 1, 1, 1, 1, 2, 1, 1, 1]  # b1fc8b8e has 2
    assert len(ArcDomain(ArcConfig(eval_tasks="seal-eval")).eval_tasks) == 11  # seal-lm: one per test case


# ---- (i) the paper's test-time training and policy SFT

def test_the_paper_ttt_and_policy_sft_settings_are_seals():
    ttt = PAPER.ttt  # self-edit.py LoraConfig and TTT.update_model, arclib/update_model.py TrainingArguments
    assert (ttt.rank, ttt.alpha, ttt.dropout, tuple(ttt.target_modules)) == (
        128, 16, 0.0, ("q_proj", "v_proj", "gate_proj", "down_proj", "up_proj"))
    assert (ttt.batch_size, ttt.schedule, ttt.warmup_steps, ttt.max_grad_norm, ttt.max_length) == (
        2, "cosine", 11, 1.0, 8192)
    assert (PAPER.ttt_data, PAPER.max_examples, PAPER.task_format, PAPER.prediction) == (
        "reference", 250, "reference", "reference")
    sft = PAPER.rest_em.policy_update  # README.md step 3 and BC-self-edit.py
    assert (sft.rank, sft.alpha, sft.dropout, tuple(sft.target_modules)) == (
        16, 16, 0.0, ("q_proj", "v_proj", "gate_proj", "down_proj", "up_proj"))
    assert (sft.learning_rate, sft.epochs, sft.batch_size, sft.schedule, sft.warmup_steps, sft.max_grad_norm) == (
        5e-5, 8, 5, "cosine", 0, 1.0)
    rest_em = PAPER.rest_em
    assert (rest_em.rounds, rest_em.contexts_per_round, rest_em.samples_per_context, rest_em.reward_repeats,
            rest_em.keep) == (1, 12, 15, 1, "positive")
    assert PAPER.model.name == "meta-llama/Llama-3.2-1B-Instruct" and PAPER.self_edits_per_task == 5
    oracle, = PAPER.oracle_configs  # ttt.py: all augmentations, output tokens, lr 1e-4, 2 epochs
    assert reference.parse_self_edit(oracle).config == TTTConfig(("basic", "size", "chain", "repeat"), "output",
                                                                 1e-4, 2)


def test_seal_lms_defaults_stay_its_own():
    default = ArcConfig()
    assert (default.self_edit_format, default.ttt_data, default.task_format, default.prediction) == ("seal",) * 4
    assert default.ttt.warmup_steps == 0 and default.rest_em.policy_update.schedule == "linear"


# ---- (j) unknown values

@pytest.mark.parametrize("name", ["self_edit_format", "ttt_data", "task_format", "prediction"])
def test_unknown_protocol_values_are_one_line_errors_listing_the_choices(name, capsys):
    with pytest.raises(ConfigError, match=rf"^{name}: unknown value 'paper' \(choose one of: seal, reference\)$"):
        ArcConfig(**{name: "paper"}).validate()
    assert main(["eval", "--domain", "arc", f"--{name}", "paper", "--out", "unused"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "choose one of: seal, reference" in err


def test_a_closing_brace_stop_or_a_seal_oracle_is_refused_with_reference_self_edits():
    with pytest.raises(ConfigError, match=r"^self_edit_sampling.stop: '}' would cut"):
        ArcConfig(self_edit_format="reference", conditions=("icl", "ttt")).validate()
    with pytest.raises(ConfigError, match="oracle_configs: .*write it as a reference self-edit"):
        ArcConfig(self_edit_format="reference", self_edit_sampling=PAPER.self_edit_sampling).validate()


# ---- end to end: `seal eval --preset cpu-paper` on the tiny model, and its report

def test_cpu_paper_eval_end_to_end_on_the_tiny_model_records_views_and_votes(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "arc-cpu-paper"
    assert main(["eval", "--domain", "arc", "--preset", "cpu-paper", "--model.name", str(tiny_model_dir),
                 "--procedural_count", "1", "--max_examples", "4", "--self_edit_sampling.max_new_tokens", "16",
                 "--self_edits_per_task", "2", "--self_edit_attempts", "1", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "invalid self-edit samples drawn again" in printed and "oracle TTT" in printed
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["condition"] for r in records) == ["icl", "oracle", "ttt"]
    oracle = next(r for r in records if r["condition"] == "oracle")
    assert oracle["self_edits"][0]["trained"] and oracle["self_edits"][0]["examples"] == 4
    case, = oracle["test_cases"][0]
    assert len(case["attempts"]) == 2 and len(case["views"]) >= 6
    assert {"examples", "transform", "text", "grid"} <= set(case["views"][0])
    ttt = next(r for r in records if r["condition"] == "ttt")
    assert ttt["invalid_samples"] + sum(e["status"] in ("ok", "untrained") for e in ttt["self_edits"]) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert "2 attempts" in summary["setting"] and "invalid_samples" in summary["conditions"]["ttt"]
    assert main(["report", str(out)]) == 0
    page = (out / "report" / "index.html").read_text()
    assert "views and vote" in page and "attempt 2" in page and "Transpose()" in page and 'src="http' not in page


def test_rest_em_rollouts_draw_invalid_self_edits_again_and_record_how_many(tiny_model_dir, tmp_path):
    """seal train samples its rollouts through the domain, so the reference format redraws there too."""
    out = tmp_path / "arc-train"
    assert main(["train", "--domain", "arc", "--preset", "cpu-paper", "--model.name", str(tiny_model_dir),
                 "--procedural_count", "1", "--max_examples", "4", "--self_edit_sampling.max_new_tokens", "12",
                 "--rest_em.contexts_per_round", "1", "--rest_em.samples_per_context", "2",
                 "--self_edit_attempts", "2", "--conditions", "[icl]", "--out", str(out), "--no-progress"]) == 0
    rollouts = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    rollouts = [r for r in rollouts if r["kind"] == "rollout"]
    assert rollouts and all(len(r["completions"]) == 2 for r in rollouts)
    for r in rollouts:  # a random tiny model writes no valid JSON: every draw up to the cap was discarded
        assert r["details"]["invalid_samples"] == 2 * 2 and r["rewards"] == [0.0, 0.0]


@pytest.mark.slow
def test_cpu_paper_eval_with_the_embedded_model(tmp_path):
    out = tmp_path / "arc"
    assert main(["eval", "--domain", "arc", "--preset", "cpu-paper", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"icl", "ttt", "oracle"} <= set(summary["conditions"])
