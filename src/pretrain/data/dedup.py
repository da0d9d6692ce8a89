"""Deduplication over the whole stage's output, from the per-task keys only (no text).

Exact first (one 64-bit hash of the whitespace-normalised text), then MinHash LSH one band
at a time (``minhash.py``), keeping the first document of each cluster in task order, so
the result does not depend on how many processes made the keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import DataConfig
from .funnel import Funnel
from .minhash import UnionFind, link_equal_keys
from .runner import Task


@dataclass
class Duplicates:
    """The documents deduplication removes, by global index (task order, then line):
    ``gone`` ascending, each one's ``exact`` (else near), the index of the document
    ``kept`` in its place, the one it is ``identical`` to where that is not the kept one
    (itself a near duplicate of it; else -1), and the ids of those two kinds (their lines
    only are parsed). Arrays, not a dict per document: a few dozen bytes per removed
    document, not hundreds."""
    offsets: np.ndarray
    gone: np.ndarray
    exact: np.ndarray
    kept: np.ndarray
    identical: np.ndarray
    ids: dict[int, str]

    def of_task(self, k: int) -> dict[int, tuple[str, str, str]]:
        """Task ``k``'s removed lines: line -> (reason, id of the document kept, id of the
        removed one it is identical to, or "")."""
        lo, hi = np.searchsorted(self.gone, self.offsets[k:k + 2])
        return {int(g) - int(self.offsets[k]): ("exact_duplicate" if e else "near_duplicate",
                                                self.ids[int(i)],
                                                self.ids[int(v)] if v >= 0 else "")
                for g, e, i, v in zip(self.gone[lo:hi], self.exact[lo:hi], self.kept[lo:hi],
                                      self.identical[lo:hi], strict=True)}


def deduplicate(cfg: DataConfig, tasks: list[Task], work: Path, funnel: Funnel) -> Duplicates:
    """What exact and near deduplication remove, counted in ``funnel``.

    Reads the keys one column at a time: memory is about 40 bytes per document (the two
    union-finds, one column and its sort), not the signatures of every document at once."""
    keys = [np.load(work / f"{t.stem}.keys.npy", mmap_mode="r") for t in tasks]
    offsets = np.concatenate([[0], np.cumsum([len(k) for k in keys])]).astype(np.int64)
    n = int(offsets[-1])
    exact_uf, near_uf = UnionFind(n), UnionFind(n)
    alive = np.ones(n, bool)
    if cfg.clean.exact_dedup and n:
        link_equal_keys(np.concatenate([k[:, 0] for k in keys]), alive, exact_uf)
        alive = exact_uf.roots() == np.arange(n)
    if cfg.minhash.enabled and n:
        for b in range(cfg.minhash.bands):
            if cfg.minhash.scope == "source":  # documents of other sources never collide
                with np.errstate(over="ignore"):
                    col = np.concatenate([k[:, 2 + b] ^ (np.uint64(t.source) * _SPREAD)
                                          for k, t in zip(keys, tasks, strict=True)])
            else:
                col = np.concatenate([k[:, 2 + b] for k in keys])
            link_equal_keys(col, alive, near_uf)
            del col
    index = np.arange(n, dtype=exact_uf.parent.dtype)
    exact_root = exact_uf.roots()
    exact = exact_root != index
    near_root = near_uf.roots()
    gone = np.flatnonzero(exact | (near_root != index))
    exact = exact[gone]
    # an exact duplicate's root may itself be a near duplicate: the kept one is its root's
    root = np.where(exact, exact_root[gone], gone).astype(np.int64)
    kept = near_root[root].astype(np.int64)
    identical = np.where(exact & (root != kept), root, -1)
    del exact_root, near_root, index
    named = np.unique(np.concatenate([kept, identical[identical >= 0]]))
    dups = Duplicates(offsets, gone, exact, kept, identical, _ids(tasks, work, named, offsets))
    row_e, row_n = funnel.row("exact_dedup"), funnel.row("minhash_dedup")
    n_exact = int(exact.sum())
    if n_exact:
        row_e["dropped"]["exact_duplicate"] += n_exact
    if len(gone) - n_exact:
        row_n["dropped"]["near_duplicate"] += len(gone) - n_exact
    row_e["docs_in"] = n
    row_e["docs_out"] = n - sum(row_e["dropped"].values())
    row_n["docs_in"] = row_e["docs_out"]
    row_n["docs_out"] = row_n["docs_in"] - sum(row_n["dropped"].values())
    if cfg.minhash.enabled:
        row_n["stats"]["jaccard_threshold_x1000"] = round(cfg.minhash.threshold() * 1000)
    return dups


_SPREAD = np.uint64(0x9E3779B97F4A7C15)   # spreads a source's number over the key's bits


def _ids(tasks: list[Task], work: Path, wanted: np.ndarray, offsets: np.ndarray
         ) -> dict[int, str]:
    """The ids of the documents ``wanted`` (global indices, ascending): only their lines
    are parsed."""
    out: dict[int, str] = {}
    task_of = np.searchsorted(offsets, wanted, side="right") - 1
    for ti in np.unique(task_of).tolist():
        mine = wanted[task_of == ti]
        lines = dict(zip((mine - offsets[ti]).tolist(), mine.tolist(), strict=True))
        with open(work / f"{tasks[ti].stem}.jsonl", encoding="utf-8") as f:
            for lineno, line in enumerate(f):
                if lineno in lines:
                    out[lines[lineno]] = json.loads(line)["id"]
    return out
