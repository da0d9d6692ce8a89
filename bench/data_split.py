"""One large parquet file through the data stage: read whole by one task, against cut into
tasks of row groups (``data.task_bytes``) run by ``data.workers`` processes, in one run.

Run:  python bench/data_split.py [--copies 8] [--workers 2] [--rounds 3] [--part-mb 4]

Needs ``../shared/data/webtext/c4_sample.jsonl`` (1,000 C4 documents, 2.2 MB). The file is
``--copies`` copies of it, each document of copy k prefixed with a line naming the copy
(so that no copy is an exact duplicate; MinHash still finds them, after every filter has
run), in row groups of 500 documents. Both settings run the same stage on the same file,
interleaved over ``--rounds``; the median wall time of each is printed with its ratio,
and the two outputs are checked to hold the same documents.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import announce, at_least

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def build(path: Path, copies: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    src = SHARED / "webtext" / "c4_sample.jsonl"
    if not src.is_file():
        raise SystemExit(f"needs {src}")
    recs = [json.loads(x) for x in src.open(encoding="utf-8")]
    rows = [{"id": f"c{k}-{i}", "text": f"Copy {k} of the sample.\n{r['text']}",
             "url": r.get("url", "")} for k in range(copies) for i, r in enumerate(recs)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=500)
    return len(rows)


def run(path: Path, out: Path, workers: int, task_bytes: int) -> tuple[float, list, int]:
    from pretrain.data.config import DataConfig
    from pretrain.data.docs import read_docs
    from pretrain.data.runner import plan_tasks
    from pretrain.data.sources import LocalSource
    from pretrain.data.stage import process
    cfg = DataConfig(sources=[LocalSource(paths=[str(path)])], workers=workers,
                     task_bytes=task_bytes)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    process(cfg, out)
    took = time.perf_counter() - t0
    return took, [d["id"] for d in read_docs(out)], len(plan_tasks(cfg))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=at_least(1), default=8)
    ap.add_argument("--workers", type=at_least(1), default=2)
    ap.add_argument("--rounds", type=at_least(1), default=3)
    ap.add_argument("--part-mb", type=at_least(1e-06, float), default=4.0, help="data.task_bytes, in MB")
    args = ap.parse_args()
    announce()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.parquet"
        n = build(path, args.copies)
        size = path.stat().st_size
        part = int(args.part_mb * 1e6)
        times: dict[str, list[float]] = {"whole": [], "parts": []}
        kept: dict[str, list] = {}
        tasks: dict[str, int] = {}
        for r in range(args.rounds):
            for name, task_bytes in (("whole", 0), ("parts", part)):
                took, ids, tasks[name] = run(path, Path(tmp) / f"{name}-{r}", args.workers,
                                             task_bytes)
                times[name].append(took)
                kept[name] = ids
        if kept["whole"] != kept["parts"]:
            raise SystemExit("failed: the split run kept other documents than the whole one")
        load = os.getloadavg()[0]
        print(f"{n:,} documents, {size / 1e6:.1f} MB parquet, {args.workers} workers, "
              f"{args.rounds} rounds, load {load:.1f} at the end")
        med = {k: statistics.median(v) for k, v in times.items()}
        for name in ("whole", "parts"):
            print(f"{name:6s} {tasks[name]:3d} tasks  median {med[name]:6.1f} s  "
                  f"({', '.join(f'{t:.1f}' for t in times[name])})")
        print(f"parts/whole speed {med['whole'] / med['parts']:.2f}x, "
              f"{len(kept['parts']):,} documents kept by both")


if __name__ == "__main__":
    main()
