"""The data stage: read every source, clean, drop exact duplicates, write documents + audit.

Steps are small generator classes (document in, document or drop reason out), in the
style of datatrove. This foundation version has: Unicode/whitespace normalisation,
length and "looks binary" limits, and exact deduplication on a hash of the normalised
text. Issue 5 adds the FineWeb filter chain, MinHash, decontamination and mixing.

Output (``data/``)::

    docs-00000.jsonl ...   kept documents, {"id", "text", "domain", "meta"} per line
    dropped.jsonl          one line per dropped or unreadable record: id, domain, reason, detail
    manifest.json          counts per domain and per drop reason
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..config import ConfigError, PretrainError
from ..log import Progress, log0
from .sources import Document, PythonInstallationSource, Skip, SourceConfig


def _default_sources() -> list[SourceConfig]:
    return [PythonInstallationSource(part="code", max_bytes=6_000_000),
            PythonInstallationSource(part="prose", max_bytes=4_000_000)]


@dataclass
class CleanConfig:
    normalize_unicode: bool = True    # NFC, CRLF -> LF, strip trailing spaces per line
    min_chars: int = 200              # shorter documents carry too little context
    max_chars: int = 200_000          # longer ones are mostly generated tables in this corpus
    max_nonprintable_frac: float = 0.01  # control/replacement characters: binary or mojibake
    exact_dedup: bool = True

    def __post_init__(self) -> None:
        if self.min_chars < 0 or self.max_chars <= self.min_chars:
            raise ConfigError("max_chars must be greater than min_chars >= 0")
        if not 0.0 <= self.max_nonprintable_frac <= 1.0:
            raise ConfigError("max_nonprintable_frac must be within [0, 1]")


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=_default_sources)
    clean: CleanConfig = field(default_factory=CleanConfig)
    docs_per_shard: int = 50_000

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("sources: at least one source is needed")
        if self.docs_per_shard <= 0:
            raise ConfigError("docs_per_shard must be positive")


Drop = tuple[Document, str]

_TRAILING_WS = re.compile(r"[ \t]+\n")
_MANY_BLANK = re.compile(r"\n{4,}")


class Normalize:
    def __init__(self, cfg: CleanConfig):
        self.enabled = cfg.normalize_unicode

    def __call__(self, docs: Iterator[Document]) -> Iterator[Document | Drop]:
        for doc in docs:
            if self.enabled:
                t = unicodedata.normalize("NFC", doc.text.replace("\r\n", "\n").replace("\r", "\n"))
                t = _MANY_BLANK.sub("\n\n\n", _TRAILING_WS.sub("\n", t)).strip("\n")
                doc.text = t.lstrip("\ufeff")
            yield doc


class LengthAndBinaryFilter:
    def __init__(self, cfg: CleanConfig):
        self.cfg = cfg

    def __call__(self, docs: Iterator[Document]) -> Iterator[Document | Drop]:
        for doc in docs:
            n = len(doc.text)
            if n < self.cfg.min_chars:
                yield doc, "too_short"
            elif n > self.cfg.max_chars:
                yield doc, "too_long"
            elif _nonprintable(doc.text) > self.cfg.max_nonprintable_frac * n:
                yield doc, "nonprintable"
            else:
                yield doc


def _nonprintable(text: str) -> int:
    return sum(1 for c in text if c == "\ufffd" or (unicodedata.category(c) == "Cc"
                                                     and c not in "\n\t"))


class ExactDedup:
    """Keep the first document of each normalised text (memory: 16 bytes per kept doc)."""

    def __init__(self, cfg: CleanConfig):
        self.enabled = cfg.exact_dedup
        self.seen: set[bytes] = set()

    def __call__(self, docs: Iterator[Document]) -> Iterator[Document | Drop]:
        for doc in docs:
            if self.enabled:
                key = hashlib.blake2b(" ".join(doc.text.split()).encode(), digest_size=16).digest()
                if key in self.seen:
                    yield doc, "exact_duplicate"
                    continue
                self.seen.add(key)
            yield doc


def _chain(steps: list[Any], docs: Iterator[Document], drops: list[Drop]) -> Iterator[Document]:
    """Run docs through the steps; dropped (doc, reason) pairs are appended to ``drops``."""
    stream: Iterator[Any] = docs
    for step in steps:
        stream = _only_docs(step(stream), drops)
    return stream


def _only_docs(stream: Iterator[Any], drops: list[Drop]) -> Iterator[Document]:
    for item in stream:
        if isinstance(item, tuple):
            drops.append(item)
        else:
            yield item


def _limited(src: SourceConfig, skips: list[Skip], read: Counter[str]) -> Iterator[Document]:
    """The source's documents up to its max_docs/max_bytes; unreadable records go to skips."""
    n_docs = n_bytes = 0
    for item in src.read():
        if isinstance(item, Skip):
            skips.append(item)
            continue
        if src.max_docs and n_docs >= src.max_docs:
            return
        try:  # JSON can carry lone surrogates ("\ud800"), which no UTF-8 file can hold
            size = len(item.text.encode("utf-8"))
            item.id.encode("utf-8")
        except UnicodeEncodeError as e:
            skips.append(Skip(item.id.encode("utf-8", "backslashreplace").decode(),
                              "invalid_unicode", str(e)))
            continue
        item.meta = {k: v for k, v in item.meta.items() if not _bad_str(v)}
        if src.max_bytes and n_bytes + size > src.max_bytes:
            if n_bytes:  # keep going only if nothing fits yet
                return
        n_docs += 1
        n_bytes += size
        read[src.label()] += 1
        if src.use_for != "auto":
            item.split = src.use_for
        yield item


