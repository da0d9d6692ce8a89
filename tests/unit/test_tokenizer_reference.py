"""The fast trainer (rustbpe) and encoder (tiktoken) against the slow reference BPE."""

from __future__ import annotations

import json
import json.decoder
import random
import textwrap
from pathlib import Path
from pydoc_data.topics import topics as pydoc_topics

import pytest

from pretrain.tokenizer import bpe, reference
from pretrain.tokenizer.config import GPT2_PATTERN, GPT4_PATTERN, TokenizerConfig

from ..conftest import shared_data

CORPORA = {
    "python-source": [Path(textwrap.__file__).read_text(), Path(json.decoder.__file__).read_text()],
    "prose": [pydoc_topics[k] for k in ("if", "while", "for", "try", "with", "function")],
    # ties everywhere: every pair occurs equally often, so tie-breaking decides every merge
    "ties": ["abcdefgh " * 3, "hgfedcba " * 3, "aaaa bbbb aaaa"],
    "unicode": ["naïve café — 東京 東京 🙂🙂 über ÜBER straße " * 4, "Ωμέγα ωμέγα " * 5],
}
HELD_OUT = [Path(random.__file__).read_text()[:20_000], pydoc_topics["class"],
            "naïve 東京 🙂 über new words 12345 1234567 x\r\n\t  trailing  "]


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_rustbpe_learns_the_reference_merges(corpus: str, pattern: str):
    cfg = TokenizerConfig(vocab_size=256 + 3 + 200, pattern=pattern)
    fast = bpe.train(iter(CORPORA[corpus]), cfg)
    ranks, merges = reference.train(CORPORA[corpus], 256 + 200, cfg.regex())
    assert fast.ranks == ranks
    assert len(set(ranks)) == len(ranks)
    for text in HELD_OUT + CORPORA[corpus]:
        assert fast.encode(text) == reference.encode(text, merges, cfg.regex())


def test_reference_by_hand():
    # "abab abab": chunks "abab" and " abab"; (a, b) = (97, 98) occurs 4 times and wins;
    # then (256, 256) occurs twice, ties with (32, 256) once... no: (256, 256) x2 > (32, 256) x1
    ranks, merges = reference.train(["abab abab"], 256 + 3, GPT4_PATTERN)
    assert merges == [(97, 98), (256, 256), (32, 257)]
    assert ranks[256:] == [b"ab", b"abab", b" abab"]
    assert reference.encode("ababab abab", merges, GPT4_PATTERN) == [257, 256, 258]
    # ties: the smallest pair wins
    _, merges = reference.train(["xy ba"], 257, GPT2_PATTERN)
    assert merges == [(32, 98)]  # " b" < "ba" < "xy": (32, 98) is the smallest of the three


def test_parity_on_real_web_text():
    path = shared_data("webtext/c4_sample.jsonl")  # skips with a reason without ../shared/data
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if sum(map(len, texts)) > 50_000:
                break
    cfg = TokenizerConfig(vocab_size=256 + 3 + 300)
    fast = bpe.train(iter(texts), cfg)
    ranks, merges = reference.train(texts, 256 + 300, cfg.regex())
    assert fast.ranks == ranks
    held = [json.loads(line)["text"] for line in open(path, encoding="utf-8")][-5:]
    for text in held:
        assert fast.encode(text) == reference.encode(text, merges, cfg.regex())
