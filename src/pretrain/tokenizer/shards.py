"""Token shards: the kept documents encoded to flat, memory-mappable token files.

Layout of the ``tokenize/`` stage folder::

    meta.json                    format, dtype, vocab size and hash, special ids, domains,
                                 per split: shard names, token and document counts, tokens
                                 per domain and per licence (documents' meta.license)
    train-00000.bin ...          raw little-endian uint16 (vocab <= 65536) or uint32 tokens
    train-00000.idx.npy          int64 array (n_docs, 3): start, length, domain index
    val-00000.bin, .idx.npy      the held-out split, same format
    tokenizer.json               the tokenizer that wrote the shards (its token byte
                                 lengths give bits per byte without the tokenizer stage)

Each document is stored as ``BOS, tokens..., EOS``; when BOS and EOS are one id (GPT-2's
and dolma2's ``<|endoftext|>``) as ``BOS, tokens...``, so that one mark, not two, separates
documents, as those tokenizers' models were trained (``meta.json``'s ``doc_layout``; the
split's last document then has no end mark). The train/val split is decided by a
hash of the document id, so it does not depend on order or on the other documents;
besides, each domain's documents go to val (in data-stage order) while it has fewer than
``min_val_docs`` held-out ones, so that per-domain metrics exist: its first ones, in one
streaming pass, whether or not the hash would have chosen enough later.
A source configured with ``use_for = "val"`` (or ``"train"``) sends all its documents there,
for corpora that come with their own held-out file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, PretrainError
from ..log import Progress, log0
from .base import TextTokenizer
from .config import TokenizeConfig
from .files import load_tokenizer

FORMAT = "pretrain-tokens/1"
TOKENIZER = "tokenizer.json"


def is_val(doc_id: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little")
    return (h % 1_000_000) < fraction * 1_000_000


class Splitter:
    """The split of each document, in the data stage's order: its own ``split`` if it has
    one, else val for the first ``min_val_docs`` of its domain and for a hash-chosen
    ``val_fraction`` of the rest. The tokenize stage decides with it and records its
    settings in ``meta.json`` (``split_rule``), so a reader of the documents (the
    contamination report) can tell the held-out ones again."""

    def __init__(self, val_fraction: float, min_val_docs: int):
        self.val_fraction, self.min_val_docs = val_fraction, min_val_docs
        self.val_docs: dict[str, int] = {}

    @classmethod
    def of(cls, meta: dict[str, Any]) -> Splitter | None:
        rule = meta.get("split_rule")
        return cls(rule["val_fraction"], rule["min_val_docs"]) if rule else None

    def rule(self) -> dict[str, Any]:
        return {"val_fraction": self.val_fraction, "min_val_docs": self.min_val_docs}

    def __call__(self, doc: dict[str, Any]) -> str:
        domain = doc["domain"]
        n = self.val_docs.get(domain, 0)
        split = self.own(doc) if doc.get("split") or n >= self.min_val_docs else "val"
        self.val_docs[domain] = n + (split == "val")
        return split

    def own(self, doc: dict[str, Any]) -> str:
        """The document's split as the documents before it do not change it: its own
        ``split``, else the hash's choice. ``__call__`` gives it too once its domain has
        ``min_val_docs`` held-out documents (or when the document has a split)."""
        return str(doc.get("split") or ("val" if is_val(doc["id"], self.val_fraction)
                                        else "train"))


class _SplitWriter:
    def __init__(self, out: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.out, self.split, self.dtype, self.shard_tokens = out, split, dtype, shard_tokens
        self.shards: list[str] = []
        self.tokens = self.docs = 0
        self._f: Any = None
        self._pos = 0
        self._index: list[tuple[int, int, int]] = []

    def _roll(self) -> None:
        self._close_shard()
        name = f"{self.split}-{len(self.shards):05d}"
        self.shards.append(name)
        self._f = open(self.out / f"{name}.bin", "wb")
        self._pos = 0

    def _close_shard(self) -> None:
        if self._f is not None:
            self._f.close()
            idx = np.asarray(self._index, dtype=np.int64).reshape(-1, 3)
            np.save(self.out / f"{self.shards[-1]}.idx.npy", idx)
            self._index = []

    def write(self, ids: list[int], domain: int) -> None:
        if self._f is None or self._pos >= self.shard_tokens:
            self._roll()
        arr = np.asarray(ids, dtype=self.dtype)
        self._f.write(arr.tobytes())
        self._index.append((self._pos, len(arr), domain))
        self._pos += len(arr)
        self.tokens += len(arr)
        self.docs += 1

    def close(self) -> dict[str, Any]:
        self._close_shard()
        return {"shards": self.shards, "tokens": self.tokens, "docs": self.docs}


def _batches(docs: Iterator[dict[str, Any]], n: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for d in docs:
        batch.append(d)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def run(cfg: TokenizeConfig, tok: TextTokenizer, docs: Iterator[dict[str, Any]], domains: list[str],
        out: Path, counts: dict[str, Any], total_docs: int | None = None) -> None:
    dtype = np.dtype(np.uint16 if tok.vocab_size <= 65536 else np.uint32).newbyteorder("<")
    writers = {s: _SplitWriter(out, s, dtype, cfg.shard_tokens) for s in ("train", "val")}
    dom_index = {d: i for i, d in enumerate(domains)}
    per_domain = {s: dict.fromkeys(domains, 0) for s in writers}
    per_license: dict[str, dict[str, int]] = {s: {} for s in writers}  # "" = none given
    split_of = Splitter(cfg.val_fraction, cfg.min_val_docs)
    chosen: set[str] = set()   # domains with a document the hash or min_val_docs placed
    threads = cfg.num_threads or (os.cpu_count() or 1)
    ends = [] if tok.bos_id == tok.eos_id else [tok.eos_id]   # one mark between documents
    with Progress("tokenize", total=total_docs, unit="docs") as bar:
        for batch in _batches(docs, cfg.batch_docs):
            encoded = tok.encode_batch([d["text"] for d in batch], num_threads=threads)
            for d, ids in zip(batch, encoded, strict=True):
                split = split_of(d)
                if not d.get("split"):
                    chosen.add(d["domain"])
                framed = [tok.bos_id, *ids, *ends]
                writers[split].write(framed, dom_index[d["domain"]])
                per_domain[split][d["domain"]] += len(framed)
                lic = d.get("meta", {}).get("license", "")
                per_license[split][lic] = per_license[split].get(lic, 0) + len(framed)
            bar.update(len(batch))
    splits = {s: w.close() for s, w in writers.items()}
    for s, info in splits.items():
        info["tokens_per_domain"] = per_domain[s]
        info["tokens_per_license"] = dict(sorted(per_license[s].items()))
        # a domain whose every document is held out by its sources' use_for = "val" has
        # no train documents by design: not warned about
        empty = [d for d, n in per_domain[s].items() if n == 0 and (s == "val" or d in chosen)]
        held = [d for d, n in per_domain[s].items() if n == 0 and d not in empty]
        if held and info["tokens"]:
            log0(f"tokenize: domain(s) {held} held out whole, as their sources' use_for = "
                 "\"val\" says: scored, not trained on")
        if empty and info["tokens"]:
            fix = ("raise tokenize.val_fraction (a use_for = \"train\" source holds none out: "
                   "'auto' or a source with use_for = \"val\")") if s == "val" else \
                ("lower tokenize.val_fraction or tokenize.min_val_docs (a domain's first "
                 f"{cfg.min_val_docs} document(s) are held out), check the source's use_for")
            log0(f"tokenize: warning: no {s} documents for domain(s) {empty}; "
                 + ("per-domain metrics will not cover them" if s == "val" else
                    "the model will not train on them") + f" ({fix} or add data)")
        if info["tokens"] == 0:
            raise PretrainError(f"the {s} split is empty: {total_docs} documents with "
                               f"val_fraction={cfg.val_fraction}; use more data or change it")
    meta = {"format": FORMAT, "dtype": dtype.name, "vocab_size": tok.vocab_size,
            "vocab_hash": tok.vocab_hash(), "bos_id": tok.bos_id, "eos_id": tok.eos_id,
            "doc_layout": "bos,text,eos" if ends else "bos,text",
            "domains": domains, "splits": splits, "split_rule": split_of.rule()}
    (out / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    tok.save(out / TOKENIZER)  # the shards carry the tokenizer that wrote them
    counts.update({s: {k: v for k, v in info.items() if k != "shards"}
                   for s, info in splits.items()})
    log0(f"tokenize: train {splits['train']['tokens']:,} tokens / {splits['train']['docs']} docs, "
         f"val {splits['val']['tokens']:,} tokens / {splits['val']['docs']} docs")


class TokenShards:
    """Read-only, memory-mapped view of one split of a tokenize stage folder."""

    def __init__(self, folder: Path, split: str):
        self.folder = folder
        meta_path = folder / "meta.json"
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{meta_path}: cannot read token shard metadata: {e}") from None
        if self.meta.get("format") != FORMAT:
            raise ConfigError(f"{meta_path}: unknown format {self.meta.get('format')!r}")
        info = self.meta["splits"][split]
        dtype = np.dtype(self.meta["dtype"])
        self.shards = [np.memmap(folder / f"{n}.bin", dtype=dtype, mode="r") for n in info["shards"]]
        # (start, length, domain) per document, mapped too: 24 bytes a document, shared
        # by the processes of a machine through the page cache
        self.index = [np.load(folder / f"{n}.idx.npy", mmap_mode="r") for n in info["shards"]]
        self.domains: list[str] = self.meta["domains"]
        self.n_tokens = int(info["tokens"])

    @property
    def tokenizer_file(self) -> Path:
        return self.folder / TOKENIZER

    def tokenizer(self) -> TextTokenizer:
        return load_tokenizer(self.tokenizer_file)

    def token_bytes(self) -> np.ndarray | None:
        """UTF-8 byte length of every token id, or None for shards written without their
        tokenizer (by older versions)."""
        if not (self.folder / TOKENIZER).exists():
            return None
        return np.asarray(self.tokenizer().token_bytes(), dtype=np.int64)

    def doc_start(self) -> tuple[int, int]:
        """(bytes the tokenizer adds at each document's start, the BOS id that starts each
        document): ``TextTokenizer.doc_start_bytes``, for bits per byte."""
        if not (self.folder / TOKENIZER).exists():
            return 0, -1
        return self.tokenizer().doc_start_bytes(), int(self.meta["bos_id"])

    def domain_ids(self) -> set[int]:
        """The domains that have documents in the split (from the index, no document read)."""
        return {int(d) for idx in self.index for d in np.unique(idx[:, 2])}

    def documents(self) -> Iterator[tuple[np.ndarray, str]]:
        """Every document as (tokens, domain), in stored order."""
        for arr, idx in zip(self.shards, self.index, strict=True):
            for start, length, dom in np.asarray(idx).tolist():   # rows of a mapped array: slow
                yield arr[start:start + length], self.domains[dom]
