"""Many LoRA adapters on one frozen base model, each token routed to its own adapter.

PEFT applies one adapter at a time (its mixed-adapter batches are inference-only), but SEAL
trains K independent adapters (one per candidate self-edit) on the same base model. Here every
targeted `nn.Linear` is wrapped so that one forward/backward pass serves all K adapters: the
base matmul is shared, and the low-rank path (`A_k: [r, in]`, `B_k: [out, r]`) runs as batched
matmuls over the adapters' weights, a fixed number of ops whatever K. Adapter k's weights are row k
of one buffer, and its gradient row k of another, so the optimizer updates each adapter with its
own learning rate and state in one call, and no adapter's gradient or state touches another's.

Routing says which adapter each token uses:
- `RowRouting(ids)`: one adapter per batch row (generation, evaluation); -1 means none;
- `TokenRouting.from_owners(...)`: one adapter per token, for packed rows that mix adapters (training).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from seal_lm.errors import SealError
from seal_lm.packed_linear import linear_forward, linear_input_grad


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
    index: torch.Tensor | None  # `adapters` on the device, to pick their weights when some are absent

    @classmethod
    def from_owners(cls, owners: torch.Tensor, device: torch.device | str, bucket: bool = False) -> TokenRouting:
        """Build from a host tensor of adapter ids (-1: no adapter, e.g. row padding), once per step,
        so that the forward passes never wait on the device. A token's slot is its rank among its
        adapter's tokens. Row padding's inputs all go to the last adapter's last slot, and its outputs
        come from the first adapter's second-to-last slot, which nothing writes: a zero delta. With `bucket`, the
        slots are rounded up to a power of two, so that steps of similar sizes share a shape (CUDA graphs)."""
        flat = owners.reshape(-1).cpu()
        real = flat >= 0
        adapters, block, counts = torch.unique(flat[real], return_inverse=True, return_counts=True)
        if len(adapters) == 1 and bool(real.all()):
            return cls(adapters.tolist(), 0, None, None, None)
        slots = int(counts.max()) + 2
        if bucket:
            slots = 1 << (slots - 1).bit_length()
        order = torch.argsort(block, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order)) - (counts.cumsum(0) - counts).repeat_interleave(counts)
        row = block * slots + rank
        scatter = torch.full_like(flat, len(adapters) * slots - 1)
        scatter[real] = row
        gather = torch.full_like(flat, slots - 2)
        gather[real] = row
        return cls(adapters.tolist(), slots, scatter.to(device), gather.to(device), adapters.to(device))


class MultiLoraLinear(nn.Module):
    """`base(x) + scaling * B_k A_k x` for the adapter k that each token is routed to."""

    def __init__(self, base: nn.Linear, n_adapters: int, rank: int, alpha: float, dropout: float = 0.0,
                 weights: torch.Tensor | None = None):
        """`weights` ([K, rank * (in + out)], e.g. this layer's columns of `MultiLora.weights`) holds
        the adapters' values; by default the layer allocates its own."""
        super().__init__()
        self.base = base
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        if weights is None:
            weights = torch.zeros(n_adapters, rank * (base.in_features + base.out_features), device=base.weight.device)
        # All adapters' A as one leaf [K, r, in] and B as one [K, out, r]: the layout the batched matmuls
        # take, so a step neither copies nor gathers gradients per adapter. Float32 whatever the base
        # dtype: small updates must not round away.
        a, b = lora_views(weights, rank, base)
        self.lora_A, self.lora_B = nn.Parameter(a), nn.Parameter(b)
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
                self._stacked = (self.lora_A.to(dtype), self.lora_B.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routing = self.routing
        if routing is None:
            return self.base(x)
        if isinstance(routing, RowRouting):
            out, x = self.base(x), self.dropout(x)
            a, b = self._stacked
            wanted = routing.adapter_ids.expand(x.shape[0])
            ids = wanted.clamp(min=0)
            delta = torch.bmm(torch.bmm(x, a[ids].transpose(1, 2)), b[ids].transpose(1, 2))
            keep = (wanted >= 0).to(x.dtype)[:, None, None]
            return out + delta * (self.scaling * keep)
        a, b = self.lora_A, self.lora_B
        if routing.scatter is None and len(a) == 1:
            # With one adapter, a view: its backward costs no kernel, where a selection's allocates the stack.
            a, b = a.flatten(0, 1), b.flatten(0, 1)
        elif routing.scatter is None:
            a, b = a[routing.adapters[0]], b[routing.adapters[0]]
        elif len(routing.adapters) < len(a):  # some adapters have no tokens in this step
            a, b = a.index_select(0, routing.index), b.index_select(0, routing.index)
        dropped = None if isinstance(self.dropout, nn.Identity) else self.dropout(x)
        return LoraLinearStep.apply(x, dropped, self.base, a, b, self.scaling, routing)


class LoraLinearStep(torch.autograd.Function):
    """A training step through `base(x) + scaling * B_k A_k x`, the base layer frozen.

    Autograd would give the input two gradients, `g @ W` and the LoRA path's, each a fresh [tokens, in]
    tensor, and add them (and the same for the output): on a CPU the page faults of fresh multi-MB
    tensors and the adds cost more than the LoRA path's own matmuls (docs/benchmarks.md). Here one of
    the two products accumulates into the other's tensor (`addmm_`, or oneDNN's fused add where the base
    layer is a `PackedLinear`), forward and backward. `a` [r, in]
    and `b` [out, r] when one adapter owns every token, else [n, r, in] and [n, out, r] with `routing`'s
    scatter and gather."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dropped: torch.Tensor | None, base: nn.Linear, a: torch.Tensor,
                b: torch.Tensor, scaling: float, routing: TokenRouting) -> torch.Tensor:
        if base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad):
            raise SealError("multi-adapter LoRA trains adapters on a frozen base layer; its weight requires grad")
        width_in, width_out = x.shape[-1], base.out_features
        tokens = x.reshape(-1, width_in)
        lora_in = tokens if dropped is None else dropped.reshape(-1, width_in)
        a_cast, b_cast = a.to(x.dtype), b.to(x.dtype)
        if routing.scatter is None:
            low = lora_in @ a_cast.T
            out = linear_forward(base, tokens).addmm_(low, b_cast.T, alpha=scaling)
        else:
            n, slots = len(routing.adapters), routing.slots
            lora_in = lora_in.new_zeros(n * slots, width_in).index_copy_(0, routing.scatter, lora_in)
            low = torch.bmm(lora_in.view(n, slots, width_in), a_cast.transpose(1, 2))
            delta = torch.bmm(low, b_cast.transpose(1, 2)).view(n * slots, width_out)
            out = linear_forward(base, tokens, add=delta.index_select(0, routing.gather), add_scale=scaling)
        ctx.save_for_backward(lora_in, low, a_cast, b_cast)
        ctx.base, ctx.scaling, ctx.routing = base, scaling, routing
        ctx.shapes = (x.shape, None if dropped is None else dropped.shape)
        ctx.dtypes = (a.dtype, b.dtype)
        return out.view(*x.shape[:-1], width_out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        lora_in, low, a_cast, b_cast = ctx.saved_tensors
        base, routing, scaling = ctx.base, ctx.routing, ctx.scaling
        x_shape, dropped_shape = ctx.shapes
        g = grad.reshape(-1, base.out_features)
        if routing.scatter is None:
            low_grad = (g @ b_cast).mul_(scaling)
            grad_b = (g.T @ low).mul_(scaling)
            grad_a = low_grad.T @ lora_in
        else:
            n, slots = len(routing.adapters), routing.slots
            g_slots = g.new_zeros(n * slots, g.shape[1]).index_add_(0, routing.gather, g).view(n, slots, -1)
            low_grad = torch.bmm(g_slots, b_cast).mul_(scaling)
            grad_b = torch.bmm(g_slots.transpose(1, 2), low).mul_(scaling)
            grad_a = torch.bmm(low_grad.transpose(1, 2), lora_in.view(n, slots, -1))
        grad_a, grad_b = grad_a.to(ctx.dtypes[0]), grad_b.to(ctx.dtypes[1])
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
            return None, None, None, grad_a, grad_b, None, None
        if routing.scatter is None and dropped_shape is None:
            grad_x, grad_dropped = linear_input_grad(base, g).addmm_(low_grad, a_cast), None  # no second [tokens, in]
        else:
            lora_grad = (low_grad @ a_cast if routing.scatter is None else
                         torch.bmm(low_grad, a_cast).view(-1, base.in_features).index_select(0, routing.scatter))
            if dropped_shape is None:  # the base's gradient accumulated into the LoRA path's
                grad_x, grad_dropped = linear_input_grad(base, g, add=lora_grad), None
            else:  # dropout: the LoRA path's input is a tensor of its own
                grad_x, grad_dropped = linear_input_grad(base, g), lora_grad.view(dropped_shape)
        return grad_x.view(x_shape), grad_dropped, None, grad_a, grad_b, None, None


def lora_views(rows: torch.Tensor, rank: int, base: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """A [K, r, in] and B [K, out, r] as views of `rows` [K, r * (in + out)]."""
    split = rank * base.in_features
    return (rows[:, :split].view(len(rows), rank, base.in_features),
            rows[:, split:].view(len(rows), base.out_features, rank))


def target_linears(model: nn.Module, targets: str | Sequence[str]) -> list[tuple[str, nn.Linear]]:
    """The linear layers to adapt: "all-linear" means every one except the output head; "peft-default" the
    modules PEFT adapts when a LoraConfig names none (q_proj and v_proj for Llama and Qwen2)."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if targets == "peft-default":
        targets = peft_default_targets(model)
    linears = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and module is not output]
    found = [(name, m) for name, m in linears if targets == "all-linear" or name.rsplit(".", 1)[-1] in targets]
    unknown = [] if targets == "all-linear" else sorted(set(targets) - {n.rsplit(".", 1)[-1] for n, _ in found})
    if unknown or not found:
        choices = sorted({n.rsplit(".", 1)[-1] for n, _ in linears})
        raise SealError(f"target_modules: {', '.join(unknown) or targets} not in this model (choose from: "
                        f"{', '.join(choices)}, all-linear, peft-default)")
    return found


def peft_default_targets(model: nn.Module) -> list[str]:
    """PEFT's own default LoRA targets for the model's architecture."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
        raise SealError(f"target_modules: PEFT has no default targets for model type {model_type!r}; name them")
    return list(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type])


STRIDED_GRADIENTS_WARNING = "grad and param do not obey the gradient layout contract"


class MultiLora:
    """K adapters injected into a model; `remove()` restores the original modules exactly.

    Adapter k's weights, all layers' A and B, are row k of one buffer (`weights`, [K, numel]); each
    layer's stacked `lora_A` and `lora_B` are views across the rows. A forward pass thus reads every
    adapter without copying, and an optimizer updates a whole adapter in one call on its row
    (`optimizer_rows`), with that adapter's own learning rate."""

    def __init__(self, model: nn.Module, n_adapters: int, rank: int, alpha: float,
                 targets: str | Sequence[str] = "all-linear", dropout: float = 0.0):
        self.model = model
        found = target_linears(model, targets)
        widths = [rank * (linear.in_features + linear.out_features) for _, linear in found]
        self.weights = torch.zeros(n_adapters, sum(widths), device=found[0][1].weight.device)
        self.gradients: torch.Tensor | None = None
        self.rank = rank
        self.layers: dict[str, MultiLoraLinear] = {}
        self._columns: dict[str, slice] = {}  # each layer's columns of the buffers
        start = 0
        for (name, linear), width in zip(found, widths):
            self._columns[name] = slice(start, start + width)
            start += width
            wrapper = MultiLoraLinear(linear, n_adapters, rank, alpha, dropout, self.weights[:, self._columns[name]])
            _set_submodule(model, name, wrapper)
            self.layers[name] = wrapper

    def optimizer_rows(self) -> list[nn.Parameter]:
        """Adapter k's row of the buffer as one parameter, whose `.grad` is row k of `gradients`, the
        buffer every backward pass accumulates into (so zero `gradients` between steps; set a row's
        `.grad` to None to have the optimizer skip that adapter).

        A layer's gradient views are strided (a row spans all layers), so autograd adds into them in
        place rather than adopting its own layout, and warns once that this "may impair performance"
        (`STRIDED_GRADIENTS_WARNING`): it is one add per layer per step, whatever the number of adapters."""
        self.gradients = torch.zeros_like(self.weights)
        for name, layer in self.layers.items():
            layer.lora_A.grad, layer.lora_B.grad = lora_views(self.gradients[:, self._columns[name]], self.rank, layer.base)
        rows = [nn.Parameter(row) for row in self.weights]
        for row, gradient in zip(rows, self.gradients):
            row.grad = gradient
        return rows

    def init_adapter(self, k: int, seed: int) -> None:
        """PEFT's default LoRA init (A ~ U(+-1/sqrt(in)), B = 0), drawn from the adapter's own seed."""
        generator = torch.Generator().manual_seed(seed)
        row = torch.zeros(self.weights.shape[1])
        for name, layer in self.layers.items():
            a, _ = lora_views(row[None, self._columns[name]], self.rank, layer.base)
            bound = 1.0 / layer.base.in_features**0.5
            a.copy_(torch.rand(a.shape, generator=generator) * 2 * bound - bound)
        self._set_row(k, row)

    def load_adapter(self, k: int, weights: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        row = torch.empty(self.weights.shape[1])
        for name, layer in self.layers.items():
            a, b = lora_views(row[None, self._columns[name]], self.rank, layer.base)
            a[0], b[0] = weights[name]
        self._set_row(k, row)

    def adapter_weights(self, k: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        row = self.weights[k].cpu()
        return {name: tuple(w[0].clone() for w in lora_views(row[None, self._columns[name]], self.rank, layer.base))
                for name, layer in self.layers.items()}

    def _set_row(self, k: int, row: torch.Tensor) -> None:
        """One host-to-device copy per adapter (assembled on the host), not one per layer."""
        with torch.no_grad():
            self.weights[k].copy_(row)

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
