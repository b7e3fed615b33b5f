"""The LLM judge: verdict parsing, batching, the verdict cache, re-asks, agreement with the string
graders, a local and an endpoint judge on the tiny model, and `seal eval` with a judge end to end."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from rich.console import Console

from seal_lm.errors import SealError
from seal_lm.generation import HFGenerator, Prompt, SamplingParams
from seal_lm.grading import GRADERS
from seal_lm.inner_loop import InnerLoopSettings
from seal_lm.judge import (
    CACHE_FILE,
    JudgeSettings,
    LLMJudge,
    agreement,
    build_judge,
    judge_prompt,
    parse_verdict,
)
from seal_lm.models import ModelSettings
from seal_lm.domains.knowledge import KnowledgeConfig, KnowledgeDomain
from seal_lm.recipes.eval import run_eval
from seal_lm.report.terminal import print_eval_table
from seal_lm.report import write_report
from seal_lm.config import as_dict, parse_values
from seal_lm.records import record_types
from seal_lm.runs import RunDir

CPU = ModelSettings(dtype="float32", device="cpu")
ITEMS = [("Who built the observatory?", ["Orlan Vesk"], "Orlan Vesk built it."),
         ("In which year?", ["1902", "nineteen oh two"], "1850"),
         ("Made of what?", ["copper"], "copper")]


@dataclass
class ScriptedJudge:
    """A test double for the judge's text only: `reply(student_answer, attempt)`; records each call."""

    reply: Callable[[str, int], str]
    calls: list[tuple[list[Prompt], SamplingParams]] = field(default_factory=list)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams, adapters=None) -> list[list[str]]:
        attempt = len(self.calls)
        self.calls.append((list(prompts), params))
        return [[self.reply(re.search(r"Student answer: (.*)\n", p.text).group(1), attempt)] for p in prompts]


def fair(student: str, attempt: int) -> str:
    return "Yes." if student in ("Orlan Vesk built it.", "copper") else "No, it is not."


@pytest.mark.parametrize(("text", "verdict"), [
    ("Yes.", 1.0), ("no", 0.0), (" NO, the year is wrong", 0.0), ("The answer is yes", 1.0),
    ("Not quite. No.", 0.0), ("I would say no, not yes", 0.0), ("Yesterday it was", None), ("Nope", None), ("", None),
])
def test_the_first_yes_or_no_word_is_the_verdict(text, verdict):
    assert parse_verdict(text) == verdict


def test_the_prompt_holds_question_gold_answers_and_the_student_answer():
    prompt = judge_prompt(*ITEMS[1])
    text = prompt.messages[0][1]
    assert "Question: In which year?" in text and "1902 | nineteen oh two" in text and "Student answer: 1850" in text
    assert text.endswith("Is the student answer correct? Answer yes or no.")
    assert prompt.text == text + "\nAnswer:"  # base models get a slot to answer in
    assert "Gold answer: copper\n" in judge_prompt(*ITEMS[2]).text


def test_verdicts_are_batched_cached_and_read_back_by_a_new_judge(tmp_path):
    cache = tmp_path / CACHE_FILE
    scripted = ScriptedJudge(fair)
    judge = LLMJudge(scripted, "judge-a", cache)
    assert judge.grade([*ITEMS, ITEMS[0]]) == [1.0, 0.0, 1.0, 1.0]
    assert len(scripted.calls) == 1 and len(scripted.calls[0][0]) == 3  # one call, the repeated item judged once
    assert scripted.calls[0][1].temperature == 0.0 and scripted.calls[0][1].max_new_tokens == 16
    assert dataclasses.asdict(judge.stats) == {"calls": 3, "cache_hits": 0, "unparsed": 0}
    assert judge.grade(ITEMS[::-1]) == [1.0, 0.0, 1.0]
    assert len(scripted.calls) == 1 and judge.stats.cache_hits == 3

    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [(e["verdict"], e["parsed"], e["text"]) for e in lines] == [
        (1.0, True, "Yes."), (0.0, True, "No, it is not."), (1.0, True, "Yes.")]
    with cache.open("a") as f:
        f.write('{"key": "cut short by a kill')
    again = ScriptedJudge(fair)
    resumed = LLMJudge(again, "judge-a", cache)
    assert resumed.grade(ITEMS) == [1.0, 0.0, 1.0] and again.calls == [] and resumed.stats.cache_hits == 3
    other = ScriptedJudge(fair)
    assert LLMJudge(other, "judge-b", cache).grade(ITEMS[:1]) == [1.0]  # another judge's verdicts are not reused
    assert len(other.calls) == 1
    assert all(json.loads(line) for line in cache.read_text().splitlines())  # the broken line was cut, not glued to


