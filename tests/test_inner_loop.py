import json
from contextlib import nullcontext
from dataclasses import replace

import pytest
import torch
from conftest import assert_same_training
from peft import PeftModel
from torch.utils._python_dispatch import TorchDispatchMode

from seal_lm.adapters import load_adapter, save_adapter, using
from seal_lm.generation import HFGenerator, Prompt, SamplingParams
from seal_lm.inner_loop import (Example, InnerLoopSettings, LoraUpdater, StepGraphs, TrainJob, _clip_per_adapter,
                                _clip_plan, pack_sequences)
from seal_lm.linear_cross_entropy import linear_cross_entropy, plain_output_head
from seal_lm.models import ModelSettings, load_model
from seal_lm.multi_lora import MultiLoraLinear, TokenRouting, injected
from seal_lm.packed_attention import per_sequence_attention, sequence_bounds

SEQUENCES = ["Orlan Vesk\nOrlan Vesk built the Marrowgate Observatory in 1902.",
             "Orlan Vesk\nThe observatory mirrors were copper.",
             "Orlan Vesk\nVesk found comet Vesk-3 in 1911, a long time after the observatory opened."]
FAST = InnerLoopSettings(rank=4, alpha=8, epochs=3, learning_rate=1e-2)
GREEDY_SHORT = SamplingParams(temperature=0.0, max_new_tokens=10)


def _logits(model, text, tokenizer):
    ids = tokenizer(text, return_tensors="pt").to(model.device)
    with torch.no_grad():
        return model(**ids).logits


def test_training_lowers_the_loss_and_returns_one_result_per_job(tiny):
    updater = LoraUpdater(tiny, InnerLoopSettings(rank=4, alpha=8, epochs=8, learning_rate=1e-2))
    results = updater.train([TrainJob(SEQUENCES), TrainJob(SEQUENCES[:1])])
    assert len(results) == 2
    for r in results:
        assert r.epoch_losses[-1] < r.epoch_losses[0]
        assert len(r.adapter.weights) == 14  # 7 projections x 2 layers
        a, b = r.adapter.weights["model.layers.0.self_attn.q_proj"]
        assert a.shape == (4, 64) and b.shape == (64, 4) and b.abs().sum() > 0
    assert results[0].train_tokens > results[1].train_tokens > 0


def test_seeded_training_is_deterministic_and_seed_matters(tiny):
    updater = LoraUpdater(tiny, FAST)
    a, = updater.train([TrainJob(SEQUENCES)])
    b, = updater.train([TrainJob(SEQUENCES)])
    c, = updater.train([TrainJob(SEQUENCES, replace(FAST, seed=1))])
    assert a.epoch_losses == b.epoch_losses
    for key in a.adapter.weights:
        assert all(torch.equal(x, y) for x, y in zip(a.adapter.weights[key], b.adapter.weights[key]))
    assert any(not torch.equal(a.adapter.weights[k][1], c.adapter.weights[k][1]) for k in a.adapter.weights)


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_jobs_trained_together_match_each_job_trained_alone(tiny, cuda_graph):
    """Different sequences, numbers of steps, learning rates and batch sizes in one multi-adapter pass (with
    cuda_graph: steps captured and replayed on CUDA)."""
    fast = replace(FAST, cuda_graph=cuda_graph)
    jobs = [
        TrainJob(SEQUENCES, fast),
        TrainJob(SEQUENCES[:1], replace(fast, learning_rate=3e-3, seed=5)),
        TrainJob([SEQUENCES[2], SEQUENCES[0], "Orlan Vesk\nshort."], replace(fast, epochs=4, batch_size=2, seed=9)),
    ]
    updater = LoraUpdater(tiny, fast, max_row_tokens=64)  # small rows: sequences of several jobs share rows
    together = updater.train(jobs)
    for job, joint in zip(jobs, together):
        alone, = updater.train([job])
        assert joint.epoch_losses == pytest.approx(alone.epoch_losses, rel=1e-5)
        for name, (a, b) in alone.adapter.weights.items():
            ja, jb = joint.adapter.weights[name]
            assert torch.allclose(ja, a, atol=1e-5) and torch.allclose(jb, b, atol=1e-5), name


