"""Few-shot self-edits (JSON configurations), test-time training jobs, voted prediction, and the
`--domain arc` commands, on the tiny random model."""

import json

import pytest
from conftest import ScriptedGenerator

import seal_lm.domains.arc.domain as arc_domain
from seal_lm.cli import main
from seal_lm.domains.arc.augment import voting_augmentations
from seal_lm.domains.arc.tasks import procedural_tasks
from seal_lm.domains.arc.ttt import predict, ttt_job
from seal_lm.errors import SealError
from seal_lm.domains.arc.formats import EXAMPLE, RESPONSE_PREFIX, parse_config, self_edit_prompt, self_edit_text
from seal_lm.generation import HFGenerator, render_prompt
from seal_lm.inner_loop import Example, InnerLoopSettings
from seal_lm.domains.arc import ArcConfig, ArcDomain

VALID = '{"augmentations": ["basic", "size"], "loss": "output", "learning_rate": 0.001, "epochs": 2}'


@pytest.mark.parametrize("text, status, error", [
    (VALID, "ok", ""),
    (f"Sure! Here it is:\n```json\n{VALID}\n```\nGood luck.", "ok", ""),
    ("I would rotate the grids.", "invalid-json", "no JSON object"),
    ('{"augmentations": ["basic"], "loss": "output",', "invalid-json", "not valid JSON"),
    ('{"augmentations": __import__("os").system("echo hi")}', "invalid-json", "not valid JSON"),
    ('{"augmentations": ["basic"], "loss": "output", "learning_rate": 0.5, "epochs": 2}', "invalid-config",
     "learning_rate must be"),
    ('{"augmentations": ["spin"], "loss": "output", "learning_rate": 0.001, "epochs": 2}', "invalid-config",
     "augmentations must be"),
    ('{"augmentations": [], "loss": "output", "learning_rate": 0.001, "epochs": true}', "invalid-config",
     "epochs must be"),
    ('{"augmentations": [], "loss": "output", "learning_rate": 0.001}', "invalid-config", "missing field(s) epochs"),
    ('{"augmentations": [], "loss": "some", "learning_rate": 0.001, "epochs": 1}', "invalid-config", "loss must be"),
])
def test_self_edits_are_parsed_as_data_against_a_bounded_schema(text, status, error):
    parsed = parse_config(text)
    assert parsed.status == status and error in parsed.error
    assert (parsed.config is not None) == (status == "ok")
    if parsed.config:
        assert parsed.config.augmentations == ("basic", "size") and parsed.config.epochs == 2


def test_the_self_edit_prompt_shows_the_demonstrations_and_the_schema():
    task = procedural_tasks(1, seed=3)[0]
    prompt = self_edit_prompt(task)
    text = prompt.messages[0][1]
    assert "Input:" in text and '"augmentations"' in text and '"basic"' in text and "epochs" in text
    assert EXAMPLE.as_json() in text and parse_config(EXAMPLE.as_json()).config == EXAMPLE
    # The answer is started for the model; its completion continues the JSON object.
    assert prompt.response_prefix and self_edit_text('basic"], "loss": "all", "learning_rate": 0.001, '
                                                     '"epochs": 1}') == prompt.response_prefix + 'basic"], "loss": "all", "learning_rate": 0.001, "epochs": 1}'
    assert parse_config(self_edit_text('size"], "loss": "all", "learning_rate": 0.001, "epochs": 1}')).status == "ok"


def test_a_configuration_becomes_one_ttt_job_with_its_own_settings():
    task = procedural_tasks(1, seed=3)[0]
    config = parse_config(VALID).config
    job = ttt_job(task, config, InnerLoopSettings(rank=4, alpha=4, schedule="cosine"), max_examples=5, seed=1)
    assert 1 <= len(job.sequences) <= 5 and all(isinstance(x, Example) for x in job.sequences)
    assert not any(x.train_on_prompt for x in job.sequences)  # loss "output"
    assert job.settings.learning_rate == 0.001 and job.settings.epochs == 2 and job.settings.schedule == "cosine"
    all_tokens = parse_config(VALID.replace('"output"', '"all"')).config
    assert all(x.train_on_prompt for x in ttt_job(task, all_tokens, job.settings, 5, 1).sequences)
    assert ttt_job(task, config, job.settings, 5, 1).sequences == job.sequences  # seeded


def test_voted_predictions_never_crash_on_garbage_output(tiny):
    tasks = procedural_tasks(2, seed=5, max_size=4)
    predictions = predict(HFGenerator(tiny), tasks, [None, None], voting_augmentations())
    assert len(predictions) == 2
    for grid in predictions:  # a random model writes garbage: None, or a parsed grid
        assert grid is None or (isinstance(grid, tuple) and all(isinstance(r, tuple) for r in grid))


def test_invalid_self_edits_score_zero_without_training(tiny, tiny_model_dir):
    domain = ArcDomain(ArcConfig(procedural_count=2, max_examples=3,
                               ttt=InnerLoopSettings(rank=4, alpha=4, batch_size=2, schedule="cosine")))
    tasks = list(domain.training_contexts())
    completions = [[VALID.removeprefix(RESPONSE_PREFIX), "no idea"], ["{bad"]]  # what follows the prompt's prefix
    scored = domain.score(tiny, tasks, completions, repeats=1, seed=0)
    assert [s.details["status"] for s in scored] == [["ok", "invalid-json"], ["invalid-json"]]
    assert scored[0].rewards[1] == 0.0 and scored[1].rewards == [0.0]
    assert all(r in (0.0, 1.0) for s in scored for r in s.rewards) and all(s.baseline == 0.0 for s in scored)


