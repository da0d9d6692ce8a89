"""Hugging Face export and import: ``LlamaForCausalLM``, ``DeepseekV3ForCausalLM``, ``GPT2LMHeadModel``.

We write ``config.json`` ourselves instead of calling a transformers ``save_pretrained``, so
the directory reads the same in transformers 4.x and 5.x (``shared/reference/
ecosystem-and-interop.md`` §1.5): both ``rope_theta`` (4.x) and ``rope_parameters`` (5.x),
``dtype`` and ``torch_dtype``. Weight layouts:

- llama: our RoPE is HF's rotate-half layout, so the export is a rename, plus splitting
  our fused q/k/v and gate/up matrices into their rows (the model converts its stored row
  order, grouped for tensor parallelism, to [q; k; v] and [gate; up] first).
- mla: DeepSeek's native interleaved RoPE rows with ``rope_interleave: true`` (what vLLM and
  llama.cpp expect); only the rope rows of the q and kv_a projections are permuted. Dense:
  ``first_k_dense_replace = n_layers``, the MoE keys set to valid but unused values.
- gpt2: ``Conv1D`` stores weights as (in, out), the transpose of ``nn.Linear``; q/k/v are
  fused in ``c_attn`` as in ours. A ``bias = false`` model exports zero biases and
  ``pretrain_bias: false`` in ``config.json``, which import reads back.

Import maps the same tables backwards, so export -> import is bit-identical.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from ..rundir import honour_umask
from .config import ModelConfig
from .transformer import Transformer

Tensor = torch.Tensor
Convert = Callable[[list[Tensor]], list[Tensor]]
# (hf names, our names, ours -> hf, hf -> ours): q/k/v are one tensor of ours and three of
# Llama's; GPT-2 stores them as one too
Entry = tuple[list[str], list[str], Convert, Convert]

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mla": "DeepseekV3ForCausalLM",
                 "gpt2": "GPT2LMHeadModel"}
MODEL_TYPES = {"llama": "llama", "deepseek_v3": "mla", "gpt2": "gpt2"}


def _same(name_hf: str, name: str) -> Entry:
    return [name_hf], [name], lambda ts: ts, lambda ts: ts


def _rows(names_hf: list[str], name: str, sizes: list[int]) -> Entry:
    """One tensor of ours whose rows are several HF tensors (fused q/k/v, gate/up)."""
    return (names_hf, [name], lambda ts: list(ts[0].split(sizes)),
            lambda ts: [torch.cat(ts)])


def _rope_rows(t: Tensor, block: int, rope: int, to_interleaved: bool) -> Tensor:
    """Permute the last ``rope`` rows of every ``block``-row block between the rotate-half
    layout (pairs i, i + rope/2) and DeepSeek's interleaved one (pairs 2i, 2i + 1)."""
    rows = t.view(-1, block, t.shape[-1])
    head, r = rows[:, : block - rope], rows[:, block - rope:]
    n = rows.shape[0]
    if to_interleaved:
        r = r.reshape(n, 2, rope // 2, -1).transpose(1, 2)
    else:
        r = r.reshape(n, rope // 2, 2, -1).transpose(1, 2)
    return torch.cat([head, r.reshape(n, rope, -1)], dim=1).reshape(t.shape).contiguous()


def _rope_entry(name_hf: str, name: str, block: int, rope: int) -> Entry:
    return ([name_hf], [name], lambda ts: [_rope_rows(ts[0], block, rope, True)],
            lambda ts: [_rope_rows(ts[0], block, rope, False)])


def _table(cfg: ModelConfig) -> list[Entry]:
    if cfg.arch == "gpt2":
        return _gpt2_table(cfg)
    out: list[Entry] = [_same("model.embed_tokens.weight", "embed.weight")]
    for i in range(cfg.n_layers):
        h, o = f"model.layers.{i}.", f"layers.{i}."
        out += [_same(h + "input_layernorm.weight", o + "attn_norm.weight"),
                _same(h + "post_attention_layernorm.weight", o + "ffn_norm.weight"),
                _rows([h + "mlp.gate_proj.weight", h + "mlp.up_proj.weight"],
                      o + "ffn.w13.weight", [cfg.hidden, cfg.hidden]),
                _same(h + "mlp.down_proj.weight", o + "ffn.w2.weight"),
                _same(h + "self_attn.o_proj.weight", o + "attn.wo.weight")]
        a, sa = o + "attn.", h + "self_attn."
        if cfg.arch == "llama":
            q, kv = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
            out.append(_rows([sa + f"{x}_proj.weight" for x in "qkv"], a + "wqkv.weight",
                             [q, kv, kv]))
            continue
        qk, rope = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, cfg.qk_rope_head_dim
        if cfg.q_lora_rank:
            out += [_same(sa + "q_a_proj.weight", a + "q_a.weight"),
                    _same(sa + "q_a_layernorm.weight", a + "q_a_norm.weight"),
                    _rope_entry(sa + "q_b_proj.weight", a + "q_b.weight", qk, rope)]
        else:
            out.append(_rope_entry(sa + "q_proj.weight", a + "q_proj.weight", qk, rope))
        out += [_rope_entry(sa + "kv_a_proj_with_mqa.weight", a + "kv_a.weight",
                            cfg.kv_lora_rank + rope, rope),
                _same(sa + "kv_a_layernorm.weight", a + "kv_a_norm.weight"),
                _same(sa + "kv_b_proj.weight", a + "kv_b.weight")]
    out.append(_same("model.norm.weight", "norm.weight"))
    if not cfg.tied:
        out.append(_same("lm_head.weight", "head.weight"))
    return out


def _t(name_hf: str, name: str) -> Entry:
    return ([name_hf], [name], lambda ts: [ts[0].t().contiguous()],
            lambda ts: [ts[0].t().contiguous()])


def _zero(ts: list[Tensor]) -> list[Tensor]:
    """A bias-free model's exported bias: nothing to load, if it is still zero (one trained
    elsewhere would be lost)."""
    if ts[0].any():
        raise ValueError("it is not zero, and config.json says pretrain_bias = false "
                         "(biases trained elsewhere?): remove that key to import them")
    return []


def _gpt2_table(cfg: ModelConfig) -> list[Entry]:
    d = cfg.d_model

    def bias(name_hf: str, name: str, size: int) -> Entry:
        if cfg.bias:
            return _same(name_hf, name)
        # HF's GPT-2 always has biases: a bias-free model exports zeros (and pretrain_bias)
        return [name_hf], [], lambda ts: [torch.zeros(size)], _zero

    out: list[Entry] = [_same("transformer.wte.weight", "embed.weight"),
                        _same("transformer.wpe.weight", "pos_embed.weight")]
    for i in range(cfg.n_layers):
        h, o = f"transformer.h.{i}.", f"layers.{i}."
        out += [
            _same(h + "ln_1.weight", o + "attn_norm.weight"), bias(h + "ln_1.bias", o + "attn_norm.bias", d),
            _t(h + "attn.c_attn.weight", o + "attn.wqkv.weight"),
            bias(h + "attn.c_attn.bias", o + "attn.wqkv.bias", 3 * d),
            _t(h + "attn.c_proj.weight", o + "attn.wo.weight"), bias(h + "attn.c_proj.bias", o + "attn.wo.bias", d),
            _same(h + "ln_2.weight", o + "ffn_norm.weight"), bias(h + "ln_2.bias", o + "ffn_norm.bias", d),
            _t(h + "mlp.c_fc.weight", o + "ffn.fc.weight"), bias(h + "mlp.c_fc.bias", o + "ffn.fc.bias", cfg.hidden),
            _t(h + "mlp.c_proj.weight", o + "ffn.proj.weight"), bias(h + "mlp.c_proj.bias", o + "ffn.proj.bias", d),
        ]
    return out + [_same("transformer.ln_f.weight", "norm.weight"), bias("transformer.ln_f.bias", "norm.bias", d)]


def hf_config(cfg: ModelConfig, bos_id: int | None, eos_id: int | None) -> dict[str, Any]:
    common: dict[str, Any] = {"architectures": [ARCHITECTURES[cfg.arch]], "vocab_size": cfg.vocab_size,
                              "bos_token_id": bos_id, "eos_token_id": eos_id,
                              "tie_word_embeddings": cfg.tied, "torch_dtype": "float32",
                              "dtype": "float32", "use_cache": True, "initializer_range": cfg.init_std}
    if cfg.arch == "gpt2":
        return {**common, "model_type": "gpt2", "n_embd": cfg.d_model, "n_layer": cfg.n_layers,
                "n_head": cfg.n_heads, "n_positions": cfg.seq_len, "n_ctx": cfg.seq_len,
                "n_inner": cfg.hidden,
                "activation_function": "gelu_new" if cfg.gelu_approximate == "tanh" else "gelu",
                "layer_norm_epsilon": cfg.norm_eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
                "attn_pdrop": 0.0, "scale_attn_weights": True,
                # HF's GPT-2 has no such setting (its biases are zeros here); import reads it
                **({} if cfg.bias else {"pretrain_bias": False})}
    rope = {"rope_theta": cfg.rope_theta, "rope_scaling": None,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta}}
    base = {**common, **rope, "hidden_size": cfg.d_model, "intermediate_size": cfg.hidden,
            "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
            "max_position_embeddings": cfg.seq_len, "rms_norm_eps": cfg.norm_eps,
            "hidden_act": "silu", "attention_bias": False, "attention_dropout": 0.0}
    if cfg.arch == "llama":
        return {**base, "model_type": "llama", "num_key_value_heads": cfg.n_kv_heads,
                "head_dim": cfg.head_dim, "mlp_bias": False}
    return {**base, "model_type": "deepseek_v3", "num_key_value_heads": cfg.n_heads,
            "q_lora_rank": cfg.q_lora_rank or None, "kv_lora_rank": cfg.kv_lora_rank,
            "qk_nope_head_dim": cfg.qk_nope_head_dim, "qk_rope_head_dim": cfg.qk_rope_head_dim,
            "v_head_dim": cfg.v_head_dim, "head_dim": cfg.qk_rope_head_dim,
            "rope_interleave": True, "first_k_dense_replace": cfg.n_layers,
            # dense model: the MoE keys only need valid values (vLLM rejects nulls)
            "moe_intermediate_size": cfg.hidden, "n_routed_experts": 1, "n_shared_experts": 1,
            "num_experts_per_tok": 1, "n_group": 1, "topk_group": 1, "norm_topk_prob": True,
            "routed_scaling_factor": 1.0, "num_nextn_predict_layers": 0}


def export(model: Transformer, out: Path, bos_id: int | None = None,
           eos_id: int | None = None, pad_id: int | None = None) -> None:
    """Write ``model.safetensors``, ``config.json`` and ``generation_config.json`` into ``out``
    (``pad_id``: the tokenizer's padding token, which transformers' ``generate`` otherwise
    takes to be EOS, with a warning)."""
    from safetensors.torch import save_file
    cfg = model.cfg
    # the table maps the canonical layout ([q; k; v], [gate; up]), not our stored one
    ours = {k: model.to_canonical(k, v.detach().cpu()) for k, v in model.state_dict().items()}
    for k in ("embed.weight", "head.weight"):   # without the padding rows
        if k in ours:
            ours[k] = ours[k][:cfg.vocab_size]
    tensors = {hf: t.contiguous() for names_hf, names, to_hf, _ in _table(cfg)
               for hf, t in zip(names_hf, to_hf([ours[n] for n in names]), strict=True)}
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    honour_umask(out / "model.safetensors")
    pad = {"pad_token_id": pad_id} if pad_id is not None else {}
    (out / "config.json").write_text(
        json.dumps({**hf_config(cfg, bos_id, eos_id), **pad}, indent=2), encoding="utf-8")
    gen = {"bos_token_id": bos_id, "eos_token_id": eos_id, **pad, "use_cache": True}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2), encoding="utf-8")


