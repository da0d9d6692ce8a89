"""Near-duplicate detection: MinHash signatures over word 5-grams, LSH banding, and
clustering one band at a time.

Parameters are FineWeb's: word 5-grams of simplified text (lower case, punctuation
removed, each number folded to one 0), 112 hash functions in 14 bands of 8 rows, no Jaccard
verification, transitive clusters, one document kept per cluster (here: the first in
input order, so the result does not depend on the number of worker processes).

The signature kernel is rensa's (R-MinHash, Rust), fed with 64-bit shingle hashes.
What is ours is how the shingles are made: the usual way builds one Python string per
shingle, which bounds rensa at about 10 MB/s per core and datasketch at 2.8 (measured
here). Instead the whole batch of documents is hashed with numpy on its UTF-8 bytes: a
polynomial hash per word from prefix sums, a shingle hash from five word hashes; no
Python object is made per word or per shingle (``bench/data_vs_datatrove.py`` measures
both paths). The estimates agree with the exact Jaccard and the LSH recall on planted
near-duplicates follows the S-curve ``1 - (1 - J^8)^14`` (``tests/unit/test_dedup.py``).

Memory: the signature stage keeps only the 14 band keys per document (112 bytes); the
clustering reads one band of every document at a time (8 bytes per document), so no
process ever holds every signature.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence

import numpy as np
import regex

from ..config import ConfigError
from .config import MinHashConfig

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
NOT_WORD = regex.compile(r"[^\w ]|_")   # punctuation, symbols, every other space, NUL
_MARKS = regex.compile(r"\p{Mn}+")
_NUMBER = regex.compile(r"\p{Nd}+(?:[.,\u060c\u066b\u2396\u2397\u2398]\p{Nd}+)?")
_ASCII_NUMBER = regex.compile(r"[0-9]+(?:[.,][0-9]+)?")


def prepare(text: str) -> str:
    """Lower case, each number one "0" (digits with at most one "," or "." group: "1,299"
    and "3.5" are one number, "1,299.99" two, as in FineWeb's ``simplify_text``, so pages
    that differ only in their prices and dates still share their shingles), accents
    removed, everything but letters, digits and spaces made a space. ``word_hashes`` then
    splits on spaces. The text keeps no NUL, which separates documents."""
    text = text.lower()
    if text.isascii():
        text = _ASCII_NUMBER.sub("0", text)
    else:
        text = _MARKS.sub("", unicodedata.normalize("NFKD", _NUMBER.sub("0", text)))
    return NOT_WORD.sub(" ", text)


def simplify(text: str) -> str:
    """The words ``word_hashes`` sees, as a string (for tests and inspection)."""
    return " ".join(prepare(text).translate(str.maketrans("123456789", "000000000")).split())


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the 64 output bits."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


_P = np.uint64(0x100000001B3)                  # odd, so it has an inverse modulo 2^64
_P_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_pow_cache: dict[str, np.ndarray] = {}


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P^i and P^-i modulo 2^64 for i < n (cached, grown by doubling)."""
    have = _pow_cache.get("p")
    if have is None or len(have) < n:
        size = max(n, 2 * len(have) if have is not None else 1 << 16)
        with np.errstate(over="ignore"):
            _pow_cache["p"] = np.concatenate(
                [[np.uint64(1)], np.cumprod(np.full(size - 1, _P, np.uint64))])
            _pow_cache["q"] = np.concatenate(
                [[np.uint64(1)], np.cumprod(np.full(size - 1, _P_INV, np.uint64))])
    return _pow_cache["p"][:n], _pow_cache["q"][:n]


