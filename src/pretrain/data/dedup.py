"""Deduplication over the whole stage's output, from the per-task keys only (no text).

Exact first (one 64-bit hash of the whitespace-normalised text), then MinHash LSH one band
at a time (``minhash.py``), keeping the first document of each cluster in task order, so
the result does not depend on how many processes made the keys.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from .config import DataConfig
from .funnel import Funnel
from .minhash import UnionFind, link_equal_keys
from .runner import Task


def deduplicate(cfg: DataConfig, tasks: list[Task], work: Path,
                 funnel: Funnel) -> dict[int, dict[int, tuple[str, str]]]:
    """task index -> {line in the task's output: (reason, id of the document kept)}.

    Reads the keys one column at a time: memory is 8 bytes per document per column, not
    the signatures of every document at once."""
    keys = [np.load(work / f"{t.stem}.keys.npy", mmap_mode="r") for t in tasks]
    sizes = [len(k) for k in keys]
    n = sum(sizes)
    task_of = np.repeat(np.arange(len(tasks)), sizes)
    line_of = np.concatenate([np.arange(s) for s in sizes]) if n else np.zeros(0, np.int64)
    source_of = np.repeat(np.array([t.source for t in tasks], np.uint64), sizes)
    exact_uf, near_uf = UnionFind(n), UnionFind(n)
    alive = np.ones(n, bool)
    if cfg.clean.exact_dedup and n:
        link_equal_keys(np.concatenate([k[:, 0] for k in keys]), alive, exact_uf)
        alive = exact_uf.roots() == np.arange(n)
    if cfg.minhash.enabled and n:
        for b in range(cfg.minhash.bands):
            col = np.concatenate([k[:, 2 + b] for k in keys])
            if cfg.minhash.scope == "source":  # documents of other sources never collide
                with np.errstate(over="ignore"):
                    col = col ^ (source_of * np.uint64(0x9E3779B97F4A7C15))
            link_equal_keys(col, alive, near_uf)
    exact_root = exact_uf.roots()
    near_root = near_uf.roots()
    removed: dict[int, dict[int, tuple[str, str]]] = defaultdict(dict)
    row_e, row_n = funnel.row("exact_dedup"), funnel.row("minhash_dedup")
    gone = np.flatnonzero((exact_root != np.arange(n)) | (near_root != np.arange(n))).tolist()
    kept_of = {i: int(exact_root[i]) if exact_root[i] != i else int(near_root[i]) for i in gone}
    ids = _ids(tasks, work, set(kept_of.values()), task_of, line_of)
    for i in gone:
        if exact_root[i] != i:
            reason = "exact_duplicate"
            row_e["dropped"][reason] += 1
        else:
            reason = "near_duplicate"
            row_n["dropped"][reason] += 1
        removed[int(task_of[i])][int(line_of[i])] = (reason, ids[kept_of[i]])
    row_e["docs_in"] = n
    row_e["docs_out"] = n - sum(row_e["dropped"].values())
    row_n["docs_in"] = row_e["docs_out"]
    row_n["docs_out"] = row_n["docs_in"] - sum(row_n["dropped"].values())
    if cfg.minhash.enabled:
        row_n["stats"]["jaccard_threshold_x1000"] = round(cfg.minhash.threshold() * 1000)
    return removed


def _ids(tasks: list[Task], work: Path, wanted: set[int], task_of: np.ndarray,
         line_of: np.ndarray) -> dict[int, str]:
    """The ids of the documents ``wanted`` (global indices): only their lines are parsed."""
    by_task: dict[int, dict[int, int]] = defaultdict(dict)
    for i in wanted:
        by_task[int(task_of[i])][int(line_of[i])] = i
    out: dict[int, str] = {}
    for ti, lines in by_task.items():
        with open(work / f"{tasks[ti].stem}.jsonl", encoding="utf-8") as f:
            for lineno, line in enumerate(f):
                if lineno in lines:
                    out[lines[lineno]] = json.loads(line)["id"]
    return out


