"""Next-token cross-entropy fused with the output head, in chunks of tokens: the (tokens x
vocabulary) logits never exist whole, in fp32 or otherwise.

Each chunk's logits are made, turned into its loss (log-sum-exp in fp32) and, at once,
into the gradients of the hidden states and of the head's weight (softmax minus the
one-hot target), which is all backward then needs: it scales the stored gradients by the
incoming one. Memory: one chunk's logits instead of the whole batch's (and instead of
their fp32 copy and their gradient); FLOPs: the same three matmuls as the plain path.
Liger-Kernel's fused linear cross-entropy works the same way with Triton kernels; this is
the plain PyTorch form, usable on any device, equal to ``F.cross_entropy`` of the full
logits and its gradients within fp32 tolerance (``tests/unit/test_model.py``).
"""

from __future__ import annotations

from typing import Any

import torch

from .config import LOSS_CHUNK_TOKENS

CHUNK_TOKENS = LOSS_CHUNK_TOKENS  # rows of logits made at a time


def _low(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.dtype, torch.Tensor]:
    """The matmuls' dtype (autocast's, else ``x``'s) and the weight in it, cast once, not
    once per chunk and matmul."""
    low = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled() else x.dtype
    return low, weight.to(low)


def _chunk_logp(xc: torch.Tensor, w: torch.Tensor, low: torch.dtype, vocab: int) -> torch.Tensor:
    """fp32 log-probabilities (c, V) of a chunk of rows; padding columns get none (and so
    no gradient)."""
    logits = (xc.to(low) @ w.t()).float()
    if vocab < logits.shape[1]:
        logits[:, vocab:] = float("-inf")
    return torch.log_softmax(logits, dim=-1)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk: int, mean: bool, vocab: int) -> torch.Tensor:
        n_valid = (targets >= 0).sum()
        dx = torch.empty_like(x)
        dw: torch.Tensor | None = None
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        low, w = _low(x, weight)
        # no value is read back to the host and no branch depends on one: under
        # torch.compile the whole chunk (upcast, log-sum-exp, softmax minus one-hot, mask,
        # downcast) is then one fused kernel between the matmuls
        for s in range(0, x.shape[0], chunk):
            xc, tc = x[s:s + chunk], targets[s:s + chunk]
            logp = _chunk_logp(xc, w, low, vocab)                          # (c, V)
            valid, tgt = tc >= 0, tc.clamp(min=0)
            total -= (logp.gather(1, tgt[:, None]).squeeze(1) * valid).sum()
            # d(sum of losses)/d logits = softmax - one-hot, zero on ignored rows
            grad = logp.exp_()
            grad[torch.arange(len(tc), device=tc.device), tgt] -= 1
            g = grad.to(low).mul_(valid[:, None])
            dx[s:s + chunk] = (g @ w).to(dx.dtype)
            part = (g.t() @ xc.to(low)).float()
            dw = part if dw is None else dw.add_(part)
        scale = 1 / n_valid.clamp(min=1).to(torch.float32) if mean else 1.0
        assert dw is not None
        ctx.save_for_backward(dx, dw.to(weight.dtype))
        ctx.scale = scale
        return total * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        dx, dw = ctx.saved_tensors
        g = grad * ctx.scale
        return dx * g.to(dx.dtype), dw * g.to(dw.dtype), None, None, None, None


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         reduction: str = "mean", chunk: int = 0,
                         vocab: int = 0) -> torch.Tensor:
    """``F.cross_entropy(x @ weight[:vocab].T, targets, ignore_index=-1, reduction=...)`` for
    ``x`` (..., d) and ``targets`` (...), without the whole logits; ``chunk`` tokens at a
    time (0: ``CHUNK_TOKENS``). The matmul runs at the weight's full (padded) width; rows
    from ``vocab`` on (0: none) get no probability and so no gradient."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    args = (x.reshape(-1, x.shape[-1]), weight, targets.reshape(-1), chunk or CHUNK_TOKENS,
            reduction == "mean", vocab or weight.shape[0])
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(*args)
    return _loss_only(*args)


def _loss_only(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
               mean: bool, vocab: int) -> torch.Tensor:
    """The loss without its gradients (evaluation): the two gradient matmuls per chunk, and
    the softmax kept for them, are not made."""
    total = torch.zeros((), dtype=torch.float32, device=x.device)
    low, w = _low(x, weight)
    for s in range(0, x.shape[0], chunk):
        tc = targets[s:s + chunk]
        logp = _chunk_logp(x[s:s + chunk], w, low, vocab)   # as training's: equal values
        total -= (logp.gather(1, tc.clamp(min=0)[:, None]).squeeze(1) * (tc >= 0)).sum()
    n_valid = (targets >= 0).sum()
    return total / n_valid.clamp(min=1).to(torch.float32) if mean else total
