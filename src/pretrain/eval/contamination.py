"""Contamination report: how much of each benchmark the training data still contains.

The data stage can remove documents that contain a benchmark item (its ``decontam`` step
counts what it removed); this report looks at what remains: every kept training document
is scanned for the items of every benchmark the eval stage scores (its tasks and, with
``core``, CORE's), indexed and matched
exactly as the data stage does (``data/decontam.py``: each item as the texts it appears
as, n-grams of ``data.decontam.ngram`` words, 13, shorter items whole down to
``min_item_words``, with the data stage's values). Per benchmark: training documents
containing one of its items, and the share of its distinct indexed n-grams that occur in
training.

At scale the documents are scanned in parallel, a process per file of kept documents
(``report_files``). Which of them the tokenize stage held out is known within each
file, but for the first ``min_val_docs`` documents of each domain in it: its rule holds
a domain's first documents back, so whether these are held out depends on the files
before. They are scanned and kept apart, each with what it hits, and settled in file
order when the files' counts are joined: the report is the one a reading of the whole
corpus in order gives.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import PretrainError
from ..data.benchmarks import name_of
from ..data.decontam import (
    HashSet,
    Index,
    benchmark_index,
    find,
    is_member,
    load_index,
    save_index,
    union,
)
from ..data.docs import read_doc_file
from ..data.executor import die_with_parent
from ..log import Progress, log0
from ..tokenizer.shards import Splitter

# Below this much text in files, worker processes cost more to start (~1 s each, and
# each reads the benchmarks' index from a file) than they save.
_MIN_PARALLEL_BYTES = 8 << 20
_COMPACT = 1 << 20   # found n-grams kept in pieces up to this many, then made unique


@dataclass
class Part:
    """What the scan of a run of documents (one file, or an iterator's) found."""

    train_docs: int = 0
    docs: Counter[str] = field(default_factory=Counter)   # benchmark -> documents hit
    found: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))
    # domain -> its first documents in the run that the rule may hold out, in order: for
    # each, whether its own split holds it out anyway and, if not, what it hits
    # (benchmark -> its distinct n-grams in the document)
    first: dict[str, list[tuple[bool, dict[str, np.ndarray]]]] = field(
        default_factory=lambda: defaultdict(list))


def _gather(pieces: list[np.ndarray], g: np.ndarray) -> list[np.ndarray]:
    """``pieces`` of found n-grams with ``g``, made one unique array past ``_COMPACT``."""
    pieces.append(g)
    return [np.unique(np.concatenate(pieces))] if sum(map(len, pieces)) > _COMPACT else pieces


def report(docs: Iterable[dict[str, Any]], files: dict[str, Path], removed: dict[str, int],
           split_of: Splitter | None = None, n: int = 13, min_words: int = 6,
           batch: int = 256) -> dict[str, Any]:
    """``files``: benchmark name -> its file (``files.scored``), each indexed on its own
    (two files of one stem are two benchmarks here). ``docs`` in the data stage's order;
    ``split_of``: the tokenize stage's rule (``shards.Splitter``), so that held-out
    documents are not counted as training ones; without it only the documents marked
    ``split = "val"`` are left out. ``removed``: the data stage's counts, by file stem
    (None where several of ``files`` share one: the count is theirs together)."""
    if not files:
        return {}
    index = _index(files, n, min_words)
    part = _scan(docs, index, union(index), split_of, batch)
    return _summary(index, files, removed, _settle([part], split_of))


