"""Benchmark decontamination: find training documents that contain a benchmark item, then
drop them or cut the match out, as GPT-3 did.

What counts as the item is ``benchmarks.py``'s: each item rendered as the texts it
appears as in documents (question with each answer, context with each ending, the
filled-in sentence, a passage whole). Normalisation is GPT-3's: lower case, punctuation
removed, split on whitespace (here also digits folded to 0: a table of numbers then
matches a table with other numbers, which costs a little training text and never lets a
test item through).

A document matches a benchmark when it shares an n-gram (13 words) with one of its texts,
or, for a text shorter than n words, contains its words in order: short items (a
BIG-bench fact, a COPA pair) can never share a 13-gram. Texts shorter than
``min_item_words`` (6) are not matched at all: common facts that short are everywhere
(README, "Decontamination", has recall and clean-text rates per value).
Every run of k words is hashed to 64 bits (``minhash.word_hashes``, numpy on the UTF-8
bytes) and kept in one sorted array per benchmark and k; a document's runs of each k
are hashed the same way and looked up (``HashSet``: a bit table, then binary search).

Modes: ``"drop"`` removes the whole document (datatrove's choice); ``"cut"`` removes each
match with 200 characters either side, splits the document there, drops pieces shorter
than 200 characters and drops the document if it was cut more than 10 times (GPT-3's
values, as in lm-evaluation-harness's ``clean_training_data``). Hits per benchmark are
counted either way.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import regex

from ..config import ConfigError
from .benchmarks import benchmark_texts, name_of
from .config import DecontamConfig
from .document import Document, Drop, Step, Why
from .minhash import _P, mix64, runs, word_hashes

# benchmark name -> words k -> sorted unique hashes of its texts' runs of k words (k = n:
# the n-grams of long texts; k < n: short texts whole)
Index = dict[str, dict[int, np.ndarray]]


# ASCII bytes that are not a word character (after lower case: not a-z or 0-9) and not a
# space, "_" too, to a space; the bytes of other characters as they are
_ASCII_NOT_WORD = bytes(c if 97 <= c <= 122 or 48 <= c <= 57 else 32 for c in range(128)) \
    + bytes(range(128, 256))
_OTHER_NOT_WORD = regex.compile(r"[^\w\x00-\x7f]")


def _prep(text: str) -> str:
    """Lower case and punctuation to spaces, one character for one (so that offsets in
    the result are offsets in the original): ``minhash.NOT_WORD`` to a space. The ASCII
    characters go through a byte table, the regex sees only the others (2.7x faster on
    C4 and TinyStories than the regex alone, which was half the contamination scan)."""
    low = text.lower()
    if len(low) != len(text):   # "İ" lowers to two characters: each its first, "i"
        low = "".join(c.lower()[:1] for c in text)
    b = low.encode("utf-8", "surrogatepass").translate(_ASCII_NOT_WORD)
    if len(b) == len(low):   # all ASCII
        return b.decode("ascii")
    return _OTHER_NOT_WORD.sub(" ", b.decode("utf-8", "surrogatepass"))


# Quiz scaffolding that a copied item gains between its words: option letters, "Q:",
# "Answer:", "Correct answer:", list numbers. Skipped on both sides, in the index and in
# documents, so "Q: ... A) ... B) ... Correct answer: ..." still reads as the item.
SKIP_WORDS = ("a", "b", "c", "d", "e", "q", "answer", "answers", "question", "correct",
              "choices", "options") + tuple("0" * k for k in range(1, 12))


def _skip_hashes() -> np.ndarray:
    h, _, _, _ = word_hashes([" ".join(SKIP_WORDS)])
    return np.unique(h)


_SKIP = _skip_hashes()


def words(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(hash, doc index, byte start, byte end) of every word of ``texts`` but the
    scaffolding words; byte offsets are into the normalised texts joined by NUL."""
    h, doc, starts, ends = word_hashes([_prep(t) for t in texts])
    keep = ~is_member(h, _SKIP)
    return h[keep], doc[keep], starts[keep], ends[keep]


