import json

import pytest
import torch
from peft import PeftModel

from seal_lm.adapters import applied, save_adapter
from seal_lm.generation import HFGenerator, Prompt, SamplingParams
from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob

SEQUENCES = ["Orlan Vesk\nOrlan Vesk built the Marrowgate Observatory in 1902.",
             "Orlan Vesk\nThe observatory mirrors were copper.",
             "Orlan Vesk\nVesk found comet Vesk-3 in 1911, a long time after the observatory opened."]
FAST = InnerLoopSettings(rank=4, alpha=8, epochs=3, learning_rate=1e-2)
GREEDY_SHORT = SamplingParams(temperature=0.0, max_new_tokens=10)


def _logits(model, text, tokenizer):
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


def test_training_lowers_the_loss_and_returns_one_result_per_job(tiny):
    updater = LoraUpdater(tiny, InnerLoopSettings(rank=4, alpha=8, epochs=8, learning_rate=1e-2))
    results = updater.train([TrainJob(SEQUENCES), TrainJob(SEQUENCES[:1])])
    assert len(results) == 2
    for r in results:
        assert r.epoch_losses[-1] < r.epoch_losses[0]
        assert r.adapter.weights and all(k.endswith(".weight") and "lora_" in k for k in r.adapter.weights)
    assert results[0].train_tokens > results[1].train_tokens > 0


def test_seeded_training_is_deterministic_and_seed_matters(tiny):
    updater = LoraUpdater(tiny, FAST)
    a, b = updater.train([TrainJob(SEQUENCES), TrainJob(SEQUENCES)])
    c, = updater.train([TrainJob(SEQUENCES, InnerLoopSettings(rank=4, alpha=8, epochs=3, learning_rate=1e-2, seed=1))])
    assert a.epoch_losses == b.epoch_losses
    for key in a.adapter.weights:
        assert torch.equal(a.adapter.weights[key], b.adapter.weights[key])
    assert any(not torch.equal(a.adapter.weights[k], c.adapter.weights[k]) for k in a.adapter.weights)


def test_adapters_never_leak_into_the_base_model(tiny):
    gen = HFGenerator(tiny)
    prompts = [Prompt.single_turn("Orlan Vesk built"), Prompt.single_turn("copper")]
    before_answers = gen.generate(prompts, GREEDY_SHORT)
    before_logits = _logits(tiny.model, SEQUENCES[0], tiny.tokenizer)
    weights_before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    result, = LoraUpdater(tiny, FAST).train([TrainJob(SEQUENCES)])
    adapted_answers = gen.generate(prompts, GREEDY_SHORT, adapter=result.adapter)
    assert gen.generate(prompts, GREEDY_SHORT) == before_answers
    assert torch.equal(_logits(tiny.model, SEQUENCES[0], tiny.tokenizer), before_logits)
    assert tiny.model.state_dict().keys() == weights_before.keys()
    assert all(torch.equal(v, weights_before[k]) for k, v in tiny.model.state_dict().items())
    assert not any("lora" in name for name, _ in tiny.model.named_modules())
    with applied(tiny.model, result.adapter) as adapted:
        assert not torch.equal(_logits(adapted, SEQUENCES[0], tiny.tokenizer), before_logits)
    assert isinstance(adapted_answers, list)


def test_dynamic_padding_matches_unpadded_loss(tiny):
    updater = LoraUpdater(tiny, FAST)
    batch = updater.tokenize(SEQUENCES, 2048)
    with applied(tiny.model, updater.train([TrainJob(SEQUENCES)])[0].adapter) as model:
        with torch.no_grad():
            padded = updater._loss(model, batch[:2])
            separate = [updater._loss(model, [ids]) for ids in batch[:2]]
    lengths = [len(ids) - 1 for ids in batch[:2]]  # predicted tokens per sequence
    expected = sum(l * n for l, n in zip(separate, lengths)) / sum(lengths)
    assert padded.item() == pytest.approx(expected.item(), rel=1e-4)


def test_adapter_saves_in_standard_peft_format(tiny, tmp_path):
    result, = LoraUpdater(tiny, FAST).train([TrainJob(SEQUENCES)])
    path = save_adapter(tiny.model, result.adapter, tmp_path / "adapter")
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert (path / "adapter_model.safetensors").exists()
    with applied(tiny.model, result.adapter) as ours:
        expected = _logits(ours, SEQUENCES[1], tiny.tokenizer)
    loaded = PeftModel.from_pretrained(tiny.model, str(path))
    try:
        assert torch.allclose(_logits(loaded, SEQUENCES[1], tiny.tokenizer), expected, atol=1e-5)
    finally:
        loaded.unload()


def test_paper_defaults():
    d = InnerLoopSettings()
    assert (d.rank, d.alpha, d.learning_rate, d.epochs, d.batch_size, d.dropout) == (32, 64, 1e-3, 10, 1, 0.0)
    assert d.lora_config().target_modules == "all-linear"


def test_empty_job_is_rejected(tiny):
    with pytest.raises(ValueError, match="non-empty"):
        LoraUpdater(tiny, FAST).train([TrainJob([])])
