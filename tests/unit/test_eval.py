import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pretrain.eval.loss import domain_windows, held_out
from pretrain.model.config import ModelConfig
from pretrain.model.generate import generate
from pretrain.model.transformer import Transformer
from pretrain.tokenizer import shards
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import BOS, EOS, TokenizeConfig

TEXTS = {"a": ["hello there", "general kenobi"], "b": ["x = 1\nprint(x)"]}


def _setup(tmp_path: Path, seq_len: int):
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])  # bytes only
    docs = [{"id": f"{d}{i}", "domain": d, "text": t}
            for d, ts in TEXTS.items() for i, t in enumerate(ts)]
    docs.append({"id": "t", "domain": "a", "text": "for training only"})
    # the first two documents of each domain are held out, the last one is trained on
    cfg = TokenizeConfig(val_fraction=1e-6, min_val_docs=2)
    shards.run(cfg, tok, iter(docs), ["a", "b"], tmp_path, {})
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1,
                                    seq_len=seq_len, vocab_size=tok.vocab_size))
    return tok, model.eval()


def test_bits_per_byte_matches_a_hand_computation(tmp_path: Path):
    tok, model = _setup(tmp_path, seq_len=64)  # every domain fits in one window
    res = held_out(model, shards.TokenShards(tmp_path, "val"), 0, 16, torch.device("cpu"))
    total_nll = total_bytes = total_tok = 0.0
    for domain, texts in TEXTS.items():
        stream = []
        for t in texts:
            stream += [tok.bos_id, *tok.encode(t), tok.eos_id]
        x = torch.tensor([stream[:-1]])
        with torch.no_grad():
            logp = F.log_softmax(model(x)[0][0].double(), dim=-1)
        nll = -sum(float(logp[i, stream[i + 1]]) for i in range(len(stream) - 1))
        nbytes = sum(len(t.encode()) for t in texts)  # BOS/EOS count zero bytes
        assert res[domain]["tokens"] == len(stream) - 1
        assert res[domain]["bytes"] == nbytes
        assert math.isclose(res[domain]["loss"], nll / (len(stream) - 1), rel_tol=1e-4)
        assert math.isclose(res[domain]["bpb"], nll / math.log(2) / nbytes, rel_tol=1e-4)
        total_nll, total_bytes, total_tok = total_nll + nll, total_bytes + nbytes, total_tok + len(stream) - 1
    assert math.isclose(res["all"]["bpb"], total_nll / math.log(2) / total_bytes, rel_tol=1e-4)
    assert math.isclose(res["all"]["ppl"], math.exp(total_nll / total_tok), rel_tol=1e-3)


def test_windows_shorter_than_the_stream_predict_every_token_once(tmp_path: Path):
    tok, model = _setup(tmp_path, seq_len=8)
    res = held_out(model, shards.TokenShards(tmp_path, "val"), 0, 3, torch.device("cpu"))
    for domain, texts in TEXTS.items():
        n = sum(len(t.encode()) + 2 for t in texts)
        assert res[domain]["tokens"] == n - 1


def test_greedy_generation_is_the_argmax_continuation():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, seq_len=32,
                                    vocab_size=50)).eval()
    (out,) = generate(model, [[1, 2, 3]], 20, temperature=0.0, use_cache=False)
    seq = [1, 2, 3]
    for _ in range(20):
        nxt = int(model(torch.tensor([seq]))[0][0, -1].argmax())
        seq.append(nxt)
    assert out == seq[3:]


def test_domain_windows_are_capped_per_domain_and_cover_a_one_window_split(tmp_path: Path):
    _setup(tmp_path, seq_len=8)
    val = shards.TokenShards(tmp_path, "val")
    full = domain_windows(val, 4, 0)
    for domain, texts in TEXTS.items():
        stream = np.concatenate(full[domain])  # windows overlap by one token
        n = sum(len(t.encode()) + 2 for t in texts)
        assert sum(len(w) - 1 for w in full[domain]) == n - 1
        assert all(len(w) == 5 for w in full[domain][:-1]) and len(stream) > 0
    capped = domain_windows(val, 4, 8)
    assert {d: len(w) for d, w in capped.items()} == {"a": 2, "b": 2}
    assert all(np.array_equal(a, b) for a, b in zip(capped["a"], full["a"], strict=False))
    # a split of exactly seq_len + 1 tokens is one window
    assert [w.tolist() for w in domain_windows(val, 4, 4)["b"]] == [full["b"][0].tolist()]
    # once every domain has its cap, no further document is read
    every = list(val.documents())

    def documents():
        yield from every
        raise AssertionError("read on after every domain had its cap")

    val.documents = documents
    assert [w.tolist() for w in domain_windows(val, 4, 8)["b"]] == \
        [w.tolist() for w in capped["b"]]


