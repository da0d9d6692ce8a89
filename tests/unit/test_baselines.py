"""N-gram baselines: proper distributions, the right order wins on text of that order, and
the numbers match a direct count on a corpus small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pretrain.eval import baselines
from pretrain.eval.baselines import NGrams


def _markov(order: int, n: int, vocab: int, seed: int) -> np.ndarray:
    """Tokens where the next one is (nearly) determined by the previous ``order`` ones."""
    rng = np.random.default_rng(seed)
    table = rng.integers(0, vocab, size=(vocab,) * order)
    out = list(rng.integers(0, vocab, size=order))
    for _ in range(n):
        nxt = int(table[tuple(out[-order:])]) if rng.random() < 0.9 else int(rng.integers(vocab))
        out.append(nxt)
    return np.array(out, dtype=np.int64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_model_is_a_distribution_over_the_vocabulary(seed):
    rng = np.random.default_rng(seed)
    vocab = 40
    m = NGrams(rng.integers(0, 30, size=3000), vocab)   # ids 30..39 never seen in training
    every = np.arange(vocab)
    assert math.isclose(m.unigram(every).sum(), 1.0, rel_tol=1e-9)
    for v in (0, 7, 35):    # a seen and an unseen context
        assert math.isclose(m.bigram(np.full(vocab, v), every).sum(), 1.0, rel_tol=1e-9)
        for u in (-1, 3, 38):
            p = m.trigram(np.full(vocab, u), np.full(vocab, v), every)
            assert math.isclose(p.sum(), 1.0, rel_tol=1e-9) and (p > 0).all()


def test_a_text_seen_twice_over_leaves_every_token_a_probability():
    """No n-gram seen exactly once: the discount estimate n1 / (n1 + 2 n2) was 0, and an
    unseen token's probability 0 (690 nats after the floor)."""
    m = NGrams(np.array([0, 1, 0, 1, 0, 1]), 5)   # bigrams 3 and 2 times, trigrams 2 and 2
    every = np.arange(5)
    for p in (m.bigram(np.full(5, 0), every), m.trigram(np.full(5, 1), np.full(5, 0), every)):
        assert (p > 0).all() and math.isclose(p.sum(), 1.0, rel_tol=1e-9)


def test_bigram_counts_match_kneser_ney_by_hand():
    # "a b a b a c": c(a b) = 2, c(a .) = 3 with 2 types; D from counts of counts:
    # bigram counts {ab: 2, ba: 2, ac: 1} -> n1 = 1, n2 = 2, D = 1 / 5
    a, b, c = 0, 1, 2
    m = NGrams(np.array([a, b, a, b, a, c]), 3)
    d = 1 / 5
    # continuation counts N1+(. w): b after {a}, a after {b}, c after {a} -> 1 each of 3
    d1 = 1.0   # the lowest order's counts of counts: three 1s, no 2s
    p1 = (1 - d1 + d1 * 3 / 3) / 3
    want = (2 - d) / 3 + d * 2 / 3 * p1
    assert m.bigram(np.array([a]), np.array([b]))[0] == pytest.approx(want)


def test_the_order_that_generated_the_text_scores_best():
    text1 = _markov(1, 60_000, 50, seed=3)
    text2 = _markov(2, 60_000, 50, seed=4)
    for text, best in ((text1, "bigram"), (text2, "trigram")):
        train, val = text[:50_000], text[50_000:]
        wins = {"d": [val[i:i + 65] for i in range(0, len(val) - 1, 64)]}
        res = baselines.score(NGrams(train, 50), wins, np.ones(50, dtype=np.int64))
        assert baselines.best(res, "d")[0] == best
        assert res["unigram"]["d"]["bpb"] > res["bigram"]["d"]["bpb"]
        assert res["trigram"]["all"]["tokens"] == sum(len(w) - 1 for w in wins["d"])


def test_a_sample_is_spread_over_every_shard():
    shards = [np.full(1000, i, dtype=np.uint16) for i in range(4)]
    tokens, sampled = baselines.sample_tokens(shards, 400, pieces=8)
    assert sampled and len(tokens) == 400 and set(tokens.tolist()) == {0, 1, 2, 3}
    whole, sampled = baselines.sample_tokens(shards, 0)
    assert not sampled and len(whole) == 4000