def word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hash every space-separated word of texts already through ``prepare``.

    Returns (hashes uint64 [W], doc index of each word [W], byte offsets of each word's
    start and end within the texts joined by NUL [W]). Words are found on the UTF-8 bytes, so no
    Python object is made per word.
    """
    buf = np.frombuffer(("\0".join(texts) + "\0").encode("utf-8"), np.uint8)
    buf = np.where((buf > 48) & (buf <= 57), np.uint8(48), buf)   # digits 1-9 -> 0
    sep = (buf == 32) | (buf == 0)
    prev_sep = np.concatenate([[True], sep[:-1]])
    starts = np.flatnonzero(~sep & prev_sep)
    ends = np.flatnonzero(sep & ~prev_sep)          # one past each word's last byte
    pw, inv = _powers(len(buf))
    with np.errstate(over="ignore"):
        prefix = np.concatenate([[np.uint64(0)], np.cumsum(buf.astype(np.uint64) * pw)])
        h = (prefix[ends] - prefix[starts]) * inv[starts]
    doc = np.cumsum(buf == 0)[starts]               # separators before the word = its doc
    return mix64(h + (ends - starts).astype(np.uint64)), doc, starts, ends


def runs(h: np.ndarray, n: int) -> np.ndarray:
    """A polynomial hash (wrapping uint64) of every run of ``n`` consecutive values of
    ``h``: word n-grams for MinHash shingles, decontamination and Gopher's n-gram rules."""
    g = np.zeros(max(0, len(h) - n + 1), np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            g = g * _P + h[k:len(h) - n + 1 + k]
    return g


def shingle_hashes(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every run of n words inside one document, its doc index). A document of
    fewer than n words gives one shingle of all its words, so it still has a signature."""
    h, doc, _, _ = word_hashes(texts)
    counts = np.bincount(doc, minlength=len(texts))
    if len(h) >= n:
        sh = runs(h, n)
        ok = doc[:len(sh)] == doc[n - 1:]
        sh, sdoc = mix64(sh[ok]), doc[:len(ok)][ok]
    else:
        sh, sdoc = np.zeros(0, np.uint64), np.zeros(0, np.int64)
    short = np.flatnonzero((counts > 0) & (counts < n))
    if len(short):  # rare: fold each short document's words into one hash
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        extra = np.zeros(len(short), np.uint64)
        with np.errstate(over="ignore"):
            for j, d in enumerate(short):
                for x in h[first[d]:first[d] + counts[d]]:
                    extra[j] = extra[j] * _P + x
        sh = np.concatenate([sh, mix64(extra)])
        sdoc = np.concatenate([sdoc, short])
        order = np.argsort(sdoc, kind="stable")
        sh, sdoc = sh[order], sdoc[order]
    return sh, sdoc


class MinHasher:
    """Signatures and LSH band keys for batches of documents."""

    def __init__(self, cfg: MinHashConfig):
        try:
            import rensa
        except ImportError:
            raise ConfigError("MinHash deduplication needs rensa: pip install rensa "
                              "(or set data.minhash.enabled = false)") from None
        self.rensa = rensa
        self.cfg = cfg
        self.row_mult = mix64(np.arange(1, cfg.rows + 1, dtype=np.uint64))

    def signatures(self, texts: Sequence[str], batch_chars: int = 1 << 20) -> np.ndarray:
        """uint32 [len(texts), bands*rows]. A text without words gets all-ones (``keys``
        gives it keys of its own). Hashed in batches of about ``batch_chars``:
        larger arrays fall out of the CPU caches (one 17 MB batch ran at a third of the
        speed of 1 MB batches here, in 6x the memory)."""
        out, start, size = [], 0, 0
        for i, t in enumerate(texts):
            size += len(t)
            if size >= batch_chars:
                out.append(self._signatures(texts[start:i + 1]))
                start, size = i + 1, 0
        if start < len(texts) or not out:
            out.append(self._signatures(texts[start:]))
        return np.concatenate(out)

    def _signatures(self, texts: Sequence[str]) -> np.ndarray:
        sh, sdoc = shingle_hashes([prepare(t) for t in texts], self.cfg.ngram)
        offsets = np.zeros(len(texts) + 1, np.uint64)
        offsets[1:] = np.cumsum(np.bincount(sdoc, minlength=len(texts)))
        digests = self.rensa.RMinHash.digest_matrix_from_flat_token_hashes(
            sh, offsets, self.cfg.bands * self.cfg.rows, self.cfg.seed)
        return np.array(digests.to_rows(), dtype=np.uint32).reshape(len(texts), -1)

    def keys(self, texts: Sequence[str]) -> np.ndarray:
        """uint64 [len(texts), bands]: the LSH band keys of each text. A text without words
        (emoji, box drawing, punctuation only) has no shingle and so no similarity to
        measure; its all-ones signature would make every such text a near-duplicate of
        every other. Its keys are instead a hash of its bytes per band: it meets only its
        exact copies (which exact deduplication has removed already)."""
        sig = self.signatures(texts)
        keys = self.band_keys(sig)
        for i in np.flatnonzero((sig == np.uint32(0xFFFFFFFF)).all(axis=1)):
            digest = hashlib.blake2b(texts[int(i)].encode("utf-8", "surrogatepass"), digest_size=8)
            h = np.uint64(int.from_bytes(digest.digest(), "little"))
            with np.errstate(over="ignore"):
                keys[i] = mix64(h + np.arange(1, self.cfg.bands + 1, dtype=np.uint64))
        return keys

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """uint64 [n, bands]: one hash of each band's rows."""
        n, r = len(sig), self.cfg.rows
        rows = sig.reshape(n, self.cfg.bands, r).astype(np.uint64)
        with np.errstate(over="ignore"):
            return mix64((rows * self.row_mult[None, None, :]).sum(axis=2, dtype=np.uint64))


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(sig_a == sig_b))


class UnionFind:
    def __init__(self, n: int):
        # 4 bytes a document below 2**31 documents (two of these live through the dedup)
        self.parent = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = int(p[root])
        while p[x] != root:  # path compression
            p[x], x = root, int(p[x])
        return root

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:  # the smaller index becomes the root: the first document is kept
            self.parent[max(rx, ry)] = min(rx, ry)

    def roots(self) -> np.ndarray:
        """The root of every element (pointer jumping, vectorised)."""
        p = self.parent.copy()
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q


def link_equal_keys(keys: np.ndarray, alive: np.ndarray, uf: UnionFind) -> int:
    """Union every pair of alive documents sharing a key; returns the number of unions
    attempted. ``keys`` is one band (or an exact-hash column) of every document."""
    idx = np.flatnonzero(alive)
    k = keys[idx]
    order = np.argsort(k, kind="stable")
    ks, ids = k[order], idx[order]
    same = np.flatnonzero(ks[1:] == ks[:-1])
    for i in same.tolist():
        uf.union(int(ids[i]), int(ids[i + 1]))
    return len(same)
