"""Contamination report: how much of each benchmark the training data still contains.

The data stage can remove documents that share a 13-gram with a benchmark (its
``decontam`` step counts what it removed); this report looks at what remains: every kept
training document is scanned for the 13-grams of every benchmark the eval stage scores,
with the data stage's normalisation (``data/decontam.py``). Per benchmark: training
documents sharing at least one 13-gram, and the share of the benchmark's distinct
13-grams that occur in training.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..data.decontam import benchmark_ngrams, is_member, text_ngrams
from .files import resolve


def report(docs: Iterator[dict[str, Any]], task_names: list[str], tasks_dir: str,
           removed: dict[str, int], n: int = 13, batch: int = 256) -> dict[str, Any]:
    files = {name: str(p) for name, p, _, _ in resolve(task_names, tasks_dir) if p.is_file()}
    if not files:
        return {}
    by_file = benchmark_ngrams(list(files.values()), n)
    ngrams = {name: by_file[Path(p).name.split(".")[0]] for name, p in files.items()}
    hit_docs = dict.fromkeys(ngrams, 0)
    found: dict[str, set[int]] = {k: set() for k in ngrams}
    train_docs = 0
    texts: list[str] = []

    def flush() -> None:
        if not texts:
            return
        g, doc, _, _ = text_ngrams(texts, n)
        for name, grams in ngrams.items():
            hit = is_member(g, grams)
            if hit.any():
                hit_docs[name] += len(np.unique(doc[hit]))
                found[name].update(np.unique(g[hit]).tolist())
        texts.clear()

    for d in docs:
        if d.get("split") == "val":
            continue  # held out: never trained on
        train_docs += 1
        texts.append(d["text"])
        if len(texts) >= batch:
            flush()
    flush()
    return {name: {"docs": hit_docs[name], "train_docs": train_docs,
                   "ngrams_in_train": len(found[name]), "ngrams": int(len(ngrams[name])),
                   "ngram_share": round(len(found[name]) / max(1, len(ngrams[name])), 6),
                   "removed_by_data_stage": removed.get(Path(files[name]).name.split(".")[0], 0)}
            for name in ngrams}


def table(rep: dict[str, Any]) -> str:
    lines = [f"{'benchmark':<16}{'train docs with a 13-gram':>27}{'13-grams in train':>19}"
             f"{'removed by data':>17}"]
    for name, r in rep.items():
        lines.append(f"{name:<16}{r['docs']:>17} of {r['train_docs']:<7}"
                     f"{r['ngram_share']:>18.4%}{r['removed_by_data_stage']:>17}")
    return "\n".join(lines)
