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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..data.benchmarks import name_of
from ..data.decontam import benchmark_index, find, is_member, union


def report(docs: Iterator[dict[str, Any]], files: dict[str, Path], removed: dict[str, int],
           split_of: Callable[[dict[str, Any]], str] | None = None,
           n: int = 13, min_words: int = 6, batch: int = 256) -> dict[str, Any]:
    """``files``: benchmark name -> its file (``files.scored``), each indexed on its own
    (two files of one stem are two benchmarks here). ``docs`` in the data stage's order;
    ``split_of``: the tokenize stage's split of each (``shards.Splitter``), so that
    held-out documents are not counted as training ones; without it only the documents
    marked ``split = "val"`` are left out. ``removed``: the data stage's counts, by file
    stem (None where several of ``files`` share one: the count is theirs together)."""
    if not files:
        return {}
    index = {name: benchmark_index([str(p)], n, min_words)[name_of(p)]
             for name, p in files.items()}
    stems = Counter(name_of(p) for p in files.values())
    hit_docs = dict.fromkeys(index, 0)
    found: dict[str, set[int]] = {k: set() for k in index}
    train_docs = 0
    texts: list[str] = []
    every = union(index)

    def flush() -> None:
        if not texts:
            return
        hits = find(texts, every)
        for name, by_k in index.items():
            docs_hit: set[int] = set()
            for k, g, doc, _, _ in hits:
                if k not in by_k:
                    continue
                hit = is_member(g, by_k[k])
                docs_hit.update(doc[hit].tolist())
                found[name].update(g[hit].tolist())
            hit_docs[name] += len(docs_hit)
        texts.clear()

    for d in docs:
        if (split_of(d) if split_of else d.get("split")) == "val":
            continue  # held out: never trained on
        train_docs += 1
        texts.append(d["text"])
        if len(texts) >= batch:
            flush()
    flush()
    sizes = {name: sum(len(v) for v in by_k.values()) for name, by_k in index.items()}
    return {name: {"docs": hit_docs[name], "train_docs": train_docs,
                   "ngrams_in_train": len(found[name]), "ngrams": sizes[name],
                   "ngram_share": round(len(found[name]) / max(1, sizes[name]), 6),
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
