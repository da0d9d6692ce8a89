"""The memorization probe on a model that did memorise: trained to overfit a few
documents, it reproduces them, not the held-out ones; duplicated documents are found,
and so are openings quoted inside other documents."""

import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from pretrain.eval import memorization
from pretrain.eval.config import EvalConfig
from pretrain.model.transformer import ModelConfig, Transformer
from pretrain.tokenizer import shards
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import BOS, EOS, TokenizeConfig


def test_probe_tells_memorised_training_text_from_held_out(tmp_path):
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    rng = random.Random(0)

    def text() -> str:
        return "".join(rng.choice("abcdefghij ") for _ in range(60))

    train = [text() for _ in range(3)]
    quoting = text()[:20] + train[1][:40] + text()[:20]   # t1's opening inside another
    docs = [{"id": f"t{i}", "text": t, "domain": "d", "split": "train"}
            for i, t in enumerate(train + [train[0], quoting])]   # t0 twice: duplicated
    docs += [{"id": f"v{i}", "text": text(), "domain": "d", "split": "val"} for i in range(3)]
    shards.run(TokenizeConfig(), tok, iter(docs), ["d"], tmp_path, {})
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=258, d_model=64, n_layers=2, n_heads=4,
                                    seq_len=64))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = torch.tensor([[tok.bos_id, *tok.encode(t)][:49] for t in train])
    for _ in range(300):  # overfit the three training texts
        _, loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    rep = memorization.probe(model, tmp_path, EvalConfig(memorization_docs=10,
                                                       memorization_prompt_tokens=16,
                                                       memorization_tokens=16))
    # the quoting document's own opening was never trained on
    assert rep["train"]["docs"] == 5 and rep["train"]["exact_rate"] == 0.8
    assert rep["val"]["docs"] == 3 and rep["val"]["exact_rate"] == 0.0
    # t0, there twice, and t1, whose probed 32 tokens the last document quotes
    assert rep["train_duplicated"] == {"docs": 2, "exact_rate": 1.0, "mean_prefix_tokens": 16.0}
    assert "train_duplicated" in memorization.table(rep)


@pytest.mark.parametrize("chunk, base, threads", [
    (1 << 20, memorization._B, None),   # as many threads as cores
    (5, memorization._B, 1),   # windows across the chunks' seams
    (5, memorization._B, 3),   # chunks counted on three threads
    (5, 1, 2),                 # a hash of the tokens' sum: distinct spans of one hash, each
])                             # hit compared with every one of them
def test_spans_are_counted_wherever_they_occur(monkeypatch, chunk, base, threads):
    """Against a plain count over every position: overlapping occurrences, spans across
    the end of one stream and the start of the next (not one), repeated rows, few symbols
    (hash hits of the same top bits), a stream shorter than the span."""
    monkeypatch.setattr(memorization, "_CHUNK", chunk)
    monkeypatch.setattr(memorization, "_B", base)
    monkeypatch.setattr(memorization, "_B_INV", pow(base, -1, 1 << 64))
    rng = np.random.default_rng(0)
    for _ in range(50):
        length = int(rng.integers(1, 6))
        streams = [rng.integers(0, 3, int(rng.integers(0, 40))).astype(np.uint16)
                   for _ in range(3)]
        spans = rng.integers(0, 3, (int(rng.integers(0, 7)), length)).astype(np.uint16)
        if len(spans) > 1:
            spans[-1] = spans[0]
        want = [sum(int((s[i:i + length] == span).all()) for s in streams
                    for i in range(len(s) - length + 1)) for span in spans]
        assert memorization.count_spans(streams, spans, threads).tolist() == want


def test_documents_are_picked_at_a_stride_across_shards(tmp_path, monkeypatch, capsys):
    """The probe's documents come from the document index, a shard at a time: those long
    enough, at a fixed stride in stored order, cut to the tokens the probe reads. A pool
    cap smaller than the split still finds the duplicated documents in what it picks."""
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    rng = random.Random(1)
    texts = ["".join(rng.choice("abcdef") for _ in range(rng.randrange(2, 30)))
             for _ in range(60)]
    texts += [texts[i] for i in range(0, 60, 3) if len(texts[i]) >= 12]   # copies
    docs = [{"id": f"t{i}", "text": t, "domain": "d", "split": "train"}
            for i, t in enumerate(texts)] + [{"id": "v", "text": "abc", "domain": "d",
                                              "split": "val"}]
    shards.run(TokenizeConfig(shard_tokens=50), tok, iter(docs), ["d"], tmp_path, {})
    split = shards.TokenShards(tmp_path, "train")
    assert len(split.shards) > 5
    need = 12
    long = [np.asarray(t[:need + 1]) for t, _ in split.documents() if len(t) >= need + 1]
    for n in (1, 4, 7, len(long), 1000):
        rows, total = memorization._pick(split, need, n)
        want = long if n >= len(long) else [long[int(i * len(long) / n)] for i in range(n)]
        assert total == len(long) and rows.shape == (len(want), need + 1)
        assert [r.tolist() for r in rows] == [w.tolist() for w in want]
    model = Transformer(ModelConfig(vocab_size=258, d_model=32, n_layers=1, n_heads=2,
                                    seq_len=24))
    cfg = EvalConfig(memorization_docs=100, memorization_prompt_tokens=4,
                     memorization_tokens=8)   # spans of the first 12 tokens after BOS
    spans = {w[1:].tobytes() for w in long}
    dup_spans = {s for s in spans if sum(w[1:].tobytes() == s for w in long) > 1}
    assert memorization.probe(model, tmp_path, cfg)["train_duplicated"]["docs"] == \
        len(dup_spans) > 0
    monkeypatch.setattr(memorization, "_POOL", 9)
    pool = [w[1:].tobytes() for w in memorization._pick(split, need, 9)[0]]
    copied = {s for s in pool if s in dup_spans}   # copies outside the pool count too
    rep = memorization.probe(model, tmp_path, cfg)
    assert rep["train"]["docs"] == 9 and 0 < len(copied) < len(dup_spans)
    assert rep["train_duplicated"]["docs"] == len(copied)
    assert "not the config's" not in capsys.readouterr().err
    # settings longer than the model takes are shortened, and said (they were not)
    rep = memorization.probe(model, tmp_path, replace(cfg, memorization_prompt_tokens=60,
                                                      memorization_tokens=30))
    assert (rep["prompt_tokens"], rep["continuation_tokens"]) == (11, 12)
    assert ("memorization: 11 prompt and 12 continuation tokens, not the config's 60 and 30: "
            "the model's seq_len is 24") in capsys.readouterr().err