def test_unparseable_verdicts_are_asked_again_by_sampling_then_count_as_no(tmp_path):
    replies = {"Orlan Vesk built it.": ["maybe", "I think yes"], "1850": ["hmm", "?", "unclear"], "copper": ["yes"]}
    scripted = ScriptedJudge(lambda student, attempt: replies[student][attempt])
    judge = LLMJudge(scripted, "judge", tmp_path / CACHE_FILE, retries=2)
    assert judge.grade(ITEMS) == [1.0, 0.0, 1.0]
    assert [len(prompts) for prompts, _ in scripted.calls] == [3, 2, 1]
    assert [(p.temperature, p.seed) for _, p in scripted.calls] == [(0.0, None), (1.0, 1), (1.0, 2)]
    assert dataclasses.asdict(judge.stats) == {"calls": 6, "cache_hits": 0, "unparsed": 1}
    unparsed, = [json.loads(line) for line in (tmp_path / CACHE_FILE).read_text().splitlines()
                 if not json.loads(line)["parsed"]]
    assert unparsed["verdict"] == 0.0 and unparsed["text"] == "unclear"

    never = ScriptedJudge(lambda student, attempt: "hmm")
    assert LLMJudge(never, "judge", None, retries=0).grade(ITEMS) == [0.0, 0.0, 0.0] and len(never.calls) == 1


def _question(judge: float, exact: float, f1: float, contains: float) -> dict:
    return {"question": "q", "answers": ["a"], "predictions": ["p"],
            "scores": {"exact": exact, "f1": f1, "contains": contains, "judge": judge}}


def test_agreement_and_kappa_on_a_hand_made_example():
    judge = [0.5, 1, 1, 1, 0, 0, 0, 0, 1, 0]  # 0.5: one of two predictions judged right, counts as yes
    contains = [1, 1, 1, 0, 0, 0, 0, 1, 1, 0]  # disagrees on questions 4 and 8
    f1 = [0.5, 0.49, 1, 1, 0, 0, 0, 0, 1, 0.2]  # binarised at 0.5: disagrees on question 2 only
    questions = [_question(j, 0.0, f, c) for j, f, c in zip(judge, f1, contains)]
    unjudged = {"scores": {"exact": 1.0, "f1": 1.0, "contains": 1.0}}
    result = agreement([*questions[:4], unjudged, *questions[4:]])
    assert set(result) == set(GRADERS)
    # contains: observed 8/10; judge and grader say yes half the time, chance 0.5: kappa (0.8 - 0.5) / 0.5
    assert result["contains"] == pytest.approx({"agreement": 0.8, "kappa": 0.6, "n": 10})
    # f1: observed 9/10; yes rates 0.5 and 0.4, chance 0.5 * 0.4 + 0.5 * 0.6 = 0.5
    assert result["f1"] == pytest.approx({"agreement": 0.9, "kappa": 0.8, "n": 10})
    # exact says no throughout: agreement is the judge's no rate, no better than chance
    assert result["exact"] == pytest.approx({"agreement": 0.5, "kappa": 0.0, "n": 10})
    both_yes = agreement([_question(1, 1, 1, 1)])
    assert both_yes["exact"] == {"agreement": 1.0, "kappa": None, "n": 1}  # chance explains it all
    assert agreement([unjudged])["f1"] == {"agreement": None, "kappa": None, "n": 0}


def _greedy_texts(tiny, items, max_new_tokens: int) -> list[str]:
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens)
    return [outs[0] for outs in HFGenerator(tiny).generate([judge_prompt(*item) for item in items], params)]


