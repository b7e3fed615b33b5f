"""The training loss from the last hidden states: output head and cross-entropy, chunk by chunk of
tokens, with the gradient computed during the forward.

The plain path keeps `[tokens, vocab]` logits, their float32 copy, the log-softmax and a
zero-filled gradient alive at once: with SmolLM2's 49k vocabulary that is several 60 MB buffers
per step, which on a CPU cost page faults and memory traffic on top of the head's matmuls. Here a
chunk's logits live in one buffer that is turned in place into softmax minus one-hot, and the
gradient for the hidden states is ready when the forward ends (the loss is the last op of a step,
so nothing else needs the logits). torch has no such fused op, hence this file.
"""

from __future__ import annotations

import torch
from torch import nn

from seal_lm.packed_linear import linear_forward, linear_input_grad

# Architectures whose logits are exactly `lm_head(decoder output)`; others (Gemma 2 caps its logits,
# Cohere and Granite rescale them) keep the plain path.
PLAIN_HEAD_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3", "smollm3", "olmo2", "phi3"})


def plain_output_head(model: nn.Module) -> nn.Linear | None:
    """The frozen output head of a model whose logits are just `head(decoder output)`, else None."""
    if getattr(getattr(model, "config", None), "model_type", None) not in PLAIN_HEAD_MODELS:
        return None
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear) or head.weight.requires_grad:
        return None
    return head


def default_chunk_rows(vocab_size: int, device: torch.device) -> int:
    # CPU: 16 MiB of float32 logits per chunk, which the allocator reuses instead of faulting in fresh
    # pages every step. GPU: bound by kernel launches, so few large chunks.
    budget = 2**24 if device.type == "cpu" else 2**28
    return max(16, budget // (4 * vocab_size))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, head, labels, token_weights, rows):
        losses = torch.zeros(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden)
        for start in range(0, hidden.shape[0], rows):
            span = slice(start, start + rows)
            valid = labels[span] >= 0
            target = labels[span].clamp(min=0)
            weight_of = torch.where(valid, token_weights[span], 0.0)
            logits = linear_forward(head, hidden[span]).float()
            target_logit = logits.gather(1, target[:, None])[:, 0]
            top = logits.amax(dim=1)
            probs = logits.sub_(top[:, None]).exp_()  # in place: one buffer per chunk
            total = probs.sum(dim=1)
            losses[span] = torch.where(valid, top + total.log() - target_logit, 0.0)
            probs.mul_((weight_of / total)[:, None])
            probs[torch.arange(len(target), device=probs.device), target] -= weight_of
            grad[span] = linear_input_grad(head, probs.to(hidden.dtype))
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(losses)
        return (losses * token_weights).sum(), losses

    @staticmethod
    def backward(ctx, grad_total, _grad_losses):
        (grad,) = ctx.saved_tensors
        return grad * grad_total.to(grad.dtype), None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, head: nn.Linear, labels: torch.Tensor, token_weights: torch.Tensor,
                         chunk_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`sum_t w_t * CE(head(h_t), y_t)`, differentiable in `hidden` ([tokens, hidden]), and each
    token's unweighted loss (0 where `y_t` is -100). The head must be frozen (a `PackedLinear` computes with its
    packed weight)."""
    rows = chunk_rows or default_chunk_rows(head.out_features, hidden.device)
    return _LinearCrossEntropy.apply(hidden, head, labels, token_weights.float(), rows)
