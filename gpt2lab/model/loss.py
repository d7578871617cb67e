"""Cross-entropy of the output head without the whole logits tensor.

The head's logits (tokens x vocab) are the largest activation of a GPT-2-sized model: at 32 x 1024 tokens
and 50,304 entries, 3.3 GB in bf16 and twice that upcast to fp32 for the softmax, plus the same again for
their gradient. head_loss computes the loss chunk by chunk; in training it computes, in the same pass, the
gradients with respect to the hidden states and the head weight, so no chunk's logits outlive it, and
backward only scales the stored gradients. The matmuls are the ones a plain head does (one forward, two for
gradients); the softmax runs in fp32.

No step reads a device value back to the host (no boolean-mask indexing, no .item()): ignored targets are
masked by multiplication, so the GPU never waits on the CPU, and torch.compile traces it as one graph.

On a CPU without torch.compile (eager), each chunk takes a second form that computes the same numbers in place:
eager PyTorch runs every elementwise op as its own pass over a fresh (chunk x vocab) fp32 buffer, and on a CPU
those passes, not the matmuls, were most of a small model's step; in place, a whole eager step runs 1.83x faster
for `tiny` and 1.64x for `gpt2-15m` on one thread (bench/head_loss_eager_cpu.py, bench/NOTES.md).
A GPU, or any compiled run, keeps the fusable form above unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, cap: float | None):
    """fp32 logits of one chunk (bf16 matmul under autocast), soft-capped; also tanh for the cap's gradient.
    Elementwise only, so that a compiler fuses the upcast into the passes that read it."""
    raw = F.linear(h, weight)
    logits = raw.float()
    if cap is None:
        return logits, None, raw.dtype
    squashed = torch.tanh(logits / cap)
    return cap * squashed, squashed, raw.dtype


def _chunk_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor):
    """Summed loss over valid rows, and the log-sum-exp for the gradient."""
    lse = torch.logsumexp(logits, dim=-1)
    target_logit = logits.gather(1, targets.clamp(min=0)[:, None])[:, 0]
    return ((lse - target_logit) * valid).sum(), lse


def _chunk_grad(logits: torch.Tensor, lse: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                squashed: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """d(summed loss)/d(pre-cap logits) = (softmax - one_hot(target)) * valid [* (1 - tanh^2)], in `dtype`.
    The one-hot is a comparison with the column index rather than a scatter: one fusable elementwise pass."""
    columns = torch.arange(logits.size(1), device=logits.device)
    one_hot = (columns[None, :] == targets[:, None]).float()
    grad = (torch.exp(logits - lse[:, None]) - one_hot) * valid[:, None]
    if squashed is not None:
        grad = grad * (1.0 - squashed * squashed)
    return grad.to(dtype)


def _exp_in_place(buf: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss over valid rows of the fp32 logits `buf`, which it overwrites with exp(logits - row max), and
    the row sums of those: _chunk_loss's numbers, without a pass that allocates."""
    top = buf.amax(dim=1)
    target_logit = buf.gather(1, targets.clamp(min=0)[:, None])[:, 0]
    sums = buf.sub_(top[:, None]).exp_().sum(dim=1)
    return ((top + sums.log() - target_logit) * valid).sum(), sums


def _logits_in_place(hc: torch.Tensor, weight: torch.Tensor, cap: float | None, keep_tanh: bool):
    """_chunk_logits in one fp32 buffer: (soft-capped logits, a copy of their tanh if `keep_tanh` and capped,
    the matmul's dtype)."""
    raw = F.linear(hc, weight)
    buf = raw.float()
    squashed = None
    if cap is not None:
        buf.div_(cap).tanh_()
        squashed = buf.clone() if keep_tanh else None
        buf.mul_(cap)
    return buf, squashed, raw.dtype