def report_files(paths: list[Path], files: dict[str, Path], removed: dict[str, int],
                 split_of: Splitter | None = None, n: int = 13, min_words: int = 6,
                 workers: int = 0, batch: int = 256) -> dict[str, Any]:
    """``report`` of the documents of ``paths`` (``docs.doc_files``, in order), scanned
    on ``workers`` processes, one file at a time each (default: one per core this
    process may use, one in all below ``_MIN_PARALLEL_BYTES``)."""
    if not files:
        return {}
    index = _index(files, n, min_words)
    every = union(index)
    size = sum(p.stat().st_size for p in paths)
    if not workers:
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        workers = 1 if size < _MIN_PARALLEL_BYTES else len(cores or ()) or os.cpu_count() or 1
    workers = max(1, min(workers, len(paths)))
    t0 = time.monotonic()
    with Progress("contamination", total=len(paths), unit="files") as bar:
        if workers == 1:
            parts: Iterator[Part] = (_scan(read_doc_file(p), index, every, split_of, batch)
                                     for p in paths)
            settled = _settle(_counted(parts, bar), split_of)
        else:
            with closing(_parallel(paths, workers, index, every, split_of, batch)) as parts:
                settled = _settle(_counted(parts, bar), split_of)
    log0(f"eval: contamination: {len(paths)} files of documents ({size / 1e6:,.1f} MB) "
         f"scanned in {time.monotonic() - t0:.1f} s on {workers} process"
         + ("es" if workers > 1 else ""))
    return _summary(index, files, removed, settled)


def _index(files: dict[str, Path], n: int, min_words: int) -> Index:
    return {name: benchmark_index([str(p)], n, min_words)[name_of(p)]
            for name, p in files.items()}


def _counted(parts: Iterable[Part], bar: Progress) -> Iterator[Part]:
    for part in parts:
        bar.update(1)
        yield part


def _parallel(paths: list[Path], workers: int, index: Index, every: dict[int, HashSet],
              split_of: Splitter | None, batch: int) -> Generator[Part, None, None]:
    """The parts of ``paths`` in order, scanned by ``workers`` processes (spawned, not
    forked: the parent holds threads, torch's), which return hits only. Each reads the
    index from a file: as a starting argument its ~60 MB went down a pipe, and a worker
    dying while it started (an import failing, the OOM killer) left the parent blocked
    on that write for ever (Python closes its own end of the pipe only after it)."""
    with tempfile.TemporaryDirectory(prefix="pretrain-contamination-") as tmp:
        save_index(index, Path(tmp) / "index.npz")
        np.savez(Path(tmp) / "every.npz",
                 **{str(k): s.sorted for k, s in every.items()})  # type: ignore[arg-type]
        ex = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start, initargs=(os.getpid(), tmp, split_of, batch))
        try:
            yield from ex.map(_scan_file, paths)
        except BrokenProcessPool as e:
            raise PretrainError(
                "eval: a contamination worker process died (killed from outside, e.g. by the "
                "system when memory ran out); rerun the eval stage") from e
        except BaseException:   # Ctrl-C, a bad file: the other files' scans are not waited for
            # this pool's processes only (not public: none to kill where Python changes it)
            for proc in list((getattr(ex, "_processes", None) or {}).values()):
                proc.kill()
            raise
        finally:
            ex.shutdown(cancel_futures=True)


_WORKER: dict[str, Any] = {}


def _start(parent: int, folder: str, split_of: Splitter | None, batch: int) -> None:
    die_with_parent(parent)
    with np.load(Path(folder) / "every.npz") as z:
        every = {int(k): HashSet(z[k]) for k in z.files}
    _WORKER.update(index=load_index(str(Path(folder) / "index.npz")), every=every,
                   split_of=split_of, batch=batch)


def _scan_file(path: Path) -> Part:
    w = _WORKER
    return _scan(read_doc_file(path), w["index"], w["every"], w["split_of"], w["batch"])


def _scan(docs: Iterable[dict[str, Any]], index: Index, every: dict[int, HashSet],
          split_of: Splitter | None, batch: int) -> Part:
    """The training documents' hits. The first ``min_val_docs`` documents of a domain that
    the rule may hold out (all but those whose own split is not val) are kept apart in
    ``Part.first``: whether the rule holds them out depends on the documents before the
    run. After them the domain has that many held out whatever came before, so the rule
    holds no later one out and each later document's own split is its split."""
    part = Part()
    m = split_of.min_val_docs if split_of else 0
    texts: list[str] = []
    slots: list[tuple[str, int] | None] = []   # per text: its place in part.first, if any
    for d in docs:
        own = split_of.own(d) if split_of else ("val" if d.get("split") == "val" else "train")
        slot = None
        if split_of and (own == "val" or not d.get("split")):
            first = part.first[d["domain"]]
            if len(first) < m:
                first.append((own == "val", {}))
                slot = (d["domain"], len(first) - 1)
        if own == "val":
            continue   # held out whatever came before
        part.train_docs += slot is None
        texts.append(d["text"])
        slots.append(slot)
        if len(texts) >= batch:
            _flush(texts, slots, part, index, every)
    _flush(texts, slots, part, index, every)
    part.found = defaultdict(list, {name: [np.unique(np.concatenate(g))]
                                    for name, g in part.found.items()})
    return part


