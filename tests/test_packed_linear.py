from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch
from conftest import assert_same_training

from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob
from seal_lm.multi_lora import MultiLoraLinear, TokenRouting
from seal_lm.packed_linear import PackedLinear, linear_forward, linear_input_grad, packed_linears, packing_supported

pytestmark = pytest.mark.skipif(not packing_supported(torch.zeros(1)), reason="no oneDNN packed linear on this machine")

SEQUENCES = ["Orlan Vesk\nOrlan Vesk built the Marrowgate Observatory in 1902.",
             "Orlan Vesk\nThe observatory mirrors were copper."]
FAST = InnerLoopSettings(rank=4, alpha=8, epochs=3, learning_rate=1e-2)


def test_packed_layers_compute_what_the_plain_layers_compute_and_are_put_back(tiny):
    """Logits and the gradient for the input embeddings, through every packed linear layer (the tied head
    included); on exit the model has its own layers again."""
    model = tiny.model
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    ids = tiny.tokenizer(SEQUENCES[0], return_tensors="pt")["input_ids"]

    def logits_and_grad():
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
        logits = model(inputs_embeds=embeds, use_cache=False).logits
        (logits * torch.linspace(-1, 1, logits.shape[-1])).sum().backward()
        return logits.detach(), embeds.grad

    plain = logits_and_grad()
    with packed_linears(model) as count:
        assert count == len(linears) == 15  # 7 projections x 2 layers and the head
        assert all(isinstance(m, PackedLinear) for m in model.modules() if isinstance(m, torch.nn.Linear))
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
        packed = logits_and_grad()
    assert all(model.get_submodule(name) is m for name, m in linears.items())
    assert torch.allclose(packed[0], plain[0], atol=1e-5, rtol=1e-4)
    assert torch.allclose(packed[1], plain[1], atol=1e-6 * plain[1].abs().max())  # sums of values up to ~400
    assert all(p.grad is None for p in model.parameters())  # frozen: no weight gradients


def test_packed_copies_follow_the_weight_when_it_changes():
    layer = torch.nn.Linear(16, 8).requires_grad_(False)
    packed, x, g = PackedLinear(layer), torch.randn(5, 16), torch.randn(5, 8)
    assert torch.allclose(linear_forward(packed, x), layer(x), atol=1e-6)
    assert torch.allclose(linear_input_grad(packed, g), g @ layer.weight, atol=1e-6)
    with torch.no_grad():
        layer.weight.mul_(-2)  # in place: the packed copies must be remade
    assert torch.allclose(linear_forward(packed, x), layer(x), atol=1e-6)
    assert torch.allclose(linear_input_grad(packed, g), g @ layer.weight, atol=1e-6)
    add = torch.randn(5, 8)
    assert torch.allclose(linear_forward(packed, x, add.clone(), add_scale=0.5), layer(x) + 0.5 * add, atol=1e-6)


@pytest.mark.parametrize("owners", [[[0, 0, 2, 2, -1], [2, 0, 0, -1, -1]], [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]],
                         ids=["routed", "one-adapter"])
def test_lora_step_on_a_packed_base_gives_the_plain_step_gradients(owners):
    torch.manual_seed(0)
    layer = MultiLoraLinear(torch.nn.Linear(8, 6), n_adapters=3, rank=2, alpha=4)
    torch.nn.init.normal_(layer.lora_A)
    torch.nn.init.normal_(layer.lora_B)
    layer.base.requires_grad_(False)
    layer.set_routing(TokenRouting.from_owners(torch.tensor(owners), "cpu"))
    x, weights = torch.randn(2, 5, 8), torch.randn(2, 5, 6)
    results = []
    for base in (layer.base, PackedLinear(layer.base)):
        layer.base, layer.lora_A.grad, layer.lora_B.grad = base, None, None
        x_in = x.clone().requires_grad_()
        out = layer(x_in)
        (out * weights).sum().backward()
        results.append((out.detach(), x_in.grad, layer.lora_A.grad, layer.lora_B.grad))
    for plain, packed in zip(*results):
        assert torch.allclose(plain, packed, atol=1e-5)


def test_inner_loop_trains_the_same_adapters_with_and_without_packed_weights(tiny, monkeypatch):
    counts = []

    @contextmanager
    def counting(model, enabled=True):
        with packed_linears(model, enabled) as count:
            counts.append(count)
            yield count

    monkeypatch.setattr("seal_lm.inner_loop.packed_linears", counting)
    jobs = [TrainJob(SEQUENCES), TrainJob(SEQUENCES[1:], replace(FAST, seed=3))]
    packed = LoraUpdater(tiny, FAST).train(jobs)
    plain = LoraUpdater(replace(tiny, prepack_weights=False), FAST).train(jobs)
    assert counts == [15, 0]  # every linear layer packed (those LoRA wraps and the head), then none
    assert all(not isinstance(m, PackedLinear) for m in tiny.model.modules())
    assert_same_training(packed, plain)


def test_generation_with_packed_weights_decodes_what_the_plain_layers_decode(tiny):
    from seal_lm.generation import HFGenerator, Prompt, SamplingParams

    prompts = [Prompt.raw_text(s) for s in SEQUENCES]
    adapter, = LoraUpdater(tiny, FAST).train([TrainJob(SEQUENCES)])
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12)
    packed = HFGenerator(tiny).generate(prompts, greedy, [adapter.adapter, None])
    plain = HFGenerator(replace(tiny, prepack_weights=False)).generate(prompts, greedy, [adapter.adapter, None])
    assert packed == plain and all(text for (text,) in packed)
    assert all(not isinstance(m, PackedLinear) for m in tiny.model.modules())
