"""Benchmark decontamination: find training documents sharing a 13-gram with an
evaluation set, then drop them or cut the match out, as GPT-3 did.

Normalisation is GPT-3's: lower case, punctuation removed, split on whitespace (here
also digits folded to 0: a table of numbers then matches a table with other numbers,
which costs a little training text and never lets a test item through). Every 13-gram of
every evaluation text is hashed to 64 bits and kept in one sorted array per benchmark;
a document's 13-grams are hashed the same way (``minhash.word_hashes``, numpy on the
UTF-8 bytes) and looked up with ``np.isin``.

Modes: ``"drop"`` removes the whole document (datatrove's choice); ``"cut"`` removes each
match with 200 characters either side, splits the document there, drops pieces shorter
than 200 characters and drops the document if it was cut more than 10 times (GPT-3's
values, as in lm-evaluation-harness's ``clean_training_data``). Hits per benchmark are
counted either way.

Evaluation sets are local files: jsonl (every string field of a record, and all of
them joined, are texts: llm-foundry's query/choices, context/continuation and
context_options all work), or text (one text per line; .bz2/.gz read transparently).
"""

from __future__ import annotations

import bz2
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError
from .config import DecontamConfig
from .document import Document, Drop, Step
from .minhash import NOT_WORD, mix64, runs, word_hashes


def _prep(text: str) -> str:
    """Lower case and punctuation to spaces, one character for one (so that offsets in
    the result are offsets in the original)."""
    low = text.lower()
    return NOT_WORD.sub(" ", low if len(low) == len(text) else text)


def text_ngrams(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(hash, doc index, first word's byte start, last word's byte end) of every run of n
    words within one text; byte offsets are into the texts joined by NUL."""
    h, doc, starts, ends = word_hashes([_prep(t) for t in texts])
    if len(h) < n:
        z = np.zeros(0, np.int64)
        return np.zeros(0, np.uint64), z, z, z
    g = runs(h, n)
    ok = doc[:len(g)] == doc[n - 1:]
    return mix64(g[ok]), doc[:len(g)][ok], starts[:len(g)][ok], ends[n - 1:][ok]


def read_benchmark(path: Path) -> Iterator[str]:
    name = path.name.lower()
    opener: Any = bz2.open if name.endswith(".bz2") else gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            if ".jsonl" in name or ".json" in name:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ConfigError(f"{path}:{lineno}: not JSON ({e})") from None
                    strings = list(_strings(rec))
                    yield from strings
                    yield " ".join(strings)
            else:
                yield from (line for line in f if line.strip())
    except OSError as e:
        raise ConfigError(f"data.decontam.benchmarks: cannot read {path}: {e}") from None


def _strings(x: Any) -> Iterator[str]:
    if isinstance(x, str):
        yield x
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)


def benchmark_ngrams(paths: list[str], n: int) -> dict[str, np.ndarray]:
    """Benchmark name -> sorted unique n-gram hashes."""
    out: dict[str, np.ndarray] = {}
    for p in map(Path, paths):
        if not p.is_file():
            raise ConfigError(f"data.decontam.benchmarks: no such file {p}")
        texts = list(read_benchmark(p))
        parts = [text_ngrams(texts[i:i + 4096], n)[0] for i in range(0, len(texts), 4096)]
        name = p.name.split(".")[0]
        out[name] = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)
    return out


HITS = "hits_"   # a funnel stat per benchmark: documents that shared an n-gram with it


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
    """Drops (or cuts) documents sharing an n-gram with a benchmark; ``stats`` counts the
    documents hit per benchmark as ``hits_<name>`` (read back by ``hits``)."""

    name = "decontam"

    def __init__(self, cfg: DecontamConfig, ngrams: dict[str, np.ndarray]):
        super().__init__()
        self.cfg = cfg
        self.ngrams = ngrams
        self.all = np.unique(np.concatenate(list(ngrams.values()))) if ngrams else np.zeros(0, np.uint64)

    def process(self, doc: Document) -> Iterator[Document | Drop]:
        g, _, starts, ends = text_ngrams([doc.text], self.cfg.ngram)
        hit = is_member(g, self.all)
        if not hit.any():
            yield doc
            return
        names = [k for k, v in self.ngrams.items() if is_member(g[hit], v).any()]
        for k in names:
            self.stats[HITS + k] += 1
        doc.meta["contaminated"] = names
        if self.cfg.mode == "drop":
            yield doc, "contaminated"
            return
        yield from self._cut(doc, starts[hit], ends[hit])

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
