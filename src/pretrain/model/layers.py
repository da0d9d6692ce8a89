"""Building blocks: norms, rotary embeddings, feed-forward layers, the KV cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()  # the statistics in fp32, the output in the input's dtype
        normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return normed * self.weight.type_as(x)


def rope_tables(dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (max_len, dim), in the rotate-half layout of HF Llama."""
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (T, dim/2)
    emb = torch.cat([freqs, freqs], dim=-1)                                    # (T, dim)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, dim); cos/sin: (T, dim) or (B, 1, T, dim). Pairs are (i, i + dim/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.type_as(x), sin.type_as(x)  # keep bf16 activations (and the cache) in bf16
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class SwiGLU(nn.Module):
    """``w2(silu(x w1) * (x w3))`` with the gate (w1) and up (w3) rows in one matrix, one
    matmul. The rows are stored in ``blocks`` pairs of blocks [gate block i, up block i]
    (``blocks`` = gcd(hidden, n_heads)), not [all gate; all up]: then any row range of whole
    pairs is a self-contained slice of the layer, which is what tensor parallelism hands
    each rank (any degree that divides n_heads and hidden). Measured on CPU at the
    quickstart's shape, the strided split costs 3-5% of the layer; the row interleave of
    single rows cost 15%."""

    def __init__(self, d: int, hidden: int, blocks: int):
        super().__init__()
        self.block = hidden // blocks
        self.w13 = nn.Linear(d, 2 * hidden, bias=False)  # gate and up, block pairs
        self.w2 = nn.Linear(hidden, d, bias=False)       # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., pairs, block) each; unbind's backward is one stack, not two zero-filled copies
        gate, up = self.w13(x).unflatten(-1, (-1, 2, self.block)).unbind(-2)
        return self.w2((F.silu(gate) * up).flatten(-2))

    def stored(self, name: str, canonical: torch.Tensor) -> torch.Tensor:
        """``w13.weight`` from [gate; up] rows to the stored block pairs."""
        if name != "w13.weight":
            return canonical
        return canonical.unflatten(0, (2, -1, self.block)).transpose(0, 1).flatten(0, 2)

    def canonical(self, name: str, stored: torch.Tensor) -> torch.Tensor:
        """The inverse of ``stored``: [gate; up] rows."""
        if name != "w13.weight":
            return stored
        return stored.unflatten(0, (-1, 2, self.block)).transpose(0, 1).flatten(0, 2)


class GeluMLP(nn.Module):
    """GPT-2's MLP; GELU with the tanh approximation ("gelu_new" in HF's GPT-2) or exact."""

    def __init__(self, d: int, hidden: int, bias: bool = True, approximate: str = "tanh"):
        super().__init__()
        self.fc = nn.Linear(d, hidden, bias=bias)
        self.proj = nn.Linear(hidden, d, bias=bias)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate=self.approximate))


class KVCache:
    """Per-layer buffers for generation, preallocated to ``max_len`` positions.

    Each attention layer stores what it needs under its own names (K and V; or MLA's
    latent and rope key) through :meth:`append`, which returns everything cached so far.
    ``pad`` holds each row's count of left-padding positions (batched prompts of
    different lengths are left-padded so that all rows decode in lockstep).
    """

    def __init__(self, n_layers: int, batch: int, max_len: int, pad: torch.Tensor):
        self.max_len, self.batch = max_len, batch
        self.pad = pad
        self.length = 0                                    # positions filled so far
        self.buffers: list[dict[str, torch.Tensor]] = [{} for _ in range(n_layers)]

    def append(self, layer: int, name: str, new: torch.Tensor, dim: int) -> torch.Tensor:
        buf = self.buffers[layer].get(name)
        if buf is None:
            shape = list(new.shape)
            shape[dim] = self.max_len
            buf = self.buffers[layer][name] = new.new_zeros(shape)
        T = new.shape[dim]
        if self.length + T > self.max_len:
            raise ValueError(f"KV cache full: {self.length} + {T} positions > {self.max_len}")
        buf.narrow(dim, self.length, T).copy_(new)
        return buf.narrow(dim, 0, self.length + T)

    def bytes(self) -> int:
        return sum(b.numel() * b.element_size() for layer in self.buffers for b in layer.values())
