"""Byte-level BPE: train with ``rustbpe``, encode with ``tiktoken``, one canonical file.

Measured on this project's 2-core box (``shared/reference/tokenizer-anchors.md``): rustbpe
trains at about 9.5 MB per CPU-second, 3-4x faster than HF ``tokenizers``; tiktoken built
in memory from the trained ranks encodes at 7.6-9.5 MB per CPU-second, 4-8x faster than HF.
So we train with one and encode with the other, as nanochat does.

The canonical artefact, ``tokenizer.json`` in the stage folder (our format, not HF's)::

    {"format": "pretrain-bpe/1", "pattern": <split regex>,
     "ranks": [<base64 token bytes>, ...],   # index == rank == token id
     "special_tokens": {"<|bos|>": id, ...}, "vocab_size": n}

The split regex travels with the ranks (a ``.tiktoken`` file does not carry it, the trap of
nanochat#291). Special tokens get the ids after the ranks and are never matched inside
document text: documents are encoded as ordinary text and BOS/EOS ids inserted by us.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import regex

from ..config import ConfigError
from ..log import log0
from .base import AddedToken, TextTokenizer
from .config import BOS, EOS, TokenizerConfig

FORMAT = "pretrain-bpe/1"


class Tokenizer(TextTokenizer):
    """Ranks + split regex + special tokens; encodes through an in-memory tiktoken Encoding."""

    def __init__(self, ranks: list[bytes], pattern: str, special_tokens: list[str] | dict[str, int],
                 bos: str = BOS, eos: str = EOS, added: list[AddedToken] | None = None):
        """``special_tokens``: names (ids follow the ranks, in order) or names with ids (a
        loaded tokenizer's, which may leave gaps, as cl100k does at 100256). ``added``:
        domain tokens of ``tokenizer/extend.py``, ids after every other id."""
        self.ranks = ranks
        self.pattern = pattern
        self.added = list(added or [])
        if isinstance(special_tokens, dict):
            self.special = dict(special_tokens)
        else:
            self.special = {tok: len(ranks) + i for i, tok in enumerate(special_tokens)}
        ids = sorted(self.special.values())
        if len(set(ids)) != len(ids) or (ids and ids[0] < len(ranks)):
            raise ConfigError(f"special token ids must be distinct and >= {len(ranks)}: {self.special}")
        for name in (bos, eos):
            if name not in self.special:
                raise ConfigError(f"{name!r} is not one of the special tokens {sorted(self.special)[:8]}")
        self.vocab_size = max([len(ranks) - 1, *ids]) + 1
        for a in self.added:
            if a.id != self.vocab_size:
                raise ConfigError(f"added token {a.text!r} has id {a.id}, expected {self.vocab_size}")
            self.vocab_size += 1
        if len(set(ranks) | {a.bytes for a in self.added}) != len(ranks) + len(self.added):
            seen: dict[bytes, int] = {}
            for i, b in [*enumerate(ranks), *((a.id, a.bytes) for a in self.added)]:
                if b in seen:   # the later id could never be produced
                    raise ConfigError(f"token ids {seen[b]} and {i} are the same bytes {b!r}: "
                                      "every token's bytes must be distinct")
                seen[b] = i
        self.bos, self.eos = bos, eos
        self.bos_id = self.special[bos]
        self.eos_id = self.special[eos]

    @cached_property
    def _enc(self):  # type: ignore[no-untyped-def]
        import tiktoken
        return tiktoken.Encoding(name="pretrain", pat_str=self.pattern,
                                 mergeable_ranks=self.mergeable_ranks(),
                                 special_tokens=self.special)

    def mergeable_ranks(self) -> dict[bytes, int]:
        """Token bytes -> id for every ordinary token; the id is also its merge priority."""
        ranks = {b: i for i, b in enumerate(self.ranks)}
        ranks.update((a.bytes, a.id) for a in self.added)
        return ranks

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = 2) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode(list(ids), errors="replace")

    def bytes_of(self, i: int) -> bytes:
        """The bytes of ordinary token ``i`` (a rank or an added token); KeyError otherwise."""
        if i < len(self.ranks):
            return self.ranks[i]
        for a in self.added:
            if a.id == i:
                return a.bytes
        raise KeyError(f"id {i} is not an ordinary token")

    def ordinary_ids(self) -> list[int]:
        return list(range(len(self.ranks)))

    def token_bytes(self) -> list[int]:
        out = [len(b) for b in self.ranks] + [0] * (self.vocab_size - len(self.ranks))
        for a in self.added:
            out[a.id] = len(a.bytes)
        return out

    def vocab_hash(self) -> str:
        h = hashlib.sha256(self.pattern.encode())
        for b in self.ranks:
            h.update(len(b).to_bytes(2, "little") + b)
        h.update(json.dumps(self.special, sort_keys=True).encode())
        for a in self.added:
            h.update(a.id.to_bytes(4, "little") + a.bytes)
        if (self.bos, self.eos) != (BOS, EOS):
            h.update(f"{self.bos}\0{self.eos}".encode())
        return h.hexdigest()[:16]

    def save(self, path: Path) -> None:
        obj: dict[str, Any] = {"format": FORMAT, "pattern": self.pattern,
               "ranks": [base64.b64encode(b).decode("ascii") for b in self.ranks],
               "special_tokens": self.special, "bos": self.bos, "eos": self.eos,
               "vocab_size": self.vocab_size}
        if self.added:
            obj["added"] = [{"id": a.id, "bytes": base64.b64encode(a.bytes).decode("ascii"),
                             "parts": a.parts} for a in self.added]
        path.write_text(json.dumps(obj), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        """A BPE ``tokenizer.json``; ``io.load_tokenizer`` reads any of our formats."""
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not a readable tokenizer file: {e}") from None
        return cls.from_dict(obj, path)

    @classmethod
    def from_dict(cls, obj: dict[str, Any], path: Path) -> Tokenizer:
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
            raise ConfigError(f"{path}: unknown tokenizer format {found!r}")
        try:
            ranks = [base64.b64decode(s, validate=True) for s in obj["ranks"]]
            special = {k: int(v) for k, v in obj["special_tokens"].items()}
            added = [AddedToken(int(a["id"]), base64.b64decode(a["bytes"], validate=True),
                                [int(i) for i in a["parts"]]) for a in obj.get("added", [])]
            pattern = obj["pattern"]
            regex.compile(pattern)   # the engine tiktoken's patterns are written for
        except regex.error as e:
            raise ConfigError(f"{path}: the split pattern {obj['pattern']!r} is not a valid "
                              f"regex ({e})") from None
        except (KeyError, TypeError, AttributeError, ValueError) as e:  # binascii.Error too
            raise ConfigError(f"{path}: a damaged tokenizer file ({type(e).__name__}: {e})") from None
        try:
            return cls(ranks, pattern, special, obj.get("bos", BOS), obj.get("eos", EOS), added)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def training_sample(docs: Iterator[dict], cfg: TokenizerConfig,
                    domains: list[str]) -> Iterator[str]:
    """Documents capped at ``doc_cap_chars``, an equal share of ``max_chars`` per domain.

    One streaming pass, which stops once every domain has its share (it read the whole
    corpus); a domain with less text than its share leaves the rest unused (simple and
    deterministic). Documents a source holds out (``use_for = "val"``) are never trained on.
    """
    share = cfg.max_chars // max(1, len(domains))
    if not share:   # an empty sample, then a vocabulary of bytes "for want of text"
        raise ConfigError(f"tokenizer.max_chars = {cfg.max_chars} is below one character for "
                          f"each of the {len(domains)} domains")
    used = dict.fromkeys(domains, 0)
    short = len(used)   # domains still under their share
    for d in docs:
        if d.get("split") == "val":
            continue
        left = share - used.get(d["domain"], share)
        if left <= 0:
            continue
        piece = d["text"][: min(cfg.doc_cap_chars, left)]
        used[d["domain"]] += len(piece)
        yield piece
        short -= used[d["domain"]] >= share
        if not short:
            return


def train(texts: Iterator[str], cfg: TokenizerConfig) -> Tokenizer:
    import rustbpe
    n_special = len(cfg.special_tokens)
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(texts, cfg.vocab_size - n_special, pattern=cfg.regex())
    ranked = sorted(bpe.get_mergeable_ranks(), key=lambda kv: kv[1])
    ranks = [bytes(tok) for tok, rank in ranked]
    if [r for _, r in ranked] != list(range(len(ranks))):
        raise RuntimeError("rustbpe returned non-contiguous ranks")
    tok = Tokenizer(ranks, cfg.regex(), cfg.special_tokens)
    if tok.vocab_size < cfg.vocab_size:
        log0(f"tokenizer: warning: the sample ran out of pairs to merge; vocabulary is "
             f"{tok.vocab_size}, not {cfg.vocab_size} (train on more text)")
    return tok
