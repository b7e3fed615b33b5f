"""LoRA adapters as plain data, applied to the shared base model only for as long as they are used.

An inner loop produces an `Adapter` (rank, alpha and one `(A, B)` pair per adapted module, on the
CPU). Thousands can exist while the base model stays untouched: `applied` injects any number of
them at once (see multi_lora.py) and removes them on exit, so no adapter leaks into the next use.
`save_adapter` writes the standard PEFT format, loadable with `peft.PeftModel.from_pretrained`,
and `load_adapter` reads it back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import PreTrainedModel

from seal_lm.errors import SealError
from seal_lm.multi_lora import MultiLora, RowRouting, injected

_PEFT_PREFIX = "base_model.model."


@dataclass
class Adapter:
    """One LoRA update: module name -> (A [rank, in], B [out, rank]), scaled by alpha / rank."""

    rank: int
    alpha: float
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def peft_config(self) -> LoraConfig:
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=0.0, bias="none",
                          target_modules=sorted(self.weights), task_type="CAUSAL_LM")

    def peft_state_dict(self) -> dict[str, torch.Tensor]:
        state = {}
        for name, (a, b) in self.weights.items():
            state[f"{_PEFT_PREFIX}{name}.lora_A.weight"] = a
            state[f"{_PEFT_PREFIX}{name}.lora_B.weight"] = b
        return state


def combine_adapters(adapters: Sequence[Adapter]) -> Adapter:
    """One adapter whose update is exactly the sum of `adapters`' updates: their A matrices stacked,
    their B matrices side by side (rank k*r, alpha k*alpha, so the scale alpha / r is unchanged).
    All must share rank, alpha and modules."""
    first = adapters[0]
    if any(a.rank != first.rank or a.alpha != first.alpha or a.weights.keys() != first.weights.keys()
           for a in adapters):
        raise ValueError("adapters combined must share rank, alpha and target modules")
    weights = {name: (torch.cat([a.weights[name][0] for a in adapters]), torch.cat([a.weights[name][1] for a in adapters], 1))
               for name in first.weights}
    return Adapter(first.rank * len(adapters), first.alpha * len(adapters), weights)


@contextmanager
def applied(model: PreTrainedModel, adapters: Sequence[Adapter]) -> Iterator[MultiLora | None]:
    """Inject `adapters` (adapter k at index k; route tokens with `MultiLora.route`); None if empty."""
    if not adapters:
        yield None
        return
    first = adapters[0]
    if any(a.rank != first.rank or a.alpha != first.alpha or a.weights.keys() != first.weights.keys()
           for a in adapters):
        raise ValueError("adapters applied together must share rank, alpha and target modules")
    targets = [name.rsplit(".", 1)[-1] for name in first.weights]
    with injected(model, len(adapters), first.rank, first.alpha, sorted(set(targets))) as lora:
        mismatched = set(lora.layers) ^ set(first.weights)
        if mismatched:
            raise ValueError(f"adapter does not fit this model (modules: {sorted(mismatched)[:3]} ...)")
        for k, adapter in enumerate(adapters):
            lora.load_adapter(k, adapter.weights)
        yield lora


@contextmanager
def using(model: PreTrainedModel, adapter: Adapter) -> Iterator[PreTrainedModel]:
    """`model` with one adapter applied to every input, for plain forward calls."""
    with applied(model, [adapter]) as lora:
        lora.route(RowRouting(torch.zeros(1, dtype=torch.long, device=next(model.parameters()).device)))
        yield model


def merge_adapter(model: PreTrainedModel, adapter: Adapter) -> None:
    """Add the adapter's update `alpha / rank * B @ A` into the model's weights, in place (the sum is
    formed in float32, then stored in the weight's dtype)."""
    scaling = adapter.alpha / adapter.rank
    with torch.no_grad():
        for name, (a, b) in adapter.weights.items():
            weight = model.get_submodule(name).weight
            delta = scaling * (b.float() @ a.float())
            weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))


def save_adapter(model: PreTrainedModel, adapter: Adapter, directory: str | Path) -> Path:
    """Write the adapter in the standard PEFT format (adapter_config.json + adapter_model.safetensors)."""
    peft_model = get_peft_model(model, adapter.peft_config())
    try:
        set_peft_model_state_dict(peft_model, adapter.peft_state_dict())
        peft_model.save_pretrained(str(directory))
    finally:
        peft_model.unload()
    return Path(directory)


def load_adapter(directory: str | Path) -> Adapter:
    """An adapter saved in the PEFT format (by `save_adapter` or by PEFT itself), as plain data."""
    directory = Path(directory)
    try:
        config = LoraConfig.from_pretrained(str(directory))
        state = load_file(str(directory / "adapter_model.safetensors"))
    except (OSError, ValueError) as exc:
        raise SealError(f"{directory}: not a PEFT LoRA adapter ({exc})") from None
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in sorted(state):
        if key.endswith(".lora_A.weight"):
            name = key.removeprefix(_PEFT_PREFIX).removesuffix(".lora_A.weight")
            weights[name] = (state[key], state[f"{_PEFT_PREFIX}{name}.lora_B.weight"])
    return Adapter(config.r, config.lora_alpha, weights)
