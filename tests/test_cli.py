import json

import pytest

from seal_lm.cli import main

FAST = ["--inner_loop.epochs", "1", "--inner_loop.rank", "4", "--inner_loop.alpha", "8",
        "--self_edit_sampling.max_new_tokens", "24", "--no-progress"]


def _eval(tiny_model_dir, data, out, *extra):
    return main(["eval", "--model.name", str(tiny_model_dir), "--data", str(data), "--out", str(out), *FAST, *extra])


def _lines(path):
    return [json.loads(l) for l in (path / "results.jsonl").read_text().splitlines()]


def test_eval_writes_config_results_and_summary_and_prints_the_table(tiny_model_dir, passages_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _eval(tiny_model_dir, passages_file, out, "--self_edits_per_passage", "2") == 0
    printed = capsys.readouterr().out
    for label in ("base model", "train on passage", "passage + self-edit", "accuracy [95% CI]"):
        assert label in printed
    config = json.loads((out / "config.json").read_text())
    assert config["self_edits_per_passage"] == 2 and config["inner_loop"]["epochs"] == 1
    records = _lines(out)
    titles = sorted({r["title"] for r in records})
    assert sorted((r["title"], r["condition"]) for r in records) == sorted(
        (t, c) for t in titles for c in ("base", "passage", "self-edit"))
    assert len(titles) == 2
    self_edit = next(r for r in records if r["condition"] == "self-edit")
    assert len(self_edit["self_edits"]) == 2 and len(self_edit["training"]) == 2
    assert self_edit["training"][0]["sequences"][0].startswith(self_edit["title"] + "\n")
    for q in self_edit["questions"]:
        assert len(q["predictions"]) == 2 and set(q["scores"]) == {"exact", "f1", "contains"}
    summary = json.loads((out / "summary.json").read_text())
    row = summary["conditions"]["passage"]
    assert row["contexts"] == 2 and row["items"] == 10 and summary["units"]["items"] == "questions"
    assert set(row["accuracy"]["contains"]) == {"mean", "low", "high", "n"}
    assert sum(summary["conditions"]["self-edit"]["self_edit_status"].values()) == 4


def test_rerun_resumes_without_redoing_work_and_reaches_the_same_summary(tiny_model_dir, passages_file, tmp_path):
    out = tmp_path / "run"
    assert _eval(tiny_model_dir, passages_file, out) == 0
    full = json.loads((out / "summary.json").read_text())
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:4]) + lines[4][:10])  # as if killed while writing line 5
    assert _eval(tiny_model_dir, passages_file, out) == 0
    records = _lines(out)
    assert len(records) == 6 and len({(r["context_id"], r["condition"]) for r in records}) == 6
    resumed = json.loads((out / "summary.json").read_text())
    for row in (full, resumed):
        for cond in row["conditions"].values():
            cond.pop("seconds_per_context")
    assert resumed == full
    assert _eval(tiny_model_dir, passages_file, out) == 0  # nothing left to do
    assert len(_lines(out)) == 6


def test_resume_keeps_the_dtype_that_auto_resolved_to_when_the_run_started(tiny_model_dir, passages_file, tmp_path):
    """A run started where `auto` meant the other dtype (bfloat16 is native on some CPUs only) goes on in it."""
    from seal_lm.models import cpu_has_bf16

    out = tmp_path / "run"
    assert _eval(tiny_model_dir, passages_file, out, "--limit", "1", "--model.device", "cpu") == 0
    runtime = json.loads((out / "runtime.json").read_text())
    here = runtime[0]["dtype"]
    assert here == ("bfloat16" if cpu_has_bf16() else "float32")
    other = "float32" if here == "bfloat16" else "bfloat16"
    (out / "runtime.json").write_text(json.dumps([{**runtime[0], "dtype": other}]))
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:-1]))  # the last condition still to do
    assert _eval(tiny_model_dir, passages_file, out, "--limit", "1", "--model.device", "cpu") == 0
    assert [r["dtype"] for r in json.loads((out / "runtime.json").read_text())] == [other, other]
    assert json.loads((out / "config.json").read_text())["model"]["dtype"] == "auto"


