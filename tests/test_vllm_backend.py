"""The generation backend choice, and the vLLM backend's plumbing.

vLLM cannot be installed on this CPU-only test machine (its wheels need CUDA and their own torch),
so the plumbing test runs `VLLMGenerator` against a small stand-in for the three vLLM names it
uses (`LLM.generate`, `SamplingParams`, `LoRARequest`). It checks our side: token ids, fan-out of
samples and seeds, regrouping, and adapters written once in the PEFT format. It does not check
vLLM itself; that needs a GPU machine with vLLM installed.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, replace

import pytest

from seal_lm import vllm_generation
from seal_lm.adapters import load_adapter
from seal_lm.errors import SealError
from seal_lm.generation import HFGenerator, Prompt, SamplingParams, encode_prompt, make_generator
from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob
from seal_lm.vllm_generation import VLLMGenerator, sample_seeds, vllm_sampling_kwargs


def test_auto_and_hf_choose_transformers_without_cuda_and_vllm(tiny, monkeypatch):
    monkeypatch.delenv("SEAL_GENERATION_BACKEND", raising=False)
    assert isinstance(make_generator(tiny), HFGenerator)
    assert isinstance(make_generator(tiny, "hf"), HFGenerator)
    monkeypatch.setenv("SEAL_GENERATION_BACKEND", "hf")
    assert isinstance(make_generator(tiny), HFGenerator)


def test_forcing_vllm_without_it_and_unknown_backends_are_one_line_errors(tiny, monkeypatch):
    with pytest.raises(SealError, match=r"needs a CUDA GPU and `pip install seal-lm\[vllm\]`"):
        make_generator(tiny, "vllm")
    monkeypatch.setenv("SEAL_GENERATION_BACKEND", "tensorrt")
    with pytest.raises(SealError, match="unknown generation backend 'tensorrt'.*SEAL_GENERATION_BACKEND"):
        make_generator(tiny)


def test_sampling_params_translate_to_one_vllm_sample():
    greedy = vllm_sampling_kwargs(SamplingParams(temperature=0.0, top_p=0.9, max_new_tokens=7, n=3), seed=5)
    assert greedy == {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 7, "skip_special_tokens": True}
    sampled = vllm_sampling_kwargs(SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=7, n=3,
                                                  stop=("}",), include_stop=True), seed=5)
    assert sampled == {"n": 1, "temperature": 0.8, "top_p": 0.9, "max_tokens": 7, "skip_special_tokens": True,
                       "stop": ["}"], "include_stop_str_in_output": True, "seed": 5}


def test_translated_params_are_accepted_by_vllm_itself():
    """Runs where vLLM's Python package imports (no GPU needed); skipped elsewhere."""
    vllm_params = pytest.importorskip("vllm.sampling_params")
    lora = pytest.importorskip("vllm.lora.request")
    for params in (SamplingParams(temperature=0.0, max_new_tokens=5, n=3),
                   SamplingParams(temperature=0.8, top_p=0.9, n=2, stop=("}",), include_stop=True)):
        made = vllm_params.SamplingParams(**vllm_sampling_kwargs(params, seed=7))
        assert made.max_tokens == params.max_new_tokens and made.n == 1
        assert made.include_stop_str_in_output == params.include_stop
    assert lora.LoRARequest("seal-1", 1, "/tmp/adapter").lora_int_id == 1


def test_sample_seeds_are_distinct_and_reproducible():
    seeds = sample_seeds(3, n_prompts=4, n=5)
    flat = [s for row in seeds for s in row]
    assert len(set(flat)) == 20 and seeds == sample_seeds(3, 4, 5) and seeds != sample_seeds(4, 4, 5)


def test_bad_vllm_settings_are_one_line_errors(monkeypatch):
    monkeypatch.setenv("SEAL_VLLM_MAX_LORA_RANK", "100")
    with pytest.raises(SealError, match="SEAL_VLLM_MAX_LORA_RANK='100'"):
        vllm_generation.max_lora_rank()
    monkeypatch.setenv("SEAL_VLLM_GPU_MEMORY", "1.5")
    with pytest.raises(SealError, match="SEAL_VLLM_GPU_MEMORY='1.5'"):
        vllm_generation.gpu_memory_fraction()