def _unsupported(c: dict[str, Any], arch: str) -> list[str]:
    """Settings of an HF config that would change the model's output and that we do not have."""
    bad = []
    if arch == "gpt2":
        if c.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
            bad.append(f"activation_function={c['activation_function']!r}")
        if not c.get("tie_word_embeddings", True):
            bad.append("tie_word_embeddings=false")
        for k in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
            if c.get(k):
                bad.append(f"{k}=true")
        if not c.get("scale_attn_weights", True):
            bad.append("scale_attn_weights=false")
        return bad
    if c.get("hidden_act", "silu") != "silu":
        bad.append(f"hidden_act={c['hidden_act']!r}")
    for k in ("attention_bias", "mlp_bias"):
        if c.get(k):
            bad.append(f"{k}=true")
    rope = c.get("rope_parameters") or {}
    scaling = c.get("rope_scaling") or {}   # transformers writes {"rope_type": "default"} too
    if scaling.get("rope_type", scaling.get("type", "default")) != "default" \
            or rope.get("rope_type", "default") != "default" or "mscale_all_dim" in rope:
        bad.append("rope scaling (only rope_type 'default')")
    if arch == "llama" and c.get("head_dim") not in (None, c["hidden_size"] // c["num_attention_heads"]):
        bad.append(f"head_dim={c['head_dim']} != hidden_size / num_attention_heads = "
                   f"{c['hidden_size']} / {c['num_attention_heads']} (a head size of its own; "
                   "or hidden_size changed without head_dim)")
    return bad


def config_from_hf(c: dict[str, Any]) -> ModelConfig:
    if not isinstance(c, dict):
        raise ConfigError("config.json is not a JSON object")
    arch = MODEL_TYPES.get(c.get("model_type", ""))
    if arch is None:
        raise ConfigError(f"cannot import model_type {c.get('model_type')!r}; supported: "
                          + ", ".join(MODEL_TYPES))
    bad = _unsupported(c, arch)
    if bad:
        raise ConfigError("cannot import a model with " + ", ".join(bad))
    if arch == "gpt2":
        return ModelConfig(arch="gpt2", d_model=c["n_embd"], n_layers=c["n_layer"],
                           n_heads=c["n_head"], n_kv_heads=c["n_head"], seq_len=c["n_positions"],
                           vocab_size=c["vocab_size"], ffn_hidden=c.get("n_inner") or 4 * c["n_embd"],
                           norm_eps=c.get("layer_norm_epsilon", 1e-5), tie_embeddings=True,
                           init_std=c.get("initializer_range", 0.02),
                           bias=bool(c.get("pretrain_bias", True)),
                           gelu_approximate="none" if c.get("activation_function") == "gelu"
                           else "tanh")
    theta = (c.get("rope_parameters") or {}).get("rope_theta", c.get("rope_theta", 10000.0))
    kw = dict(d_model=c["hidden_size"], n_layers=c["num_hidden_layers"],
              n_heads=c["num_attention_heads"], seq_len=c["max_position_embeddings"],
              vocab_size=c["vocab_size"], ffn_hidden=c["intermediate_size"], rope_theta=float(theta or 10000.0),
              norm_eps=c.get("rms_norm_eps", 1e-6), tie_embeddings=c.get("tie_word_embeddings", False),
              init_std=c.get("initializer_range", 0.02))
    if arch == "llama":
        return ModelConfig(arch="llama", n_kv_heads=c.get("num_key_value_heads") or c["num_attention_heads"], **kw)
    if c.get("first_k_dense_replace", 0) < c["num_hidden_layers"]:
        raise ConfigError("only dense DeepSeek models import (first_k_dense_replace = num_hidden_layers)")
    if not c.get("rope_interleave", True):
        raise ConfigError("only rope_interleave = true DeepSeek checkpoints import")
    return ModelConfig(arch="mla", n_kv_heads=c["num_attention_heads"],
                       q_lora_rank=c.get("q_lora_rank") or 0, kv_lora_rank=c["kv_lora_rank"],
                       qk_nope_head_dim=c["qk_nope_head_dim"], qk_rope_head_dim=c["qk_rope_head_dim"],
                       v_head_dim=c["v_head_dim"], **kw)


def import_hf(folder: str | Path) -> Transformer:
    """Build our model from an HF-format directory (ours, or any matching checkpoint).

    Every tensor must be used and every shape must match; a setting we cannot represent
    (rope scaling, other activations, biases) is refused rather than silently dropped.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    folder = Path(folder)   # a str had failed on ``/`` as "config.json: missing or invalid"
    try:
        c = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        cfg = config_from_hf(c)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{folder}/config.json: cannot read: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise ConfigError(f"{folder}: {e}") from None
        raise ConfigError(f"{folder}/config.json: missing or invalid {e}") from None
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{folder}: no .safetensors weights")
    tensors: dict[str, Tensor] = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except (SafetensorError, OSError) as e:
            raise ConfigError(f"{f}: unreadable weights: {e}") from None
    if cfg.arch == "gpt2" and "wte.weight" in tensors:  # saved from GPT2Model, no prefix
        tensors = {f"transformer.{k}": v for k, v in tensors.items()}
    model = Transformer(cfg)
    expected = model.state_dict()
    state: dict[str, Tensor] = {}
    used = set()
    for names_hf, names, _, from_hf in _table(cfg):
        for hf_name in names_hf:
            if hf_name not in tensors:
                raise ConfigError(f"{folder}: weight {hf_name!r} is missing")
        used.update(names_hf)
        try:
            parts = from_hf([tensors[n] for n in names_hf])
            for n, t in zip(names, parts, strict=True):
                if n in ("embed.weight", "head.weight") and t.shape[0] == cfg.vocab_size:
                    t = torch.cat([t, t.new_zeros(cfg.padded_vocab - cfg.vocab_size,
                                                  *t.shape[1:])])   # our padding rows
                if t.shape != expected[n].shape:
                    raise ValueError(f"{tuple(t.shape)} where {tuple(expected[n].shape)} is expected")
                state[n] = model.to_stored(n, t)
        except (ValueError, RuntimeError) as e:
            raise ConfigError(f"{folder}: weight {', '.join(names_hf)} does not fit the config: "
                              f"{e}") from None
    # lm_head is stored by some tied checkpoints; attention masks are buffers, not weights
    extra = sorted(k for k in set(tensors) - used
                   if not (cfg.tied and k == "lm_head.weight") and not k.endswith(".attn.bias")
                   and not k.endswith(".attn.masked_bias"))
    if extra:
        raise ConfigError(f"{folder}: weights this config does not use: {extra[:5]}"
                          + (" ..." if len(extra) > 5 else ""))
    missing, _ = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (cfg.tied and m == "head.weight")]
    if missing:
        raise ConfigError(f"{folder}: weights missing for {missing}")
    return model