def test_teacher_condition_uses_another_model(tiny_model_dir, tiny_base_model_dir, passages_file, tmp_path):
    out = tmp_path / "run"
    assert _eval(tiny_model_dir, passages_file, out, "--limit", "1", "--teacher", str(tiny_base_model_dir),
                 "--conditions", "[teacher]") == 0
    record, = _lines(out)
    assert record["condition"] == "teacher" and record["self_edits"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["conditions"]["teacher"]["label"] == f"passage + self-edit by {tiny_base_model_dir}"


@pytest.mark.parametrize("args, message", [
    (["--data", "{missing}"], "data file not found"),
    (["--conditions", "[base,magic]"], "conditions: unknown value 'magic'"),
    (["--conditions", "[teacher]"], "condition 'teacher' needs a teacher model"),
    (["--update", "dpo"], "update: unknown value 'dpo'"),
    (["--update", "distill", "--mode", "cpt"], "update: distill needs mode single"),
])
def test_bad_input_is_a_one_line_error_and_exit_2(tiny_model_dir, tmp_path, capsys, args, message, passages_file):
    args = [a.replace("{missing}", str(tmp_path / "missing.json")) for a in args]
    if "--data" not in args:
        args += ["--data", str(passages_file)]
    code = main(["eval", "--model.name", str(tiny_model_dir), "--out", str(tmp_path / "o"), *FAST, *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_help_explains_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--teacher" in text and "--grader" in text and "default" in text


TRAIN = ["train", "--rest_em.rounds", "2", "--rest_em.contexts_per_round", "2", "--rest_em.samples_per_context", "2",
         "--rest_em.reward_repeats", "1", "--limit", "1", "--grader", "f1", *FAST]


def _stable(summary):
    """A summary without its wall times."""
    for row in summary["conditions"].values():
        row.pop("seconds_per_context")
    for row in summary.get("rounds", []):
        row.pop("seconds")
    return summary


def test_train_runs_all_rounds_and_prints_the_table(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "train"
    assert main([*TRAIN, "--model.name", str(tiny_model_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for label in ("base model", "train on passage", "passage + self-edit", "SEAL round 1", "SEAL round 2"):
        assert label in printed
    records = _lines(out)
    assert [r["kind"] for r in records].count("rollout") == 4 and [r["kind"] for r in records].count("sft") == 2
    config = json.loads((out / "config.json").read_text())
    assert config["rest_em"]["samples_per_context"] == 2 and config["rest_em"]["policy_update"]["rank"] == 64
    assert main(["report", str(out)]) == 0
    assert (out / "report" / "index.html").is_file()


@pytest.mark.slow
def test_train_killed_at_any_moment_resumes_to_the_same_summary(tiny_model_dir, tmp_path):
    """SIGKILL a real `seal train` process mid-run, resume it, compare with an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    full, killed = tmp_path / "full", tmp_path / "killed"
    args = [*TRAIN, "--model.name", str(tiny_model_dir)]
    assert main([*args, "--out", str(full)]) == 0
    for at_least in (3, 6):  # killed during the first evaluation, then again during the rollouts
        proc = subprocess.Popen([sys.executable, "-m", "seal_lm.cli", *args, "--out", str(killed)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results = killed / "results.jsonl"
        while proc.poll() is None and (not results.exists() or len(results.read_bytes().splitlines()) < at_least):
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    assert _stable(json.loads((killed / "summary.json").read_text())) == \
        _stable(json.loads((full / "summary.json").read_text()))
    keys = [(r["kind"], r["round"], r.get("context_id"), r.get("condition")) for r in _lines(killed)]
    assert len(keys) == len(set(keys)) == len(_lines(full))  # nothing done twice, nothing missing


def test_eval_resume_reads_the_saved_config(tiny_model_dir, passages_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _eval(tiny_model_dir, passages_file, out, "--limit", "1") == 0
    (out / "summary.json").unlink()
    assert main(["eval", "--resume", str(out), "--no-progress"]) == 0
    assert len(_lines(out)) == 3 and (out / "summary.json").is_file()
    assert main(["eval", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_cpt_mode_pools_every_passage_into_one_update(tiny_model_dir, passages_file, tmp_path):
    out = tmp_path / "cpt"
    assert main(["eval", "--mode", "cpt", "--model.name", str(tiny_model_dir), "--data", str(passages_file),
                 "--out", str(out), *FAST, "--cpt.self_edits_per_passage", "2", "--cpt.inner_loop.epochs", "1"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["mode"] == "cpt" and config["cpt"]["inner_loop"]["batch_size"] == 8  # SEAL's cpt defaults...
    assert config["cpt"]["inner_loop"]["epochs"] == 1  # ...which flags still override
    records = [r for r in _lines(out) if r["condition"] in ("passage", "self-edit")]
    for condition in ("passage", "self-edit"):
        first, second = (r for r in records if r["condition"] == condition)
        # both passages report the same pooled update, trained on both passages' sequences
        assert first["training"][0]["epoch_losses"] == second["training"][0]["epoch_losses"]
        assert first["training"][0]["tokens"] == second["training"][0]["tokens"]
        assert first["training"][0]["sequences"][0].startswith(first["title"])
    self_edit = next(r for r in records if r["condition"] == "self-edit")
    assert len(self_edit["self_edits"]) == 2 and len(self_edit["training"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["setting"].startswith("continued pretraining") and summary["conditions"]["self-edit"]["contexts"] == 2


def test_distill_update_learns_self_edits_by_context_distillation_and_the_passage_by_sft(tiny_model_dir,
                                                                                       passages_file, tmp_path):
    """Same seeds, same self-edits: only the self-edit condition's inner loop changes objective."""
    runs = {}
    for update in ("sft", "distill"):
        assert _eval(tiny_model_dir, passages_file, tmp_path / update, "--update", update,
                     "--conditions", "[passage,self-edit]") == 0
        runs[update] = {(r["title"], r["condition"]): r for r in _lines(tmp_path / update)}
        assert json.loads((tmp_path / update / "config.json").read_text())["update"] == update
    for key, sft in runs["sft"].items():
        distill = runs["distill"][key]
        same = sft["training"][0]["step_losses"] == pytest.approx(distill["training"][0]["step_losses"], rel=1e-5)
        assert same == (key[1] == "passage"), key
        if key[1] == "self-edit":
            assert distill["self_edits"] == sft["self_edits"]
