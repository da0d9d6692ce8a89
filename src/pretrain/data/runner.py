"""Running one task of the data stage: a source's records (or one of its files) through
the per-document steps, into the work folder, completed by a ``.done`` marker.

A task writes ``t-NNNNN.jsonl`` (kept documents), ``.keys.npy`` (per document: exact hash,
UTF-8 size, MinHash band keys), ``.drops.jsonl`` (every drop), ``.samples.jsonl`` (dropped documents
with text, up to ``audit_samples`` per reason) and ``.stats.json`` (its funnel and inputs),
each under a temporary name renamed when complete, then ``t-NNNNN.done``. A task without
the marker is redone from scratch, so a killed run resumes to the uninterrupted output.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import PretrainError
from . import quality as q
from .config import DataConfig
from .decontam import Decontaminate
from .document import Document, Skip, Step
from .filters import (
    C4Lines,
    LanguageFilter,
    LengthAndBinaryFilter,
    Normalize,
    PiiScrub,
    UnsafeWords,
    UrlFilter,
    WordRule,
)
from .funnel import DropLog, Funnel
from .minhash import MinHasher
from .sources import SourceConfig

TMP_MARK = ".tmp-"   # in the name of every file a task is still writing


def build_steps(cfg: DataConfig, src: SourceConfig, ngrams: dict[str, np.ndarray]) -> list[Step]:
    """The per-document steps for one source, in order."""
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
        steps.append(Decontaminate(cfg.decontam, ngrams))
    return steps


# --- tasks --------------------------------------------------------------------------

@dataclass
class Task:
    index: int
    source: int                     # index into cfg.sources
    files: list[str] | None = None  # None: the whole source

    @property
    def stem(self) -> str:
        return f"t-{self.index:05d}"


def plan_tasks(cfg: DataConfig) -> list[Task]:
    tasks: list[Task] = []
    for i, src in enumerate(cfg.sources):
        files = src.task_files()
        if files and not (src.max_docs or src.max_bytes):
            tasks += [Task(len(tasks) + k, i, [str(f)]) for k, f in enumerate(files)]
        else:
            tasks.append(Task(len(tasks), i, None))
    return tasks


def _limited(src: SourceConfig, items: Iterator[Document | Skip], skips: list[Skip],
             row: dict[str, Any], strict: bool = False) -> Iterator[Document]:
    """The source's documents up to its max_docs/max_bytes; unreadable records go to skips
    (or stop the stage, in strict mode)."""
    n_docs = n_bytes = 0
    for item in items:
        if isinstance(item, Skip) and strict:
            raise PretrainError(f"unreadable input ({item.reason}): {item.detail or item.id} "
                                "(data.strict = true; false counts and skips such records)")
        if isinstance(item, Skip):
            skips.append(item)
            row["docs_in"] += 1
            row["dropped"][item.reason] += 1
            continue
        if src.max_docs and n_docs >= src.max_docs:
            return
        try:  # JSON can carry lone surrogates ("\ud800"), which no UTF-8 file can hold
            size = item.nbytes
            item.id.encode("utf-8")
        except UnicodeEncodeError as e:
            skips.append(Skip(item.id.encode("utf-8", "backslashreplace").decode(),
                              "invalid_unicode", str(e)))
            row["docs_in"] += 1
            row["dropped"]["invalid_unicode"] += 1
            continue
        item.meta = {k: v for k, v in item.meta.items() if not _bad_str(v)}
        if src.max_bytes and n_bytes + size > src.max_bytes:
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
        yield item


def _bad_str(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _exact_key(text: str) -> int:
    digest = hashlib.blake2b(" ".join(text.split()).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def run_task(cfg: DataConfig, task: Task, work: Path, ngrams_path: str) -> None:
    """Run one task's per-document steps; its files appear in ``work`` only when complete."""
    src = cfg.sources[task.source]
    ngrams = dict(np.load(ngrams_path)) if ngrams_path else {}
    steps = build_steps(cfg, src, ngrams)
    hasher = MinHasher(cfg.minhash) if cfg.minhash.enabled else None
    funnel = Funnel()
    skips: list[Skip] = []
    drops: list[tuple[str, Document, str]] = []
    # temporary names unique to this attempt: a retried task never meets another attempt's
    # files (``stage.process`` sweeps those of dead attempts)
    attempt = f"{TMP_MARK}{os.getpid()}-{secrets.token_hex(3)}"
    names = ("jsonl", "drops.jsonl", "samples.jsonl", "stats.json", "keys.npy")
    tmp = {ext: work / f"{task.stem}{attempt}.{ext}" for ext in names}
    keys: list[np.ndarray] = []
    batch: list[str] = []
    exact: list[tuple[int, int]] = []   # (exact hash, UTF-8 bytes) per kept document

    def flush_keys() -> None:
        if hasher is not None and batch:
            keys.append(hasher.band_keys(hasher.signatures(batch)))
        batch.clear()

    def flush_drops() -> None:
        for s in skips:
            log.skip(s, src.label())
        for step, doc, reason in drops:
            log.drop(step, doc.record(), reason)
        skips.clear()
        drops.clear()

    read = _limited(src, src.read(task.files), skips, funnel.row("read"), cfg.strict)
    with open(tmp["jsonl"], "w", encoding="utf-8") as out, \
            open(tmp["drops.jsonl"], "w", encoding="utf-8") as audit, \
            open(tmp["samples.jsonl"], "w", encoding="utf-8") as sample_f:
        log = DropLog(audit, sample_f, cfg.audit_samples)
        for doc in funnel.run(steps, read, drops):
            out.write(json.dumps(doc.record(), ensure_ascii=False) + "\n")
            exact.append((_exact_key(doc.text), doc.nbytes))
            batch.append(doc.text)
            if len(batch) >= 512:
                flush_keys()
            flush_drops()
        flush_keys()
        flush_drops()
    n_bands = cfg.minhash.bands if hasher is not None else 0
    band = np.concatenate(keys) if keys else np.zeros((len(exact), n_bands), np.uint64)
    key_arr = np.concatenate([np.array(exact, np.uint64).reshape(-1, 2), band], axis=1)
    np.save(tmp["keys.npy"], key_arr)
    for step in steps:
        funnel.row(step.name)["stats"].update(step.stats)
    inputs = [_file_fingerprint(Path(f)) for f in task.files] if task.files else \
        [{"source": src.label(), "fingerprint": src.fingerprint()}]
    stats = {"funnel": funnel.as_json(), "inputs": inputs, "source": src.label()}
    tmp["stats.json"].write_text(json.dumps(stats, default=str))
    for name in names:
        os.replace(tmp[name], work / f"{task.stem}.{name}")
    (work / f"{task.stem}.done").touch()  # last: the task is complete


def _file_fingerprint(p: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return {"path": str(p), "bytes": p.stat().st_size, "sha256": h.hexdigest()}
