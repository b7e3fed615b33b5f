"""The HTML report: built from run directories written here by hand, in the run-directory format."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from seal_lm.errors import SealError
from seal_lm.report_html import write_report
from seal_lm.stats import mean_with_interval

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = "Q: who? A: <script>alert('x')</script> & more"


def _question(score: float) -> dict:
    return {"question": "Who built it?", "answers": ["Ada"], "predictions": ["Ada" if score else "Bob"],
            "scores": {"exact": score, "f1": score, "contains": score}}


def _eval(rnd: int | None, pid: str, condition: str, scores: list[float], completion: str | None = None,
          old_style: bool = False) -> dict:
    record = {"kind": "eval", "round": rnd, "passage_id": pid, "title": f"Passage {pid}", "condition": condition,
              "questions": [_question(s) for s in scores],
              "accuracy": {g: sum(scores) / len(scores) for g in ("exact", "f1", "contains")}, "seconds": 2.0}
    if completion is not None:
        record["self_edits"] = [{"completion": completion, "status": "ok", "items": [completion]},
                                {"completion": "second edit, not shown", "status": "ok", "items": []}]
    if old_style:
        del record["kind"], record["round"]
    return record


def _write(run: Path, config: dict, records: list[dict], summary: dict | None = None) -> Path:
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if summary is not None:
        (run / "summary.json").write_text(json.dumps(summary))
    return run


# Rollouts, K=3 for 4 passages per round. Round 1: t0 and t2 beat their baseline (2 of 4); round 2: 3 of 4.
ROLLOUT_REWARDS = {
    1: {"t0": ([0.2, 0.6, 0.4], 0.4), "t1": ([0.0, 0.2, 0.2], 0.2), "t2": ([0.8, 1.0, 0.6], 0.6),
        "t3": ([0.0, 0.0, 0.0], 0.2)},
    2: {"t0": ([0.6, 0.8, 0.6], 0.4), "t1": ([0.4, 0.2, 0.2], 0.2), "t2": ([1.0, 1.0, 0.8], 0.6),
        "t3": ([0.2, 0.0, 0.2], 0.2)},
}


def _rollouts() -> list[dict]:
    records = []
    for rnd, passages in ROLLOUT_REWARDS.items():
        for cid, (rewards, baseline) in passages.items():
            gains = [r - baseline for r in rewards]
            # round 2's update keeps nothing (the sft record below has contexts_kept 0)
            kept = [max(range(3), key=rewards.__getitem__)] if rnd == 1 and max(gains) > 0 else []
            records.append({"kind": "rollout", "round": rnd, "context_id": cid, "title": f"Training {cid}",
                            "completions": [f"rollout r{rnd} {cid} #{k}" for k in range(3)], "rewards": rewards,
                            "baseline": baseline, "gains": gains, "kept": kept, "details": {"anything": [1, 2]},
                            "seconds": {"generation": 1.5, "rewards": 10.0}})
    return records


def _train_records() -> list[dict]:
    records = []
    for pid in ("p0", "p1", "p2"):
        records.append(_eval(0, pid, "base", [0.0, 0.0, 1.0, 0.0, 0.0]))
        records.append(_eval(0, pid, "passage", [1.0, 0.0, 1.0, 0.0, 0.0]))
        records.append(_eval(0, pid, "self-edit", [1.0, 0.0, 1.0, 1.0, 0.0],
                             completion=EVIL if pid == "p0" else f"round zero implication for {pid}"))
    records += _rollouts()
    records.append({"kind": "sft", "round": 1, "contexts": 4, "contexts_kept": 2, "examples": 2,
                    "epoch_losses": [1.234, 0.987], "nll_before": 1.5, "nll_after": 1.1,
                    "checkpoint": "policy-round-1", "seconds": 40.0})
    for pid in ("p0", "p1", "p2"):
        records.append(_eval(1, pid, "self-edit", [1.0, 1.0, 1.0, 0.0, 0.0], completion=f"round one edit {pid}"))
    records.append({"kind": "sft", "round": 2, "contexts": 4, "contexts_kept": 0, "examples": 0,
                    "epoch_losses": None, "nll_before": None, "nll_after": None, "checkpoint": None,
                    "seconds": 0.5})
    for pid in ("p0", "p1", "p2"):
        records.append(_eval(2, pid, "self-edit", [1.0, 1.0, 1.0, 1.0, 0.0], completion=f"final edit for {pid}"))
    return records


def _summary_row(label: str, scores: list[float], passages: int = 3) -> dict:
    est = mean_with_interval(scores).as_dict()
    return {"label": label, "passages": passages, "questions": len(scores), "seconds_per_passage": 2.0,
            "accuracy": {"exact": est, "f1": est, "contains": est}, "self_edit_status": {}}


def _train_summary() -> dict:
    def per(scores: list[float]) -> list[float]:  # the same five scores for each of the 3 passages
        return scores * 3

    return {
        "grader": "contains", "model": "SmolLM2-135M-Instruct",
        "conditions": {
            # deliberately out of order: the report sorts base, passage, self-edit, then rounds
            "round-2": _summary_row("SEAL round 2", per([1.0, 1.0, 1.0, 1.0, 0.0])),
            "base": _summary_row("base model", per([0.0, 0.0, 1.0, 0.0, 0.0])),
            "passage": _summary_row("train on passage", per([1.0, 0.0, 1.0, 0.0, 0.0])),
            "self-edit": _summary_row("passage + self-edit", per([1.0, 0.0, 1.0, 1.0, 0.0])),
            "round-1": _summary_row("SEAL round 1", per([1.0, 1.0, 1.0, 0.0, 0.0])),
        },
        "rounds": [
            {"round": 1, "passages": 4, "kept": 2, "mean_reward": 0.35, "mean_baseline": 0.35,
             "seconds": {"generation": 6.0, "rewards": 40.0, "policy_update": 40.0, "evaluation": 6.0}},
            {"round": 2, "passages": 4, "kept": 0, "mean_reward": 0.5, "mean_baseline": 0.35,
             "seconds": {"generation": 6.0, "rewards": 40.0, "policy_update": 0.5, "evaluation": 6.0}},
        ],
    }


TRAIN_CONFIG = {"domain": "knowledge", "eval": {"model": {"name": "SmolLM2-135M-Instruct"}, "grader": "contains"},
                "rest_em": {"rounds": 2, "samples_per_context": 3}}


@pytest.fixture(scope="module")
def train_report(tmp_path_factory) -> tuple[Path, str]:
    run = _write(tmp_path_factory.mktemp("runs") / "20250101-000000-train", TRAIN_CONFIG, _train_records(),
                 _train_summary())
    path = write_report(run)
    return path, path.read_text(encoding="utf-8")


def _section(page: str, heading_id: str) -> str:
    """The HTML from the section's <h2> up to the next <h2> (or the end)."""
    start = page.index(f'<h2 id="{heading_id}">')
    end = page.find("<h2 ", start + 1)
    return page[start:] if end < 0 else page[start:end]