def _cache_texts(path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def test_a_local_model_judges_through_its_chat_template(tiny, tiny_model_dir, tmp_path):
    settings = JudgeSettings(model=str(tiny_model_dir), max_new_tokens=6, retries=0)
    judge = build_judge(settings, CPU, tmp_path / CACHE_FILE)
    verdicts = judge.grade(ITEMS)
    texts = _greedy_texts(tiny, ITEMS, 6)
    assert _cache_texts(tmp_path / CACHE_FILE) == texts  # what the model said, greedy, with its chat template
    assert verdicts == [parse_verdict(t) or 0.0 for t in texts]
    assert judge.stats.calls == 3 and judge.stats.unparsed == sum(parse_verdict(t) is None for t in texts)
    fresh = build_judge(settings, CPU, tmp_path / CACHE_FILE)
    assert fresh.grade(ITEMS) == verdicts and fresh.stats.calls == 0


def test_an_endpoint_judge_reads_its_key_from_the_environment(tiny, tmp_path, monkeypatch):
    from seal_lm.serve import create_app, running

    with running(create_app(tiny, "tiny", api_key="sekret")) as url:
        settings = JudgeSettings(url=url, endpoint_model="tiny", api_key_env="SEAL_TEST_JUDGE_KEY", max_new_tokens=6,
                                 retries=0)
        monkeypatch.delenv("SEAL_TEST_JUDGE_KEY", raising=False)
        with pytest.raises(SealError, match="401"):
            build_judge(settings, CPU, None).grade(ITEMS[:1])
        monkeypatch.setenv("SEAL_TEST_JUDGE_KEY", "sekret")
        judge = build_judge(settings, CPU, tmp_path / CACHE_FILE)
        try:
            verdicts = judge.grade(ITEMS)
        finally:
            judge.close()
    texts = _greedy_texts(tiny, ITEMS, 6)
    assert _cache_texts(tmp_path / CACHE_FILE) == texts and verdicts == [parse_verdict(t) or 0.0 for t in texts]
    assert settings.name == f"tiny@{url}" and "sekret" not in json.dumps(dataclasses.asdict(settings))


@pytest.mark.parametrize(("settings", "words"), [
    (JudgeSettings(model="m", url="http://x"), "either a local model"),
    (JudgeSettings(url="http://x"), "judge.endpoint_model"),
    (JudgeSettings(model="m", retries=-1), "retries"),
])
def test_judge_settings_are_validated(settings, words):
    with pytest.raises(SealError, match=words):
        KnowledgeConfig(judge=settings).validate()


def test_grader_judge_needs_a_judge():
    with pytest.raises(SealError, match="grader: judge needs a judge") as error:
        KnowledgeConfig(grader="judge").validate()
    assert "\n" not in str(error.value)
    KnowledgeConfig(grader="judge", judge=JudgeSettings(model="m")).validate()
    with pytest.raises(SealError, match="grader: unknown value 'llm'"):
        KnowledgeConfig(grader="llm", judge=JudgeSettings(model="m")).validate()


@pytest.mark.parametrize("judge", [JudgeSettings(), JudgeSettings(url="http://127.0.0.1:8000/v1", endpoint_model="gpt-4.1")])
def test_config_json_rebuilds_a_config_with_or_without_a_judge(judge):
    config = KnowledgeConfig(judge=judge, conditions=("base",))
    assert parse_values(KnowledgeConfig, as_dict(config), "config.json") == config
    assert config.judge.enabled == (judge.url is not None)


def test_a_run_directory_refuses_another_judge(tmp_path):
    RunDir(tmp_path / "judged", as_dict(KnowledgeConfig(judge=JudgeSettings(model="a"))), record_types())
    with pytest.raises(SealError, match=r"fields: judge.model\)"):
        RunDir(tmp_path / "judged", as_dict(KnowledgeConfig(judge=JudgeSettings(model="b"))), record_types())


def _stable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "training")} for r in records]


def test_eval_with_a_local_judge_scores_every_answer_and_resumes_from_the_cache(tiny_model_dir, passages_file,
                                                                                tmp_path, caplog):
    model = dataclasses.replace(CPU, name=str(tiny_model_dir))
    config = KnowledgeConfig(
        data=str(passages_file), model=model, grader="judge",
        self_edit_sampling=SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=16),
        inner_loop=InnerLoopSettings(rank=4, alpha=8, epochs=1),
        judge=JudgeSettings(model=str(tiny_model_dir), max_new_tokens=4, retries=1),
    )
    out = tmp_path / "run"
    summary = run_eval(KnowledgeDomain(config), out, show_progress=False)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 6
    for record in records:
        assert set(record["accuracy"]) == {*GRADERS, "judge"}
        for q in record["questions"]:
            assert q["scores"]["judge"] in (0.0, 1.0)
        judged = [q["scores"]["judge"] for q in record["questions"]]
        assert record["accuracy"]["judge"] == sum(judged) / len(judged)
    cache = (out / CACHE_FILE).read_text()
    answers = {(q["question"], q["predictions"][0]) for r in records for q in r["questions"]}
    assert len(cache.splitlines()) == len(answers)  # every distinct answer judged once
    assert summary["conditions"]["base"]["accuracy"]["judge"]["n"] == 10
    assert {g: a["n"] for g, a in summary["judge_agreement"].items()} == {g: 30 for g in GRADERS}
    stored = json.loads((out / "config.json").read_text())
    assert stored.pop("command") == "eval" and stored.pop("domain") == "knowledge"
    assert parse_values(KnowledgeConfig, stored, "config.json") == config

    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:5]))  # as if killed before the last record
    caplog.clear()
    caplog.set_level(logging.INFO, logger="seal_lm.domains.knowledge.evaluation")
    resumed = run_eval(KnowledgeDomain(parse_values(KnowledgeConfig, stored, "config.json")), out, show_progress=False)
    redone = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert _stable(redone) == _stable(records)
    assert (out / CACHE_FILE).read_text() == cache  # nothing judged again...
    message, = [r.getMessage() for r in caplog.records if r.getMessage().startswith("judge ")]
    # ...the redone unit's 2 passages x 5 questions all come from the cache
    assert message.endswith(": 0 prompts sent, 10 answers from the cache, 0 unparsed (counted as no)")
    assert resumed["judge_agreement"] == summary["judge_agreement"]

    console = Console(file=io.StringIO(), width=200)
    print_eval_table(resumed, console)
    printed = console.file.getvalue()
    assert "grader: judge" in printed and "judge agreement with the string graders over 30 questions" in printed
    html = write_report(out).read_text()
    assert "Judge agreement" in html and "<th>grader</th>" in html
