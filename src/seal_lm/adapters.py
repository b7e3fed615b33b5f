"""LoRA adapters as plain data, applied to the shared base model only for as long as they are used.

An inner loop produces an `Adapter` (rank, alpha and one `(A, B)` pair per adapted module, on the
CPU). Thousands can exist while the base model stays untouched: `applied` injects any number of
them at once (see multi_lora.py) and removes them on exit, so no adapter leaks into the next use.
`save_adapter` writes the standard PEFT format, loadable with `peft.PeftModel.from_pretrained`,
and `load_adapter` reads it back.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from seal_lm.errors import SealError
from seal_lm.models import LoadedModel
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


# Files of a checkpoint besides its weights: config, tokenizer, chat template, remote code.
_CHECKPOINT_SIDE_FILES = (".json", ".txt", ".model", ".jinja", ".py", ".tiktoken")
_WEIGHTS_INDEX = "model.safetensors.index.json"


def save_merged(loaded: LoadedModel, adapter: Adapter, target: Path, max_shard_bytes: int = 2**30) -> None:
    """Write `loaded`'s checkpoint with the adapter merged into `target` (atomically), and make `loaded`'s
    weights equal to that checkpoint's: the one model in memory becomes the new policy.

    The update is added to the checkpoint's own weights in float32, tensor by tensor, and written in shards
    of at most `max_shard_bytes`, so memory grows by one shard, not by a second model. Merged tensors are
    stored in float32, the others as they were; loading the result gives the weights `loaded` now has (the
    same float32 values, cast to the model's dtype)."""
    source = _checkpoint_dir(loaded.source)
    scaling = adapter.alpha / adapter.rank
    merged = {f"{name}.weight": name for name in adapter.weights}
    located, sizes = {}, {}  # key -> source shard, and its size as stored in the new checkpoint
    for shard in _weight_shards(source):
        with safe_open(str(source / shard), framework="pt") as f:
            for key in f.keys():
                info = f.get_slice(key)
                located[key] = shard
                sizes[key] = math.prod(info.get_shape()) * (4 if key in merged else _DTYPE_BYTES[info.get_dtype()])
    missing = sorted(name for key, name in merged.items() if key not in located)
    if missing:
        raise SealError(f"{source}: checkpoint has no weight for adapted module(s) {', '.join(missing[:3])}")
    plan: list[list[str]] = [[]]
    for key in located:
        if plan[-1] and sum(sizes[k] for k in plan[-1]) + sizes[key] > max_shard_bytes:
            plan.append([])
        plan[-1].append(key)
    names = (["model.safetensors"] if len(plan) == 1 else
             [f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors" for i in range(len(plan))])
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for item in source.iterdir():
            if item.is_file() and item.suffix in _CHECKPOINT_SIDE_FILES and item.name != _WEIGHTS_INDEX:
                shutil.copy(item, staging / item.name)
        for keys, name in zip(plan, names):
            tensors = {key: _merged_tensor(source / located[key], key, merged, adapter, scaling) for key in keys}
            save_file(tensors, str(staging / name), metadata={"format": "pt"})
            with torch.no_grad():  # the model in memory follows
                for key in keys:
                    if key in merged:
                        weight = loaded.model.get_submodule(merged[key]).weight
                        weight.copy_(tensors[key].to(device=weight.device, dtype=weight.dtype))
        if len(plan) > 1:
            index = {"metadata": {"total_size": sum(sizes.values())},
                     "weight_map": {key: name for keys, name in zip(plan, names) for key in keys}}
            (staging / _WEIGHTS_INDEX).write_text(json.dumps(index, indent=2))
        shutil.rmtree(target, ignore_errors=True)  # a checkpoint left by a run killed before its record
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    loaded.source = str(target)


def _merged_tensor(shard: Path, key: str, merged: dict[str, str], adapter: Adapter, scaling: float) -> torch.Tensor:
    with safe_open(str(shard), framework="pt") as f:
        tensor = f.get_tensor(key)
    if key not in merged:
        return tensor
    a, b = adapter.weights[merged[key]]
    return tensor.float() + scaling * (b.float() @ a.float())


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}


def _checkpoint_dir(source: str) -> Path:
    """The local directory of a checkpoint: a directory, or a hub id already in the local cache."""
    path = Path(source)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, local_files_only=True))


def _weight_shards(source: Path) -> list[str]:
    index = source / _WEIGHTS_INDEX
    if index.exists():
        return sorted(set(json.loads(index.read_text())["weight_map"].values()))
    if (source / "model.safetensors").exists():
        return ["model.safetensors"]
    raise SealError(f"{source}: the policy update needs safetensors weights (model.safetensors or "
                    f"{_WEIGHTS_INDEX}); save the model with save_pretrained first")


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
