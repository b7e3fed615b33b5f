"""LoRA adapters as plain data, applied to the shared base model only for as long as they are used.

An inner loop produces an `Adapter` (its PEFT config and weights, on the CPU). Thousands of them
can exist while the base model stays untouched: `applied` injects one with PEFT, and removes it
again on exit, so no adapter ever leaks into the next evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from transformers import PreTrainedModel


@dataclass
class Adapter:
    """One LoRA update: PEFT config plus weights (PEFT key names, CPU tensors)."""

    config: LoraConfig
    weights: dict[str, torch.Tensor]

    @classmethod
    def from_peft_model(cls, peft_model: PeftModel) -> Adapter:
        weights = {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(peft_model).items()}
        return cls(config=peft_model.peft_config["default"], weights=weights)


@contextmanager
def applied(model: PreTrainedModel, adapter: Adapter | None) -> Iterator[PreTrainedModel]:
    """Yield `model` with `adapter` injected (or `model` itself for None); restore the base on exit."""
    if adapter is None:
        yield model
        return
    peft_model = get_peft_model(model, adapter.config)
    try:
        set_peft_model_state_dict(peft_model, adapter.weights)
        peft_model.eval()
        yield peft_model
    finally:
        peft_model.unload()


def save_adapter(model: PreTrainedModel, adapter: Adapter, directory: str | Path) -> Path:
    """Write the adapter in the standard PEFT format (adapter_config.json + adapter_model.safetensors)."""
    with applied(model, adapter) as peft_model:
        peft_model.save_pretrained(str(directory))
    return Path(directory)
