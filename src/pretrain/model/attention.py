"""Attention: grouped-query (LLaMA, and GPT-2 with biases and no RoPE) and DeepSeek's MLA.

Both classes share one interface: ``forward(x, cos, sin, mask, cache, layer)``.
``mask`` is None for training (causal, the fast ``is_causal`` path) or a boolean
(B, 1, T, S) "may attend" mask for generation with padding and a cache.

MLA (DeepSeek-V2, arXiv 2405.04434): keys and values come from a shared latent
``c_kv = RMSNorm(W_dkv x)`` of ``kv_lora_rank`` dims, plus one decoupled RoPE key of
``qk_rope_head_dim`` dims shared by all heads. Training uses the naive path (expand the
latent to per-head K/V, then SDPA). Generation caches only the latent and the rope key and
uses weight absorption: ``q_nope . (W_uk c)`` = ``(W_uk^T q_nope) . c`` and
``W_uv (P c)``, so no per-head K/V is ever materialised. Both paths compute the same thing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .config import ModelConfig
from .layers import KVCache, RMSNorm, apply_rope


class _AttentionOps(TorchDispatchMode):
    """Records the names of the fused attention kernels that the dispatcher runs."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = func.overloadpacket.__name__
        if "attention" in name:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


def sdpa_backend(cfg: ModelConfig, device: torch.device, dtype: torch.dtype,
                 batch: int = 1) -> str:
    """The kernel ``F.scaled_dot_product_attention`` runs for this model's training attention
    (its heads, head dims, sequence length and dropout) on ``device`` in ``dtype``: "flash",
    "cudnn", "efficient" (memory-efficient), "math" (unfused: the T x T scores are made
    whole) or another fused kernel's name. Found by running one forward and backward of
    the call the model makes and recording which aten kernel the dispatcher picked, under
    the SDPA settings in force (``torch.backends.cuda.enable_*_sdp``, ``sdpa_kernel``).
    torch.compile keeps the kernel the dispatcher picks for the same arguments. On CPU the
    fused kernel is "flash" too (``_scaled_dot_product_flash_attention_for_cpu``)."""
    T, H = cfg.seq_len, cfg.n_heads
    if cfg.arch == "mla":
        Hkv, qk, v_dim = H, cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, cfg.v_head_dim
    else:
        Hkv, qk, v_dim = cfg.kv_heads, cfg.head_dim, cfg.head_dim
    # the random numbers drawn here (the inputs; dropout's mask) leave the global generators
    # where they were: the training's dropout draws from them, and a probe must not move it
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        q = torch.randn(batch, H, T, qk, device=device, dtype=dtype, requires_grad=True)
        k = torch.randn(batch, Hkv, T, qk, device=device, dtype=dtype, requires_grad=True)
        v = torch.randn(batch, Hkv, T, v_dim, device=device, dtype=dtype, requires_grad=True)
        with _AttentionOps() as rec:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=cfg.dropout,
                                               enable_gqa=Hkv != H)
            y.sum().backward()
    for op in rec.ops:
        for kind in ("flash", "cudnn", "efficient", "math"):
            if kind in op:
                return kind
    return rec.ops[0] if rec.ops else "math"


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.group = self.n_heads // self.n_kv          # query heads per key/value head
        self.rope = cfg.arch != "gpt2"
        bias = cfg.arch == "gpt2" and cfg.bias
        # q, k and v rows of one matrix, one matmul instead of three (GPT-2's c_attn), stored
        # by key/value head (Megatron's layout): for each kv head its `group` query heads,
        # then its key, then its value. Any range of whole groups is then a self-contained
        # slice of the layer, which is what tensor parallelism hands each rank.
        self.wqkv = nn.Linear(cfg.d_model, (self.group + 2) * self.n_kv * self.hd, bias=bias)
        self.wo = nn.Linear(self.n_heads * self.hd, cfg.d_model, bias=bias)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        B, T, _ = x.shape
        # the kv heads this rank holds: all of them, or a slice under tensor parallelism
        qkv = self.wqkv(x).view(B, T, -1, self.group + 2, self.hd)     # (B, T, Hkv, G+2, hd)
        # split, not indexing: its backward is one concatenation, where each index's is a
        # zero-filled copy of the whole qkv gradient (CPU profile: fill_ 7% of an eager step)
        q, k, v = qkv.split((self.group, 1, 1), dim=3)
        q = q.flatten(2, 3).transpose(1, 2)                              # (B, H, T, hd)
        k, v = k.squeeze(3).transpose(1, 2), v.squeeze(3).transpose(1, 2)  # (B, Hkv, T, hd)
        if self.rope:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k = cache.append(layer, "k", k, dim=2)                       # (B, Hkv, S, hd)
            v = cache.append(layer, "v", v, dim=2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.group > 1)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))              # (B, T, d)

    def stored(self, name: str, canonical: torch.Tensor) -> torch.Tensor:
        """``wqkv`` rows (weight or bias) from [q; k; v] to the stored kv-head groups."""
        if not name.startswith("wqkv."):
            return canonical
        q, k, v = canonical.split([self.n_heads * self.hd, self.n_kv * self.hd,
                                   self.n_kv * self.hd])
        groups = [q.unflatten(0, (self.n_kv, self.group * self.hd)),
                  k.unflatten(0, (self.n_kv, self.hd)), v.unflatten(0, (self.n_kv, self.hd))]
        return torch.cat(groups, dim=1).flatten(0, 1)

    def canonical(self, name: str, stored: torch.Tensor) -> torch.Tensor:
        """The inverse of ``stored``: [q; k; v] rows."""
        if not name.startswith("wqkv."):
            return stored
        q, k, v = stored.unflatten(0, (self.n_kv, -1)).split(
            [self.group * self.hd, self.hd, self.hd], dim=1)
        return torch.cat([q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1)])