def test_train_report_files_and_sections(train_report):
    path, page = train_report
    assert path == path.parent.parent / "report" / "index.html" and path.is_file()
    for heading in ("Accuracy per condition with 95% intervals", "Reward distribution per round",
                    "Passages whose best self-edit beat the passage-only baseline", "Gain per passage",
                    "Example self-edits before and after RL", "Policy updates", "Time per round"):
        assert heading in page
    assert "SmolLM2-135M-Instruct" in page and "20250101-000000-train" in page
    assert "<details>" in page and "&quot;rest_em&quot;" in page  # the config, escaped, in <details>
    # self-contained: no external scripts, stylesheets or images
    assert "<script" not in page and "<link" not in page and 'src="http' not in page
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4
    for name in ("accuracy", "rewards", "beat_baseline", "gains"):
        data = (path.parent / f"{name}.png").read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert base64.b64encode(data).decode() in images


def test_train_report_accuracy_table_in_order(train_report):
    _, page = train_report
    section = _section(page, "accuracy")
    labels = ["base model", "train on passage", "passage + self-edit", "SEAL round 1", "SEAL round 2"]
    positions = [section.index(f"<td>{label}</td>") for label in labels]
    assert positions == sorted(positions)
    # 15 questions per condition; round 2 is 12 of 15 correct
    assert str(mean_with_interval([1.0] * 12 + [0.0] * 3)) in section  # "80.0% [54.8, 93.0]"
    assert "80.0%" in section and '<td class="num">15</td>' in section