def test_sampled_self_edits_are_completions_that_rewards_evaluation_and_the_policy_read_once(tiny, monkeypatch):
    """The model writes after the prompt's `{"augmentations": ["`: ReST-EM's rollouts score those completions and
    train the policy on them after the prompt, so the prefix must be added once, by the consumer."""
    domain = ArcDomain(ArcConfig(procedural_count=1, max_examples=3,
                                 ttt=InnerLoopSettings(rank=4, alpha=4, batch_size=2, epochs=1)))
    written = VALID.removeprefix(RESPONSE_PREFIX)
    generator = ScriptedGenerator(lambda prompt, i: written)
    tasks = list(domain.training_contexts())
    completions, invalid = domain.sample_self_edits(generator, tasks, 2, seed=0)
    assert completions == [[written, written]] and invalid == [0]
    assert [s.details["status"] for s in domain.score(tiny, tasks, completions, repeats=1, seed=0)] == [["ok", "ok"]]
    policy_text = render_prompt(tiny, domain.self_edit_prompt(tasks[0])) + completions[0][0]  # how SFT reads it
    assert policy_text.endswith(VALID) and RESPONSE_PREFIX * 2 not in policy_text
    monkeypatch.setattr(arc_domain, "make_generator", lambda model: generator)
    record, = domain._evaluate_group(tiny, tasks[:1], "ttt", 0)
    assert record.self_edits and all(e["completion"] == VALID and e["status"] == "ok" for e in record.self_edits)


ARC = ["--domain", "arc", "--procedural_count", "2", "--procedural_max_size", "4", "--max_examples", "3", "--ttt.rank", "4",
       "--ttt.alpha", "4", "--self_edit_sampling.max_new_tokens", "24", "--no-progress"]


def _lines(path):
    return [json.loads(line) for line in (path / "results.jsonl").read_text().splitlines()]


def test_arc_eval_prints_icl_ttt_and_oracle_rows(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "arc"
    assert main(["eval", *ARC, "--model.name", str(tiny_model_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for label in ("in-context learning", "TTT + self-edit", "oracle TTT (best of 4", "Task success", "accuracy [95% CI]",
                  "usable self-edits"):
        assert label in printed
    records = _lines(out)
    assert sorted(r["condition"] for r in records) == ["icl", "icl", "oracle", "oracle", "ttt", "ttt"]
    ttt = next(r for r in records if r["condition"] == "ttt")
    assert ttt["self_edits"][0]["status"] in ("ok", "invalid-json", "invalid-config")
    assert len(next(r for r in records if r["condition"] == "oracle")["self_edits"]) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grader"] == "exact" and summary["conditions"]["icl"]["contexts"] == 2
    assert sum(summary["conditions"]["ttt"]["self_edit_status"].values()) == 2
    rows = summary["conditions"]
    for a, b in (("ttt", "icl"), ("oracle", "ttt"), ("oracle", "icl")):  # paired over the same 2 tasks
        paired = summary["paired"][f"{a} - {b}"]
        assert paired["contexts"] == 2
        assert paired["mean"] == pytest.approx(rows[a]["accuracy"]["exact"]["mean"] - rows[b]["accuracy"]["exact"]["mean"])
    assert summary["headline"] == "ttt - icl"


def test_arc_train_runs_rounds_through_the_same_outer_loop_and_resumes(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "arc-train"
    args = ["train", *ARC, "--model.name", str(tiny_model_dir), "--out", str(out), "--rest_em.rounds", "1",
            "--rest_em.contexts_per_round", "2", "--rest_em.samples_per_context", "2", "--conditions", "[icl,ttt]"]
    assert main(args) == 0
    assert "SEAL round 1" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["headline"] == "round-1 - ttt" and "round-1 - icl" in summary["paired"]
    kinds = [r["kind"] for r in _lines(out)]
    assert kinds.count("rollout") == 2 and kinds.count("sft") == 1
    assert json.loads((out / "config.json").read_text())["domain"] == "arc"
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0  # reads the domain from the run
    assert len(_lines(out)) == len(kinds)


def test_arc_report_draws_grids_of_tasks(tiny_model_dir, tmp_path):
    out = tmp_path / "arc-report"
    assert main(["eval", *ARC, "--model.name", str(tiny_model_dir), "--out", str(out), "--conditions", "[icl]",
                 "--procedural_count", "1"]) == 0
    record, = _lines(out)
    assert record["expected"] and record["test_input"] and len(record["predictions"]) == 1
    assert main(["report", str(out)]) == 0
    page = (out / "report" / "index.html").read_text()
    assert "Grid tasks" in page and 'class="grid"' in page and "true output" in page


def test_oracle_configurations_are_checked_against_the_epoch_bound_only_when_the_oracle_runs():
    ArcConfig(conditions=("icl", "ttt"), max_epochs=2).validate()
    with pytest.raises(SealError, match="oracle_configs: .*raise max_epochs or leave out the oracle"):
        ArcConfig(max_epochs=2).validate()
