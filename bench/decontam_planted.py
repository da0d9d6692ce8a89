"""Decontamination on planted benchmark items: recall on web documents carrying one, and
the share of clean web documents touched, for the item index (``data/benchmarks.py``) at
several ``min_item_words`` against the old field-by-field 13-gram index, in one run.

    python bench/decontam_planted.py [--per-benchmark 60] [--seed 1] [--min-words 5,6,7,8,10]
                                     [--repeats 3]

Hosts are 500 C4 documents; clean documents the other 500, the Dolma CC sample,
TinyStories and WikiText-2's validation articles (``tests/planted.clean_texts``); the
benchmarks every llm-foundry file and HellaSwag under ../shared/data/eval. Seed 1 here;
the unit test plants with seed 0, so these items are not the ones the tests saw.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import announce, at_least  # noqa: E402

from pretrain.data.benchmarks import name_of  # noqa: E402
from pretrain.data.config import DecontamConfig  # noqa: E402
from pretrain.data.decontam import Decontaminate, Index, benchmark_index, texts_index  # noqa: E402
from pretrain.data.document import Document  # noqa: E402
from tests.planted import clean_texts, planted_set, read_records, web_texts  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def old_index(paths: list[Path], n: int) -> Index:
    """The index before items: every string field of a record alone, and all of them
    joined in file order; one text per line for text files; n-grams only."""
    out: Index = {}
    for p in paths:
        texts: list[str] = []
        for rec in read_records(p):
            if isinstance(rec, tuple):
                texts += [rec[0], str(rec[1]), *rec[2]]
                continue
            strings = [s for v in rec.values()
                       for s in (v if isinstance(v, list) else [v]) if isinstance(s, str)]
            texts += strings + [" ".join(strings)]
        out[name_of(p)] = texts_index(texts, n, n)
    return out


def touched(index: Index, docs: list[Document]) -> tuple[set[str], float]:
    step = Decontaminate(DecontamConfig(), index)
    t0 = time.perf_counter()
    out = list(step(iter(docs)))
    return {o[0].id for o in out if isinstance(o, tuple)}, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-benchmark", type=at_least(1), default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-words", default="5,6,7,8,10")
    ap.add_argument("--repeats", type=at_least(1), default=3)
    args = ap.parse_args()
    announce()
    files = sorted((SHARED / "eval" / "llm-foundry").glob("*.jsonl")) \
        + [SHARED / "eval" / "hellaswag" / "hellaswag_val_full.txt.bz2"]
    hosts = web_texts(SHARED / "webtext" / "c4_sample.jsonl", 500)
    kinds = clean_texts(SHARED, c4_skip=500)
    clean = [t for texts in kinds.values() for t in texts]
    planted = planted_set(files, hosts, args.per_benchmark, args.seed)
    docs = [Document(f"p{i}", p.text, "web") for i, p in enumerate(planted)]
    clean_docs = [Document(f"c{i}", t, "web") for i, t in enumerate(clean)]
    kind_of = [k for k, texts in kinds.items() for _ in texts]
    print(f"{len(planted)} planted documents ({len(files)} benchmarks, up to {args.per_benchmark} each), "
          f"{len(clean_docs)} clean documents "
          f"({', '.join(f'{k} {len(v)}' for k, v in kinds.items())})")
    indexes: dict[str, Index] = {"old (fields, 13-grams)": old_index(files, 13)}
    for m in map(int, args.min_words.split(",")):
        indexes[f"items, min_item_words={m}"] = benchmark_index([str(f) for f in files], 13, m)
    rows = []
    for label, index in indexes.items():
        hit, _ = touched(index, docs)
        times = []
        for _ in range(args.repeats):
            fp, dt = touched(index, clean_docs)
            times.append(dt)
        missed = Counter(p.benchmark for i, p in enumerate(planted) if f"p{i}" not in hit)
        rows.append((label, len(hit) / len(docs), len(fp) / len(clean_docs), len(fp),
                     len(clean_docs) / statistics.median(times), missed))
        by_kind = Counter(kind_of[int(i[1:])] for i in fp)
        print(f"{label}: clean documents touched by kind {dict(by_kind)}")
    print(f"\n{'index':<28}{'recall':>8}{'clean touched':>15}{'docs/s':>9}")
    for label, rec, fpr, nfp, speed, _ in rows:
        print(f"{label:<28}{rec:>8.3f}{fpr:>10.2%} ({nfp}){speed:>9.0f}")
    print("\nmissed per benchmark (first index, last index):")
    print(json.dumps({rows[0][0]: dict(rows[0][5]), rows[-1][0]: dict(rows[-1][5])}, indent=None))


if __name__ == "__main__":
    main()
