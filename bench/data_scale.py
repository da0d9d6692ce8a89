"""How the data side's memory grows with the corpus: each part at n and 4n documents.

Four parts, each in its own process, measured with ``tracemalloc`` (Python objects and
numpy arrays; mapped files and pyarrow's pool are not counted) at n and 4n documents:

- ``stage``: the data stage (one task, MinHash and exact dedup on) on short synthetic
  documents, all kept;
- ``dropped``: the same stage on a file whose documents are all dropped (too long);
- ``dedup``: ``deduplicate`` on synthetic per-task keys, a quarter of them copies;
- ``mixture``: ``MixtureWindows`` over a synthetic shard index of three domains.

Prints the peak, the bytes per document it grew by from n to 4n (the part that scales:
100M documents times that is what a big run needs) and the ratio of the two peaks
(1.0 = flat; 4.0 = linear from zero). The reference is each part at n in the same run.

    python bench/data_scale.py                      # n = 10,000 (stage parts), 500,000 (others)
    python bench/data_scale.py --parts dedup --n 2000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from _common import announce, at_least, pick


def _stage(n: int, folder: Path, dropped: bool) -> None:
    from pretrain.data import stage
    from pretrain.data.config import CleanConfig, DataConfig
    from pretrain.data.sources import LocalSource
    words = [f"w{i}" for i in range(5000)]
    with open(folder / "in.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            body = " ".join(words[(i * 7 + j * 13) % 5000] for j in range(60 if not dropped else 200))
            f.write(json.dumps({"id": f"d{i}", "text": f"Document {i} says {body}."}) + "\n")
        if dropped:   # one kept, so that the stage has an output
            f.write(json.dumps({"id": "kept", "text": "A short kept document. " * 20}) + "\n")
    (folder / "out").mkdir()
    cfg = DataConfig(sources=[LocalSource(paths=[str(folder / "in.jsonl")], quality="none")],
                     clean=CleanConfig(max_chars=1000), workers=1)
    tracemalloc.start()
    stage.process(cfg, folder / "out")


def _dedup(n: int, folder: Path) -> None:
    from pretrain.data.config import DataConfig, MinHashConfig
    from pretrain.data.dedup import deduplicate
    from pretrain.data.funnel import Funnel
    from pretrain.data.runner import Task
    rng, n_tasks = np.random.default_rng(0), 4
    per = n // n_tasks
    for t in range(n_tasks):
        k = rng.integers(0, 2**62, (per, 2 + MinHashConfig().bands), dtype=np.int64).astype(np.uint64)
        j = np.flatnonzero(rng.random(per) < 0.25)[1:]
        prev = (rng.random(len(j)) * j).astype(np.int64)
        k[j[::2]] = k[prev[::2]]
        k[j[1::2], 2] = k[prev[1::2], 2]
        np.save(folder / f"t-{t:05d}.keys.npy", k)
        (folder / f"t-{t:05d}.jsonl").write_text(
            "".join(f'{{"id": "d{t}-{i}"}}\n' for i in range(per)), encoding="utf-8")
    tracemalloc.start()
    deduplicate(DataConfig(), [Task(t, 0) for t in range(n_tasks)], folder, Funnel())


def _mixture(n: int, folder: Path) -> None:
    from pretrain.train.config import MixtureEntry
    from pretrain.train.data import MixtureWindows
    rng, per = np.random.default_rng(0), 250_000
    index = []
    for s in range(0, n, per):
        m = min(per, n - s)
        lengths = rng.integers(100, 2000, m)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        index.append(np.column_stack([starts, lengths, rng.integers(0, 3, m)]).astype(np.int64))
    shards = SimpleNamespace(index=index, domains=["a", "b", "c"],
                             shards=[np.zeros(1, np.uint16)] * len(index))
    tracemalloc.start()
    MixtureWindows(shards, 1024, 0, [MixtureEntry(d) for d in "abc"], 1000, 8)


def child(part: str, n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        if part in ("stage", "dropped"):
            _stage(n, folder, part == "dropped")
        elif part == "dedup":
            _dedup(n, folder)
        else:
            _mixture(n, folder)
        peak = tracemalloc.get_traced_memory()[1]
        print(json.dumps({"peak": peak, "s": time.perf_counter() - t0}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="stage,dropped,dedup,mixture")
    ap.add_argument("--n", type=at_least(0), default=0, help="documents (default: 10,000 for the "
                    "stage parts, 500,000 for the others); each part also runs at 4n")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]))
    parts = pick(ap, "--parts", args.parts, ["stage", "dropped", "dedup", "mixture"])
    announce()
    print(f"{'part':<9}{'n':>10}{'peak n':>10}{'peak 4n':>10}{'B/doc':>8}{'4n/n':>7}"
          f"{'s at 4n':>9}")
    for part in parts:
        n = args.n or (10_000 if part in ("stage", "dropped") else 500_000)
        got = []
        for size in (n, 4 * n):
            proc = subprocess.run([sys.executable, __file__, "--child", part, str(size)],
                                  capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{part} at n={size} failed:\n{proc.stderr[-3000:]}")
            got.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        small, big = got[0]["peak"], got[1]["peak"]
        print(f"{part:<9}{n:>10,}{small / 1e6:>9.1f}M{big / 1e6:>9.1f}M"
              f"{(big - small) / (3 * n):>8.0f}{big / small:>7.2f}{got[1]['s']:>9.1f}")


if __name__ == "__main__":
    main()