def test_train_report_rewards_beat_and_gains(train_report):
    _, page = train_report
    rewards = _section(page, "rewards")
    # round 1: 12 rewards, mean 0.333; mean baseline (0.4 + 0.2 + 0.6 + 0.2) / 4 = 0.350
    assert "0.333" in rewards and "0.350" in rewards
    beat = _section(page, "beat-baseline")
    assert "2 of 4" in beat and "3 of 4" in beat
    assert str(mean_with_interval([1.0, 0.0, 1.0, 0.0])) in beat
    gains = _section(page, "gains")
    # round 1 best gains: 0.2, 0.0, 0.4, -0.2 -> mean +0.100
    assert "+0.100" in gains


def test_train_report_examples_escape_model_output(train_report):
    _, page = train_report
    examples = _section(page, "examples")
    assert "Passage p0" in examples and "Passage p2" in examples
    assert "before RL (round 0)" in examples and "after RL (round 2)" in examples
    assert "final edit for p1" in examples and "round zero implication for p1" in examples
    assert "round one edit" not in examples and "second edit, not shown" not in examples
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in examples
    assert "<script>" not in page
    assert "accuracy (contains): 60.0%" in examples and "accuracy (contains): 80.0%" in examples


def test_train_report_policy_updates(train_report):
    _, page = train_report
    policy = _section(page, "policy")
    assert "2 of 4" in policy and "0 of 4" in policy
    assert "1.234, 0.987" in policy and "1.500 \u2192 1.100" in policy
    assert "policy-round-1" in policy
    assert "policy update" in policy and "92.0" in policy  # round 1 total seconds from summary.json


def test_eval_only_run_old_style_records(tmp_path):
    records = []
    for pid in ("a", "b"):
        records.append(_eval(None, pid, "base", [0.0, 1.0], old_style=True))
        records.append(_eval(None, pid, "self-edit", [1.0, 1.0], completion="edit", old_style=True))
    records[0].pop("seconds")  # optional keys may be missing
    records[1]["questions"][0]["scores"].pop("contains")
    config = {"model": {"name": "tiny-model"}, "grader": "contains", "conditions": ["base", "self-edit"]}
    run = _write(tmp_path / "eval-run", config, records)
    with (run / "results.jsonl").open("a") as f:
        f.write('{"kind": "eval", "cut sh')  # the last line of a killed run
    page = write_report(run).read_text(encoding="utf-8")
    assert "Accuracy per condition with 95% intervals" in page
    assert "tiny-model" in page and "base model" in page and "passage + self-edit" in page
    assert str(mean_with_interval([0.0, 1.0, 0.0, 1.0])) in page  # base, computed from the records
    assert "1 unreadable line" in page
    for absent in ("Reward distribution", "beat the passage-only baseline", "Gain per passage",
                   "Example self-edits", "Policy updates"):
        assert absent not in page
    assert page.count('<img src="data:image/png;base64,') == 1
    assert (run / "report" / "accuracy.png").read_bytes().startswith(PNG_SIGNATURE)
    assert not (run / "report" / "rewards.png").exists()


def test_rollout_fallback_examples_and_sparse_records(tmp_path):
    """No held-out eval pairs: examples come from rollouts; records missing optional keys don't crash."""
    records = [r for r in _rollouts()]
    records[0].pop("baseline")
    records[1].pop("seconds")
    records.append({"kind": "rollout", "round": 2})  # nearly empty
    records.append({"kind": "sft", "round": 1})
    run = _write(tmp_path / "partial", {"domain": "knowledge"}, records)
    page = write_report(run).read_text(encoding="utf-8")
    assert "Reward distribution per round" in page and "Accuracy per condition" not in page
    assert "1 of 3" in page  # round 1 without t0's baseline: only t2 of t1..t3 beats it
    examples = _section(page, "examples")
    assert "rollout r1 t1 #0" in examples and "rollout r2 t1 #0" in examples


@pytest.mark.parametrize("missing", ["results.jsonl", "config.json"])
def test_not_a_run_directory(tmp_path, missing):
    run = _write(tmp_path / "run", {"model": "m"}, [])
    (run / missing).unlink()
    with pytest.raises(SealError, match=re.escape(missing)) as info:
        write_report(run)
    assert str(run / missing) in str(info.value) and "\n" not in str(info.value)
