"""What checking a .gz file before reading it costs: a local source's reader over a
gzipped JSON-lines file with ``filelines.check_gzip`` (the data stage's way since a file
failing its CRC kept its damaged text) against the same reader with the check skipped,
and the check alone.

    .venv/bin/python bench/gzip_check.py [--copies 10] [--repeats 5]

The file is the shared C4 sample written ``--copies`` times, gzip level 6. Each timing is
the median of ``--repeats`` runs, the readers interleaved; the ratios compare runs of this
process only.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import announce, at_least

from pretrain.data import filelines
from pretrain.data.sources import LocalSource

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "webtext" / "c4_sample.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=at_least(1), default=10)
    ap.add_argument("--repeats", type=at_least(1), default=5)
    args = ap.parse_args()
    announce()
    if not SAMPLE.exists():
        sys.exit(f"{SAMPLE} is missing (the shared data folder)")
    with tempfile.TemporaryDirectory() as tmp:
        body = SAMPLE.read_bytes() * args.copies
        path = Path(tmp) / "c4.jsonl.gz"
        path.write_bytes(gzip.compress(body, 6))
        source = LocalSource(paths=[str(path)])
        check = filelines.check_gzip

        def read() -> int:
            return sum(1 for _ in source.read([str(path)]))

        def unchecked() -> int:
            filelines.check_gzip = lambda p: None   # type: ignore[assignment]
            try:
                return read()
            finally:
                filelines.check_gzip = check

        runs: dict[str, list[float]] = {"reader, checked": [], "reader, unchecked": [],
                                        "check alone": []}
        work: dict[str, Callable[[], object]] = {"reader, checked": read,
                                                 "reader, unchecked": unchecked,
                                                 "check alone": lambda: check(path)}
        for _ in range(args.repeats):
            for name, fn in work.items():
                t0 = time.perf_counter()
                fn()
                runs[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in runs.items()}
    mb = len(body) / 1e6
    for name, t in med.items():
        print(f"{name:<20} {t:6.3f} s  {mb / t:6.1f} MB/s")
    print(f"checked / unchecked reader: {med['reader, checked'] / med['reader, unchecked']:.2f}x "
          f"the time ({mb:.1f} MB of JSON lines, medians of {args.repeats})")


if __name__ == "__main__":
    main()
