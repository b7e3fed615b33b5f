"""Attention that stays inside each sequence of a packed row, for training on the CPU.

Given packed rows (position ids restarting at 0), transformers builds one block-diagonal mask
over the whole row, so SDPA scores every pair of tokens in the row and discards most of them.
For a passage and five short implications that is 3.3x the needed work. Here each sequence gets
its own causal SDPA call through transformers' own `sdpa_attention_forward`, so GQA, scaling and
dropout stay theirs. This path is used only on the CPU: a GPU is bound by kernel launches, and
one masked kernel beats a loop of small ones there.

The sequence boundaries travel as `cu_seq_lens_q`, the keyword transformers already passes from
the model's forward down to every attention call for packed (varlen) batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "seal_per_sequence_sdpa"


def _per_sequence_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, *args, cu_seq_lens_q: list[int] | None = None,
                       **kwargs) -> tuple[torch.Tensor, None]:
    """`sdpa` when no boundaries are given; otherwise causal SDPA per sequence, with the batch's
    rows laid end to end (`cu_seq_lens_q` indexes that flat order)."""
    if cu_seq_lens_q is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
    rows, dtype = query.shape[0], query.dtype

    def flat(t: torch.Tensor) -> torch.Tensor:  # [rows, heads, tokens, dim] -> [1, heads, rows * tokens, dim]
        return t.float().transpose(0, 1).reshape(1, t.shape[1], -1, t.shape[3])

    # split, not slicing: its backward is one concatenation, where each slice's would fill a zero
    # gradient of the whole row.
    lengths = [end - start for start, end in zip(cu_seq_lens_q, cu_seq_lens_q[1:])]
    queries, keys, values = (flat(t).split(lengths, dim=2) for t in (query, key, value))
    # In float32 whatever the model's dtype. Measured on a 2-core AVX-512 BF16 CPU, one layer forward and
    # backward: the flash kernel takes 3.3 ms in float32, the math kernel 5.0 in bfloat16 (flash 7.3); whole
    # bfloat16 inner loops are 1.04x (packed job) and 1.11x (batched) faster (bench/step_profile.py's A/B).
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
        pieces = [sdpa_attention_forward(module, q, k, v, None, *args, **kwargs)[0]
                  for q, k, v in zip(queries, keys, values)]
    out = torch.cat(pieces, dim=1).to(dtype)  # [1, rows * tokens, heads, dim]
    return out.reshape(rows, -1, *out.shape[2:]), None


AttentionInterface.register(NAME, _per_sequence_sdpa)
AttentionMaskInterface.register(NAME, sdpa_mask)  # the mask of calls without boundaries


@contextmanager
def per_sequence_attention(model: torch.nn.Module) -> Iterator[bool]:
    """While inside, a CPU model that uses `sdpa` attends per sequence wherever its forward is given
    `cu_seq_lens_q`; yields whether it does. Other models and devices are left as they are, and so
    are models with a sliding window (only the mask knows it)."""
    config = getattr(model, "config", None)
    usable = (config is not None and getattr(config, "_attn_implementation", None) == "sdpa"
              and getattr(config, "sliding_window", None) is None
              and next(model.parameters()).device.type == "cpu")
    if not usable:
        yield False
        return
    model.set_attn_implementation(NAME)
    try:
        yield True
    finally:
        model.set_attn_implementation("sdpa")


def sequence_bounds(position_ids: torch.Tensor) -> list[int]:
    """Start of every sequence in the rows laid end to end (positions restart at 0), then the end."""
    starts = (position_ids.reshape(-1) == 0).nonzero().flatten().tolist()
    return starts + [position_ids.numel()]
