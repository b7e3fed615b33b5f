"""Text generation behind one interface: in-process transformers (`HFGenerator`), vLLM
(`vllm_generation.py`, chosen by `make_generator` on a CUDA machine with vLLM installed) and any
OpenAI-compatible endpoint (`openai_client.py`).

A `Prompt` carries two renderings, chat messages and plain text: instruction-tuned models get
their chat template, base models the plain text. An optional `response_prefix` starts the model's
answer for it (e.g. the opening of a JSON object); completions are what follows it. `Generator.generate` takes many prompts at once
and returns `n` completions for each.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from transformers.generation.streamers import BaseStreamer

from seal_lm.adapters import Adapter, applied
from seal_lm.config import ConfigError, at_least
from seal_lm.errors import SealError
from seal_lm.models import LoadedModel
from seal_lm.multi_lora import RowRouting
from seal_lm.packed_linear import packed_linears

AdapterChoice = Adapter | Sequence[Adapter | None] | None  # one for all prompts, or one per prompt


@dataclass(frozen=True)
class Prompt:
    """One request: `messages` for chat models, `text` for base models (same content)."""

    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    text: str
    response_prefix: str = ""  # the first words of the answer, written for the model
    raw: bool = False  # always `text`, with the tokenizer's special tokens, even for a chat model (SEAL's prompts)

    @classmethod
    def single_turn(cls, user: str, base_text: str | None = None) -> Prompt:
        return cls(messages=(("user", user),), text=base_text if base_text is not None else user)

    @classmethod
    def raw_text(cls, text: str) -> Prompt:
        """A prompt given as exact text, never wrapped in a chat template."""
        return cls(messages=(("user", text),), text=text, raw=True)


def render_prompt(loaded: LoadedModel, prompt: Prompt, chat: bool | None = None) -> str:
    """The text a model sees for `prompt`: its chat template if it has one (or `chat` says so) and the prompt
    is not raw, else plain text."""
    if prompt.raw or not (loaded.has_chat_template if chat is None else chat):
        return prompt.text + prompt.response_prefix
    messages = [{"role": role, "content": content} for role, content in prompt.messages]
    rendered = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return rendered + prompt.response_prefix


def encode_prompt(loaded: LoadedModel, prompt: Prompt, chat: bool | None = None) -> list[int]:
    """Token ids of the rendered prompt; shared by generation and by training on prompt -> completion pairs."""
    chat = (loaded.has_chat_template if chat is None else chat) and not prompt.raw
    # Chat templates already contain the special tokens; base prompts get the tokenizer's defaults.
    return loaded.tokenizer(render_prompt(loaded, prompt, chat), add_special_tokens=not chat)["input_ids"]


@dataclass
class SamplingParams:
    """Sampling settings; temperature 0 means greedy decoding."""

    temperature: float = 1.0
    """sampling temperature; 0 is greedy"""
    top_p: float = 0.95
    """nucleus sampling"""
    max_new_tokens: int = 256
    """length limit of a completion, in tokens"""
    n: int = 1
    """completions per prompt"""
    stop: tuple[str, ...] = ()
    """strings that end a completion"""
    include_stop: bool = False
    """keep the stop string that ended a completion (vLLM's include_stop_str_in_output)"""
    seed: int | None = None
    """sampling seed (runs derive one per unit of work)"""

    def validate(self, key: str) -> None:
        at_least(f"{key}.temperature", self.temperature, 0)
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"{key}.top_p", f"must be in (0, 1] (got {self.top_p})")
        at_least(f"{key}.max_new_tokens", self.max_new_tokens, 1)
        at_least(f"{key}.n", self.n, 1)


GREEDY = SamplingParams(temperature=0.0, top_p=1.0)


def adapters_per_prompt(adapters: AdapterChoice, n_prompts: int) -> list[Adapter | None]:
    per_prompt = list(adapters) if isinstance(adapters, (list, tuple)) else [adapters] * n_prompts
    if len(per_prompt) != n_prompts:
        raise ValueError(f"got {len(per_prompt)} adapters for {n_prompts} prompts")
    return per_prompt


class Generator(Protocol):
    """Anything that turns prompts into completions: `n` strings per prompt, in prompt order."""

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, adapters: AdapterChoice = None
    ) -> list[list[str]]: ...


