"""Many LoRA adapters on one frozen base model, each token routed to its own adapter.

PEFT applies one adapter at a time (its mixed-adapter batches are inference-only), but SEAL
trains K independent adapters (one per candidate self-edit) on the same base model. Here every
targeted `nn.Linear` is wrapped so that one forward/backward pass serves all K adapters: the
base matmul is shared, and the low-rank path (`A_k: [r, in]`, `B_k: [out, r]`) runs as batched
matmuls over the adapters' weights, a fixed number of ops whatever K. Each adapter has its own
parameters, so the gradients and optimizer state of one never touch another.

Routing says which adapter each token uses:
- `RowRouting(ids)`: one adapter per batch row (generation, evaluation); -1 means none;
- `TokenRouting.from_owners(...)`: one adapter per token, for packed rows that mix adapters (training).
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
    """Each token's place in a padded `[adapters, slots, in]` buffer, so that the low-rank path of
    a step that mixes adapters is one scatter, two batched matmuls and one gather, whatever K.

    The padding exists only in that small path (rank r << hidden size): on a GPU this model is
    bound by kernel launches, not arithmetic, so a few idle slots cost less than kernels per
    adapter. The base model's matmuls stay dense on the packed rows."""

    adapters: list[int]  # adapters present in the step, in buffer order
    slots: int  # per adapter: the most tokens any adapter has, plus two spares (padding's dump, a zero)
    scatter: torch.Tensor | None  # [tokens] buffer row each token's input goes to; None: one adapter owns every token
    gather: torch.Tensor | None  # [tokens] buffer row each token's output comes from

    @classmethod
    def from_owners(cls, owners: torch.Tensor, device: torch.device | str) -> TokenRouting:
        """Build from a host tensor of adapter ids (-1: no adapter, e.g. row padding), once per step,
        so that the forward passes never wait on the device. A token's slot is its rank among its
        adapter's tokens. Row padding's inputs all go to the last adapter's last slot, and its outputs
        come from the first adapter's second-to-last slot, which nothing writes: a zero delta."""
        flat = owners.reshape(-1).cpu()
        real = flat >= 0
        adapters, block, counts = torch.unique(flat[real], return_inverse=True, return_counts=True)
        if len(adapters) == 1 and bool(real.all()):
            return cls(adapters.tolist(), 0, None, None)
        slots = int(counts.max()) + 2
        order = torch.argsort(block, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order)) - (counts.cumsum(0) - counts).repeat_interleave(counts)
        row = block * slots + rank
        scatter = torch.full_like(flat, len(adapters) * slots - 1)
        scatter[real] = row
        gather = torch.full_like(flat, slots - 2)
        gather[real] = row
        return cls(adapters.tolist(), slots, scatter.to(device), gather.to(device))


class MultiLoraLinear(nn.Module):
    """`base(x) + scaling * B_k A_k x` for the adapter k that each token is routed to."""

    def __init__(self, base: nn.Linear, n_adapters: int, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        device = base.weight.device
        # One leaf tensor per adapter (its gradient and optimizer state are its own), float32 whatever
        # the base dtype: small updates must not round away.
        self.lora_A = nn.ParameterList(
            [nn.Parameter(torch.zeros(rank, base.in_features, device=device)) for _ in range(n_adapters)])
        self.lora_B = nn.ParameterList(
            [nn.Parameter(torch.zeros(base.out_features, rank, device=device)) for _ in range(n_adapters)])
        self.routing: RowRouting | TokenRouting | None = None
        self._stacked: tuple[torch.Tensor, torch.Tensor] | None = None

    def set_routing(self, routing: RowRouting | TokenRouting | None) -> None:
        self.routing = routing
        # Row routing is for inference: stack and cast the (then fixed) weights once, not at every
        # decoding step.
        self._stacked = None
        if isinstance(routing, RowRouting):
            dtype = self.base.weight.dtype
            with torch.no_grad():
                self._stacked = (torch.stack(list(self.lora_A)).to(dtype), torch.stack(list(self.lora_B)).to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        routing = self.routing
        if routing is None:
            return out
        x = self.dropout(x)
        if isinstance(routing, RowRouting):
            a, b = self._stacked
            wanted = routing.adapter_ids.expand(x.shape[0])
            ids = wanted.clamp(min=0)
            delta = torch.bmm(torch.bmm(x, a[ids].transpose(1, 2)), b[ids].transpose(1, 2))
            keep = (wanted >= 0).to(x.dtype)[:, None, None]
            return out + delta * (self.scaling * keep)
        if routing.scatter is None:  # one adapter owns every token: no scatter, no padding
            k = routing.adapters[0]
            delta = (x @ self.lora_A[k].to(x.dtype).T) @ self.lora_B[k].to(x.dtype).T
            return torch.add(out, delta, alpha=self.scaling)
        n, slots, width = len(routing.adapters), routing.slots, x.shape[-1]
        tokens = x.reshape(-1, width)
        padded = tokens.new_zeros(n * slots, width).index_copy_(0, routing.scatter, tokens).view(n, slots, width)
        # cat + view, not stack: the backward then hands every adapter a contiguous slice of one
        # gradient (stack's would be copied once per adapter).
        a = torch.cat([self.lora_A[k] for k in routing.adapters]).to(x.dtype).view(n, -1, width)
        b = torch.cat([self.lora_B[k] for k in routing.adapters]).to(x.dtype).view(n, -1, a.shape[1])
        delta = torch.bmm(torch.bmm(padded, a.transpose(1, 2)), b.transpose(1, 2)).view(n * slots, -1)
        return torch.add(out, delta.index_select(0, routing.gather).view_as(out), alpha=self.scaling)


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
        self.layers: dict[str, MultiLoraLinear] = {}
        for name, linear in target_linears(model, targets):
            wrapper = MultiLoraLinear(linear, n_adapters, rank, alpha, dropout)
            _set_submodule(model, name, wrapper)
            self.layers[name] = wrapper

    def adapter_parameters(self, k: int) -> list[nn.Parameter]:
        return [w for layer in self.layers.values() for w in (layer.lora_A[k], layer.lora_B[k])]

    def init_adapter(self, k: int, seed: int) -> None:
        """PEFT's default LoRA init (A ~ U(+-1/sqrt(in)), B = 0), drawn from the adapter's own seed."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in self.layers.values():
                bound = 1.0 / layer.base.in_features**0.5
                values = torch.rand(layer.lora_A[k].shape, generator=generator) * 2 * bound - bound
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
            layer.set_routing(routing)

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
