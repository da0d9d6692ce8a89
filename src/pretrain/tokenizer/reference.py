"""A slow, obviously-correct byte-level BPE: the reference the fast trainer and encoder are
tested against (``tests/unit/test_tokenizer_reference.py``).

Training is the textbook algorithm (seed 002), nothing more:

1. split every text into chunks with the pre-split regex and count identical chunks;
2. repeat until the vocabulary is full: count every adjacent pair of ids over all chunks
   (overlapping pairs count, each weighted by its chunk's count), take the most frequent
   pair, and replace its occurrences in every chunk, left to right without overlap, by a
   new id whose bytes are the two tokens' bytes joined.

Ties go to the smallest pair (lowest first id, then lowest second id), rustbpe's rule, so
the two trainers can be compared merge by merge. Encoding applies the learned merges to
each chunk: repeatedly merge the adjacent pair that was learned first. Everything is
recounted from scratch at every merge: O(merges x corpus), for small corpora only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import regex


def train(texts: Iterable[str], vocab_size: int, pattern: str) -> tuple[list[bytes], list[tuple[int, int]]]:
    """(ranks, merges): the bytes of every id (256 single bytes first), and the id pairs
    merged into ids 256, 257, ... in order. Stops early when no pair is left."""
    if vocab_size < 256:
        raise ValueError(f"vocab_size must be >= 256, got {vocab_size}")
    split = regex.compile(pattern)
    chunks: Counter[bytes] = Counter()
    for text in texts:
        chunks.update(m.group().encode("utf-8") for m in split.finditer(text))
    words = [(list(chunk), n) for chunk, n in chunks.items()]
    ranks = [bytes([i]) for i in range(256)]
    merges: list[tuple[int, int]] = []
    while len(ranks) < vocab_size:
        pairs: Counter[tuple[int, int]] = Counter()
        for ids, n in words:
            for pair in zip(ids, ids[1:], strict=False):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        new_id = len(ranks)
        words = [(_merge(ids, best, new_id), n) for ids, n in words]
        merges.append(best)
        ranks.append(ranks[best[0]] + ranks[best[1]])
    return ranks, merges


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def encode(text: str, merges: list[tuple[int, int]], pattern: str) -> list[int]:
    """Ids of ``text``: each chunk's bytes, then the learned merges in the order learned."""
    order = {pair: 256 + i for i, pair in enumerate(merges)}  # pair -> its new id = its rank
    out: list[int] = []
    for chunk in (m.group() for m in regex.finditer(pattern, text)):
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:
            first = min(zip(ids, ids[1:], strict=False), key=lambda p: order.get(p, 1 << 62))
            if first not in order:
                break
            ids = _merge(ids, first, order[first])
        out += ids
    return out
