import json
import math

import pytest
import torch

from pretrain.model import loss as loss_module
from pretrain.model.config import ModelConfig
from pretrain.model.layers import apply_rope, rope_tables
from pretrain.model.transformer import Transformer


def _cfg(**kw) -> ModelConfig:
    base = dict(d_model=64, n_layers=3, n_heads=4, n_kv_heads=2, seq_len=32, vocab_size=300,
                kv_lora_rank=24, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12)
    return ModelConfig(**{**base, **kw})


VARIANTS = [{}, {"tie_embeddings": True}, {"n_kv_heads": 4}, {"n_kv_heads": 1, "ffn_hidden": 100},
            {"arch": "gpt2"}, {"arch": "gpt2", "ffn_hidden": 72}, {"arch": "mla"},
            {"arch": "mla", "q_lora_rank": 20, "tie_embeddings": True},
            {"arch": "mla", "n_heads": 6}]   # MLA's head sizes are its own: 6 need not divide 64


@pytest.mark.parametrize("kw", VARIANTS, ids=str)
def test_param_count_from_config_matches_the_module(kw):
    cfg = _cfg(**kw)
    model = Transformer(cfg)
    # the published count is the real vocabulary's; the stored matrices also hold padding
    padding = (cfg.padded_vocab - cfg.vocab_size) * cfg.d_model * (1 if cfg.tied else 2)
    assert cfg.num_params() + padding == sum(p.numel() for p in model.parameters())
    non_emb = sum(p.numel() for n, p in model.named_parameters()
                  if not n.startswith(("embed.", "head.", "pos_embed.")))
    assert cfg.num_params(embeddings=False) == non_emb


@pytest.mark.parametrize("kw", VARIANTS, ids=str)
def test_flops_per_token_is_6n_plus_attention(kw):
    cfg = _cfg(**kw)
    linear = sum(m.weight.numel() for m in Transformer(cfg).modules()
                 if isinstance(m, torch.nn.Linear))  # every matmul weight, the head included
    # model FLOPs count the real vocabulary: the head's padding columns are work, not use
    linear -= (cfg.padded_vocab - cfg.vocab_size) * cfg.d_model
    if cfg.arch == "mla":
        per_head = (16 + 8) + 12   # QK^T over the qk dims, AV over the v dims
    else:
        per_head = 2 * cfg.head_dim
    attn = 6 * cfg.n_layers * cfg.seq_len * cfg.n_heads * per_head
    assert cfg.flops_per_token() == 6 * linear + attn
    if cfg.arch != "mla":  # the familiar form
        assert attn == 12 * cfg.n_layers * cfg.d_model * cfg.seq_len


def test_initial_loss_is_about_log_vocab():
    torch.manual_seed(0)
    model = Transformer(_cfg())
    x = torch.randint(0, 300, (4, 32))
    _, loss = model(x, x)
    assert loss.item() == pytest.approx(math.log(300), abs=0.3)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "mla"])
def test_causal_future_tokens_do_not_change_past_logits(arch):
    torch.manual_seed(0)
    model = Transformer(_cfg(arch=arch)).eval()
    x = torch.randint(0, 300, (2, 32))
    y = x.clone()
    y[:, 20:] = torch.randint(0, 300, (2, 12))
    a, _ = model(x)
    b, _ = model(y)
    torch.testing.assert_close(a[:, :20], b[:, :20])
    assert not torch.allclose(a[:, 20:], b[:, 20:])


def test_gqa_equals_full_attention_with_repeated_kv_heads():
    torch.manual_seed(0)
    gqa = Transformer(_cfg(n_kv_heads=2)).eval()
    mha = Transformer(_cfg(n_kv_heads=4)).eval()
    sd = gqa.state_dict()
    hd = 16
    for i in range(3):
        name = f"layers.{i}.attn.wqkv.weight"
        # q, k, v rows of the fused matrix, in the canonical order
        q, k, v = gqa.to_canonical(name, sd[name]).split([4 * hd, 2 * hd, 2 * hd])
        k, v = (t.view(2, hd, 64).repeat_interleave(2, dim=0).reshape(4 * hd, 64) for t in (k, v))
        sd[name] = mha.to_stored(name, torch.cat([q, k, v]))
    mha.load_state_dict(sd)
    x = torch.randint(0, 300, (2, 32))
    torch.testing.assert_close(gqa(x)[0], mha(x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(n_kv_heads=2), dict(n_kv_heads=4), dict(arch="gpt2"),
                                dict(ffn_hidden=96, n_heads=4)])
