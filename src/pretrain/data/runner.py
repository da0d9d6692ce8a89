"""Running one task of the data stage: a source's records (or one of its files) through
the per-document steps, into the work folder, completed by a ``.done`` marker.

A task writes ``t-NNNNN.jsonl`` (kept documents), ``.keys.npy`` (per document: exact hash,
UTF-8 size, MinHash band keys), ``.drops.jsonl`` (every drop), ``.samples.jsonl`` (dropped documents
with text, up to ``audit_samples`` per reason) and ``.stats.json`` (its funnel and inputs),
each under a temporary name renamed when complete, then ``t-NNNNN.done``. A task without
the marker is redone from scratch, so a killed run resumes to the uninterrupted output.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import PretrainError
from . import quality as q
from .config import DataConfig
from .decontam import Decontaminate, HashSet, Index, load_index, union
from .document import Document, Skip, Step
from .filters import (
    C4Lines,
    LanguageFilter,
    LengthAndBinaryFilter,
    Normalize,
    UnsafeWords,
    UrlFilter,
    WordRule,
)
from .funnel import DropLog, Funnel
from .heartbeat import Beat, beat_path
from .minhash import MinHasher
from .parquet_parts import Part
from .pii import PiiScrub
from .sources import SourceConfig

TMP_MARK = ".tmp-"   # in the name of every file a task is still writing


def build_steps(cfg: DataConfig, src: SourceConfig, ngrams: Index,
                sets: dict[int, HashSet] | None = None) -> list[Step]:
    """The per-document steps for one source, in order (``sets``: ``union(ngrams)``)."""
    steps: list[Step] = [Normalize(cfg.clean), LengthAndBinaryFilter(cfg.clean)]
    if src.quality == "web":
        for enabled, make in ((cfg.url.enabled, lambda: UrlFilter(cfg.url)),
                              (cfg.language.enabled, lambda: LanguageFilter(cfg.language)),
                              (cfg.gopher_repetition.enabled,
                               lambda: WordRule("gopher_repetition", q.gopher_repetition,
                                                cfg.gopher_repetition)),
                              (cfg.gopher_quality.enabled,
                               lambda: WordRule("gopher_quality", q.gopher_quality,
                                                cfg.gopher_quality)),
                              (cfg.c4.enabled, lambda: C4Lines(cfg.c4)),
                              (cfg.fineweb.enabled,
                               lambda: WordRule("fineweb", q.fineweb, cfg.fineweb)),
                              (cfg.unsafe.enabled, lambda: UnsafeWords(cfg.unsafe))):
            if enabled:
                steps.append(make())
    if cfg.pii.enabled:
        steps.append(PiiScrub(cfg.pii))
    if cfg.decontam.enabled and ngrams:
        steps.append(Decontaminate(cfg.decontam, ngrams, sets))
    return steps


# --- tasks --------------------------------------------------------------------------

@dataclass
class Task:
    index: int
    source: int                     # index into cfg.sources
    files: list[str] | None = None  # None: the whole source
    max_docs: int = 0               # this task's limits (0: none): the source's, or its
    max_bytes: int = 0              # share of them (limit_shares)
    part: Part | None = None        # of files[0]: row groups [first, end) (parquet_parts)

    def continues(self, before: Task | None) -> bool:
        """Whether this task reads the part of a file that follows ``before``'s."""
        return before is not None and self.part is not None and before.part is not None \
            and self.files == before.files and self.part[0] == before.part[1]

    def plan(self) -> list[Any]:
        """What the task reads, as JSON: a rerun resumes done tasks only under the same plan."""
        return [self.source, self.files, list(self.part) if self.part else None,
                self.max_docs, self.max_bytes]

    @property
    def stem(self) -> str:
        return f"t-{self.index:05d}"


def plan_tasks(cfg: DataConfig) -> list[Task]:
    tasks: list[Task] = []
    for i, src in enumerate(cfg.sources):
        files = [str(f) for f in src.task_files()]
        limited = bool(src.max_docs or src.max_bytes)
        if files and (not limited or src.shares_limits):
            # files past either limit's units are not read; both limits are shared over
            # the files that are
            n = min(len(files), src.max_docs or len(files), src.max_bytes or len(files))
            docs = limit_shares(src.max_docs, n)
            nbytes = limit_shares(src.max_bytes, n)
            group = 0   # bytes of the small files the last task holds (0: none)
            for k in range(n):   # a large parquet file: a task per run of row groups
                parts: list[Part | None] = [] if limited else \
                    list(src.task_parts(files[k], cfg.task_bytes))
                size = _small(files[k], cfg.group_bytes) if src.groups_files and not limited \
                    and not parts else None
                if size is not None and group and group + size <= cfg.group_bytes \
                        and len(tasks[-1].files or []) < GROUP_FILES:
                    tasks[-1].files.append(files[k])   # type: ignore[union-attr]
                    group += size
                    continue
                group = max(size, 1) if size is not None else 0
                tasks += [Task(len(tasks) + j, i, [files[k]], docs[k], nbytes[k], part)
                          for j, part in enumerate(parts or [None])]
        else:
            tasks.append(Task(len(tasks), i, None, src.max_docs, src.max_bytes))
    return tasks