def _flush(texts: list[str], slots: list[tuple[str, int] | None], part: Part, index: Index,
           every: dict[int, HashSet]) -> None:
    if not texts:
        return
    hits = find(texts, every)
    apart = np.array([s is not None for s in slots])
    for name, by_k in index.items():
        docs_l, g_l = [], []
        for k, g, doc, _, _ in hits:
            if k in by_k:
                hit = is_member(g, by_k[k])
                docs_l.append(doc[hit])
                g_l.append(g[hit])
        if not docs_l:
            continue
        doc, g = np.concatenate(docs_l), np.concatenate(g_l)
        mine = ~apart[doc]
        if mine.any():
            part.docs[name] += len(np.unique(doc[mine]))
            part.found[name] = _gather(part.found[name], g[mine])
        for i in np.unique(doc[~mine]).tolist():
            domain, j = slots[i]  # type: ignore[misc]
            part.first[domain][j][1][name] = np.unique(g[doc == i])
    texts.clear()
    slots.clear()


@dataclass
class _Settled:
    train_docs: int
    docs: Counter[str]
    found: dict[str, int]


def _settle(parts: Iterable[Part], split_of: Splitter | None) -> _Settled:
    """The parts joined in order, each one's first documents of a domain held out while
    the domain has fewer than ``min_val_docs`` held out (as ``Splitter`` decides)."""
    m = split_of.min_val_docs if split_of else 0
    held: Counter[str] = Counter()   # domain -> documents held out so far (up to m matters)
    train, docs = 0, Counter[str]()
    found: dict[str, list[np.ndarray]] = defaultdict(list)
    for part in parts:
        train += part.train_docs
        docs.update(part.docs)
        for name, pieces in part.found.items():
            for g in pieces:
                found[name] = _gather(found[name], g)
        for domain, first in part.first.items():
            before = held[domain]
            for j, (own_val, hits) in enumerate(first):
                if own_val or before + j < m:
                    held[domain] += 1
                    continue
                train += 1
                for name, g in hits.items():
                    docs[name] += 1
                    found[name] = _gather(found[name], g)
    return _Settled(train, docs, {name: len(np.unique(np.concatenate(g))) if g else 0
                                  for name, g in found.items()})


def _summary(index: Index, files: dict[str, Path], removed: dict[str, int],
             s: _Settled) -> dict[str, Any]:
    stems = Counter(name_of(p) for p in files.values())
    sizes = {name: sum(len(v) for v in by_k.values()) for name, by_k in index.items()}
    return {name: {"docs": s.docs[name], "train_docs": s.train_docs,
                   "ngrams_in_train": s.found.get(name, 0), "ngrams": sizes[name],
                   "ngram_share": round(s.found.get(name, 0) / max(1, sizes[name]), 6),
                   "removed_by_data_stage": removed.get(name_of(files[name]), 0)
                   if stems[name_of(files[name])] == 1 else None}
            for name in index}


def table(rep: dict[str, Any]) -> str:
    w = max([16, *(len(name) + 1 for name in rep)])   # CORE's names run to 33 characters
    lines = [f"{'benchmark':<{w}}{'train docs with an item':>27}{'n-grams in train':>19}"
             f"{'removed by data':>17}"]
    for name, r in rep.items():
        lines.append(f"{name:<{w}}{r['docs']:>17} of {r['train_docs']:<7}"
                     f"{r['ngram_share']:>18.4%}"
                     f"{_removed(r['removed_by_data_stage']):>17}")
    return "\n".join(lines)


def _removed(n: int | None) -> str:
    return "shared stem" if n is None else str(n)
