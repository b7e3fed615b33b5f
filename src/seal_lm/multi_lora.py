"""Many LoRA adapters on one frozen base model, each token routed to its own adapter.

PEFT applies one adapter at a time (its mixed-adapter batches are inference-only), but SEAL
trains K independent adapters (one per candidate self-edit) on the same base model. Here every
targeted `nn.Linear` is wrapped so that one forward/backward pass serves all K adapters: the
base matmul is shared, and the low-rank path runs as two batched matmuls over stacked weights
`A: [K, r, in]`, `B: [K, out, r]`. Adapters are independent parameters slices, so gradients and
(elementwise) Adam updates of one adapter never touch another.

Routing says which adapter each token uses:
- `RowRouting(ids)`: one adapter per batch row (generation, evaluation); -1 means none;
- `TokenRouting(...)`: per token, for packed rows that mix adapters (training).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class RowRouting:
    adapter_ids: torch.Tensor  # [batch] long, or [1] for every row; -1: base model only


@dataclass
class TokenRouting:
    """Tokens of adapter k are `flat_tokens[gather[k, :counts[k]]]`; padded slots are masked out."""

    gather: torch.Tensor  # [K, C] long indices into the flattened (batch * seq) tokens
    valid: torch.Tensor  # [K, C, 1] float, 1 for real slots

    @classmethod
    def from_token_adapters(cls, token_adapters: torch.Tensor, n_adapters: int) -> TokenRouting:
        """Build from a [batch, seq] tensor of adapter ids (-1: no adapter, e.g. padding)."""
        flat = token_adapters.reshape(-1)
        positions = [torch.nonzero(flat == k).squeeze(1) for k in range(n_adapters)]
        width = max(1, max(len(p) for p in positions))
        gather = torch.zeros(n_adapters, width, dtype=torch.long, device=flat.device)
        valid = torch.zeros(n_adapters, width, 1, device=flat.device)
        for k, p in enumerate(positions):
            gather[k, : len(p)] = p
            valid[k, : len(p)] = 1.0
        return cls(gather, valid)


class MultiLoraLinear(nn.Module):
    """`base(x) + scaling * B_k A_k x` for the adapter k that each token is routed to."""

    def __init__(self, base: nn.Linear, n_adapters: int, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        # Adapter weights stay float32 whatever the base dtype: small updates must not round away.
        self.lora_A = nn.Parameter(torch.zeros(n_adapters, rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(n_adapters, base.out_features, rank, device=base.weight.device))
        self.routing: RowRouting | TokenRouting | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        routing = self.routing
        if routing is None:
            return out
        a, b = self.lora_A.to(x.dtype), self.lora_B.to(x.dtype)
        x = self.dropout(x)
        if isinstance(routing, RowRouting):
            wanted = routing.adapter_ids.expand(x.shape[0])
            ids = wanted.clamp(min=0)
            delta = torch.bmm(torch.bmm(x, a[ids].transpose(1, 2)), b[ids].transpose(1, 2))
            keep = (wanted >= 0).to(x.dtype)[:, None, None]
            return out + delta * (self.scaling * keep)
        flat = x.reshape(-1, x.shape[-1])
        xs = flat[routing.gather]  # [K, C, in]
        delta = torch.bmm(torch.bmm(xs, a.transpose(1, 2)), b.transpose(1, 2)) * routing.valid.to(x.dtype)
        flat_delta = torch.zeros(flat.shape[0], out.shape[-1], dtype=out.dtype, device=out.device)
        flat_delta = flat_delta.index_add(0, routing.gather.reshape(-1), delta.reshape(-1, out.shape[-1]))
        return out + self.scaling * flat_delta.view_as(out)


def target_linears(model: nn.Module, targets: str | Sequence[str]) -> list[tuple[str, nn.Linear]]:
    """The linear layers to adapt: "all-linear" means every one except the output head."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    found = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module is output:
            continue
        if targets == "all-linear" or name.rsplit(".", 1)[-1] in targets:
            found.append((name, module))
    if not found:
        raise ValueError(f"no linear layer matches target modules {targets!r}")
    return found


class MultiLora:
    """K adapters injected into a model; `remove()` restores the original modules exactly."""

    def __init__(self, model: nn.Module, n_adapters: int, rank: int, alpha: float,
                 targets: str | Sequence[str] = "all-linear", dropout: float = 0.0):
        self.model = model
        self.n_adapters = n_adapters
        self.layers: dict[str, MultiLoraLinear] = {}
        for name, linear in target_linears(model, targets):
            wrapper = MultiLoraLinear(linear, n_adapters, rank, alpha, dropout)
            _set_submodule(model, name, wrapper)
            self.layers[name] = wrapper

    def parameters(self) -> Iterator[nn.Parameter]:
        for layer in self.layers.values():
            yield layer.lora_A
            yield layer.lora_B

    def init_adapter(self, k: int, seed: int) -> None:
        """PEFT's default LoRA init (A ~ U(+-1/sqrt(in)), B = 0), drawn from the adapter's own seed."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in self.layers.values():
                bound = 1.0 / layer.base.in_features**0.5
                values = torch.rand(layer.lora_A.shape[1:], generator=generator) * 2 * bound - bound
                layer.lora_A[k].copy_(values)
                layer.lora_B[k].zero_()

    def load_adapter(self, k: int, weights: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        with torch.no_grad():
            for name, layer in self.layers.items():
                a, b = weights[name]
                layer.lora_A[k].copy_(a)
                layer.lora_B[k].copy_(b)

    def adapter_weights(self, k: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {name: (layer.lora_A[k].detach().cpu().clone(), layer.lora_B[k].detach().cpu().clone())
                for name, layer in self.layers.items()}

    def route(self, routing: RowRouting | TokenRouting | None) -> None:
        for layer in self.layers.values():
            layer.routing = routing

    def remove(self) -> None:
        for name, layer in self.layers.items():
            _set_submodule(self.model, name, layer.base)
        self.layers = {}


@contextmanager
def injected(model: nn.Module, n_adapters: int, rank: int, alpha: float,
             targets: str | Sequence[str] = "all-linear", dropout: float = 0.0) -> Iterator[MultiLora]:
    lora = MultiLora(model, n_adapters, rank, alpha, targets, dropout)
    try:
        yield lora
    finally:
        lora.remove()


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