def test_token_routing_matches_each_adapter_applied_alone():
    """Adapters interleaved and split across rows, one absent, row padding: every token gets its own
    adapter's delta (padding none), and each adapter's gradient is its own tokens' only."""
    torch.manual_seed(0)
    layer = MultiLoraLinear(torch.nn.Linear(8, 6), n_adapters=3, rank=2, alpha=4)
    torch.nn.init.normal_(layer.lora_A)
    torch.nn.init.normal_(layer.lora_B)
    layer.base.requires_grad_(False)
    owners = torch.tensor([[0, 0, 2, 2, -1], [2, 0, 0, -1, -1]])
    x = torch.randn(2, 5, 8)
    layer.set_routing(TokenRouting.from_owners(owners, "cpu"))
    weights = torch.randn(2, 5, 6)
    (layer(x) * weights).sum().backward()
    for k in (0, 2):
        a, b = layer.lora_A[k].detach().requires_grad_(), layer.lora_B[k].detach().requires_grad_()
        mask = (owners == k)[..., None]
        expected = layer.base(x) + torch.where(mask, 2.0 * (x @ a.T) @ b.T, 0.0)
        got = layer(x)
        assert torch.allclose(got[mask.expand_as(got)], expected[mask.expand_as(got)], atol=1e-6)
        (torch.where(mask, expected, 0.0) * weights).sum().backward()
        assert torch.allclose(layer.lora_A.grad[k], a.grad, atol=1e-5)
        assert torch.allclose(layer.lora_B.grad[k], b.grad, atol=1e-5)
    assert not layer.lora_A.grad[1].any() and not layer.lora_B.grad[1].any()
    padding = (owners == -1)[..., None].expand(2, 5, 6)
    assert torch.equal(layer(x)[padding], layer.base(x)[padding])


@pytest.mark.parametrize("owners", [[[0, 0, 2, 2, -1], [2, 0, 0, -1, -1]], [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]],
                         ids=["routed", "one-adapter"])
@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_training_step_gives_autograd_gradients(owners, dropout):
    """The layer's hand-written backward (input gradients accumulated in place) against autograd through
    the plain formula, with the same dropout mask: outputs, input gradients and every adapter's gradients."""
    torch.manual_seed(0)
    layer = MultiLoraLinear(torch.nn.Linear(8, 6), n_adapters=3, rank=2, alpha=4, dropout=dropout)
    torch.nn.init.normal_(layer.lora_A)
    torch.nn.init.normal_(layer.lora_B)
    layer.base.requires_grad_(False)
    owners = torch.tensor(owners)
    x, weights = torch.randn(2, 5, 8, requires_grad=True), torch.randn(2, 5, 6)
    layer.set_routing(TokenRouting.from_owners(owners, "cpu"))
    torch.manual_seed(1)
    (layer(x) * weights).sum().backward()
    a, b = layer.lora_A.detach().clone().requires_grad_(), layer.lora_B.detach().clone().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    torch.manual_seed(1)
    dropped, ids = layer.dropout(x_ref), owners.clamp(min=0)
    delta = torch.einsum("bti,btri,btor->bto", dropped, a[ids], b[ids]) * 2.0
    expected = layer.base(x_ref) + torch.where((owners >= 0)[..., None], delta, 0.0)
    (expected * weights).sum().backward()
    torch.manual_seed(1)
    assert torch.allclose(layer(x), expected, atol=1e-5)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)
    assert torch.allclose(layer.lora_A.grad, a.grad, atol=1e-5)
    assert torch.allclose(layer.lora_B.grad, b.grad, atol=1e-5)


