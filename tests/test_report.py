"""The HTML report, rendered from the records of real tiny runs (the tiny random model, real commands)."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
from pathlib import Path

import pytest

from seal_lm.cli import main
from seal_lm.domains.knowledge.data import load_demo_corpus
from seal_lm.errors import SealError
from seal_lm.report import write_report
from seal_lm.stats import Estimate, mean_with_interval

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = "Q: who? <script>alert('x')</script> & more"
FAST = ["--inner_loop.epochs", "1", "--inner_loop.rank", "4", "--inner_loop.alpha", "8",
        "--self_edit_sampling.max_new_tokens", "16", "--no-progress"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "results.jsonl").read_text().splitlines()]


def _section(page: str, heading_id: str) -> str:
    """The HTML from the section's <h2> up to the next <h2> (or the end)."""
    start = page.index(f'<h2 id="{heading_id}">')
    end = page.find("<h2 ", start + 1)
    return page[start:] if end < 0 else page[start:end]


@pytest.fixture(scope="module")
def train_run(tiny_model_dir, tmp_path_factory) -> tuple[Path, str]:
    """A real 2-round `seal train` whose passages have a title that is HTML."""
    root = tmp_path_factory.mktemp("report")
    data = [{"title": EVIL if i == 0 else p.title, "context": p.context,
             "questions": [{"question": q.question, "answer": q.answers[0]} for q in p.questions]}
            for i, p in enumerate(load_demo_corpus("validation")[:3])]
    (root / "data.json").write_text(json.dumps(data))
    out = root / "20250101-000000-train"
    assert main(["train", "--model.name", str(tiny_model_dir), "--data", str(root / "data.json"), "--limit", "2",
                 "--train_data", str(root / "data.json"), "--grader", "f1", "--rest_em.rounds", "2",
                 "--rest_em.contexts_per_round", "2", "--rest_em.samples_per_context", "2",
                 "--rest_em.reward_repeats", "1", "--out", str(out), *FAST]) == 0
    path = write_report(out)
    return out, path.read_text(encoding="utf-8")


def test_the_page_is_self_contained_with_every_plot_embedded(train_run):
    out, page = train_run
    for heading in ("Accuracy per condition", "Reward distribution per round", "whose best self-edit beat the baseline",
                    "Gain per training passage", "Example self-edits before and after RL", "Policy updates",
                    "Time per round"):
        assert heading in page
    assert "20250101-000000-train" in page and "&quot;rest_em&quot;" in page  # the config, escaped
    assert "<script" not in page and "<link" not in page and 'src="http' not in page
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 5
    for name in ("accuracy", "paired", "rewards", "beat_baseline", "gains"):
        data = (out / "report" / f"{name}.png").read_bytes()
        assert data.startswith(PNG_SIGNATURE) and base64.b64encode(data).decode() in images


def test_the_accuracy_table_is_the_summary_in_its_order(train_run):
    out, page = train_run
    summary = json.loads((out / "summary.json").read_text())
    section = _section(page, "accuracy")
    labels = [row["label"] for row in summary["conditions"].values()]
    assert labels == ["base model", "train on passage", "passage + self-edit", "SEAL round 1", "SEAL round 2"]
    positions = [section.index(f"<td>{label}</td>") for label in labels]
    assert positions == sorted(positions)
    for row in summary["conditions"].values():
        assert str(Estimate(**row["accuracy"]["f1"])) in section
    assert ">passages</th>" in section and ">questions</th>" in section


def test_paired_differences_are_reported_with_the_headline(train_run):
    out, page = train_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["headline"] == "round-2 - passage"
    section = _section(page, "paired")
    for d in summary["paired"].values():
        assert d["label"] in section and f"{100 * d['mean']:+.1f}" in section
    assert "Headline: SEAL round 2 - train on passage is" in section


def test_rewards_beat_and_gains_follow_the_rollout_records(train_run):
    out, page = train_run
    rollouts = [r for r in _lines(out) if r["kind"] == "rollout"]
    for round_ in (1, 2):
        mine = [r for r in rollouts if r["round"] == round_]
        rewards = [x for r in mine for x in r["rewards"]]
        assert f"{sum(rewards) / len(rewards):.3f}" in _section(page, "rewards")
        beat = [float(max(r["rewards"]) > r["baseline"]) for r in mine]
        assert f"{int(sum(beat))} of {len(beat)}" in _section(page, "beat-baseline")
        assert str(mean_with_interval(beat)) in _section(page, "beat-baseline")
        best = sum(max(r["gains"]) for r in mine) / len(mine)
        assert f"{best:+.3f}" in _section(page, "gains")