@dataclass
class HFGenerator:
    """In-process generation with transformers: batched, left-padded, with the KV cache; prompts
    with different adapters share a batch (each row routed to its own adapter)."""

    loaded: LoadedModel
    batch_size: int = 16
    use_chat_template: bool | None = None  # None: use it when the tokenizer has one
    _chat: bool = field(init=False)

    def __post_init__(self) -> None:
        self._chat = self.loaded.has_chat_template if self.use_chat_template is None else self.use_chat_template

    def render(self, prompt: Prompt) -> str:
        """The exact text the model sees for `prompt`."""
        return render_prompt(self.loaded, prompt, self._chat)

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, adapters: AdapterChoice = None,
        on_text: TextCallback | None = None,
    ) -> list[list[str]]:
        """`n` completions per prompt; `on_text(prompt, sample, text)` is called after every decoding step with
        the text of that completion so far that can no longer change (for streaming)."""
        if not prompts:
            return []
        per_prompt = adapters_per_prompt(adapters, len(prompts))
        encoded = [encode_prompt(self.loaded, p, self._chat) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
        results: list[list[str]] = [[] for _ in prompts]
        if params.seed is not None:
            torch.manual_seed(params.seed)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            distinct = list({id(a): a for a in (per_prompt[i] for i in batch) if a is not None}.values())
            slot = {id(a): k for k, a in enumerate(distinct)}
            ids = [slot[id(per_prompt[i])] if per_prompt[i] is not None else -1 for i in batch]
            with applied(self.loaded.model, distinct) as lora:
                completions = self._generate_batch([encoded[i] for i in batch], params, lora, ids,
                                                   _Progress(self.loaded.tokenizer, batch, params, on_text)
                                                   if on_text else None)
            for i, outs in zip(batch, completions):
                results[i] = outs
        return results

    def _generate_batch(self, token_ids: list[list[int]], params: SamplingParams, lora, adapter_ids: list[int],
                        streamer: _Progress | None = None) -> list[list[str]]:
        tokenizer = self.loaded.tokenizer
        width = max(len(ids) for ids in token_ids)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in token_ids])
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in token_ids])
        sampling = params.temperature > 0
        n = params.n if sampling else 1
        kwargs = dict(
            max_new_tokens=params.max_new_tokens,
            do_sample=sampling,
            num_return_sequences=n,
            pad_token_id=pad,
        )
        if sampling:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:  # the model's generation_config may carry sampling defaults; greedy must not warn about them
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tokenizer)
        if streamer is not None:
            kwargs.update(streamer=streamer)
        device = self.loaded.device
        if lora is not None:  # generate() repeats each row n times, next to each other
            lora.route(RowRouting(torch.tensor(adapter_ids, device=device).repeat_interleave(n)))
        with torch.inference_mode(), packed_linears(self.loaded.model, self.loaded.prepack_weights):
            output = self.loaded.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs
            )
        new_tokens = output[:, width:]
        decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        decoded = [_cut_at_stop(text, params.stop, params.include_stop) for text in decoded]
        grouped = [decoded[i * n : (i + 1) * n] for i in range(len(token_ids))]
        return [g * params.n if not sampling else g for g in grouped]


TextCallback = Callable[[int, int, str], None]


class _Progress(BaseStreamer):
    """A `generate()` streamer for a whole batch: after each step, the text of every completion so far, cut at
    a stop string and holding back what could still become one, passed to `on_text` (prompt, sample, text)."""

    def __init__(self, tokenizer, prompts: list[int], params: SamplingParams, on_text: TextCallback):
        self.tokenizer, self.prompts, self.params, self.on_text = tokenizer, prompts, params, on_text
        self.sampled = params.temperature > 0
        self.width = params.n if self.sampled else 1  # rows per prompt; greedy rows serve every sample
        self.tokens: list[list[int]] | None = None  # None until the prompt itself has been put
        self.hold = max((len(s) for s in params.stop), default=1) - 1

    def put(self, value: torch.Tensor) -> None:
        if self.tokens is None:
            self.tokens = [[] for _ in range(value.shape[0])]
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            self.tokens[row].append(token)
        for row, tokens in enumerate(self.tokens):
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            cut = _cut_at_stop(text, self.params.stop, self.params.include_stop)
            safe = cut if len(cut) < len(text) else text[: len(text) - self.hold].rstrip("\ufffd")
            prompt = self.prompts[row // self.width]
            for sample in ([row % self.width] if self.sampled else range(self.params.n)):
                self.on_text(prompt, sample, safe)

    def end(self) -> None:
        pass


BACKENDS = ("auto", "hf", "vllm")


def backend_name(loaded: LoadedModel, backend: str | None = None) -> str:
    """Which generation backend serves `loaded`: "vllm" when the model is on a CUDA GPU and vLLM is installed
    (for "auto"), else "hf". `backend` (or SEAL_GENERATION_BACKEND) forces "hf" or "vllm"."""
    backend = backend or os.environ.get("SEAL_GENERATION_BACKEND", "auto")
    if backend not in BACKENDS:
        raise SealError(f"unknown generation backend '{backend}' (choose {', '.join(BACKENDS)}; "
                        "from SEAL_GENERATION_BACKEND or --generation_backend)")
    installed = importlib.util.find_spec("vllm") is not None
    vllm_ready = installed and loaded.device.type == "cuda"
    if backend == "vllm" and not vllm_ready:
        raise SealError("the vLLM generation backend needs a CUDA GPU and `pip install seal-lm[vllm]` "
                        f"(model on {loaded.device.type}, vLLM {'installed' if installed else 'not installed'})")
    return "hf" if backend == "hf" or not vllm_ready else "vllm"


def make_generator(loaded: LoadedModel, backend: str | None = None) -> Generator:
    """The generation backend for `loaded` (see `backend_name`).

    Only for models whose weights equal their checkpoint (`loaded.source`): vLLM reads the weights
    from there, so a model changed in memory without a checkpoint must use `HFGenerator` directly."""
    if backend_name(loaded, backend) == "hf":
        return HFGenerator(loaded)
    from seal_lm.vllm_generation import VLLMGenerator

    return VLLMGenerator(loaded)


def _cut_at_stop(text: str, stop: Sequence[str], include: bool = False) -> str:
    found = [(text.find(s), s) for s in stop if s in text]
    if not found:
        return text
    cut, which = min(found)
    return text[: cut + len(which)] if include else text[:cut]