def test_stored_layouts_convert_both_ways_and_shard_by_group(kw):
    """The fused q/k/v rows are stored by kv-head group and gate/up in block pairs: the
    conversion is a bijection, and any range of whole groups (what tensor parallelism
    gives a rank) holds exactly those heads' q, k, v rows and those hidden units' gate and
    up rows."""
    model = Transformer(_cfg(**kw))
    cfg = model.cfg
    for name, p in model.named_parameters():
        c = model.to_canonical(name, p.detach())
        assert torch.equal(model.to_stored(name, c), p.detach()), name
    hd, G, Hkv = cfg.head_dim, cfg.n_heads // cfg.kv_heads, cfg.kv_heads
    w = torch.arange((G + 2) * Hkv * hd, dtype=torch.float32)[:, None]  # row ids, canonical
    stored = model.to_stored("layers.0.attn.wqkv.weight", w)
    half = stored[: len(stored) // 2].flatten().long().tolist()  # the first of 2 ranks
    q_rows = set(range(G * Hkv * hd // 2))
    k_rows = set(range(G * Hkv * hd, G * Hkv * hd + Hkv * hd // 2))
    v_rows = {r + Hkv * hd for r in k_rows}
    assert set(half) == q_rows | k_rows | v_rows
    if cfg.arch != "gpt2":
        h = cfg.hidden
        rows = torch.arange(2 * h, dtype=torch.float32)[:, None]
        half = set(model.to_stored("layers.0.ffn.w13.weight", rows)[:h].flatten().long().tolist())
        assert half == set(range(h // 2)) | set(range(h, h + h // 2))


def test_rope_is_a_rotation_and_relative():
    cos, sin = rope_tables(16, 32, 10000.0)
    q = torch.randn(1, 1, 32, 16)
    rq = apply_rope(q, cos, sin)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    # <R_m q, R_n k> depends on m - n only
    k = torch.randn(1, 1, 1, 16)
    q1 = q[:, :, :1]
    def dot(m, n):
        return float((apply_rope(q1, cos[m:m + 1], sin[m:m + 1])
                      * apply_rope(k, cos[n:n + 1], sin[n:n + 1])).sum())
    assert dot(5, 2) == pytest.approx(dot(13, 10), abs=1e-4)


def test_kv_cache_bytes_per_token():
    assert _cfg().kv_cache_bytes_per_token(2) == 3 * 2 * 2 * 16 * 2          # K and V, 2 kv heads
    assert _cfg(arch="gpt2").kv_cache_bytes_per_token(4) == 3 * 2 * 4 * 16 * 4
    assert _cfg(arch="mla").kv_cache_bytes_per_token(2) == 3 * (24 + 8) * 2  # latent + rope key


@pytest.mark.parametrize("arch", ["llama", "gpt2", "mla"])
def test_residual_projections_get_depth_scaled_init(arch):
    """Only the projections back into the residual stream (attention's wo, the MLP's w2 or
    GPT-2's proj) are scaled by 1/sqrt(2L); MLA's q_proj is an input projection."""
    model = Transformer(_cfg(arch=arch, n_layers=8, d_model=256, n_heads=4, n_kv_heads=4))
    for name, p in model.layers["0"].named_parameters():
        if p.dim() == 2:
            out = name in ("attn.wo.weight", "ffn.w2.weight", "ffn.proj.weight")
            assert p.std().item() == pytest.approx(0.02 / (4 if out else 1), rel=0.05), name


def test_too_long_input_is_rejected():
    with pytest.raises(ValueError, match="exceeds seq_len"):
        Transformer(_cfg())(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # gpt2: the head tied to the embedding
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fused_chunked_loss_equals_the_plain_loss_and_its_gradients(arch, reduction, monkeypatch):
    """The head fused with the cross-entropy in chunks (7 tokens per chunk here: several
    chunks and a partial one) against F.cross_entropy of the whole logits, with ignored
    targets; in fp32 and under bf16 autocast."""
    monkeypatch.setattr(loss_module, "CHUNK_TOKENS", 7)
    torch.manual_seed(0)
    cfg = _cfg(arch=arch, n_kv_heads=2 if arch == "llama" else 4)
    a = Transformer(cfg)
    b = Transformer(cfg)
    b.load_state_dict(a.state_dict())
    if cfg.tied:
        b.head.weight = b.embed.weight
    x = torch.randint(0, 300, (3, 17))
    y = x[:, 1:].clone()
    y[0, :5] = -1
    _, plain = a(x[:, :-1], y, reduction=reduction)
    plain.backward()
    logits, fused = b(x[:, :-1], y, reduction=reduction, fused_loss=True)
    fused.backward()
    assert logits.numel() == 0
    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-5)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, plain = a(x[:, :-1], y)
        _, fused = b(x[:, :-1], y, fused_loss=True)
    assert abs(float(fused) - float(plain)) < 1e-3
    with torch.no_grad():   # evaluation: the loss alone, its gradients not made
        _, plain = a(x[:, :-1], y, reduction=reduction)
        _, fused = b(x[:, :-1], y, reduction=reduction, fused_loss=True)
    assert fused.grad_fn is None
    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-5)


def test_padded_vocabulary_rows_are_never_scored_or_chosen(tmp_path):
    from pretrain.model import io
    from pretrain.model.generate import generate
    cfg = _cfg(vocab_size=100)
    assert cfg.padded_vocab == 128
    torch.manual_seed(0)
    model = Transformer(cfg)
    assert model.head.weight.shape[0] == 128 and not model.head.weight[100:].any()
    x = torch.randint(0, 100, (2, 32))
    logits, loss = model(x[:, :-1], x[:, 1:])
    _, fused = model(x[:, :-1], x[:, 1:], fused_loss=True)
    with torch.no_grad():   # padding rows that would win every argmax if they were scored
        model.head.weight[100:] = 50.0 * model.head.weight[:28].sign()
    logits2, loss2 = model(x[:, :-1], x[:, 1:])
    _, fused2 = model(x[:, :-1], x[:, 1:], fused_loss=True)
    assert logits2.shape[-1] == 100 and torch.equal(logits, logits2)
    assert torch.allclose(loss, loss2) and torch.allclose(fused, fused2)
    with torch.no_grad():
        assert torch.allclose(model(x[:, :-1], x[:, 1:], fused_loss=True)[1], loss2)
    fused2.backward()
    assert not model.head.weight.grad[100:].any()
    out = generate(model.eval(), [[1, 2, 3]], 30, temperature=1.0, top_k=0)
    assert max(out[0]) < 100
    # weights saved before padding existed load as they were
    io.save(tmp_path, _cfg(vocab_size=100, pad_vocab_multiple=1),
            Transformer(_cfg(vocab_size=100, pad_vocab_multiple=1)).state_dict(), {})
    stored = json.loads((tmp_path / io.CONFIG).read_text())
    del stored["pad_vocab_multiple"]
    (tmp_path / io.CONFIG).write_text(json.dumps(stored))
    assert io.load(tmp_path).embed.weight.shape[0] == 100


def test_the_same_weights_are_written_as_the_same_bytes(tmp_path):
    """A stage's output fingerprint hashes its files: an identical retrain must not make eval
    and sample rerun (safetensors orders several metadata keys at random)."""
    from pretrain.model import io
    model = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, seq_len=16, vocab_size=64))
    blobs = set()
    for i in range(12):
        io.save_weights(model.state_dict(), io.tied_aliases(model), tmp_path / f"{i}.safetensors")
        blobs.add((tmp_path / f"{i}.safetensors").read_bytes())
    assert len(blobs) == 1
    io.check_layout(tmp_path / "0.safetensors")   # the layout mark is still there


def test_weights_to_start_from_that_are_not_there_are_said_as_such(tmp_path):
    """A run directory whose train stage never completed was 'not a run directory'."""
    from pretrain.config import ConfigError
    from pretrain.model import io
    with pytest.raises(ConfigError, match="missing: no such folder"):
        io.load_any(tmp_path / "missing")
    (tmp_path / "config.toml").write_text("")
    with pytest.raises(ConfigError, match="neither a run directory with a completed train stage"):
        io.load_any(tmp_path)
    # interrupted, with checkpoints: the latest is named (export said nothing of them)
    from pretrain.export import export_run
    model = Transformer(ModelConfig(vocab_size=16, d_model=8, n_layers=1, n_heads=2, seq_len=8))
    # newer, but half-written or being removed: not the latest to name (they were)
    for name in ("step-0000002", "step-0000004", "step-0000006.tmp", "step-0000008.deleting"):
        folder = tmp_path / "checkpoints" / "train-k" / name
        folder.mkdir(parents=True)
        io.save(folder, model.cfg, model.state_dict(), io.tied_aliases(model))
    hint = f"has checkpoints, the latest {tmp_path / 'checkpoints' / 'train-k' / 'step-0000004'}:"
    for call in (io.load_any, lambda p: export_run(p, p.parent / "hf")):
        with pytest.raises(ConfigError, match=hint):
            call(tmp_path)