class _KernelOps(TorchDispatchMode):
    """Counts the aten ops that can launch a kernel (views only change metadata)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))


def test_ops_of_a_training_step_do_not_grow_with_the_number_of_adapters(tiny):
    """A GPU step is bound by kernel launches: 6 adapters must launch what 2 do, forward and backward,
    and the optimizer adds a few per adapter (one fused update of its whole row), none per layer."""
    updater = LoraUpdater(tiny, FAST, max_row_tokens=48)  # several rows, with row padding
    tokens = updater.tokenize(SEQUENCES, 2048)

    def step_ops(k: int, optimize: bool) -> int:
        batch = [(i, tokens[i % len(tokens)]) for i in range(k)]
        with injected(tiny.model, k, FAST.rank, FAST.alpha) as lora:
            optimizer = torch.optim.AdamW([{"params": [row]} for row in lora.optimizer_rows()], fused=True)
            tiny.model.train()
            try:
                packed, weights, _ = updater.step_batch(batch, k, None)
                lora.route(TokenRouting.from_owners(packed.owners, tiny.device))
                with _KernelOps() as ops:  # the GPU path: no per-sequence attention
                    updater.loss_and_backward(packed.to(tiny.device), weights.to(tiny.device), {}, k)
                    if optimize:
                        optimizer.step()
                        lora.gradients.zero_()
            finally:
                tiny.model.eval()
        return ops.count

    assert step_ops(2, optimize=False) == step_ops(6, optimize=False) > 0
    per_adapter = (step_ops(6, optimize=True) - step_ops(2, optimize=True)) / 4
    assert 0 < per_adapter < 7 * 2 * 2  # far fewer than one op per layer's A and B (7 x 2 layers x 2)


def test_packed_rows_compute_the_same_logits_as_separate_sequences(tiny):
    updater = LoraUpdater(tiny, FAST)
    ids = updater.tokenize(SEQUENCES, 2048)
    packed = pack_sequences(list(enumerate(ids)), max_row_tokens=60, pad_id=tiny.tokenizer.pad_token_id).to(tiny.device)
    assert packed.input_ids.shape[0] >= 2  # more than one row, so row padding is exercised too
    with torch.no_grad():
        logits = tiny.model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False).logits
        for k, seq in enumerate(t.ids for t in ids):
            alone = tiny.model(input_ids=torch.tensor([seq], device=tiny.device)).logits[0]
            where = (packed.owners == k).nonzero()
            got = logits[where[:, 0], where[:, 1]]
            assert torch.allclose(got, alone, atol=1e-5)
            labels = packed.labels[where[:, 0], where[:, 1]]
            assert labels.tolist() == seq[1:] + [-100]
    assert ((packed.owners == -1) == (packed.labels == -100) & (packed.owners == -1)).all()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # attention in float32 either way
def test_per_sequence_attention_computes_the_masked_logits(tiny_model_dir, test_device, dtype):
    """On the CPU, training attends sequence by sequence instead of through a block mask over the row."""
    tiny = load_model(ModelSettings(name=str(tiny_model_dir), device=test_device, dtype=dtype))
    tolerance = 1e-5 if dtype == "float32" else 3e-2
    updater = LoraUpdater(tiny, FAST)
    ids = updater.tokenize(SEQUENCES, 2048)
    packed = pack_sequences(list(enumerate(ids)), max_row_tokens=60, pad_id=tiny.tokenizer.pad_token_id)
    assert packed.input_ids.shape[0] >= 2
    inputs = {"input_ids": packed.input_ids.to(tiny.device), "position_ids": packed.position_ids.to(tiny.device)}
    with torch.no_grad():
        masked = tiny.model(**inputs, use_cache=False).logits
        with per_sequence_attention(tiny.model) as active:
            per_sequence = tiny.model(**inputs, cu_seq_lens_q=sequence_bounds(packed.position_ids), use_cache=False).logits
            plain = tiny.model(**inputs, use_cache=False).logits  # without boundaries: sdpa as before
    assert active == (tiny.device.type == "cpu")
    assert tiny.model.config._attn_implementation == "sdpa"  # restored
    assert torch.allclose(per_sequence, masked, atol=tolerance) and torch.equal(plain, masked)
    assert sequence_bounds(torch.tensor([[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]])) == [0, 3, 5, 7, 10]


def test_linear_cross_entropy_matches_logits_and_cross_entropy(tiny):
    head = plain_output_head(tiny.model)
    assert head is not None  # Llama: logits are head(hidden)
    torch.manual_seed(0)
    hidden = torch.randn(23, head.in_features, device=tiny.device, requires_grad=True)
    labels = torch.randint(0, head.out_features, (23,), device=tiny.device)
    labels[[3, 10, 22]] = -100
    weights = torch.rand(23, device=tiny.device)
    total, losses = linear_cross_entropy(hidden, head, labels, weights, chunk_rows=5)  # 5 chunks, the last short
    total.backward()
    expected_hidden = hidden.detach().clone().requires_grad_(True)
    expected = torch.nn.functional.cross_entropy(head(expected_hidden), labels, ignore_index=-100, reduction="none")
    (expected * weights).sum().backward()
    assert torch.allclose(losses, expected.detach(), atol=1e-5) and losses[[3, 10, 22]].eq(0).all()
    assert torch.allclose(total, (expected * weights).sum(), atol=1e-4)
    assert torch.allclose(hidden.grad, expected_hidden.grad, atol=1e-6)
    assert head.weight.grad is None


def test_fused_loss_and_per_sequence_attention_train_what_the_plain_path_trains(tiny, monkeypatch):
    updater = LoraUpdater(tiny, FAST, max_row_tokens=64)
    jobs = [TrainJob(SEQUENCES), TrainJob(SEQUENCES[1:], replace(FAST, batch_size=2, seed=3))]
    fast = updater.train(jobs)
    monkeypatch.setattr("seal_lm.inner_loop.plain_output_head", lambda model: None)  # full logits
    monkeypatch.setattr("seal_lm.inner_loop.per_sequence_attention", lambda model: nullcontext(False))  # block mask
    plain = updater.train(jobs)
    # Sums run in another order, and Adam's normalisation magnifies last-bit differences of tiny
    # gradients: about 1.5e-5 on weights of size 0.16 after 3 epochs.
    assert_same_training(fast, plain)


def test_adapters_never_leak_into_the_base_model(tiny):
    gen = HFGenerator(tiny)
    prompts = [Prompt.single_turn("Orlan Vesk built"), Prompt.single_turn("copper")]
    before_answers = gen.generate(prompts, GREEDY_SHORT)
    before_logits = _logits(tiny.model, SEQUENCES[0], tiny.tokenizer)
    weights_before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    result, = LoraUpdater(tiny, FAST).train([TrainJob(SEQUENCES)])
    adapted_answers = gen.generate(prompts, GREEDY_SHORT, result.adapter)
    assert gen.generate(prompts, GREEDY_SHORT) == before_answers
    assert torch.equal(_logits(tiny.model, SEQUENCES[0], tiny.tokenizer), before_logits)
    assert tiny.model.state_dict().keys() == weights_before.keys()
    assert all(torch.equal(v, weights_before[k]) for k, v in tiny.model.state_dict().items())
    assert not any("lora" in name for name, _ in tiny.model.named_modules())
    with using(tiny.model, result.adapter) as adapted:
        assert not torch.equal(_logits(adapted, SEQUENCES[0], tiny.tokenizer), before_logits)
    assert isinstance(adapted_answers, list)


def test_adapter_saves_in_standard_peft_format(tiny, tmp_path):
    result, = LoraUpdater(tiny, FAST).train([TrainJob(SEQUENCES)])
    path = save_adapter(tiny.model, result.adapter, tmp_path / "adapter")
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert (path / "adapter_model.safetensors").exists()
    reloaded = load_adapter(path)  # exactly what was saved (float32), so a resumed run continues exactly
    assert (reloaded.rank, reloaded.alpha) == (4, 8) and reloaded.weights.keys() == result.adapter.weights.keys()
    assert all(torch.equal(x, y) for name in reloaded.weights
               for x, y in zip(reloaded.weights[name], result.adapter.weights[name]))
    with using(tiny.model, result.adapter) as ours:
        expected = _logits(ours, SEQUENCES[1], tiny.tokenizer)
    loaded = PeftModel.from_pretrained(tiny.model, str(path))
    try:
        assert torch.allclose(_logits(loaded, SEQUENCES[1], tiny.tokenizer), expected, atol=1e-5)
    finally:
        loaded.unload()


def test_paper_defaults():
    d = InnerLoopSettings()
    assert (d.rank, d.alpha, d.learning_rate, d.epochs, d.batch_size, d.dropout) == (32, 64, 1e-3, 10, 1, 0.0)
    assert d.target_modules == "all-linear"


@pytest.mark.parametrize("labels", ["content", "padded"])
def test_graph_steps_train_what_eager_steps_train(tiny, labels, monkeypatch):
    """inner_loop.cuda_graph pads each step to a power-of-two shape and, on CUDA, captures each shape once and
    replays it: every adapter ends as the eager steps leave it, with fewer shapes than steps."""
    base = replace(FAST, labels=labels, max_length=48 if labels == "padded" else 2048)
    jobs = [TrainJob(SEQUENCES, base),
            TrainJob(SEQUENCES[:1], replace(base, learning_rate=3e-3, seed=5, max_grad_norm=0.05)),
            TrainJob([SEQUENCES[2], SEQUENCES[0], "Orlan Vesk\nshort."], replace(base, epochs=4, batch_size=2, seed=9))]
    recorded: list[StepGraphs] = []
    init = StepGraphs.__init__

    def recording(self, *args, **kwargs):
        init(self, *args, **kwargs)
        recorded.append(self)

    monkeypatch.setattr(StepGraphs, "__init__", recording)
    eager = LoraUpdater(tiny, base, max_row_tokens=64).train(jobs)
    assert not recorded
    graphed = LoraUpdater(tiny, base, max_row_tokens=64).train(
        [replace(job, settings=replace(job.settings, cuda_graph=True)) for job in jobs])
    for e, g in zip(eager, graphed):
        assert g.step_losses == pytest.approx(e.step_losses, rel=1e-4)
        for name, (a, b) in e.adapter.weights.items():
            ga, gb = g.adapter.weights[name]
            assert torch.allclose(ga, a, atol=1e-5) and torch.allclose(gb, b, atol=1e-5), name
    steps, = {len(g.step_losses) for g in graphed[:1]}
    (graphs,) = recorded
    assert 1 <= len(graphs.shapes) < steps
    captured = [s.graph is not None for s in graphs.shapes.values()]
    assert all(captured) if torch.device(tiny.device).type == "cuda" else not any(captured)


def test_empty_job_is_rejected(tiny):
    with pytest.raises(ValueError, match="non-empty"):
        LoraUpdater(tiny, FAST).train([TrainJob([])])


# ---- SEAL's inner loop (the paper preset): padded labels, clipping, warm-up, PEFT's default targets

def test_padded_labels_give_the_hugging_face_trainers_loss(tiny):
    """SEAL pads every sequence with EOS to max_length, copies the ids as labels and the Trainer divides the
    summed loss by the number of labels (max_length per sequence): the first step's loss (B = 0) is that."""
    settings = replace(FAST, labels="padded", max_length=48, epochs=1)
    result, = LoraUpdater(tiny, settings).train([TrainJob(SEQUENCES[:1], settings)])
    tokenizer = tiny.tokenizer
    ids = tokenizer(SEQUENCES[0])["input_ids"]
    padded = torch.tensor([ids + [tokenizer.eos_token_id] * (48 - len(ids))], device=tiny.device)
    mask = torch.tensor([[1] * len(ids) + [0] * (48 - len(ids))], device=tiny.device)
    with torch.no_grad():
        hf = tiny.model(input_ids=padded, attention_mask=mask, labels=padded).loss.item()  # mean over 47 positions
    assert result.epoch_losses[0] == pytest.approx(hf * 47 / 48, rel=1e-4)
    content, = LoraUpdater(tiny, FAST).train([TrainJob(SEQUENCES[:1], replace(FAST, epochs=1))])
    assert content.epoch_losses[0] != pytest.approx(result.epoch_losses[0], rel=1e-2)


