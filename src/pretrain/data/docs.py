"""The data stage's output on disk, and the one place that reads it.

``data/``::

    docs-00000.jsonl ...  kept documents, {"id", "text", "domain", "meta"[, "split"]}
    dropped.jsonl         every dropped or unreadable record: id, domain, step, reason, detail
    samples.jsonl         up to ``audit_samples`` dropped documents per reason, with text
    funnel.json           per step: documents and bytes in and out, drops by reason, counts
    shards.json           per output shard: its task (a parquet file's first part, where
                          the file was cut), source, licence fields, input files (sha256, size)
    manifest.json         (written by the run directory) with the ``DataOutput`` fields

Later stages read the documents with ``read_docs`` and what they need to know about them
(domains, counts, what decontamination removed) with ``read_output``; no other module
knows these file names or keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from ..config import ConfigError, PretrainError
from .config import DecontamConfig
from .runner import Task

MANIFEST = "manifest.json"


@dataclass
class DataOutput:
    """What the data stage tells the stages after it (stored in its manifest's counts)."""

    docs_kept: dict[str, int]                   # domain -> documents kept
    bytes_kept: dict[str, int]                  # domain -> UTF-8 bytes kept
    docs_total: int
    docs_read: dict[str, int] = field(default_factory=dict)   # source label -> records read
    dropped: dict[str, int] = field(default_factory=dict)     # reason -> documents
    decontam_hits: dict[str, int] = field(default_factory=dict)  # benchmark -> documents hit
    # how items were matched (data.decontam): the eval stage's contamination report matches
    # the same way; the defaults are what manifests written without it used
    decontam_match: dict[str, int] = field(default_factory=lambda: {
        "ngram": DecontamConfig.ngram, "min_item_words": DecontamConfig.min_item_words})
    shards: list[str] = field(default_factory=list)
    tasks: int = 0
    # source label -> its licence fields (SourceConfig.governance); licence -> documents
    # and bytes kept under it ("" = none given)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    licenses: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def domains(self) -> list[str]:
        return sorted(self.docs_kept)

    def counts(self) -> dict[str, Any]:
        return asdict(self)


def read_output(data_dir: Path) -> DataOutput:
    """The ``DataOutput`` of a completed data stage."""
    path = data_dir / MANIFEST
    try:
        counts = json.loads(path.read_text(encoding="utf-8"))["counts"]
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise ConfigError(f"{path}: not a completed data stage ({e})") from None
    return DataOutput(**{k: counts[k] for k in DataOutput.__dataclass_fields__ if k in counts})


class ShardWriter:
    """Kept documents into ``docs-NNNNN.jsonl``: a new shard per task (so every shard has
    one task's inputs as provenance) and every ``docs_per_shard`` documents. The parts of
    one parquet file are one run (the stage calls ``start_task`` at a file's first part
    only): their shards name that first task, whose inputs are the whole file."""

    def __init__(self, out: Path, docs_per_shard: int,
                 governance: list[dict[str, str]] | None = None):
        self.out, self.per = out, docs_per_shard
        self.governance = governance or []   # per source (Task.source): its licence fields
        self.n = self.in_shard = 0
        self.f: IO[str] | None = None
        self.shards: list[str] = []
        self.provenance: dict[str, Any] = {}
        self.task: tuple[Task, dict[str, Any]] | None = None

    def start_task(self, task: Task, stats: dict[str, Any]) -> None:
        self.task = (task, stats)
        self._close_shard()

    def _close_shard(self) -> None:
        if self.f:
            self.f.close()
        self.f = None

    def write_line(self, line: str) -> None:
        if self.f is None or self.in_shard >= self.per:
            self._close_shard()
            name = f"docs-{len(self.shards):05d}.jsonl"
            self.shards.append(name)
            assert self.task is not None
            task, stats = self.task
            own = self.governance[task.source] if task.source < len(self.governance) else {}
            self.provenance[name] = {"task": task.stem, "source": stats["source"], **own,
                                     "inputs": stats["inputs"]}
            self.f = open(self.out / name, "w", encoding="utf-8")
            self.in_shard = 0
        self.f.write(line)
        self.n += 1
        self.in_shard += 1

    def close(self) -> None:
        self._close_shard()


def read_docs(data_dir: Path, prefetch: int = 0) -> Iterator[dict[str, Any]]:
    """Stream the kept documents of a completed data stage, in order.

    ``prefetch > 0`` reads and parses in a background thread, up to that many documents
    ahead: the consumers (rustbpe's counting, tiktoken's encoding) release the GIL while
    they work, so the JSON parsing then overlaps with them instead of adding to them.
    """
    def docs() -> Iterator[dict[str, Any]]:
        for shard in doc_files(data_dir):
            yield from read_doc_file(shard)
    return _prefetched(docs(), prefetch) if prefetch > 0 else docs()


def doc_files(data_dir: Path) -> list[Path]:
    """The files of kept documents, in order (``read_docs`` reads them one after another;
    a reader may also read them apart with ``read_doc_file``, e.g. in parallel)."""
    # by number: past docs-99999 the names grow a digit, and docs-100000 sorts first
    return sorted(data_dir.glob("docs-*.jsonl"), key=_shard_number)


def read_doc_file(path: Path) -> Iterator[dict[str, Any]]:
    """The documents of one of ``doc_files``, in order. The data stage wrote them, so a
    line that is not a document means the file was damaged since: an error naming it."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                doc = json.loads(line)
            except ValueError as e:   # not JSON, or not UTF-8
                raise PretrainError(f"{path}: line {n} is not a document ({getattr(e, 'msg', e)})"
                                    "; the data stage's output was changed or damaged since "
                                    "it ran: rerun it (`--force data`)") from None
            yield doc


def _shard_number(path: Path) -> tuple[int, str]:
    number = path.stem.removeprefix("docs-")
    return (int(number), "") if number.isdigit() else (-1, path.name)


_DONE = object()


def _prefetched(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """``items`` produced by a daemon thread into a bounded queue; its errors re-raised here."""
    import queue
    import threading
    q_: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q_.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q_.put(_DONE)
        except BaseException as e:  # handed to the consumer, raised in its thread
            q_.put(e)

    threading.Thread(target=produce, daemon=True, name="read_docs").start()
    try:
        while True:
            item = q_.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the consumer stopped early (or failed): let the producer end
