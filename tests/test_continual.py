import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from seal_lm.adapters import combine_adapters, load_adapter, merge_adapter
from seal_lm.cli import main
from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob
from seal_lm.models import ModelSettings, load_model
from seal_lm.recipes.continual import ModelState, sequence_indices

FAST = ["--continual.passages", "3", "--continual.orders", "2", "--inner_loop.epochs", "1", "--inner_loop.rank", "4",
        "--inner_loop.alpha", "8", "--self_edit_sampling.max_new_tokens", "16", "--no-progress"]


# Bit-exact resume needs bitwise-deterministic training; on an H200 the resumed records differed (CUDA kernels).
DETERMINISTIC = ("--model.device", "cpu")


def _continual(model_dir, out, *extra):
    return main(["continual", "--model.name", str(model_dir), "--out", str(out), *FAST, *extra])


def _lines(path):
    return [json.loads(line) for line in (path / "results.jsonl").read_text().splitlines()]


def test_orders_are_seeded_permutations_and_the_first_is_the_given_order():
    assert sequence_indices(9, 5, "reorder", seed=0, order=0) == [0, 1, 2, 3, 4]
    shuffled = sequence_indices(9, 8, "reorder", seed=0, order=1)
    assert sorted(shuffled) == list(range(8)) and shuffled == sequence_indices(9, 8, "reorder", seed=0, order=1)
    assert shuffled != sequence_indices(9, 8, "reorder", seed=0, order=2)
    # SEAL's draw: every sequence its own passages, from the whole pool, seeded
    drawn = [sequence_indices(30, 8, "sample", seed=0, order=o) for o in range(3)]
    assert all(len(set(d)) == 8 and max(d) < 30 for d in drawn) and len({tuple(d) for d in drawn}) == 3
    assert set().union(*map(set, drawn)) - set(range(8))  # beyond the first 8
    assert drawn[1] == sequence_indices(30, 8, "sample", seed=0, order=1)


def test_stacked_updates_are_their_exact_sum_and_the_state_is_rebuilt_from_the_original(tiny_model_dir, test_device):
    loaded = load_model(ModelSettings(name=str(tiny_model_dir), device=test_device, dtype="float32"))
    settings = InnerLoopSettings(rank=4, alpha=8, epochs=2, learning_rate=1e-2)
    first, second = (r.adapter for r in LoraUpdater(loaded, settings).train(
        [TrainJob(["Orlan Vesk built an observatory."]), TrainJob(["The Quillfen loom is green."])]))
    original = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    state = ModelState(loaded, "stack")
    state.set([first, second])
    stacked = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    state.set([])
    assert all(torch.equal(v, original[k]) for k, v in loaded.model.state_dict().items())
    merge_adapter(loaded.model, first)
    merge_adapter(loaded.model, second)
    name = next(iter(first.weights)) + ".weight"
    assert torch.allclose(loaded.model.state_dict()[name], stacked[name], atol=1e-6)
    assert not torch.equal(stacked[name], original[name])
    combined = combine_adapters([first, second])
    assert combined.rank == 8 and combined.alpha / combined.rank == first.alpha / first.rank