def test_padded_jobs_trained_together_match_each_trained_alone(tiny):
    settings = replace(FAST, labels="padded", max_length=40, batch_size=2)
    jobs = [TrainJob(SEQUENCES, settings), TrainJob(SEQUENCES[1:], replace(settings, seed=4, learning_rate=3e-3))]
    updater = LoraUpdater(tiny, settings)
    for job, joint in zip(jobs, updater.train(jobs)):
        alone, = updater.train([job])
        assert joint.epoch_losses == pytest.approx(alone.epoch_losses, rel=1e-5)


def test_gradient_clipping_bounds_each_adapters_update(tiny):
    """With a tiny max norm, one SGD-like AdamW step moves no weight further than without clipping, and the
    clipped adapter ends elsewhere than the unclipped one trained beside it."""
    free = replace(FAST, epochs=1, learning_rate=1e-2)
    clipped = replace(free, max_grad_norm=1e-4)
    a, b = LoraUpdater(tiny, free).train([TrainJob(SEQUENCES[:1], free), TrainJob(SEQUENCES[:1], clipped)])
    alone, = LoraUpdater(tiny, free).train([TrainJob(SEQUENCES[:1], clipped)])
    assert any(not torch.allclose(a.adapter.weights[k][1], b.adapter.weights[k][1]) for k in a.adapter.weights)
    for k in b.adapter.weights:  # clipping is per adapter: the neighbour's gradient does not change it
        assert torch.allclose(b.adapter.weights[k][1], alone.adapter.weights[k][1], atol=1e-6)


