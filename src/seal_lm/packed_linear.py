"""Frozen linear layers whose weights are repacked once for the CPU's matmul library (oneDNN).

On the CPU, torch hands a bfloat16 or float32 linear layer to oneDNN, which first copies the plain
`[out, in]` weight into its own blocked layout, at every call. A frozen weight's copy can be made
once: `packed_linears(model)` swaps each frozen `nn.Linear` on the CPU for a `PackedLinear` that
shares its parameters and keeps the packed copies, one for `x W^T` and, for training, one for the
input gradient `g W`, and puts the original layers back on exit. Measured on a 2-core AVX-512 BF16
CPU (docs/benchmarks.md): per matmul 1.1x faster at 250 tokens, 2.8x at 8 tokens. torch makes such
copies only inside inductor's frozen inference graphs (`torch.ops.mkldnn._reorder_linear_weight`),
hence this file.

The copies cost the weights' bytes once more (twice with input gradients). They are kept per weight
for as long as the weight lives, and remade when it changes in place, so that repeated inner loops
pack once.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

_PACKED_DTYPES = (torch.float32, torch.bfloat16)


def packing_supported(weight: torch.Tensor) -> bool:
    """oneDNN's packed linear exists for this weight: on the CPU, float32, or bfloat16 where the CPU has it natively."""
    if weight.device.type != "cpu" or weight.dtype not in _PACKED_DTYPES or not torch.backends.mkldnn.is_available():
        return False
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise") or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False
    return weight.dtype == torch.float32 or torch.ops.mkldnn._is_mkldnn_bf16_supported()


class _Packs:
    """A weight's packed copies, for `x W^T` and (built on first use) for `g W`, and the weight's state they match."""

    def __init__(self, weight: torch.Tensor):
        self.state = _state(weight)
        with torch.inference_mode(False):  # made during generation, used by training too
            self.forward = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
        self.input_grad: torch.Tensor | None = None

    def for_input_grad(self, weight: torch.Tensor) -> torch.Tensor:
        if self.input_grad is None:
            self.input_grad = torch.ops.mkldnn._reorder_linear_weight(weight.detach().t().contiguous())
        return self.input_grad


_CACHE: dict[int, tuple[weakref.ref, _Packs]] = {}


def _state(weight: torch.Tensor) -> tuple[int, int, torch.dtype]:
    return weight.data_ptr(), weight._version, weight.dtype


def _packs(weight: torch.Tensor) -> _Packs:
    """The weight's packed copies, made once and remade only when the weight was changed or replaced."""
    key = id(weight)
    entry = _CACHE.get(key)
    if entry is not None and entry[0]() is weight and entry[1].state == _state(weight):
        return entry[1]
    packs = _Packs(weight)
    _CACHE[key] = (weakref.ref(weight, lambda _, key=key: _CACHE.pop(key, None)), packs)
    return packs


class PackedLinear(nn.Linear):
    """A frozen `nn.Linear` (the same parameters) computed with packed copies of its weight."""

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)  # nn.Linear's own __init__ would allocate a weight
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _FrozenLinear.apply(x, self)
        return _forward_any_shape(self, x)  # generation: no autograd node per layer and token


class _FrozenLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: PackedLinear) -> torch.Tensor:
        ctx.layer, ctx.shape = layer, x.shape
        return _forward_any_shape(layer, x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return linear_input_grad(ctx.layer, grad.reshape(-1, ctx.layer.out_features)).view(ctx.shape), None


def _forward_any_shape(layer: PackedLinear, x: torch.Tensor) -> torch.Tensor:
    return linear_forward(layer, x.reshape(-1, layer.in_features)).view(*x.shape[:-1], layer.out_features)


def linear_forward(layer: nn.Linear, x: torch.Tensor, add: torch.Tensor | None = None,
                   add_scale: float = 1.0) -> torch.Tensor:
    """`x W^T + b (+ add_scale * add)` for 2-D `x`, with the packed weight of a `PackedLinear`; the sum may be made
    in `add`'s memory."""
    if isinstance(layer, PackedLinear):
        packed = _packs(layer.weight).forward
        if add is None:
            return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, layer.bias, "none", [], "")
        add = add if add_scale == 1.0 else add.mul_(add_scale)
        return torch.ops.mkldnn._linear_pointwise.binary(x.contiguous(), add, packed, layer.bias, "add")
    if add is None:
        return nn.functional.linear(x, layer.weight, layer.bias)
    out = add.addmm_(x, layer.weight.T, beta=add_scale)
    return out if layer.bias is None else out.add_(layer.bias)


def linear_input_grad(layer: nn.Linear, grad: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
    """`grad W (+ add)` for 2-D `grad`: the gradient for the layer's input; the sum may be made in `add`'s memory."""
    if isinstance(layer, PackedLinear):
        packed = _packs(layer.weight).for_input_grad(layer.weight)
        if add is None:
            return torch.ops.mkldnn._linear_pointwise(grad.contiguous(), packed, None, "none", [], "")
        return torch.ops.mkldnn._linear_pointwise.binary(grad.contiguous(), add, packed, None, "add")
    return grad @ layer.weight if add is None else add.addmm_(grad, layer.weight)


@contextmanager
def packed_linears(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """While inside, every frozen `nn.Linear` of `model` that oneDNN can pack (CPU, float32 or native bfloat16) is a
    `PackedLinear`; yields how many. Layers wrapped by LoRA (`MultiLoraLinear.base`) and the output head included."""
    swapped: list[tuple[nn.Module, str, nn.Linear]] = []
    if enabled:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if (type(child) is nn.Linear and not child.weight.requires_grad
                        and (child.bias is None or not child.bias.requires_grad) and packing_supported(child.weight)):
                    setattr(parent, name, PackedLinear(child))
                    swapped.append((parent, name, child))
    try:
        yield len(swapped)
    finally:
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)
