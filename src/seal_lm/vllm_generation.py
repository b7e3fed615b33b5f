"""Generation with vLLM (optional extra `seal-lm[vllm]`), behind the same `Generator` interface.

vLLM serves the weights it reads from `loaded.source` (the model's directory or hub id), so it
is only used where the in-memory model equals that checkpoint: the base model, or a policy
loaded from its saved checkpoint. Adapters are per request: each distinct `Adapter` is written
once in the PEFT format and passed as a `LoRARequest`, so prompts with different adapters share
one engine and one batch. One engine is kept per process and rebuilt when the checkpoint
changes (a new RL round's policy); it takes a fraction of the GPU (SEAL_VLLM_GPU_MEMORY,
default 0.4) so the inner loop's LoRA training keeps the rest.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from seal_lm.adapters import Adapter, save_adapter
from seal_lm.errors import SealError
from seal_lm.generation import AdapterChoice, Prompt, SamplingParams, adapters_per_prompt, encode_prompt
from seal_lm.models import LoadedModel

VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM accepts as max_lora_rank


def sample_seeds(seed: int, n_prompts: int, n: int) -> list[list[int]]:
    """One seed per (prompt, sample): each sample is its own seeded request, so samples differ and a
    rerun with the same seed gives the same completions, whatever vLLM does with n > 1."""
    def derived(i: int, j: int) -> int:
        return int.from_bytes(hashlib.sha256(f"{seed}/{i}/{j}".encode()).digest()[:4], "little")
    return [[derived(i, j) for j in range(n)] for i in range(n_prompts)]


def vllm_sampling_kwargs(params: SamplingParams, seed: int | None = None) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams` for ONE sample of `params` (n is fanned out by the caller)."""
    greedy = params.temperature <= 0
    kwargs: dict[str, Any] = {
        "n": 1,
        "temperature": 0.0 if greedy else params.temperature,
        "top_p": 1.0 if greedy else params.top_p,
        "max_tokens": params.max_new_tokens,
        "skip_special_tokens": True,
    }
    if params.stop:
        kwargs["stop"] = list(params.stop)
        kwargs["include_stop_str_in_output"] = params.include_stop
    if seed is not None and not greedy:
        kwargs["seed"] = seed
    return kwargs


def max_lora_rank() -> int:
    value = os.environ.get("SEAL_VLLM_MAX_LORA_RANK", "128")
    if not value.isdigit() or int(value) not in VLLM_LORA_RANKS:
        raise SealError(f"SEAL_VLLM_MAX_LORA_RANK={value!r}: vLLM accepts one of {', '.join(map(str, VLLM_LORA_RANKS))}")
    return int(value)


def gpu_memory_fraction() -> float:
    value = os.environ.get("SEAL_VLLM_GPU_MEMORY", "0.4")
    try:
        fraction = float(value)
    except ValueError:
        fraction = -1.0
    if not 0 < fraction < 1:
        raise SealError(f"SEAL_VLLM_GPU_MEMORY={value!r}: give the fraction of GPU memory for vLLM, between 0 and 1")
    return fraction


@dataclass
class _Engine:
    """The process's one vLLM engine, and the adapters it has been handed (as PEFT directories)."""

    source: str
    llm: Any
    adapter_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="seal-vllm-adapters-"))
    requests: dict[int, Any] = field(default_factory=dict)  # id(Adapter) -> LoRARequest
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    def close(self) -> None:
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)  # vLLM's engine process
        if callable(getattr(core, "shutdown", None)):
            core.shutdown()
        self.llm = None
        self.requests.clear()
        shutil.rmtree(self.adapter_dir, ignore_errors=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


_engine: _Engine | None = None


def _engine_for(loaded: LoadedModel) -> _Engine:
    global _engine
    if _engine is not None and _engine.source == loaded.source:
        return _engine
    if _engine is not None:
        _engine.close()  # one engine per process: the previous checkpoint's memory is given back first
        _engine = None
    import vllm

    dtype = str(loaded.model.dtype).removeprefix("torch.")
    rank, memory = max_lora_rank(), gpu_memory_fraction()
    try:
        llm = vllm.LLM(model=loaded.source, tokenizer=loaded.source, dtype=dtype, enable_lora=True,
                       max_lora_rank=rank, max_loras=8, max_cpu_loras=64, gpu_memory_utilization=memory)
    except Exception as exc:  # a version or memory mismatch: say how to go on without vLLM
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SealError(f"vLLM could not start on {loaded.source}: {first} "
                        "(use --generation-backend hf or SEAL_GENERATION_BACKEND=hf to generate with transformers)") from exc
    _engine = _Engine(loaded.source, llm)
    return _engine


def _lora_request(engine: _Engine, loaded: LoadedModel, adapter: Adapter) -> Any:
    """The adapter's LoRARequest, writing it in the PEFT format the first time it is seen."""
    key = id(adapter)
    if key in engine.requests:
        return engine.requests[key]
    if adapter.rank > max_lora_rank():
        raise SealError(f"adapter rank {adapter.rank} is above vLLM's max_lora_rank {max_lora_rank()}: "
                        "set SEAL_VLLM_MAX_LORA_RANK higher, or SEAL_GENERATION_BACKEND=hf")
    from vllm.lora.request import LoRARequest

    number = next(engine.counter)  # never reused: vLLM caches adapters by this id
    path = save_adapter(loaded.model, adapter, os.path.join(engine.adapter_dir, f"adapter-{number}"))
    request = LoRARequest(f"seal-{number}", number, str(path))
    engine.requests[key] = request
    # When the adapter object is gone, so is its request: a later object at the same address is new.
    weakref.finalize(adapter, _forget, engine, key, str(path))
    return request


def _forget(engine: _Engine, key: int, path: str) -> None:
    engine.requests.pop(key, None)
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class VLLMGenerator:
    """`Generator` on a vLLM engine for `loaded.source`; adapters are LoRA requests per prompt."""

    loaded: LoadedModel
    use_chat_template: bool | None = None

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams,
                 adapters: AdapterChoice = None) -> list[list[str]]:
        if not prompts:
            return []
        per_prompt = adapters_per_prompt(adapters, len(prompts))
        import vllm

        engine = _engine_for(self.loaded)
        greedy = params.temperature <= 0
        n = 1 if greedy else params.n
        seeds = sample_seeds(params.seed, len(prompts), n) if params.seed is not None else None
        inputs, sampling, requests = [], [], []
        for i, prompt in enumerate(prompts):
            ids = encode_prompt(self.loaded, prompt, self.use_chat_template)  # the same tokens as HFGenerator
            request = _lora_request(engine, self.loaded, per_prompt[i]) if per_prompt[i] is not None else None
            for j in range(n):
                inputs.append({"prompt_token_ids": ids})
                sampling.append(vllm.SamplingParams(**vllm_sampling_kwargs(params, seeds[i][j] if seeds else None)))
                requests.append(request)
        outputs = engine.llm.generate(inputs, sampling, lora_request=requests, use_tqdm=False)
        texts = [output.outputs[0].text for output in outputs]
        grouped = [texts[i * n : (i + 1) * n] for i in range(len(prompts))]
        return [g * params.n if greedy else g for g in grouped]