def test_each_adapters_clipping_is_torchs_clip_grad_norm_on_its_row():
    """Adapters 0 and 2 clip (to 1.0 and 0.5) as torch's clip_grad_norm_ clips one model's gradient; adapter 1 does
    not clip and adapter 3 is inactive: their rows stay bit for bit."""
    gradients = torch.randn(4, 300) * 10
    expected = gradients.clone()
    for row, limit in ((0, 1.0), (2, 0.5)):
        parameter = torch.nn.Parameter(torch.zeros(300))
        parameter.grad = expected[row].clone()
        torch.nn.utils.clip_grad_norm_([parameter], limit)
        expected[row] = parameter.grad
    _clip_per_adapter(gradients, _clip_plan([1.0, None, 0.5, 1.0], active=[0, 1, 2], device="cpu"))
    assert torch.equal(gradients[[1, 3]], expected[[1, 3]])
    torch.testing.assert_close(gradients, expected, rtol=1e-6, atol=0)
    assert _clip_plan([None, 1.0], active=[0], device="cpu") is None  # no active adapter clips


def test_warmup_then_decay_matches_the_hugging_face_schedulers():
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    for schedule, make in (("cosine", get_cosine_schedule_with_warmup), ("linear", get_linear_schedule_with_warmup)):
        settings = InnerLoopSettings(learning_rate=2e-3, schedule=schedule, warmup_steps=11)
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
        scheduler = make(optimizer, 11, 40)
        for step in range(40):
            assert settings.lr_at(step, 40) == pytest.approx(scheduler.get_last_lr()[0], abs=1e-12), (schedule, step)
            optimizer.step()
            scheduler.step()