def _chunk_in_place(hc: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                    cap: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, d(summed loss)/d(raw logits) in the matmul's dtype) of one chunk, as _chunk_logits,
    _chunk_loss and _chunk_grad compute them, in one fp32 buffer that every pass updates in place."""
    buf, squashed, dtype = _logits_in_place(hc, weight, cap, keep_tanh=True)
    loss, sums = _exp_in_place(buf, targets, valid)
    buf.mul_((valid / sums)[:, None])  # softmax, zero on ignored rows
    buf.scatter_add_(1, targets.clamp(min=0)[:, None], -valid[:, None])  # minus the one-hot of valid targets
    if squashed is not None:
        buf.mul_(squashed.mul_(squashed).neg_().add_(1.0))
    return loss, buf.to(dtype)


def _in_place_chunks(h: torch.Tensor) -> bool:
    """The in-place form (training and evaluation): eager runs on a CPU only."""
    return h.device.type == "cpu" and not torch.compiler.is_compiling()


class ChunkedHeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int, cap: float | None):
        h = hidden.reshape(-1, hidden.size(-1))
        t = targets.reshape(-1)
        valid_all = (t != -1).float()
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros_like(weight, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        in_place = _in_place_chunks(h)
        for start in range(0, h.size(0), chunk):
            hc, tc, valid = h[start : start + chunk], t[start : start + chunk], valid_all[start : start + chunk]
            if in_place:
                loss, grad = _chunk_in_place(hc, weight, tc, valid, cap)
            else:
                logits, squashed, mm_dtype = _chunk_logits(hc, weight, cap)
                loss, lse = _chunk_loss(logits, tc, valid)
                grad = _chunk_grad(logits, lse, tc, valid, squashed, mm_dtype)  # in the matmuls' dtype (bf16 under autocast)
            total = total + loss
            grad_h[start : start + chunk] = F.linear(grad, weight.t())  # grad @ weight
            grad_w += F.linear(grad.t(), hc.t()).float()  # grad.T @ hc
        n = valid_all.sum().clamp(min=1.0)
        ctx.save_for_backward(grad_h, grad_w, n)
        ctx.shape, ctx.weight_dtype = hidden.shape, weight.dtype
        return total / n

    @staticmethod
    def backward(ctx, grad_output):
        grad_h, grad_w, n = ctx.saved_tensors
        scale = grad_output / n
        return (grad_h * scale).view(ctx.shape), (grad_w * scale).to(ctx.weight_dtype), None, None, None


def _loss_only(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int, cap: float | None):
    """The same mean loss with no gradient: evaluation at the training micro-batch without all logits."""
    h, t = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)
    valid_all = (t != -1).float()
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    in_place = _in_place_chunks(h)
    for start in range(0, h.size(0), chunk):
        tc, valid = t[start : start + chunk], valid_all[start : start + chunk]
        if in_place:
            buf, _, _ = _logits_in_place(h[start : start + chunk], weight, cap, keep_tanh=False)
            total = total + _exp_in_place(buf, tc, valid)[0]
        else:
            logits, _, _ = _chunk_logits(h[start : start + chunk], weight, cap)
            total = total + _chunk_loss(logits, tc, valid)[0]
    return total / valid_all.sum().clamp(min=1.0)


def head_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 8192,
              cap: float | None = None) -> torch.Tensor:
    """Mean cross-entropy of (soft-capped) hidden @ weight.T against targets (-1 ignored), chunk tokens at a time."""
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return ChunkedHeadLoss.apply(hidden, weight, targets, chunk, cap)
    return _loss_only(hidden, weight, targets, chunk, cap)


@torch.no_grad()
def head_scores(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 8192,
                cap: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy and whether the top-1 prediction is the target, both (B, T), chunk tokens at a
    time: what evaluations need (HellaSwag's ending losses, next-token accuracy) without the whole logits."""
    h, t = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)
    losses = torch.empty(t.shape, dtype=torch.float32, device=h.device)
    correct = torch.empty(t.shape, dtype=torch.bool, device=h.device)
    for start in range(0, h.size(0), chunk):
        tc = t[start : start + chunk]
        logits, _, _ = _chunk_logits(h[start : start + chunk], weight, cap)
        target_logit = logits.gather(1, tc.clamp(min=0)[:, None])[:, 0]
        losses[start : start + chunk] = (torch.logsumexp(logits, dim=-1) - target_logit) * (tc != -1)
        correct[start : start + chunk] = logits.argmax(dim=-1) == tc
    return losses.view(targets.shape), correct.view(targets.shape)
