"""The eval stage's contamination report on a large corpus: the scan of the kept documents
as it was (one process, text normalised by a regex over every character, each run of words
looked up by binary search) against the bit table in front of the search, then the byte
table for ASCII in the normaliser, on one process and on several, measured in the same run
on the same files, with the reports checked equal.

The corpus is C4's sample and TinyStories' under fresh ids in three domains, written in
the data stage's format (``docs-*.jsonl``, ``--docs-per-file`` a file), with a share of
the documents carrying an item of one benchmark; the benchmarks are the eval stage's
with ``core``: HellaSwag and every llm-foundry file under ../shared/data/eval. The index
is built once, before the timings (its cost is printed: it does not grow with the corpus).

    python bench/contamination_scale.py --mb 64 --workers 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import announce, at_least  # noqa: E402

from pretrain.data import decontam  # noqa: E402
from pretrain.data.benchmarks import benchmark_texts  # noqa: E402
from pretrain.data.decontam import is_member, union  # noqa: E402
from pretrain.data.docs import doc_files, read_docs  # noqa: E402
from pretrain.data.minhash import NOT_WORD  # noqa: E402
from pretrain.eval import contamination as c  # noqa: E402
from pretrain.eval.config import EvalConfig  # noqa: E402
from pretrain.eval.files import scored  # noqa: E402
from pretrain.tokenizer.shards import Splitter  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def regex_prep(text: str) -> str:
    """The normaliser as it was: the regex over every character."""
    low = text.lower()
    if len(low) != len(text):
        low = "".join(ch.lower()[:1] for ch in text)
    return NOT_WORD.sub(" ", low)


def with_regex_prep(run: Callable[[], Any]) -> Callable[[], Any]:
    def timed() -> Any:
        kept, decontam._prep = decontam._prep, regex_prep
        try:
            return run()
        finally:
            decontam._prep = kept
    return timed


class BinarySearch:
    """The lookup as it was: a binary search of every run of words."""

    def __init__(self, hashes: np.ndarray):
        self.sorted = hashes

    def contains(self, x: np.ndarray) -> np.ndarray:
        return is_member(x, self.sorted)


def write_corpus(out: Path, mb: float, per_file: int, items: list[str], share: float) -> int:
    texts = [json.loads(line)["text"] for line in open(SHARED / "webtext" / "c4_sample.jsonl")]
    stories = (SHARED / "tinystories" / "tinystories-valid-sample.txt").read_text()
    texts += [s.strip() for s in stories.split("<|endoftext|>") if s.strip()]
    rng = random.Random(0)
    size = n = 0
    f = None
    while size < mb * 1e6:
        if n % per_file == 0:
            f = open(out / f"docs-{n // per_file:05d}.jsonl", "w", encoding="utf-8")
        text = rng.choice(texts)
        if rng.random() < share:
            text = f"{text} {rng.choice(items)} {rng.choice(texts)[:200]}"
        line = json.dumps({"id": f"b{n}", "text": text, "meta": {},
                           "domain": ("web", "stories", "forum")[n % 3]}) + "\n"
        f.write(line)  # type: ignore[union-attr]
        size += len(line)
        n += 1
        if n % per_file == 0:
            f.close()  # type: ignore[union-attr]
    if f:
        f.close()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=at_least(1e-06, float), default=64, help="corpus size, MB of JSON lines")
    ap.add_argument("--docs-per-file", type=at_least(1), default=2000)
    ap.add_argument("--workers", type=at_least(1), default=2)
    ap.add_argument("--share", type=float, default=0.02, help="of documents with an item")
    ap.add_argument("--rounds", type=at_least(1), default=3)
    args = ap.parse_args()
    announce()
    files = scored(EvalConfig(tasks=["hellaswag"], tasks_dir=str(SHARED / "eval"), core=True))
    t0 = time.perf_counter()
    index = c._index(files, 13, 6)
    every = union(index)
    print(f"index of {len(files)} benchmarks, {sum(len(s) for s in every.values()):,} hashes: "
          f"{time.perf_counter() - t0:.1f} s (once per report)")
    items = [t for p in list(files.values())[:6] for t in benchmark_texts(p)[:200]]
    rule = Splitter(0.02, 2)
    plain = {k: BinarySearch(s.sorted) for k, s in every.items()}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        n = write_corpus(data, args.mb, args.docs_per_file, items, args.share)
        paths = doc_files(data)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"corpus: {n:,} documents, {mb:.1f} MB in {len(paths)} files")
        runs = {
            "one process, binary search, regex (before)": with_regex_prep(
                lambda: c._settle([c._scan(read_docs(data), index, plain, rule, 256)], rule)),
            "one process, bit table, regex": with_regex_prep(
                lambda: c._settle([c._scan(read_docs(data), index, every, rule, 256)], rule)),
            "one process, bit table, byte table":
                lambda: c._settle([c._scan(read_docs(data), index, every, rule, 256)], rule),
            f"{args.workers} processes, bit table, byte table":
                lambda: c._settle(c._parallel(paths, args.workers, index, every, rule, 256),
                                  rule),
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        results = {}
        for _ in range(args.rounds):
            for name, run in runs.items():
                t = time.perf_counter()
                results[name] = c._summary(index, files, {}, run())
                times[name].append(time.perf_counter() - t)
    first = next(iter(results.values()))
    assert all(r == first for r in results.values()), "the reports differ"
    hit = sum(r["docs"] for r in first.values())
    print(f"reports equal: {first[next(iter(first))]['train_docs']:,} training documents, "
          f"{hit:,} benchmark hits")
    base = statistics.median(times[next(iter(runs))])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<44} {med:7.2f} s  {mb / med:6.1f} MB/s  {base / med:5.2f}x the before "
              f"(median of {len(ts)})")


if __name__ == "__main__":
    main()
