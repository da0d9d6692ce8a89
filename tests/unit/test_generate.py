"""KV-cache generation: cached == uncached, batched == one by one, MLA absorbed == naive."""

import pytest
import torch

from pretrain.model.config import ModelConfig
from pretrain.model.generate import generate, sample_next
from pretrain.model.transformer import Transformer

ARCHS = ["llama", "gpt2", "mla"]


def _model(arch: str, **kw) -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, seq_len=48,
                      vocab_size=97, kv_lora_rank=24, qk_nope_head_dim=16, qk_rope_head_dim=8,
                      v_head_dim=16, init_std=0.1, **kw)  # larger init: peaked, varied logits
    return Transformer(cfg).eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_and_uncached_greedy_generation_agree(arch):
    model = _model(arch)
    prompt = [[5, 17, 3, 88, 42]]
    cached = generate(model, prompt, 30, temperature=0.0, use_cache=True)
    uncached = generate(model, prompt, 30, temperature=0.0, use_cache=False)
    assert cached == uncached and len(cached[0]) == 30
    # sampled with the same seed: varied tokens, still identical
    runs = [generate(model, prompt, 30, temperature=1.0, use_cache=c,
                     generator=torch.Generator().manual_seed(1)) for c in (True, False)]
    assert runs[0] == runs[1] and len(set(runs[0][0])) > 10


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_prompts_of_different_lengths_match_one_by_one(arch):
    model = _model(arch)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [9], [40, 41, 42]]
    batched = generate(model, prompts, 12, temperature=0.0)
    for p, b in zip(prompts, batched, strict=True):
        assert generate(model, [p], 12, temperature=0.0) == [b]
    # and the cached, padded forward gives the same logits as an unpadded one
    cache = model.new_cache(2, 10, pad=torch.tensor([3, 0]))
    x = torch.tensor([[0, 0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7]])
    padded, _ = model(x, cache=cache)
    alone, _ = model(torch.tensor([[5, 6, 7, 8]]))
    torch.testing.assert_close(padded[0, 3:], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_stop_token_ends_a_row_and_is_not_returned(arch):
    model = _model(arch)
    free = generate(model, [[5, 17, 3]], 10, temperature=0.0)[0]
    stop = free[4]
    first = free.index(stop)
    stopped = generate(model, [[5, 17, 3], [8, 9]], 10, temperature=0.0, stop_ids=(stop,))
    assert stopped[0] == free[:first]


@pytest.mark.parametrize("q_lora_rank", [0, 20])
def test_mla_absorbed_equals_naive(q_lora_rank):
    model = _model("mla", q_lora_rank=q_lora_rank)
    x = torch.randint(0, 97, (2, 20))
    outs = []
    for absorb in (False, True):
        for layer in model.layers.values():
            layer.attn.absorb = absorb
        outs.append(model(x)[0])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def test_mla_cache_holds_only_the_latent_and_rope_key():
    model = _model("mla")
    cache = model.new_cache(1, 10)
    model(torch.randint(0, 97, (1, 10)), cache=cache)
    assert {n for layer in cache.buffers for n in layer} == {"c_kv", "k_rope"}
    assert cache.bytes() == 10 * model.cfg.kv_cache_bytes_per_token(dtype_bytes=4)


def test_sampling_filters():
    logits = torch.tensor([[4.0, 3.0, 2.0, -1.0, -2.0]])
    g = torch.Generator().manual_seed(0)
    seen_k = {int(sample_next(logits, 1.0, 2, 1.0, g)) for _ in range(200)}
    assert seen_k == {0, 1}
    # probabilities ~ .66 .24 .09 .005 .002: top_p = 0.8 keeps exactly the first two
    seen_p = {int(sample_next(logits, 1.0, 0, 0.8, g)) for _ in range(300)}
    assert seen_p == {0, 1}
    seen_all = {int(sample_next(logits, 5.0, 0, 1.0, g)) for _ in range(300)}
    assert seen_all == {0, 1, 2, 3, 4}
    assert int(sample_next(logits, 0.0, 0, 1.0, g)) == 0


def test_prompt_too_long_for_the_context_is_an_error():
    model = _model("llama")
    with pytest.raises(ValueError, match="longer than the model's context"):
        generate(model, [list(range(49))], 5)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_prompt_as_long_as_the_context_gets_its_next_token(arch):
    """The last new token is never read: a prompt of seq_len tokens has room for one, the
    greedy one of the whole context (it was refused, and every prompt got one too few)."""
    model = _model(arch)   # seq_len 48
    prompt = [(7 * i) % 50 + 1 for i in range(48)]
    (new,) = generate(model, [prompt], 5, temperature=0.0)
    logits, _ = model(torch.tensor([prompt]))
    assert new == [int(logits[0, -1].argmax())]
    assert len(generate(model, [prompt[:40]], 100, temperature=0.0)[0]) == 9


@pytest.mark.parametrize("use_cache", [True, False])
def test_each_row_gets_its_own_length_budget(use_cache):
    model = _model("llama")  # seq_len 48
    short, long = [3], list(range(1, 40))
    alone = generate(model, [short], 100, temperature=0.0, use_cache=use_cache)[0]
    both = generate(model, [short, long], 100, temperature=0.0, use_cache=use_cache)
    assert len(alone) == 48 and both[0] == alone
    assert len(both[1]) == 10


def test_tiny_top_p_keeps_the_most_likely_token():
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    assert int(sample_next(logits, 1.0, 0, 1e-9, torch.Generator().manual_seed(0))) == 1


@pytest.mark.parametrize("arch", ["llama", "mla"])
def test_bf16_activations_keep_a_bf16_cache(arch):
    model = _model(arch).to(torch.bfloat16)
    cache = model.new_cache(1, 8)
    model(torch.randint(0, 97, (1, 8)), cache=cache)
    assert {b.dtype for layer in cache.buffers for b in layer.values()} == {torch.bfloat16}
    assert cache.bytes() == 8 * model.cfg.kv_cache_bytes_per_token(dtype_bytes=2)


def test_the_sample_stage_names_a_prompt_too_long_and_refuses_empty_or_bad_configs(capsys):
    from pretrain.config import ConfigError, PretrainError
    from pretrain.eval.config import SampleConfig
    from pretrain.eval.sample import samples
    from pretrain.tokenizer.bpe import Tokenizer
    from pretrain.tokenizer.config import BOS, EOS
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    model = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, seq_len=16,
                                    vocab_size=tok.vocab_size))
    cfg = SampleConfig(prompts=["ok", "x" * 16], max_new_tokens=2)
    with pytest.raises(PretrainError, match=r"sample.prompts\[1\] \('x{16}'\) is 17 tokens with "
                                            r"BOS, more than the model reads \(model.seq_len = 16\)"):
        samples(model, tok, cfg)
    capsys.readouterr()
    out = samples(model, tok, SampleConfig(prompts=["ok", "x" * 14], max_new_tokens=2))
    assert "get fewer" not in capsys.readouterr().err   # 15 + 2 new, the last never read
    out = samples(model, tok, SampleConfig(prompts=["ok", "x" * 15], max_new_tokens=2))
    assert len(out) == 2 and len(out[1]["completion"]) <= 1   # cut to fit, and said
    assert "sample: prompt(s) [1] get fewer than sample.max_new_tokens = 2 new tokens" \
        in capsys.readouterr().err
    with pytest.raises(ConfigError, match="sample.prompts is empty"):
        SampleConfig(prompts=[])
    for seed in (-1, 10**20):
        with pytest.raises(ConfigError, match="sample.seed must be within"):
            SampleConfig(seed=seed)


