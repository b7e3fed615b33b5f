"""Experiment tracking read back from the backends' own files: TensorBoard events, W&B offline runs, an
MLflow file store, each written by a real tiny `seal train`."""

from __future__ import annotations

import json
import sys

import pytest

from seal_lm.cli import main

TRAIN = ["train", "--rest_em.rounds", "1", "--rest_em.contexts_per_round", "2", "--rest_em.samples_per_context", "2",
         "--rest_em.reward_repeats", "1", "--limit", "1", "--grader", "f1", "--inner_loop.epochs", "2",
         "--inner_loop.rank", "4", "--inner_loop.alpha", "8", "--self_edit_sampling.max_new_tokens", "12",
         "--no-progress"]


def _train(tiny_model_dir, out, backend):
    assert main([*TRAIN, "--model.name", str(tiny_model_dir), "--out", str(out), "--report_to", backend]) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_tensorboard_events_hold_losses_rewards_and_accuracies(tiny_model_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = _train(tiny_model_dir, tmp_path / "run", "tensorboard")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"inner_loop/step_loss", "rollouts/mean_reward", "rounds/mean_reward", "rounds/kept_fraction",
            "accuracy/passage/mean", "accuracy/passage/low", "rounds/seconds_rewards"} <= tags
    assert len(events.Scalars("inner_loop/step_loss")) >= 2 * 3  # 2 epochs of 3 eval inner loops, at least
    assert events.Scalars("rounds/mean_reward")[-1].value == pytest.approx(summary["rounds"][0]["mean_reward"])
    assert events.Scalars("accuracy/passage/mean")[-1].value == pytest.approx(
        summary["conditions"]["passage"]["accuracy"]["f1"]["mean"])


@pytest.mark.slow
def test_wandb_offline_and_mlflow_file_store(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    _train(tiny_model_dir, tmp_path / "w", "wandb")
    runs = list((tmp_path / "w" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    summary = _train(tiny_model_dir, tmp_path / "m", "mlflow")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "m" / "mlruns").resolve().as_uri())
    run, = client.search_runs([e.experiment_id for e in client.search_experiments()])
    history = client.get_metric_history(run.info.run_id, "rounds/mean_reward")
    assert history[-1].value == pytest.approx(summary["rounds"][0]["mean_reward"])
    assert run.data.params["rest_em.samples_per_context"] == "2"


def test_a_backend_that_is_not_installed_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    assert main(["eval", "--report_to", "wandb", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'seal-lm[wandb]'" in err
    assert main(["eval", "--report_to", "comet", "--out", str(tmp_path / "r")]) == 2
    assert "comet" in capsys.readouterr().err
