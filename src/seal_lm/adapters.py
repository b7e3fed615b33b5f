"""LoRA adapters as plain data, applied to the shared base model only for as long as they are used.

An inner loop produces an `Adapter` (rank, alpha and one `(A, B)` pair per adapted module, on the
CPU). Thousands can exist while the base model stays untouched: `applied` injects any number of
them at once (see multi_lora.py) and removes them on exit, so no adapter leaks into the next use.
`save_adapter` writes the standard PEFT format, loadable with `peft.PeftModel.from_pretrained`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from transformers import PreTrainedModel

from seal_lm.multi_lora import MultiLora, RowRouting, injected


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
            state[f"base_model.model.{name}.lora_A.weight"] = a
            state[f"base_model.model.{name}.lora_B.weight"] = b
        return state


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
