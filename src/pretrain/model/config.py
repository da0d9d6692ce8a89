"""Model configuration and the counts derived from it (parameters, FLOPs, KV-cache size).

Three architectures share one vocabulary of knobs:

- ``llama``: RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases.
- ``mla``: as llama, with DeepSeek-V2/V3 Multi-head Latent Attention (DeepSeek's names:
  ``q_lora_rank``, ``kv_lora_rank``, ``qk_nope_head_dim``, ``qk_rope_head_dim``, ``v_head_dim``).
- ``gpt2``: learned positions, LayerNorm with bias, GELU MLP, biases, tied embeddings;
  ``bias = false`` drops every bias (nanoGPT's ``bias=False``; exported to HF as zeros,
  with ``pretrain_bias: false``) and ``gelu_approximate = "none"`` uses the exact GELU
  (HF ``activation_function = "gelu"``) instead of GPT-2's tanh form.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

from ..config import ConfigError

# tokens whose logits the fused loss (loss.py) makes at a time: 4096 x 50k x 4 B = 0.8 GB
# at most; here, beside the config, so that the memory planner reads it without torch
LOSS_CHUNK_TOKENS = 4096

Arch = Literal["llama", "mla", "gpt2"]


@dataclass
class ModelConfig:
    arch: Arch = "llama"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2               # llama: grouped-query attention; gpt2 and mla use n_heads
    ffn_hidden: int = 0               # 0 = 8/3 d rounded up to multiple_of (gpt2: 4 d)
    multiple_of: int = 32
    seq_len: int = 128
    vocab_size: int = 0               # 0 = take it from the tokenizer
    # the embedding and head hold vocab_size rounded up to a multiple of this: GPU matmuls
    # run faster at such widths (GPT-2's 50257 padded to 50304 gained 6.8% per step on an
    # H100, issue 14). The extra rows start at zero, are never scored or chosen, and are
    # not exported; 1 = exactly vocab_size
    pad_vocab_multiple: int = 64
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False      # gpt2 always ties
    dropout: float = 0.0
    init_std: float = 0.02
    # gpt2 only: biases in the linears and LayerNorms, and GELU's form (tanh = GPT-2's)
    bias: bool = True
    gelu_approximate: Literal["tanh", "none"] = "tanh"
    # Multi-head Latent Attention (arch = "mla")
    q_lora_rank: int = 0              # 0 = no query compression (a plain q projection)
    kv_lora_rank: int = 64            # the cached latent
    qk_nope_head_dim: int = 32
    qk_rope_head_dim: int = 16        # the decoupled RoPE key, shared by all heads
    v_head_dim: int = 32
    # the names Hugging Face's configs and nanoGPT give these keys: an unknown key among
    # them is answered with ours
    ELSEWHERE: ClassVar[dict[str, str]] = {
        "hidden_size": "d_model", "n_embd": "d_model", "dim": "d_model",
        "num_hidden_layers": "n_layers", "n_layer": "n_layers",
        "num_attention_heads": "n_heads", "n_head": "n_heads",
        "num_key_value_heads": "n_kv_heads", "intermediate_size": "ffn_hidden",
        "max_position_embeddings": "seq_len", "block_size": "seq_len",
        "max_seq_len": "seq_len", "context_length": "seq_len", "rms_norm_eps": "norm_eps",
        "layer_norm_epsilon": "norm_eps", "tie_word_embeddings": "tie_embeddings",
        "initializer_range": "init_std"}

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "seq_len", "multiple_of",
                     "pad_vocab_multiple"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.arch != "mla" and self.d_model % self.n_heads:  # MLA's head sizes are its own
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.arch == "llama":
            if self.n_heads % self.n_kv_heads:
                raise ConfigError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads "
                                  f"({self.n_kv_heads})")
            if self.head_dim % 2:
                raise ConfigError(f"head_dim (d_model / n_heads = {self.head_dim}) must be even "
                                  "for RoPE")
        if self.arch == "mla":
            for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
                if getattr(self, name) <= 0:
                    raise ConfigError(f"{name} must be positive for arch = 'mla'")
            if self.q_lora_rank < 0:
                raise ConfigError("q_lora_rank must be >= 0 (0 = no query compression)")
            if self.qk_rope_head_dim % 2:
                raise ConfigError("qk_rope_head_dim must be even for RoPE")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout must be within [0, 1)")
        for name in ("ffn_hidden", "vocab_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 = the default), got {getattr(self, name)}")
        for name, low in (("rope_theta", "> 0"), ("norm_eps", ">= 0"), ("init_std", ">= 0")):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (low == "> 0" and value == 0):
                raise ConfigError(f"{name} must be a finite number {low}, got {value}")

    @property
    def padded_vocab(self) -> int:
        """Rows of the embedding and the head: vocab_size rounded up to pad_vocab_multiple."""
        return -(-self.vocab_size // self.pad_vocab_multiple) * self.pad_vocab_multiple

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.arch == "llama" else self.n_heads

    @property
    def tied(self) -> bool:
        return self.tie_embeddings or self.arch == "gpt2"

    @property
    def hidden(self) -> int:
        if self.ffn_hidden:
            return self.ffn_hidden
        if self.arch == "gpt2":
            return 4 * self.d_model
        h = int(8 * self.d_model / 3)
        return self.multiple_of * math.ceil(h / self.multiple_of)

    # the keys an architecture does not read (gpt2's learned positions have no rope_theta)
    UNREAD: ClassVar[dict[str, tuple[str, ...]]] = {
        "llama": ("bias", "gelu_approximate", "q_lora_rank", "kv_lora_rank",
                  "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"),
        "mla": ("n_kv_heads", "bias", "gelu_approximate"),
        "gpt2": ("n_kv_heads", "rope_theta", "multiple_of", "q_lora_rank", "kv_lora_rank",
                 "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")}

    def in_use(self) -> dict[str, Any]:
        """The settings as the model uses them: ffn_hidden 0 as its size, gpt2's tied
        embeddings; the keys its architecture does not read left out (multiple_of too where
        ffn_hidden is given)."""
        out = asdict(self)
        out.update(ffn_hidden=self.hidden, tie_embeddings=self.tied)
        unread = self.UNREAD[self.arch] + (("multiple_of",) if self.ffn_hidden else ())
        return {k: v for k, v in out.items() if k not in unread}

    def notes(self) -> dict[str, str]:
        """A word for each key whose value is not the one in use (``config show`` writes
        it beside the key): ``tie_embeddings = false`` under gpt2, which ties."""
        used, out = self.in_use(), {}
        for k, v in asdict(self).items():
            if k not in used:
                out[k] = (f"not used by arch = {json.dumps(self.arch)}"
                          if k in self.UNREAD[self.arch] else "not used: ffn_hidden is given")
            elif used[k] != v:
                out[k] = f"in use: {json.dumps(used[k])}"
        if not self.vocab_size:
            out["vocab_size"] = "the tokenizer's size"
        return out

    # ---- counting, from the config alone (checked against the modules in the tests) --------

    def _attn_matmul_params(self) -> int:
        d, hd = self.d_model, self.head_dim
        if self.arch == "mla":
            H, qk = self.n_heads, self.qk_nope_head_dim + self.qk_rope_head_dim
            q = (d * self.q_lora_rank + self.q_lora_rank * H * qk) if self.q_lora_rank else d * H * qk
            kv = d * (self.kv_lora_rank + self.qk_rope_head_dim)
            kv += self.kv_lora_rank * H * (self.qk_nope_head_dim + self.v_head_dim)
            return q + kv + H * self.v_head_dim * d
        return 2 * d * self.n_heads * hd + 2 * d * self.kv_heads * hd

    def _layer_vector_params(self) -> int:
        """Norm gains, biases and MLA's latent norms of one layer."""
        d = self.d_model
        if self.arch == "gpt2":
            # two LayerNorms (weight + bias), q/k/v/o biases, two MLP biases
            return 4 * d + 4 * d + self.hidden + d if self.bias else 2 * d
        extra = 0
        if self.arch == "mla":
            extra = self.kv_lora_rank + self.q_lora_rank
        return 2 * d + extra

    def matmul_params(self) -> int:
        """Weights of every matmul a token passes through, the output head included."""
        mlp = (2 if self.arch == "gpt2" else 3) * self.d_model * self.hidden
        return self.n_layers * (self._attn_matmul_params() + mlp) + self.vocab_size * self.d_model

    def num_params(self, embeddings: bool = True) -> int:
        """All parameters; without ``embeddings``: no token/position embeddings and no head.
        The real vocabulary's (the published count); the stored tensors also hold the
        padding rows, ``(padded_vocab - vocab_size) * d_model`` per matrix."""
        d = self.d_model
        final_norm = 2 * d if self.arch == "gpt2" and self.bias else d
        n = (self.matmul_params() - self.vocab_size * d
             + self.n_layers * self._layer_vector_params() + final_norm)
        if embeddings:
            n += self.vocab_size * d * (1 if self.tied else 2)
            if self.arch == "gpt2":
                n += self.seq_len * d
        return n

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 N + attention (PaLM appendix B, as nanoGPT/torchtitan).

        N = ``matmul_params()`` (the input embedding is a lookup, norms are not matmuls).
        Attention adds 2 (fwd) + 4 (bwd) FLOPs per multiply-add of QK^T and AV over T keys:
        6 L T H (qk_dim + v_dim), which is the usual 12 L d T when qk_dim = v_dim = d / H.
        Causal masking is not discounted.
        """
        if self.arch == "mla":
            qk, v = self.qk_nope_head_dim + self.qk_rope_head_dim, self.v_head_dim
        else:
            qk = v = self.head_dim
        attn = 6 * self.n_layers * self.seq_len * self.n_heads * (qk + v)
        return 6 * self.matmul_params() + attn

    def kv_cache_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """What generation keeps per token of context: K and V, or MLA's latent + rope key."""
        if self.arch == "mla":
            per_layer = self.kv_lora_rank + self.qk_rope_head_dim
        else:
            per_layer = 2 * self.kv_heads * self.head_dim
        return self.n_layers * per_layer * dtype_bytes
