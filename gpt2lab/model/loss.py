"""Cross-entropy of the output head without the whole logits tensor.

The head's logits (tokens x vocab) are the largest activation of a GPT-2-sized model: at 32 x 1024 tokens
and 50,304 entries, 3.3 GB in bf16 and twice that upcast to fp32 for the softmax, plus the same again for
their gradient. ChunkedHeadLoss computes the loss chunk by chunk and, in the same pass, the gradients
with respect to the hidden states and the head weight, so no chunk's logits outlive it. Backward only scales
the stored gradients. The matmuls are the ones a plain head does (one forward, two for gradients); the
softmax runs in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ChunkedHeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int):
        h = hidden.reshape(-1, hidden.size(-1))
        t = targets.reshape(-1)
        n = (t != -1).sum().clamp(min=1)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros_like(weight, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, h.size(0), chunk):
            hc, tc = h[start : start + chunk], t[start : start + chunk]
            logits = F.linear(hc, weight).float()  # bf16 matmul under autocast, softmax in fp32
            loss = F.cross_entropy(logits, tc, ignore_index=-1, reduction="sum")
            total += loss
            # d(sum loss)/d logits = softmax - one_hot, zero where the target is ignored
            grad = logits.softmax(dim=-1)
            valid = tc != -1
            grad[valid, tc[valid]] -= 1.0
            grad[~valid] = 0.0
            grad_h[start : start + chunk] = F.linear(grad, weight.t())  # grad @ weight
            grad_w += F.linear(grad.t(), hc.t()).float()  # grad.T @ hc
        ctx.save_for_backward(grad_h, grad_w, n)
        ctx.shapes = hidden.shape
        return total / n

    @staticmethod
    def backward(ctx, grad_output):
        grad_h, grad_w, n = ctx.saved_tensors
        scale = grad_output / n
        return (grad_h * scale).view(ctx.shapes), grad_w * scale, None, None


def chunked_head_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Mean cross-entropy of hidden @ weight.T against targets (-1 ignored), chunk tokens at a time."""
    return ChunkedHeadLoss.apply(hidden, weight, targets, chunk)
