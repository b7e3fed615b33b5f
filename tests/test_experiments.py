import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_passages

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_small_scale_study_tunes_on_the_tuning_split_then_trains_there_and_evaluates_held_out_passages(
        tiny_model_dir, tmp_path):
    passages_file = write_passages(tmp_path / "passages.json", 3)  # one tuning passage, two held out
    fast = (f"--model.name {tiny_model_dir} --inner_loop.epochs 1 --inner_loop.rank 4 --inner_loop.alpha 8 "
            "--self_edit_sampling.max_new_tokens 16 --passages_per_batch 1")
    command = [sys.executable, str(ROOT / "experiments" / "small_scale.py"), "tune", "--passages", "1",
               "--held_out_start", "1",
               "--data", str(passages_file), "--runs", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs"),
               "--temperatures", "1.0", "--formats", "open-book-qa", "--seal_args", fast]
    subprocess.run(command, check=True, capture_output=True, text=True)
    study = json.loads((tmp_path / "docs" / "small_scale.json").read_text())["tune"]
    assert study["split"] == "tuning: passages 0-0"
    distilled = [name for name in study["arms"] if name.endswith("-distill")]
    assert set(study["arms"]) - set(distilled) == {"implications-t1.0", "open-book-qa-t1.0"} and len(distilled) == 1
    # distillation is also paired against SFT of the same self-edits
    assert study["arms"][distilled[0]]["vs_sft"]["contexts"] == 1
    for arm in study["arms"].values():
        assert arm["vs_passage"]["contexts"] == 1 and arm["self-edit"]["n"] == 5
        config = json.loads((tmp_path / "runs" / arm["run"] / "config.json").read_text())
        assert config["limit"] == 1 and config["skip"] == 0 and config["conditions"] == ["self-edit"]
    table = (tmp_path / "docs" / "small_scale.md").read_text()
    assert "tuning: passages 0-0" in table and study["best"] in table and "distillation against SFT" in table
    # a rerun redoes nothing: every run is finished
    rerun = subprocess.run(command, check=True, capture_output=True, text=True)
    assert "seal eval" not in rerun.stdout and "--conditions" not in rerun.stdout
    # ReST-EM needs the held-out run: it starts from its config and its round 0
    rest_em = [*command[:2], "rest-em", "--passages", "2", *command[5:]]
    refused = subprocess.run(rest_em, capture_output=True, text=True)
    assert refused.returncode != 0 and "run the heldout stage first" in refused.stderr
    subprocess.run([*command[:2], "heldout", "--passages", "2", *command[5:]], check=True, capture_output=True)
    # it learns from the tuning passage and is evaluated on the held-out ones
    subprocess.run(rest_em, check=True, capture_output=True, text=True)
    trained = json.loads((tmp_path / "docs" / "small_scale.json").read_text())["rest_em"]
    assert trained["split"] == "trained on passages 0-0, held out: passages 1-2"
    assert {"base", "passage", "self-edit", "round-2"} <= set(trained["conditions"])
    assert any("round 2" in v["label"] for v in trained["paired"].values())
    config = json.loads((tmp_path / "runs" / "rest-em" / "config.json").read_text())
    assert (config["skip"], config["limit"], config["train_limit"], config["rest_em"]["rounds"]) == (1, 2, 1, 2)
    assert config["format"] == study["arms"][study["best"]]["args"][1]
    # round 0 of the second held-out passage is the held-out run's; the first passage's, recomputed, is the same
    check = trained["round_0"]
    assert len(check["copied_from_heldout"]) == 1
    assert check["recomputed_records"] == 3 and check["identical_answers"] == 3
    assert "have the held-out run's answers exactly" in (tmp_path / "docs" / "small_scale.md").read_text()


@pytest.mark.slow
def test_arc_study_sweeps_on_the_tuning_seed_then_reports_the_chosen_cell_on_the_evaluation_seed(
        tiny_model_dir, tmp_path):
    fast = (f"--model.name {tiny_model_dir} --max_examples 3 --ttt.rank 4 --ttt.alpha 4 "
            "--self_edit_sampling.max_new_tokens 24 --rest_em.rounds 1 --rest_em.contexts_per_round 2 "
            "--rest_em.samples_per_context 2")
    command = [sys.executable, str(ROOT / "experiments" / "arc_small_scale.py"), "sweep", "--sizes", "3", "4",
               "--epochs", "1", "--tasks", "2", "--runs", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs"),
               "--seal_args", fast]
    subprocess.run(command, check=True, capture_output=True, text=True)
    sweep = json.loads((tmp_path / "docs" / "arc_small_scale.json").read_text())["sweep"]
    assert set(sweep["cells"]) == {"sweep-size3-epochs1", "sweep-size4-epochs1"} and sweep["chosen"] in sweep["cells"]
    for name, cell in sweep["cells"].items():
        config = json.loads((tmp_path / "runs" / name / "config.json").read_text())
        assert (config["procedural_seed"], config["procedural_max_size"], config["max_epochs"]) == (0, cell["size"], 1)
        assert config["conditions"] == ["icl", "oracle"] and len(config["oracle_configs"]) == 2
        assert cell["oracle - icl"]["contexts"] == 2
    subprocess.run([*command[:2], "report", *command[10:]], check=True, capture_output=True, text=True)
    report = json.loads((tmp_path / "docs" / "arc_small_scale.json").read_text())["report"]
    assert {"icl", "ttt", "round-1", "oracle"} <= set(report["conditions"])
    assert "round-1 - ttt" in report["paired"] and report["paired"]["round-1 - ttt"]["contexts"] == 2
    config = json.loads((tmp_path / "runs" / "report" / "config.json").read_text())
    assert config["procedural_seed"] == 100 and config["procedural_max_size"] == sweep["cells"][sweep["chosen"]]["size"]
    table = (tmp_path / "docs" / "arc_small_scale.md").read_text()
    assert "Evaluation seed, once" in table and "Chosen: grids up to" in table