def test_continual_writes_the_forgetting_matrix_and_saves_accepted_updates_as_peft(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _continual(tiny_model_dir, out) == 0
    printed = capsys.readouterr().out
    assert "Forgetting matrix, no-guard" in printed and "final accuracy on the first passage" in printed
    records = _lines(out)
    assert sorted((r["order"], r["step"]) for r in records) == [(o, s) for o in range(2) for s in range(3)]
    for r in records:
        assert len(r["accuracy"]) == r["step"] + 1 and r["accepted"]
        assert len(r["scores"][0]) == 5  # every question of the first passage, graded
        assert load_adapter(out / "adapters" / "no-guard" / f"order-{r['order']}" / f"step-{r['step']}").rank == 4
    assert records[0]["order_ids"] != records[3]["order_ids"]  # a second, shuffled order
    matrix = json.loads((out / "summary.json").read_text())["matrices"]["no-guard"]
    assert matrix["orders"] == 2 and matrix["mean"][0][1] is None and matrix["mean"][2][0] is not None
    assert matrix["final_all"]["n"] == 2 * 15 and matrix["refused"] == 0


def test_the_guard_retries_or_refuses_updates_that_change_general_answers_and_records_why(
        tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "general.txt"
    prompts.write_text("Name a colour.\nWhat is two plus two?\n\n")
    # A large learning rate changes the tiny model's answers; max drop 0 tolerates no change at all.
    strict = ["--continual.guard_settings.general_prompts", str(prompts), "--continual.guard_settings.max_drop", "0",
              "--inner_loop.learning_rate", "0.05", "--continual.orders", "1"]
    out = tmp_path / "retry"
    assert _continual(tiny_model_dir, out, *strict, "--continual.guard", "both",
                      "--continual.guard_settings.action", "retry", "--continual.guard_settings.max_retries", "1") == 0
    records = _lines(out)
    guarded = [r for r in records if r["variant"] == "guard"]
    assert len(guarded) == 3 and len([r for r in records if r["variant"] == "no-guard"]) == 3
    retried = [r for r in guarded if len(r["attempts"]) == 2]
    assert retried, "a 0.05 learning rate should change at least one general answer"
    for r in retried:
        first, second = r["attempts"]
        assert not first["accepted"] and first["drop"] > 0 and first["probe_after"] < first["probe_before"]
        assert second["learning_rate"] == 0.05 * 0.3
    assert "Forgetting matrix, guard" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0  # both heatmaps side by side, and the guard's decisions
    assert "Questions before forgetting and after" in (out / "report" / "index.html").read_text()
    page = (out / "report" / "index.html").read_text()
    assert "Forgetting matrix" in page and "Guard decisions" in page and "refused" in page
    assert (out / "report" / "forgetting.png").stat().st_size > 1000

    out = tmp_path / "reject"
    assert _continual(tiny_model_dir, out, *strict, "--continual.guard", "on", "--continual.passages", "2") == 0
    records = _lines(out)
    refused = [r for r in records if not r["accepted"]]
    assert refused and all(len(r["attempts"]) == 1 for r in records)
    for r in refused:  # rolled back: nothing saved, and the earlier passages keep their scores
        assert not (out / "adapters" / "guard" / "order-0" / f"step-{r['step']}").exists()
        if r["step"]:
            assert r["scores"][:-1] == records[r["step"] - 1]["scores"]
    summary = json.loads((out / "summary.json").read_text())["matrices"]
    assert summary["guard"]["refused"] == len(refused)


def test_a_killed_continual_run_resumes_to_the_same_result(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    assert _continual(tiny_model_dir, out, *DETERMINISTIC) == 0
    full = _lines(out)
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:4]) + lines[4][:20])  # killed while writing step 2 of order 1
    assert main(["continual", "--resume", str(out), "--no-progress"]) == 0
    resumed = _lines(out)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert strip(resumed) == strip(full)


def test_bad_general_prompts_file_is_a_one_line_error(tiny_model_dir, tmp_path, capsys):
    assert _continual(tiny_model_dir, tmp_path / "x", "--continual.guard", "on", "--continual.guard_settings.general_prompts",
                      str(tmp_path / "missing.txt")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seal: error:") and "missing.txt" in err and "\n" not in err


@pytest.mark.slow
def test_a_continual_process_killed_mid_run_resumes_to_the_same_records(tiny_model_dir, tmp_path):
    """SIGKILL a real `seal continual` process after some steps, resume it, compare with a full run."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert _continual(tiny_model_dir, full, *DETERMINISTIC) == 0
    args = ["continual", "--model.name", str(tiny_model_dir), *FAST, *DETERMINISTIC, "--out", str(killed)]
    proc = subprocess.Popen([sys.executable, "-m", "seal_lm.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = killed / "results.jsonl"
    while proc.poll() is None and (not results.exists() or len(results.read_bytes().splitlines()) < 2):
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(["continual", "--resume", str(killed), "--no-progress"]) == 0
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert strip(_lines(killed)) == strip(_lines(full))