def _bad_str(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


class _ShardWriter:
    def __init__(self, out: Path, docs_per_shard: int):
        self.out, self.per = out, docs_per_shard
        self.n = 0
        self.f: IO[str] | None = None
        self.shards: list[str] = []

    def write(self, doc: Document) -> None:
        if self.f is None or self.n % self.per == 0:
            if self.f:
                self.f.close()
            name = f"docs-{len(self.shards):05d}.jsonl"
            self.shards.append(name)
            self.f = open(self.out / name, "w", encoding="utf-8")
        rec = {"id": doc.id, "text": doc.text, "domain": doc.domain, "meta": doc.meta}
        if doc.split:
            rec["split"] = doc.split
        self.f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.n += 1

    def close(self) -> None:
        if self.f:
            self.f.close()


def run(cfg: DataConfig, out: Path, counts: dict[str, Any]) -> None:
    writer = _ShardWriter(out, cfg.docs_per_shard)
    kept: Counter[str] = Counter()
    kept_bytes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    read: Counter[str] = Counter()
    dedup = ExactDedup(cfg.clean)  # shared across sources: a duplicate is a duplicate anywhere
    with open(out / "dropped.jsonl", "w", encoding="utf-8") as audit, \
            Progress("data", unit="docs") as bar:
        for src in cfg.sources:
            label = src.label()
            skips: list[Skip] = []
            drops: list[Drop] = []
            steps = [Normalize(cfg.clean), LengthAndBinaryFilter(cfg.clean), dedup]
            for doc in _chain(steps, _limited(src, skips, read), drops):
                writer.write(doc)
                kept[doc.domain] += 1
                kept_bytes[doc.domain] += len(doc.text.encode("utf-8"))
                bar.update(1, domain=label)
                _flush_audit(audit, label, skips, drops, reasons)
            _flush_audit(audit, label, skips, drops, reasons)
    writer.close()
    if not writer.n:
        raise PretrainError("the data stage kept no documents; see dropped.jsonl in the stage "
                           "output for the reasons, or relax [data.clean]")
    counts.update({"docs_read": dict(read), "docs_kept": dict(kept),
                   "bytes_kept": dict(kept_bytes), "dropped": dict(reasons),
                   "shards": writer.shards, "docs_total": writer.n})
    log0(f"data: kept {writer.n} docs ({sum(kept_bytes.values()) / 1e6:.1f} MB) "
         f"{dict(kept)}; dropped {dict(reasons)}")


def _flush_audit(audit: IO[str], label: str, skips: list[Skip], drops: list[Drop],
                 reasons: Counter[str]) -> None:
    for s in skips:
        reasons[s.reason] += 1
        audit.write(json.dumps({"id": s.id, "domain": label, "reason": s.reason,
                                "detail": s.detail}) + "\n")
    for doc, reason in drops:
        reasons[reason] += 1
        audit.write(json.dumps({"id": doc.id, "domain": doc.domain, "reason": reason,
                                "chars": len(doc.text)}) + "\n")
    skips.clear()
    drops.clear()


def read_docs(data_dir: Path, prefetch: int = 0) -> Iterator[dict[str, Any]]:
    """Stream the kept documents of a completed data stage, in order.

    ``prefetch > 0`` reads and parses in a background thread, up to that many documents
    ahead: the consumers (rustbpe's counting, tiktoken's encoding) release the GIL while
    they work, so the JSON parsing then overlaps with them instead of adding to them.
    """
    def docs() -> Iterator[dict[str, Any]]:
        for shard in sorted(data_dir.glob("docs-*.jsonl")):
            with open(shard, encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)
    return _prefetched(docs(), prefetch) if prefetch > 0 else docs()


_DONE = object()


def _prefetched(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """``items`` produced by a daemon thread into a bounded queue; its errors re-raised here."""
    import queue
    import threading
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as e:  # handed to the consumer, raised in its thread
            q.put(e)

    threading.Thread(target=produce, daemon=True, name="read_docs").start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the consumer stopped early (or failed): let the producer end