def test_policy_updates_show_each_rounds_checkpoint(train_run):
    out, page = train_run
    section = _section(page, "policy")
    for update in (r for r in _lines(out) if r["kind"] == "sft"):
        assert f"{update['contexts_kept']} of {update['contexts']}" in section
        if update["checkpoint"]:
            assert update["checkpoint"] in section and (out / update["checkpoint"] / "model.safetensors").is_file()


def test_model_output_and_titles_are_escaped(train_run):
    out, page = train_run
    examples = _section(page, "examples")
    assert "before RL (round 0)" in examples and "after RL (round 2)" in examples
    assert "Q: who? &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in examples
    first = next(r for r in _lines(out) if r["condition"] == "self-edit" and r["round"] == 0)
    completion = first["self_edits"][0]["completion"]
    assert (completion.strip() == "" or
            completion.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")[:20] in examples)


def test_every_passage_shows_its_self_edits_sequences_and_each_conditions_answers(train_run):
    out, page = train_run
    section = _section(page, "passages")
    records = [r for r in _lines(out) if r["kind"] == "eval"]
    for r in records:
        for q in r["questions"]:
            assert html.escape(q["predictions"][0], quote=True) in section
        for training in r.get("training", []):
            assert html.escape(training["sequences"][0], quote=True) in section
    assert section.count("<details><summary><b>") == len({r["context_id"] for r in records})
    assert "SEAL round 2" in section and "(right)" in section or "(wrong)" in section


def test_a_run_cut_by_a_kill_is_reported_from_what_it_has(train_run, tmp_path):
    out, _ = train_run
    copy = tmp_path / "cut"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report", "policy-*"))
    (copy / "summary.json").unlink()
    with (copy / "results.jsonl").open("a") as f:
        f.write('{"kind": "eval", "cut sh')  # the last line of a killed run
    page = write_report(copy).read_text(encoding="utf-8")
    assert "no summary.json yet" in page and "Reward distribution per round" in page
    assert "Accuracy per condition" not in page  # never recomputed by the report
    assert (copy / "results.jsonl").read_text().endswith("cut sh")  # the report never modifies a run


@pytest.mark.parametrize("missing", ["results.jsonl", "config.json"])
def test_not_a_run_directory(train_run, tmp_path, missing):
    out, _ = train_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report", "policy-*"))
    (copy / missing).unlink()
    with pytest.raises(SealError, match=re.escape(missing)) as info:
        write_report(copy)
    assert str(copy / missing) in str(info.value) and "\n" not in str(info.value)


def _render_in_chromium(page: Path, script: str) -> tuple[object, list[dict]]:
    """`script`'s value on `page` opened in headless Chromium, and the console's errors. Debian's chromium and
    chromium-driver, through selenium; the test is skipped where they are not installed."""
    import shutil

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("headless check needs Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="headless check needs selenium")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(page.resolve().as_uri())
        value = browser.execute_script(script)
        errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
    finally:
        browser.quit()
    return value, errors


IMAGES = "return Array.from(document.images).map(i => [i.complete && i.naturalWidth > 0, i.alt])"


def test_the_page_renders_in_headless_chromium_without_errors_and_every_image_loads(train_run):
    out, _ = train_run
    images, errors = _render_in_chromium(out / "report" / "index.html", IMAGES)
    assert len(images) == 5 and all(ok for ok, _ in images), images
    assert errors == []


def test_an_arc_report_shows_each_views_answer_and_the_vote_in_headless_chromium(tiny_model_dir, tmp_path):
    out = tmp_path / "arc"
    assert main(["eval", "--domain", "arc", "--preset", "cpu-paper", "--model.name", str(tiny_model_dir),
                 "--procedural_count", "1", "--max_examples", "4", "--self_edit_sampling.max_new_tokens", "16",
                 "--self_edit_attempts", "1", "--out", str(out), "--no-progress"]) == 0
    write_report(out)
    script = ("return [Array.from(document.images).map(i => i.complete && i.naturalWidth > 0), "
              "document.querySelectorAll('details').length, document.querySelectorAll('table').length, "
              "document.body.textContent]")
    (images, details, tables, text), errors = _render_in_chromium(out / "report" / "index.html", script)
    assert errors == [] and all(images)
    assert details >= 3 and tables > 3  # a views-and-vote block per condition, each grid a table
    assert "attempt 1" in text and "attempt 2" in text