def ngrams_of(w: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], n: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(hash, doc index, first word's byte start, last word's byte end) of every run of n
    words (from ``words``) within one text."""
    h, doc, starts, ends = w
    if len(h) < n:
        z = np.zeros(0, np.int64)
        return np.zeros(0, np.uint64), z, z, z
    g = runs(h, n)
    ok = doc[:len(g)] == doc[n - 1:]
    return mix64(g[ok]), doc[:len(g)][ok], starts[:len(g)][ok], ends[n - 1:][ok]


def text_ngrams(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return ngrams_of(words(texts), n)


def texts_index(texts: list[str], n: int, min_words: int, chunk: int = 4096
                ) -> dict[int, np.ndarray]:
    """k -> sorted unique hashes: the n-grams of ``texts``, and each text of
    ``min_words`` <= k < n words whole."""
    parts: dict[int, list[np.ndarray]] = defaultdict(list)
    for i in range(0, len(texts), chunk):
        w = words(texts[i:i + chunk])
        parts[n].append(ngrams_of(w, n)[0])
        counts = np.bincount(w[1], minlength=min(chunk, len(texts) - i))
        for k in np.unique(counts[(counts >= min_words) & (counts < n)]).tolist():
            g, doc, _, _ = ngrams_of(w, k)
            first = doc[:len(g)] != np.concatenate([[-1], doc[:len(g) - 1]])
            whole = first & (counts[doc] == k)   # the one run of a k-word text
            parts[k].append(g[whole])
    return {k: np.unique(np.concatenate(v)) for k, v in sorted(parts.items())}


def benchmark_index(paths: list[str], n: int, min_words: int) -> Index:
    """Benchmark name (``benchmarks.name_of``) -> its index (``texts_index``); files of
    one name are one benchmark."""
    texts: dict[str, list[str]] = defaultdict(list)
    for p in map(Path, dict.fromkeys(paths)):
        if not p.is_file():
            raise ConfigError(f"data.decontam.benchmarks: no such file {p}")
        found = benchmark_texts(p)
        if not found:
            raise ConfigError(f"data.decontam: benchmark file {p} holds no items")
        texts[name_of(p)] += found
    return {name: texts_index(t, n, min_words) for name, t in texts.items()}


def save_index(index: Index, path: Path) -> None:
    np.savez(path, **{f"{name}@{k}": v for name, ks in index.items()  # type: ignore[arg-type]
                      for k, v in ks.items()})


def load_index(path: str) -> Index:
    out: Index = defaultdict(dict)
    with np.load(path) as z:
        for key in z.files:
            name, _, k = key.rpartition("@")
            out[name][int(k)] = z[key]
    return dict(out)


class HashSet:
    """Sorted unique 64-bit hashes with a table of their top bits, one bit per value
    (32 to 64 slots a hash: at most ~3% of them set; at most 2**28 slots, a 32 MiB table,
    filled more past 8 M hashes), so that a membership test of a batch rules
    out nearly every absent hash with one table read and searches only the rest: a binary
    search of millions of hashes reads ~22 places in memory for each (the lookups of a
    document's runs were 80% of the contamination report's time)."""

    def __init__(self, hashes: np.ndarray):
        self.sorted = hashes
        bits = int(min(max(math.ceil(math.log2(max(len(hashes), 1))) + 5, 16), 28))
        self.shift = np.uint64(64 - bits)
        table = np.zeros(1 << bits, dtype=bool)
        table[hashes >> self.shift] = True
        self.table = np.packbits(table, bitorder="little")

    def __len__(self) -> int:
        return len(self.sorted)

    def contains(self, x: np.ndarray) -> np.ndarray:
        """``is_member(x, self.sorted)``."""
        slot = x >> self.shift
        maybe = (self.table[slot >> np.uint64(3)] >> (slot & np.uint64(7)).astype(np.uint8)) & 1
        out = np.zeros(len(x), bool)
        at = np.flatnonzero(maybe)
        out[at] = is_member(x[at], self.sorted)
        return out


def union(index: Index) -> dict[int, HashSet]:
    """k -> the hashes of every benchmark together."""
    ks: dict[int, list[np.ndarray]] = defaultdict(list)
    for by_k in index.values():
        for k, v in by_k.items():
            ks[k].append(v)
    return {k: HashSet(np.unique(np.concatenate(v))) for k, v in sorted(ks.items())}


def find(texts: list[str], sets: dict[int, HashSet]
         ) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per k with hits: (k, hash, doc index, byte start, byte end) of every run of k words
    of ``texts`` found in ``sets[k]``. The runs of k + 1 words are extended from those of
    k (one multiply-add a word per k, where hashing each k afresh costs k)."""
    out: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    if not sets:
        return out
    h, doc, starts, ends = words(texts)
    g = h
    with np.errstate(over="ignore"):
        for k in range(1, max(sets) + 1):
            if k > 1:
                g = g[:-1] * _P + h[k - 1:]
            if k not in sets or not len(g):
                continue
            ok = doc[:len(g)] == doc[k - 1:]
            hashed = mix64(g[ok])
            hit = sets[k].contains(hashed)
            if hit.any():
                out.append((k, hashed[hit], doc[:len(g)][ok][hit], starts[:len(g)][ok][hit],
                            ends[k - 1:][ok][hit]))
    return out


