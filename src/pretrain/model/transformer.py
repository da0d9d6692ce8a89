"""The decoder-only transformer, written for one device, for all three architectures.

Pre-norm blocks: ``x + attn(norm(x))``, ``x + mlp(norm(x))``. LLaMA and MLA use RMSNorm,
RoPE (rotate-half layout, as HF Llama, so export is a rename) and SwiGLU; GPT-2 uses
LayerNorm with bias, learned positions and a GELU MLP. Parallelism, compile and
activation checkpointing are applied from outside (``train/``, ``distributed.py``), so the
model reads the same on one device and on many.

Initialisation: N(0, init_std) for every matrix and embedding, and the two projections that
write into the residual stream (attention ``wo``, MLP ``w2``/``proj``) scaled by
1/sqrt(2 * n_layers), as in GPT-2 and OLMo: each block then adds two terms of variance
~ std^2 / (2L) to the residual, so its variance stays O(1) at any depth instead of growing
linearly with the number of layers. Biases start at 0, norm gains at 1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from .attention import Attention, MLAttention
from .config import ModelConfig
from .layers import GeluMLP, KVCache, RMSNorm, SwiGLU, rope_tables
from .loss import linear_cross_entropy


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        gpt2 = cfg.arch == "gpt2"

        def norm() -> nn.Module:
            return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias) if gpt2 \
                else RMSNorm(cfg.d_model, cfg.norm_eps)

        self.attn_norm = norm()
        self.attn: Attention | MLAttention = MLAttention(cfg) if cfg.arch == "mla" else Attention(cfg)
        self.ffn_norm = norm()
        self.ffn: nn.Module = (GeluMLP(cfg.d_model, cfg.hidden, cfg.bias, cfg.gelu_approximate)
                               if gpt2 else SwiGLU(cfg.d_model, cfg.hidden,
                                                   math.gcd(cfg.hidden, cfg.n_heads)))
        # no dropout module at p = 0: F.dropout still costs a copy per call in training mode
        self.drop: nn.Module = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None, cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, mask, cache, layer))
        return x + self.drop(self.ffn(self.ffn_norm(x)))


class Transformer(nn.Module):
    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ConfigError("model.vocab_size must be set (it is filled from the tokenizer)")
        self.cfg = cfg
        device = torch.empty(0).device  # the default device: meta inside `with torch.device("meta")`
        # the modules are made on the meta device, so that their own default inits draw no
        # random numbers; then every parameter is drawn once, by `init_value`: the same seed
        # gives the same weights whether the model is built here or on meta and sharded
        with torch.device("meta"):
            self.embed = nn.Embedding(cfg.padded_vocab, cfg.d_model)
            self.pos_embed = nn.Embedding(cfg.seq_len, cfg.d_model) if cfg.arch == "gpt2" else None
            self.drop: nn.Module = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
            # a dict keyed by layer number, not a list: a pipeline stage keeps some of the
            # layers under their own names (layers.7 stays layers.7), so checkpoints do not care
            self.layers = nn.ModuleDict({str(i): Block(cfg) for i in range(cfg.n_layers)})
            self.norm = (nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)
                         if cfg.arch == "gpt2" else RMSNorm(cfg.d_model, cfg.norm_eps))
            self.head = nn.Linear(cfg.d_model, cfg.padded_vocab, bias=False)
            self.register_buffer("rope_cos", torch.empty(0), persistent=False)
            self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        # a stage without the embedding whose hidden-state input holds 1/n of each window's
        # positions (tensor parallel with sequence parallel): its rotary positions cover n
        # times its input's length, since its attention sees the window whole
        self.input_split = 1
        if device.type != "meta":
            self.to_empty(device=device)
        if cfg.tied:
            self.head.weight = self.embed.weight
        if device.type != "meta":
            self.init_buffers(device)
            self.reset_parameters()

    def init_buffers(self, device: torch.device | str | None = None) -> None:
        """Recompute the RoPE tables on ``device`` (default: where the buffers are), after
        ``to_empty`` from the meta device."""
        rope_dim = self.cfg.qk_rope_head_dim if self.cfg.arch == "mla" else self.cfg.head_dim
        cos, sin = rope_tables(rope_dim, self.cfg.seq_len, self.cfg.rope_theta)
        device = device or self.rope_cos.device
        self.rope_cos, self.rope_sin = cos.to(device), sin.to(device)  # (T, rope dim)

    def reset_parameters(self) -> None:
        """Every parameter from ``init_value``, in ``named_parameters`` order (the order
        the random numbers are drawn in: the same seed gives the same weights however the
        model is built, on one device or on the meta device and sharded)."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(self.init_value(name, p.shape).to(p.device, p.dtype))

    def init_value(self, name: str, shape: Sequence[int]) -> torch.Tensor:
        """The initial value of parameter ``name`` (fp32, CPU, in its stored layout), drawn
        from torch's global generator as if the parameter were in the canonical layout."""
        std = self.cfg.init_std
        residual = (".wo.weight", ".w2.weight", ".ffn.proj.weight")   # not MLA's attn.q_proj
        vocab = self.cfg.vocab_size
        if name in ("embed.weight", "head.weight") and shape[0] > vocab:
            # the padding rows: zero, drawn after the real ones (which so get the values an
            # unpadded model of the same seed gets)
            real = self.init_value(name, (vocab, *shape[1:]))
            return torch.cat([real, real.new_zeros(shape[0] - vocab, *shape[1:])])
        value = torch.empty(tuple(shape))
        if value.dim() == 2:
            scale = 1 / math.sqrt(2 * self.cfg.n_layers) if name.endswith(residual) else 1.0
            nn.init.normal_(value, mean=0.0, std=std * scale)
        elif name.endswith("bias"):
            nn.init.zeros_(value)
        else:
            nn.init.ones_(value)  # norm gains
        return self.to_stored(name, value)

    def _layout(self, name: str) -> tuple[nn.Module, str] | None:
        """The module that stores parameter ``name`` in a layout of its own (fused q/k/v
        by kv head, gate/up in block pairs), and the name within it."""
        parts = name.split(".")
        for i in range(len(parts) - 1, 0, -1):
            mod = self.get_submodule(".".join(parts[:i]))
            if hasattr(mod, "stored"):
                return mod, ".".join(parts[i:])
        return None

    def to_stored(self, name: str, canonical: torch.Tensor) -> torch.Tensor:
        """A parameter's value from the canonical layout (q, k, v and gate, up as separate
        row blocks, as HF stores them) to the one this model stores."""
        owner = self._layout(name)
        return owner[0].stored(owner[1], canonical) if owner else canonical  # type: ignore[operator]

    def to_canonical(self, name: str, stored: torch.Tensor) -> torch.Tensor:
        owner = self._layout(name)
        return owner[0].canonical(owner[1], stored) if owner else stored  # type: ignore[operator]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                reduction: str = "mean", cache: KVCache | None = None,
                pad: torch.Tensor | None = None, fused_loss: bool = False,
                hidden: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (B, T) token ids -> logits (B, T, V), and the loss if targets are given.

        A pipeline stage without the embedding takes hidden states (B, T, d) as ``idx``; one
        without the head returns hidden states instead of logits. ``fused_loss`` (training):
        the loss from the head fused with the cross-entropy in chunks (``loss.py``), the
        logits never made (an empty tensor is returned in their place). ``hidden``: the final
        normed hidden states (B, T, d) in place of the logits, which ``logits_of`` makes from
        the positions one wants (scoring a few tokens of each row: not B x T x V logits).

        Training passes neither ``cache`` nor ``pad`` (causal attention, positions 0..T-1).
        Generation passes a :class:`KVCache` (positions continue after what it holds) and/or
        ``pad``, each row's number of left-padding tokens, which are masked out as keys and
        shift that row's positions so its first real token is at position 0.
        """
        B, T = idx.shape[:2]
        if self.embed is None:
            T *= self.input_split
        start = cache.length if cache is not None else 0
        if cache is not None and pad is None:
            pad = cache.pad
        # positions count real tokens only: a left-padded row may hold more slots than seq_len.
        # Rows past seq_len (finished rows of a batch) get clamped positions; generate() never
        # reads their output. A sequence where even the most-padded row is too long is an error.
        longest_row = start + T - (int(pad.max()) if pad is not None else 0)
        if longest_row > self.cfg.seq_len:
            raise ValueError(f"sequence of {longest_row} tokens exceeds seq_len={self.cfg.seq_len}")
        mask = None
        if pad is None:
            pos: torch.Tensor = torch.arange(T, device=idx.device)[None]              # (1, T)
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        else:
            S = start + T
            key_pos = torch.arange(S, device=idx.device)
            real = key_pos[None, :] >= pad[:, None]                      # (B, S) not padding
            causal = key_pos[None, :] <= key_pos[start:, None]           # (T, S)
            mask = (causal[None] & real[:, None, :]).unsqueeze(1)        # (B, 1, T, S)
            mask |= ~real[:, None, start:, None]  # padding queries see everything: no NaN rows
            pos = (key_pos[start:][None, :] - pad[:, None]).clamp(0, self.cfg.seq_len - 1)  # (B, T)
            cos, sin = self.rope_cos[pos].unsqueeze(1), self.rope_sin[pos].unsqueeze(1)
        if self.embed is not None:
            x = self.embed(idx)
            if self.pos_embed is not None:
                x = x + self.pos_embed(pos)
            x = self.drop(x)
        else:
            x = idx  # a later pipeline stage: the previous stage's hidden states
        for i, layer in self.layers.items():
            x = layer(x, cos, sin, mask, cache, int(i))
        if cache is not None:
            cache.length += T
        if self.head is None:  # a pipeline stage before the last
            return x, None
        V = self.cfg.vocab_size
        if fused_loss and targets is not None:
            h = self.norm(x)
            return h.new_empty(0), linear_cross_entropy(h, self.head.weight, targets, reduction,
                                                        vocab=V)
        if hidden:
            return self.norm(x), None
        logits = self.logits_of(self.norm(x))
        return logits, None if targets is None else self.loss(logits, targets, reduction)

    def logits_of(self, h: torch.Tensor) -> torch.Tensor:
        """The head on final hidden states (``forward(..., hidden=True)``'s): logits (..., V)."""
        assert self.head is not None, "a pipeline stage without the head"
        logits = self.head(h)
        if logits.shape[-1] > self.cfg.vocab_size:  # the padding columns: made at the aligned
            logits = logits[..., :self.cfg.vocab_size]   # width, dropped
        return logits

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Next-token cross-entropy in fp32; targets of -1 (padding) are not scored."""
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=-1, reduction=reduction)

    def new_cache(self, batch: int, max_len: int, pad: torch.Tensor | None = None) -> KVCache:
        if pad is None:
            pad = torch.zeros(batch, dtype=torch.long, device=self.embed.weight.device)
        return KVCache(self.cfg.n_layers, batch, max_len, pad)


@torch.no_grad()
def grow_vocab(model: Transformer, parts: list[list[int]]) -> None:
    """Append one token per entry of ``parts`` to the embedding (and untied output head),
    each row the mean of the rows of the ids it was made of (a tokenizer extended with
    domain tokens says which; an entry may use ids appended before it). Existing rows are
    untouched; ``model.cfg`` is replaced by one with the new vocabulary size."""
    old = model.cfg.vocab_size
    for i, p in enumerate(parts):
        if not p or min(p) < 0 or max(p) >= old + i:
            raise ValueError(f"new token {old + i} must be made of ids below it, got {p}")
    if not parts:
        return

    new_cfg = dataclasses.replace(model.cfg, vocab_size=old + len(parts))
    padded = new_cfg.padded_vocab

    def grown(weight: torch.Tensor) -> nn.Parameter:
        real = weight[:old]
        rows: list[torch.Tensor] = []
        for p in parts:
            table = torch.cat([real, torch.stack(rows)]) if rows else real
            rows.append(table[p].mean(dim=0))
        table = torch.cat([real, torch.stack(rows)])
        return nn.Parameter(torch.cat([table, table.new_zeros(padded - len(table),
                                                              table.shape[1])]))

    model.embed.weight = grown(model.embed.weight)
    model.embed.num_embeddings = padded
    model.head.weight = model.embed.weight if model.cfg.tied else grown(model.head.weight)
    model.head.out_features = padded
    model.cfg = new_cfg