# DeepSeek's latent norms use a fixed eps, not the model's rms_norm_eps (HF's DeepseekV3
# builds q_a_layernorm and kv_a_layernorm with the default 1e-6); matching it is what makes
# the export exact.
LATENT_NORM_EPS = 1e-6


class MLAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.H, self.nope, self.rope_dim = cfg.n_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
        self.v_dim, self.r_kv, self.r_q = cfg.v_head_dim, cfg.kv_lora_rank, cfg.q_lora_rank
        qk = self.nope + self.rope_dim
        d = cfg.d_model
        if self.r_q:
            self.q_a = nn.Linear(d, self.r_q, bias=False)
            self.q_a_norm = RMSNorm(self.r_q, LATENT_NORM_EPS)
            self.q_b = nn.Linear(self.r_q, self.H * qk, bias=False)
        else:
            self.q_proj = nn.Linear(d, self.H * qk, bias=False)
        self.kv_a = nn.Linear(d, self.r_kv + self.rope_dim, bias=False)
        self.kv_a_norm = RMSNorm(self.r_kv, LATENT_NORM_EPS)
        self.kv_b = nn.Linear(self.r_kv, self.H * (self.nope + self.v_dim), bias=False)
        self.wo = nn.Linear(self.H * self.v_dim, d, bias=False)
        self.scale = qk ** -0.5                      # DeepSeek's softmax scale (no YaRN)
        self.dropout = cfg.dropout
        self.absorb: bool | None = None              # None: absorbed iff generating with a cache

    def _q(self, x: torch.Tensor) -> torch.Tensor:
        return self.q_b(self.q_a_norm(self.q_a(x))) if self.r_q else self.q_proj(x)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        B, T, _ = x.shape
        q = self._q(x).view(B, T, self.H, self.nope + self.rope_dim).transpose(1, 2)
        q_nope, q_rope = q.split([self.nope, self.rope_dim], dim=-1)     # (B, H, T, .)
        q_rope = apply_rope(q_rope, cos, sin)
        c_kv, k_rope = self.kv_a(x).split([self.r_kv, self.rope_dim], dim=-1)
        c_kv = self.kv_a_norm(c_kv)                                      # (B, T, r_kv)
        k_rope = apply_rope(k_rope.unsqueeze(1), cos, sin)               # (B, 1, T, rope)
        if cache is not None:
            c_kv = cache.append(layer, "c_kv", c_kv, dim=1)              # (B, S, r_kv)
            k_rope = cache.append(layer, "k_rope", k_rope, dim=2)        # (B, 1, S, rope)
        absorb = cache is not None if self.absorb is None else self.absorb
        if absorb:
            y = self._absorbed(q_nope, q_rope, c_kv, k_rope, mask)
        else:
            y = self._naive(q_nope, q_rope, c_kv, k_rope, mask)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))

    def _naive(self, q_nope: torch.Tensor, q_rope: torch.Tensor, c_kv: torch.Tensor,
               k_rope: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, S = c_kv.shape[:2]
        kv = self.kv_b(c_kv).view(B, S, self.H, self.nope + self.v_dim).transpose(1, 2)
        k_nope, v = kv.split([self.nope, self.v_dim], dim=-1)            # (B, H, S, .)
        k = torch.cat([k_nope, k_rope.expand(B, self.H, S, self.rope_dim)], dim=-1)
        q = torch.cat([q_nope, q_rope], dim=-1)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scale,
            dropout_p=self.dropout if self.training else 0.0)            # (B, H, T, v)

    def _absorbed(self, q_nope: torch.Tensor, q_rope: torch.Tensor, c_kv: torch.Tensor,
                  k_rope: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        w = self.kv_b.weight.view(self.H, self.nope + self.v_dim, self.r_kv)
        w_uk, w_uv = w[:, :self.nope], w[:, self.nope:]                  # (H, nope|v, r_kv)
        q_lat = torch.einsum("bhtn,hnr->bhtr", q_nope, w_uk)             # (B, H, T, r_kv)
        scores = q_lat @ c_kv.unsqueeze(1).transpose(-1, -2)             # (B, H, T, S)
        scores = (scores + q_rope @ k_rope.transpose(-1, -2)) * self.scale
        if mask is None:
            T, S = scores.shape[-2:]
            mask = torch.ones(T, S, dtype=torch.bool, device=scores.device).tril(S - T)
        probs = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1, dtype=torch.float32)
        o_lat = probs.type_as(c_kv) @ c_kv.unsqueeze(1)                  # (B, H, T, r_kv)
        return torch.einsum("bhtr,hvr->bhtv", o_lat, w_uv)               # (B, H, T, v)