HITS = "hits_"   # a funnel stat per benchmark: documents that contained one of its items


def hits(stats: dict[str, int]) -> dict[str, int]:
    """Benchmark name -> documents hit, from the decontamination step's funnel stats."""
    return {k.removeprefix(HITS): v for k, v in stats.items() if k.startswith(HITS)}


def is_member(x: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``np.isin(x, sorted_set)`` by binary search: O(len(x) log n) per document, where
    ``np.isin`` would sort the benchmark set (millions of n-grams) again on every call."""
    if not len(sorted_set):
        return np.zeros(len(x), bool)
    i = np.minimum(np.searchsorted(sorted_set, x), len(sorted_set) - 1)
    return sorted_set[i] == x


class Decontaminate(Step):
    """Drops (or cuts) documents containing a benchmark item; ``stats`` counts the
    documents hit per benchmark as ``hits_<name>`` (read back by ``hits``)."""

    name = "decontam"

    def __init__(self, cfg: DecontamConfig, index: Index,
                 sets: dict[int, HashSet] | None = None):
        super().__init__()
        self.cfg = cfg
        self.index = index
        self.all = union(index) if sets is None else sets   # sets: union(index), made once

    def process(self, doc: Document) -> Iterator[Document | Drop]:
        found = find([doc.text], self.all)
        if not found:
            yield doc
            return
        names = [name for name, by_k in self.index.items()
                 if any(k in by_k and is_member(g, by_k[k]).any() for k, g, _, _, _ in found)]
        for name in names:
            self.stats[HITS + name] += 1
        doc.meta["contaminated"] = names
        if self.cfg.mode == "drop":
            yield doc, Why("contaminated", ", ".join(names))
            return
        yield from self._cut(doc, np.concatenate([f[3] for f in found]),
                             np.concatenate([f[4] for f in found]))

    def _cut(self, doc: Document, bstarts: np.ndarray, bends: np.ndarray
             ) -> Iterator[Document | Drop]:
        text, cfg = doc.text, self.cfg
        # byte offsets in the prepared text -> character offsets (one char for one)
        char_of_byte = np.cumsum((np.frombuffer(_prep(text).encode("utf-8"), np.uint8)
                                  & 0xC0) != 0x80) - 1
        char_of_byte = np.concatenate([char_of_byte, [len(text)]])
        spans = sorted(zip((char_of_byte[bstarts] - cfg.cut_window_chars).tolist(),
                           (char_of_byte[np.maximum(bends - 1, 0)] + 1
                            + cfg.cut_window_chars).tolist(), strict=True))
        merged: list[list[int]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        if len(merged) > cfg.max_cuts:
            yield doc, "contaminated_too_many_cuts"
            return
        pieces, pos = [], 0
        for s, e in merged:
            pieces.append(text[pos:max(s, pos)])
            pos = max(pos, e)
        pieces.append(text[pos:])
        kept = [p for p in pieces if len(p) >= cfg.min_piece_chars]
        self.stats["docs_cut"] += 1
        self.stats["chars_removed"] += len(text) - sum(map(len, kept))
        if not kept:
            yield doc, "contaminated_nothing_left"
            return
        for k, piece in enumerate(kept):
            yield Document(doc.id if len(kept) == 1 else f"{doc.id}#part{k}", piece, doc.domain,
                           dict(doc.meta), doc.split)