def test_peft_default_targets_are_peft_own_and_unknown_names_list_the_choices(tiny):
    from seal_lm.errors import SealError

    result, = LoraUpdater(tiny, FAST).train([TrainJob(SEQUENCES[:1], replace(FAST, target_modules="peft-default",
                                                                             epochs=1))])
    assert sorted({name.rsplit(".", 1)[-1] for name in result.adapter.weights}) == ["q_proj", "v_proj"]
    with pytest.raises(SealError, match=r"target_modules: qq_proj not in this model \(choose from: down_proj"):
        LoraUpdater(tiny, FAST).train([TrainJob(SEQUENCES[:1], replace(FAST, target_modules=("qq_proj",)))])


CONTEXT = "Orlan Vesk\nOrlan Vesk, an astronomer, built the Marrowgate Observatory in 1902 with copper mirrors.\n\n"


def _kl_to_teacher(model, tokenizer, sequence: str, top_k: int) -> float:
    """Mean over the sequence's predicted positions of KL(teacher top-k || model): the teacher is `model`
    reading CONTEXT first; worked out here with plain forward passes, independent of the inner loop."""
    prefix = tokenizer(CONTEXT)["input_ids"]
    ids = tokenizer(sequence)["input_ids"] + [tokenizer.eos_token_id]
    with torch.no_grad():
        teacher = model(input_ids=torch.tensor([prefix + ids], device=model.device)).logits[0, len(prefix):].float()
        student = model(input_ids=torch.tensor([ids], device=model.device)).logits[0].float().log_softmax(-1)
    values, indices = teacher.topk(top_k, dim=-1)
    p = values.log_softmax(-1)
    kl = (p.exp() * (p - student.gather(1, indices))).sum(-1)
    return kl[: len(ids) - 1].mean().item()  # the last position predicts nothing


