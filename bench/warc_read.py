"""What reading WARC records costs: our framing (``data/warc.py``: each gzip member on its
own, each record checked to end where its Content-Length says) against fastwarc's
``ArchiveIterator`` over the same bytes, and both against the whole read with extraction.

    .venv/bin/python bench/warc_read.py [--copies 20] [--repeats 7]

The file is the shared Dolma WARC sample (48 records, 22 HTML responses), written
``--copies`` times into one .warc.gz (its gzip members kept) and once uncompressed. Each
timing is the median of ``--repeats`` runs, the readers interleaved; the ratios compare
runs of this process only. Needs ``pip install 'pretrain[warc]'``.
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
from fastwarc.warc import ArchiveIterator

from pretrain.data.warc import WarcSource
from pretrain.data.warcframe import records

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "webtext" / \
    "dolma_sample-0000.warc.gz"


def ours(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(len(r.block) for r in records(f) if hasattr(r, "block"))


def fastwarc(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(len(r.reader.read()) for r in ArchiveIterator(f, parse_http=False))


def extracted(path: Path) -> int:
    return sum(len(getattr(d, "text", "")) for d in WarcSource(paths=[str(path)]).read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=at_least(1), default=20)
    ap.add_argument("--repeats", type=at_least(1), default=7)
    args = ap.parse_args()
    announce()
    if not SAMPLE.exists():
        sys.exit(f"{SAMPLE} is missing (the shared data folder)")
    with tempfile.TemporaryDirectory() as tmp:
        gz, plain = Path(tmp) / "big.warc.gz", Path(tmp) / "big.warc"
        gz.write_bytes(SAMPLE.read_bytes() * args.copies)   # gzip members concatenated
        plain.write_bytes(gzip.decompress(gz.read_bytes()))
        readers: dict[str, Callable[[Path], int]] = {
            "ours": ours, "fastwarc": fastwarc, "with extraction": extracted}
        for path in (gz, plain):
            times: dict[str, list[float]] = {name: [] for name in readers}
            sizes = {name: fn(path) for name, fn in readers.items()}   # warm, and checked
            assert sizes["ours"] == sizes["fastwarc"], sizes
            for _ in range(args.repeats):
                for name, fn in readers.items():
                    t0 = time.perf_counter()
                    fn(path)
                    times[name].append(time.perf_counter() - t0)
            med = {name: statistics.median(t) for name, t in times.items()}
            print(f"{path.name} ({path.stat().st_size / 1e6:.1f} MB, {48 * args.copies} records):")
            for name, t in med.items():
                print(f"  {name:16s} {t * 1e3:8.1f} ms")
            print(f"  ours / fastwarc {med['ours'] / med['fastwarc']:.2f}x; framing "
                  f"{med['ours'] / med['with extraction']:.1%} of the read with extraction")


if __name__ == "__main__":
    main()