@dataclass
class _Completion:
    text: str


@dataclass
class _Output:
    outputs: list[_Completion]


class _StandInLLM:
    """Answers each request with what it was asked: adapter name, prompt length, temperature, seed."""

    instances: list[_StandInLLM] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []
        _StandInLLM.instances.append(self)

    def generate(self, inputs, sampling, lora_request=None, use_tqdm=True):
        self.calls.append((inputs, sampling, lora_request))
        return [_Output([_Completion(f"{r.lora_name if r else 'base'}|{len(x['prompt_token_ids'])}|"
                                     f"{s.kwargs['temperature']}|{s.kwargs.get('seed')}")])
                for x, s, r in zip(inputs, sampling, lora_request)]


@dataclass
class _StandInLoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


class _StandInSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@pytest.fixture()
def stand_in_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM = _StandInLLM
    vllm.SamplingParams = _StandInSamplingParams
    lora, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request.LoRARequest = _StandInLoRARequest
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    monkeypatch.setattr(vllm_generation, "_engine", None)
    _StandInLLM.instances.clear()
    yield
    if vllm_generation._engine is not None:
        vllm_generation._engine.close()


def test_an_engine_that_cannot_start_is_a_one_line_error_naming_the_way_out(tiny, stand_in_vllm, monkeypatch):
    def refuse(**kwargs):
        raise ValueError("No available memory for the cache blocks.\nTry increasing gpu_memory_utilization")

    monkeypatch.setattr(sys.modules["vllm"], "LLM", refuse)
    with pytest.raises(SealError, match=r"vLLM could not start on .*: No available memory for the cache blocks\. "
                                        r"\(use --generation-backend hf"):
        VLLMGenerator(tiny).generate([Prompt.single_turn("hi")], SamplingParams(temperature=0.0))


def test_vllm_generator_plumbing_with_a_stand_in_engine(tiny, stand_in_vllm):
    settings = InnerLoopSettings(rank=4, alpha=8, epochs=1)
    first, second = (r.adapter for r in LoraUpdater(tiny, settings).train([TrainJob(["Orlan Vesk"]), TrainJob(["copper"])]))
    prompts = [Prompt.single_turn("Who built it?"), Prompt.single_turn("What metal were the mirrors?")]
    generator = VLLMGenerator(tiny)

    sampled = generator.generate(prompts, SamplingParams(temperature=0.7, n=3, seed=11), [first, None])
    llm = _StandInLLM.instances[0]
    assert llm.kwargs["model"] == tiny.source and llm.kwargs["enable_lora"] and llm.kwargs["dtype"] == "float32"
    inputs, _, requests = llm.calls[0]
    assert [x["prompt_token_ids"] for x in inputs] == [encode_prompt(tiny, prompts[0])] * 3 + [encode_prompt(tiny, prompts[1])] * 3
    assert len(sampled) == 2 and all(len(outs) == 3 for outs in sampled)
    seeds = sample_seeds(11, 2, 3)
    assert sampled[0] == [f"seal-1|{len(inputs[0]['prompt_token_ids'])}|0.7|{s}" for s in seeds[0]]
    assert all(text.startswith("base|") for text in sampled[1])
    saved = load_adapter(requests[0].lora_path)  # written in the PEFT format, exactly
    assert saved.weights.keys() == first.weights.keys()

    greedy = generator.generate(prompts, SamplingParams(temperature=0.0, n=2), [second, first])
    assert [len(outs) for outs in greedy] == [2, 2] and greedy[0][0] == greedy[0][1]
    assert greedy[0][0].startswith("seal-2|") and greedy[1][0].startswith("seal-1|")  # first was written once
    assert len(llm.calls[1][0]) == 2  # greedy: one request per prompt, repeated afterwards

    copy = replace(tiny, source=tiny.source + "-next-policy")  # a new RL round's checkpoint
    VLLMGenerator(copy).generate(prompts[:1], SamplingParams(temperature=0.0, max_new_tokens=2))
    assert len(_StandInLLM.instances) == 2 and vllm_generation._engine.source == copy.source