def test_the_report_names_trained_domains_nothing_scores(tmp_path):
    """A domain trained on with no held-out documents has no row in the held-out table;
    the report said nothing of it (the tokenize stage's warning alone did)."""
    from pretrain.report import _eval
    (tmp_path / "tokenize").mkdir()
    (tmp_path / "eval").mkdir()
    splits = {"train": {"tokens_per_domain": {"web": 900, "books": 500, "stories": 700}},
              "val": {"tokens_per_domain": {"web": 0, "books": 0, "stories": 90}}}
    (tmp_path / "tokenize" / "meta.json").write_text(json.dumps({"splits": splits}))
    row = {"loss": 2.0, "ppl": 7.39, "bpb": 1.1, "tokens": 90}
    (tmp_path / "eval" / "results.json").write_text(json.dumps({"all": row, "stories": row}))
    text = _eval(tmp_path, [])
    assert "| stories | 2.0000 |" in text
    assert "Not scored: web, books (train documents, none held out: a source with " \
        "use_for = \"train\" holds none out;" in text
    splits["val"]["tokens_per_domain"] = {"web": 5, "books": 5, "stories": 90}
    (tmp_path / "tokenize" / "meta.json").write_text(json.dumps({"splits": splits}))
    assert "Not scored" not in _eval(tmp_path, [])
    (tmp_path / "tokenize" / "meta.json").write_text("{junk")   # damaged: the table alone
    assert "| stories |" in _eval(tmp_path, [])


def test_scoring_makes_logits_of_the_scored_positions_only_and_equals_the_whole_ones():
    """Task scoring ran the head over every position of the batch (and an fp32 log-softmax
    of it, copied to the host), held-out loss made the batch's fp32 logits whole: 2.5x a
    training step's memory at a GPT-2 vocabulary. Both equal the plain computation: tails
    of rows of every length (longer than the context too, cut from the left) in batches
    of mixed lengths, and the summed loss of right-padded rows."""
    from pretrain.eval.scoring import nll_total, score_tails
    torch.manual_seed(1)
    model = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1,
                                    seq_len=24, vocab_size=203)).eval()   # padded to 256
    g = torch.Generator().manual_seed(2)
    rows = [(torch.randint(0, 203, (n,), generator=g).tolist(), k)
            for n, k in ((5, 2), (30, 4), (25, 25), (2, 1), (17, 9), (9, 3), (24, 1))]
    seen = []
    real_head = model.logits_of

    def head(h):
        seen.append(h.shape[0])
        return real_head(h)

    model.logits_of = head   # counts what the head is given
    got = score_tails(model, rows, 24, torch.device("cpu"), batch_size=3)
    del model.logits_of
    assert sum(seen) == sum(min(k, min(len(ids), 25) - 1) for ids, k in rows)
    with torch.no_grad():
        for (ids, k), tail in zip(rows, got, strict=True):
            ids = ids[-25:]
            k = min(k, len(ids) - 1)
            logits, _ = model(torch.tensor([ids[:-1]]))
            logp = F.log_softmax(logits[0, -k:].float(), dim=-1)
            target = torch.tensor(ids[-k:])
            assert tail.tokens == k
            assert math.isclose(tail.logprob, float(logp.gather(1, target[:, None]).sum()),
                                rel_tol=1e-5, abs_tol=1e-5)
            hits = (logp.argmax(-1) == target).tolist()
            assert tail.greedy_prefix == (hits.index(False) if False in hits else k)
    plain = [np.asarray(ids[:25]) for ids, _ in rows]
    fused, targets = nll_total(model, plain, 3, torch.device("cpu"))
    whole, same = nll_total(model, plain, 3, torch.device("cpu"), fused=False)
    assert torch.equal(targets, same) and len(targets) == sum(len(r) - 1 for r in plain)
    assert math.isclose(fused, whole, rel_tol=1e-5)