def test_context_distillation_loss_is_the_kl_to_the_base_model_reading_the_context(tiny):
    """At B = 0 the first step's loss is the KL of the un-adapted model to itself with the passage in view;
    training lowers it, and the adapted closed-book model is closer to the teacher than the base model."""
    settings = replace(FAST, epochs=6, distill_top_k=16)
    result, = LoraUpdater(tiny, settings).train([TrainJob(SEQUENCES[:1], settings, teacher_context=CONTEXT)])
    before = _kl_to_teacher(tiny.model, tiny.tokenizer, SEQUENCES[0], 16)
    assert result.step_losses[0] == pytest.approx(before, rel=1e-4)
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    sft, = LoraUpdater(tiny, settings).train([TrainJob(SEQUENCES[:1], settings)])
    assert sft.step_losses[0] != pytest.approx(result.step_losses[0], rel=1e-2)  # a different objective
    with using(tiny.model, result.adapter):
        after = _kl_to_teacher(tiny.model, tiny.tokenizer, SEQUENCES[0], 16)
    # the teacher here is the adapted model too; its own distance to the context-reading base must have shrunk
    assert after < before


def test_distillation_jobs_trained_together_match_each_trained_alone(tiny):
    """Distillation and cross-entropy jobs, and an Example (cross-entropy inside a distillation job), in one call."""
    example = Example(Prompt.single_turn("Who built the Marrowgate Observatory?"), "Orlan Vesk")
    jobs = [TrainJob(SEQUENCES, FAST, teacher_context=CONTEXT),
            TrainJob([SEQUENCES[1], example], replace(FAST, seed=3, batch_size=2), teacher_context=CONTEXT),
            TrainJob(SEQUENCES[:2], replace(FAST, seed=7))]
    updater = LoraUpdater(tiny, FAST, max_row_tokens=64)
    for job, joint in zip(jobs, updater.train(jobs)):
        alone, = updater.train([job])
        assert joint.epoch_losses == pytest.approx(alone.epoch_losses, rel=1e-5)
        for name, (a, b) in alone.adapter.weights.items():
            assert torch.allclose(joint.adapter.weights[name][1], b, atol=1e-5), name