# small files share a task (and so a shard) with the files after them, up to
# data.group_bytes or this many files: a task has costs of its own besides its reading
# (3,000 one-record files took 40x the time of one file of the same records, a task each;
# 1.4x grouped: bench/many_files.py)
GROUP_FILES = 1000


def _small(f: str, limit: int) -> int | None:
    """The size of a local file under ``limit``, else None (a large or remote one)."""
    try:
        size = os.path.getsize(f)
    except OSError:
        return None
    return size if size < limit else None


def limit_shares(total: int, n_files: int) -> list[int]:
    """A source's limit shared out over its files, in file order: ``total // n`` each and
    one more to each of the first ``total % n``, so the split depends only on the sorted
    file list and the limit, never on which task runs first. ``total = 0`` (no limit) is 0
    for every file; a limit smaller than the number of files covers only the first
    ``total`` files (one unit each). A file that ends before its share leaves the rest
    unread: moving it to other files would make the output depend on timing."""
    if not total:
        return [0] * n_files
    n = min(n_files, total)
    return [total // n + (1 if k < total % n else 0) for k in range(n)]


def _limited(src: SourceConfig, task: Task, items: Iterator[Document | Skip],
             skip: Callable[[Skip], None], row: dict[str, Any], strict: bool = False,
             beat: Callable[[int, int], None] | None = None) -> Iterator[Document]:
    """The source's documents up to the task's max_docs/max_bytes; unreadable records are
    told to ``skip`` (or stop the stage, in strict mode). ``beat(docs, bytes)`` is told the counts so
    far at every record."""
    n_docs = n_bytes = 0
    for item in items:
        # at a limit, before anything else is read: a record past it (an unreadable one,
        # a damaged parquet row group's rows) is not counted and does not stop strict mode
        if (task.max_docs and n_docs >= task.max_docs) or \
                (task.max_bytes and n_bytes >= task.max_bytes):
            return
        if beat is not None:
            beat(row["docs_in"], row["bytes_in"])
        if isinstance(item, Document):
            item = _unicode_checked(item, src.label(), row)
        if isinstance(item, Skip) and strict:
            raise PretrainError(f"unreadable input ({item.reason}): {item.detail or item.id} "
                                "(data.strict = true; false counts and skips such records)")
        if isinstance(item, Skip):
            skip(item)
            row["docs_in"] += item.records
            row["dropped"][item.reason] += item.records
            continue
        size = item.nbytes
        if task.max_bytes and n_bytes + size > task.max_bytes:
            if n_bytes:  # keep going only if nothing fits yet
                return
        n_docs += 1
        n_bytes += size
        row["docs_in"] += 1
        row["docs_out"] += 1
        row["bytes_in"] += size
        row["bytes_out"] += size
        if src.use_for != "auto":
            item.split = src.use_for
        if src.license:  # a record's own licence (The Stack has one per file) is kept apart
            if item.meta.get("license", src.license) != src.license:
                item.meta["record_license"] = item.meta["license"]
            item.meta["license"] = src.license
        yield item


def _unicode_checked(doc: Document, source: str, row: dict[str, Any]) -> Document | Skip:
    """JSON can carry lone surrogates ("\\ud800"), which no UTF-8 file can hold. In the
    text or id the record is unreadable (a skip; the readers that know the file and line
    catch it first and name them); in metadata each one becomes U+FFFD, counted
    (``meta_invalid_unicode`` of the read row), so that a URL keeps reaching the URL filter.
    A metadata NaN or Infinity, which strict JSON readers refuse, becomes null, counted
    (``meta_not_finite``)."""
    try:
        doc.nbytes   # noqa: B018 -- encodes the text once, the size kept for the funnel
        doc.id.encode("utf-8")
    except UnicodeEncodeError as e:
        rid = doc.id.encode("utf-8", "backslashreplace").decode()
        return Skip(rid, "invalid_unicode", f"source {source}, record {rid}: a lone surrogate "
                    f"U+{ord(e.object[e.start]):04X} at character {e.start} of the "
                    f"{'text' if e.object is doc.text else 'id'}")
    problem = _unencodable(doc.meta)
    if problem:
        doc.meta = _repaired(doc.meta)
        row["stats"][problem] += 1
    return doc


def _unencodable(v: Any) -> str | None:
    """What keeps ``v`` from a strict JSON line of UTF-8 (the first found), None if nothing."""
    try:
        json.dumps(v, ensure_ascii=False, allow_nan=False).encode("utf-8")
        return None
    except UnicodeEncodeError:
        return "meta_invalid_unicode"
    except ValueError:
        return "meta_not_finite"


def _repaired(v: Any) -> Any:
    """``v`` with each lone surrogate in its strings (keys too, nested) replaced by U+FFFD
    and each NaN or infinity by None."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, str):
        return v.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(v, dict):
        return {_repaired(k): _repaired(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_repaired(x) for x in v]
    return v


def _exact_key(text: str) -> int:
    digest = hashlib.blake2b(" ".join(text.split()).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=1)
def _benchmarks(path: str, stamp: tuple[int, int]) -> tuple[Index, dict[int, HashSet]]:
    """The benchmark index and the union of its hashes, made once per process (and file
    version), not per task: the union alone took 2-3 s a task (1.6 M 13-grams), which made
    a corpus in 40 small files 2.8x slower to clean than the same in one."""
    index = load_index(path)
    return index, union(index)


def run_task(cfg: DataConfig, task: Task, work: Path, ngrams_path: str) -> None:
    """Run one task's per-document steps; its files appear in ``work`` only when complete."""
    src = cfg.sources[task.source]
    ngrams, sets = _benchmarks(ngrams_path, _stamp(ngrams_path)) if ngrams_path else ({}, {})
    steps = build_steps(cfg, src, ngrams, sets)
    hasher = MinHasher(cfg.minhash) if cfg.minhash.enabled else None
    funnel = Funnel()
    # temporary names unique to this attempt: a retried task never meets another attempt's
    # files (``stage.process`` sweeps those of dead attempts)
    attempt = f"{TMP_MARK}{os.getpid()}-{secrets.token_hex(3)}"
    names = ("jsonl", "drops.jsonl", "samples.jsonl", "stats.json", "keys.npy")
    tmp = {ext: work / f"{task.stem}{attempt}.{ext}" for ext in names}
    # per kept document: exact hash, UTF-8 bytes, the MinHash bands; made 512 documents at
    # a time into arrays (8 bytes a column a document; Python tuples took ~10 times that)
    n_cols = 2 + (cfg.minhash.bands if hasher is not None else 0)
    keys: list[np.ndarray] = []
    batch: list[str] = []
    sizes: list[int] = []

    def flush_keys() -> None:
        if batch:
            rows = np.empty((len(batch), n_cols), np.uint64)
            rows[:, 0] = [_exact_key(t) for t in batch]
            rows[:, 1] = sizes
            if hasher is not None:
                rows[:, 2:] = hasher.keys(batch)
            keys.append(rows)
        batch.clear()
        sizes.clear()

    read_row = funnel.row("read")
    beat = Beat(beat_path(work, task.stem), work / f"{task.stem}{attempt}.progress.json")
    beat(0, 0, final=True)   # replaces a killed attempt's counts
    with open(tmp["jsonl"], "w", encoding="utf-8") as out, \
            open(tmp["drops.jsonl"], "w", encoding="utf-8") as audit, \
            open(tmp["samples.jsonl"], "w", encoding="utf-8") as sample_f:
        log = DropLog(audit, sample_f, cfg.audit_samples)
        # skips and drops are written as they happen: a file all dropped is never held
        items = src.read_part(task.files[0], task.part) if task.files and task.part \
            else src.read(task.files)
        read = _limited(src, task, items, lambda s: log.skip(s, src.label()), read_row,
                        cfg.strict, beat)
        for doc in funnel.run(steps, read,
                              lambda step, d, why, detail: log.drop(step, d.record(), why,
                                                                    detail)):
            out.write(json.dumps(doc.record(), ensure_ascii=False) + "\n")
            batch.append(doc.text)
            sizes.append(doc.nbytes)
            if len(batch) >= 512:
                flush_keys()
        flush_keys()
    beat(read_row["docs_in"], read_row["bytes_in"], done=True)
    np.save(tmp["keys.npy"], np.concatenate(keys) if keys else np.zeros((0, n_cols), np.uint64))
    for step in steps:
        funnel.row(step.name)["stats"].update(step.stats)
    # a file's first part fingerprints the whole file, as one task reading it would (the
    # shards of a file give its inputs from there); the others name their row groups only
    inputs = [{"path": task.files[0], "row_groups": list(task.part)}] \
        if task.files and task.part and task.part[0] else \
        [_file_fingerprint(f) for f in task.files] if task.files else \
        [{"source": src.label(), "fingerprint": src.fingerprint()}]
    stats = {"funnel": funnel.as_json(), "inputs": inputs, "source": src.label()}
    tmp["stats.json"].write_text(json.dumps(stats, default=str), encoding="utf-8")
    for name in names:
        os.replace(tmp[name], work / f"{task.stem}.{name}")
    (work / f"{task.stem}.done").touch()  # last: the task is complete


def _file_fingerprint(f: str) -> dict[str, Any]:
    if "://" in f:   # a remote file (hf://...@commit/...): its URL names its content
        return {"path": f}
    p = Path(f)
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return {"path": str(p), "bytes": p.stat().st_size, "sha256": h.hexdigest()}
