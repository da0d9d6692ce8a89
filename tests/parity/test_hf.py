"""Our models against the transformers classes they export to: logits, loss, every gradient,
greedy generation; export -> import round trip; the tokenizer through AutoTokenizer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from pretrain.config import ConfigError
from pretrain.model import hf
from pretrain.model.config import ModelConfig
from pretrain.model.generate import generate
from pretrain.model.transformer import Transformer
from pretrain.tokenizer import bpe
from pretrain.tokenizer import hf as tok_hf
from pretrain.tokenizer.config import TokenizerConfig
from pretrain.tokenizer.hf import recover_merges

transformers = pytest.importorskip("transformers", reason="parity tests need transformers ([dev])")

VARIANTS = {
    "llama": dict(arch="llama"),
    "llama-tied-mha": dict(arch="llama", tie_embeddings=True, n_kv_heads=4),
    "gpt2": dict(arch="gpt2"),
    "gpt2-nanogpt": dict(arch="gpt2", bias=False, gelu_approximate="none"),  # exports zero biases
    "mla": dict(arch="mla"),
    "mla-qlora": dict(arch="mla", q_lora_rank=20),
    "mla-6-heads": dict(arch="mla", n_heads=6),   # MLA's heads need not divide d_model
}


def _pair(kw: dict, tmp_path: Path) -> tuple[Transformer, torch.nn.Module]:
    torch.manual_seed(0)
    base = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, seq_len=48, vocab_size=97,
                kv_lora_rank=24, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                init_std=0.1, rope_theta=500000.0)  # not the 10000 a config reader falls back to
    cfg = ModelConfig(**{**base, **kw})
    ours = Transformer(cfg).eval()
    hf.export(ours, tmp_path, bos_id=None, eos_id=None)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    return ours, theirs


@pytest.mark.parametrize("name", VARIANTS)
def test_logits_loss_and_gradients_match(name, tmp_path):
    ours, theirs = _pair(VARIANTS[name], tmp_path)
    assert type(theirs).__name__ == hf.ARCHITECTURES[ours.cfg.arch]
    x = torch.randint(0, 97, (2, 48), generator=torch.Generator().manual_seed(1))
    logits, loss = ours(x[:, :-1], x[:, 1:])
    out = theirs(x[:, :-1])
    assert (logits - out.logits).abs().max().item() <= 1e-5
    their_loss = theirs(x, labels=x).loss
    assert abs(loss.item() - their_loss.item()) <= 1e-5
    loss.backward()
    their_loss.backward()
    ours_grads = {n: p.grad for n, p in ours.named_parameters()}
    if ours.cfg.tied:
        ours_grads["head.weight"] = ours_grads["embed.weight"]
    V = ours.cfg.vocab_size
    for k in ("embed.weight", "head.weight"):  # the padding rows: never scored, no gradient
        assert ours_grads[k].shape[0] == ours.cfg.padded_vocab > V
        assert not ours_grads[k][V:].any()
        ours_grads[k] = ours_grads[k][:V]
    their_params = dict(theirs.named_parameters())
    for names_hf, names, to_hf, _ in hf._table(ours.cfg):
        if not names:  # a bias-free model's zero biases: HF trains them, we have none
            continue
        canonical = [ours.to_canonical(n, ours_grads[n]) for n in names]  # our stored row order
        for hf_name, mine in zip(names_hf, to_hf(canonical), strict=True):
            theirs_g = their_params[hf_name].grad
            rel = (mine - theirs_g).abs().max() / theirs_g.abs().max().clamp(min=1e-12)
            assert rel.item() <= 1e-4, hf_name


@pytest.mark.parametrize("name", VARIANTS)
def test_greedy_generation_matches_hf_generate(name, tmp_path):
    ours, theirs = _pair(VARIANTS[name], tmp_path)
    prompt = [5, 17, 3, 88, 42]
    (mine,) = generate(ours, [prompt], 20, temperature=0.0)
    out = theirs.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                          pad_token_id=0)
    assert out[0, len(prompt):].tolist() == mine


@pytest.mark.parametrize("name", VARIANTS)
def test_export_import_round_trip_is_bit_identical(name, tmp_path):
    ours, _ = _pair(VARIANTS[name], tmp_path)
    back = hf.import_hf(str(tmp_path))   # a path as typed, as the README shows it
    assert hf.hf_config(back.cfg, None, None) == hf.hf_config(ours.cfg, None, None)
    # a bias-free gpt2 came back with GPT-2's biases, all zero, which init_from then trained
    assert back.cfg.bias == ours.cfg.bias and back.cfg.num_params() == ours.cfg.num_params()
    if not ours.cfg.bias:  # biases trained elsewhere (HF trains them) are not dropped
        from safetensors.torch import load_file, save_file
        w = load_file(tmp_path / "model.safetensors")
        w["transformer.h.1.mlp.c_fc.bias"][3] = 0.5
        save_file(w, str(tmp_path / "model.safetensors"))
        with pytest.raises(ConfigError, match=r"transformer.h.1.mlp.c_fc.bias does not fit the config: it is not zero"):
            hf.import_hf(tmp_path)
    a, b = ours.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_config_json_reads_the_same_in_transformers_4_and_5(tmp_path):
    ours, _ = _pair(VARIANTS["llama"], tmp_path)
    import json
    c = json.loads((tmp_path / "config.json").read_text())
    assert c["rope_theta"] == c["rope_parameters"]["rope_theta"] == 500000.0
    assert c["max_position_embeddings"] == 48 and c["head_dim"] == 16
    mla = json.loads(json.dumps(hf.hf_config(ModelConfig(arch="mla", vocab_size=10), 0, 1)))
    assert mla["rope_interleave"] is True and mla["first_k_dense_replace"] == 4


def test_import_rejects_unknown_model_types(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConfigError, match="cannot import model_type 'bert'"):
        hf.import_hf(tmp_path)
    # hidden_size changed by hand: the head size it then disagrees with is named with both
    _pair(VARIANTS["llama"], tmp_path / "l")
    import json
    c = json.loads((tmp_path / "l" / "config.json").read_text())
    (tmp_path / "l" / "config.json").write_text(json.dumps({**c, "hidden_size": 2 * c["hidden_size"]}))
    with pytest.raises(ConfigError, match=rf"head_dim=16 != hidden_size / num_attention_heads = "
                                          rf"{2 * c['hidden_size']} / {c['num_attention_heads']} "
                                          r"\(a head size of its own; or hidden_size changed"):
        hf.import_hf(tmp_path / "l")


def test_tokenizer_json_gives_our_ids_through_autotokenizer(tmp_path):
    import json.decoder
    import textwrap

    corpus = [Path(textwrap.__file__).read_text(), Path(json.decoder.__file__).read_text()]
    tok = bpe.train(iter(corpus), TokenizerConfig(vocab_size=600))
    tok_hf.save_pretrained(tok, tmp_path, model_max_length=64)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    held_out = [Path(transformers.__file__).read_text(), "naïve café — 東京 🙂\n\n  x\t\r\n 12345"]
    for text in [*corpus, *held_out]:
        ids = tok.encode(text)
        assert auto(text)["input_ids"] == [tok.bos_id, *ids]     # BOS from the post-processor
        assert auto.decode(ids) == text
    assert auto.bos_token_id == tok.bos_id and auto.eos_token_id == tok.eos_id
    # the one deliberate difference: HF turns special-token text into the special id (what
    # its users expect), our encoder treats it as text (no control tokens forged by documents)
    assert auto("a <|eos|>", add_special_tokens=False)["input_ids"][-1] == tok.eos_id
    assert tok.eos_id not in tok.encode("a <|eos|>")


def test_merges_recovered_from_ranks_rebuild_the_ranks():
    tok = bpe.train(iter([Path(bpe.__file__).read_text()]), TokenizerConfig(vocab_size=400))
    merges = recover_merges(tok.ranks)
    assert [a + b for a, b in merges] == tok.ranks[256:]


def _hf_llama(tmp_path, **kw):
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, max_position_embeddings=16, **kw)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("scaling", [None, {"rope_type": "default"}])
def test_import_of_a_native_hf_checkpoint_matches_it(tmp_path, scaling):
    # (transformers 5 reads a rope_scaling dict as the whole of the rope parameters, its
    # theta then the default: the case with one keeps theta at the default)
    d = _hf_llama(tmp_path, rope_theta=10000.0 if scaling else 1234.0)
    if scaling:   # what some checkpoints' config.json say for plain RoPE: not scaling
        c = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**c, "rope_scaling": scaling}))
    ours = hf.import_hf(d).eval()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    x = torch.randint(0, 50, (1, 16))
    assert (ours(x)[0] - theirs(x).logits).abs().max().item() <= 1e-5


@pytest.mark.parametrize("kw, message", [
    (dict(attention_bias=True), "attention_bias=true"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(rope_scaling={"rope_type": "linear", "factor": 4.0}), "rope scaling"),
])
def test_import_refuses_settings_it_cannot_represent(tmp_path, kw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        hf.import_hf(_hf_llama(tmp_path, **kw))


def test_import_of_malformed_directories_is_a_clear_error(tmp_path):
    from safetensors.torch import load_file, save_file

    ours, _ = _pair(VARIANTS["llama"], tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    bad = dict(weights, **{"model.layers.0.self_attn.q_proj.weight": torch.zeros(3, 3)})
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="q_proj.weight, .* does not fit the config"):
        hf.import_hf(tmp_path)
    save_file(dict(weights, extra=torch.zeros(1)), str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="weights this config does not use: \\['extra'\\]"):
        hf.import_hf(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="unreadable weights"):
        hf.import_hf(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ConfigError, match="missing or invalid 'hidden_size'"):
        hf.import_hf(tmp_path)


def test_gpt2_checkpoint_without_the_transformer_prefix_imports(tmp_path):
    from safetensors.torch import load_file, save_file
    ours, _ = _pair(VARIANTS["gpt2"], tmp_path)
    w = load_file(tmp_path / "model.safetensors")
    save_file({k.removeprefix("transformer."): v for k, v in w.items()}, str(tmp_path / "model.safetensors"))
    back = hf.import_hf(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(),
                                                   back.state_dict().values(), strict=True))