def test_bad_arguments_are_named_and_a_tiny_temperature_is_greedy():
    model = _model("llama")
    for kw, what in ((dict(max_new_tokens=0), "max_new_tokens"), (dict(temperature=-1.0), "temperature"),
                     (dict(top_k=-2), "top_k"), (dict(top_p=0.0), "top_p")):
        with pytest.raises(ValueError, match=what):
            generate(model, [[1, 2, 3]], **{"max_new_tokens": 4, **kw})
    vocab = model.cfg.vocab_size
    for bad in (vocab, -1):   # a padding row's id, or none at all
        with pytest.raises(ValueError, match=f"prompt id {bad} is not a token id"):
            generate(model, [[1, bad]], 4)
    tiny = generate(model, [[1, 2, 3]], 6, temperature=1e-40, generator=torch.Generator().manual_seed(0))
    assert tiny == generate(model, [[1, 2, 3]], 6, temperature=0.0)


def test_a_prompts_sample_does_not_depend_on_the_other_prompts():
    """One generator drew for the whole batch: with the same seed, adding a prompt before
    or after "ROMEO:" changed ROMEO's sample."""
    from pretrain.eval.config import SampleConfig
    from pretrain.eval.sample import samples
    from pretrain.tokenizer.bpe import Tokenizer
    from pretrain.tokenizer.config import BOS, EOS
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, seq_len=32,
                                    vocab_size=tok.vocab_size)).eval()

    def romeo(prompts: list[str], seed: int = 1) -> str:
        out = samples(model, tok, SampleConfig(prompts=prompts, max_new_tokens=12,
                                               temperature=1.0, seed=seed))
        return next(s["completion"] for s in out if s["prompt"] == "ROMEO:")
    alone = romeo(["ROMEO:"])
    assert len(alone) >= 6   # sampled text, not an early stop
    assert romeo(["a", "ROMEO:"]) == alone == romeo(["ROMEO:", "a longer prompt"])
    assert romeo(["ROMEO:"], seed=2) != alone
    # a prompt listed twice: two samples (the copy number is part of the seed)
    twice = samples(model, tok, SampleConfig(prompts=["ROMEO:", "a", "ROMEO:"], max_new_tokens=12,
                                             temperature=1.0, seed=1))
    assert twice[0]["completion"] == alone != twice[2]["completion"]
    with pytest.raises(ValueError, match="generator: one per prompt, got 1 for 2"):
        generate(model, [[1], [2]], 2, generator=[torch.Generator()])
