"""What many small input files cost the data stage: ``--files`` JSON-lines files of one
record each against one file holding the same records, through the whole data stage
(default filters, dedup), in this process.

    .venv/bin/python bench/many_files.py [--files 3000] [--repeats 3]

Small local files share a task (``data.group_bytes``, ``runner.GROUP_FILES``); the third
layout (``group_bytes = 0``) gives every file a task of its own, as the stage did before. Each timing
is the median of ``--repeats`` runs, the layouts interleaved; ratios compare runs of this
process only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _common import announce, at_least

from pretrain.data import stage
from pretrain.data.config import DataConfig
from pretrain.data.sources import LocalSource

WORDS = ("river town school market road bridge valley farmer house stone trade coast "
         "museum library story winter summer harvest village mill church field forest "
         "the the and and of to in with that was").split()


def _record(i: int) -> str:
    rng = random.Random(i)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "."
                 for _ in range(8)]
    return json.dumps({"id": f"d{i}", "text": f"Record {i}. " + " ".join(sentences)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=at_least(1), default=3000)
    ap.add_argument("--repeats", type=at_least(1), default=3)
    args = ap.parse_args()
    announce()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "one").mkdir()
        (root / "many").mkdir()
        lines = [_record(i) for i in range(args.files)]
        (root / "one" / "all.jsonl").write_text("\n".join(lines) + "\n")
        for i, line in enumerate(lines):
            (root / "many" / f"f{i:06d}.jsonl").write_text(line + "\n")

        def run(folder: str, ungrouped: bool = False) -> int:
            out = root / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            cfg = DataConfig(sources=[LocalSource(paths=[str(root / folder / "*.jsonl")])],
                             **({"group_bytes": 0} if ungrouped else {}))
            with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):
                return int(stage.process(cfg, out).counts()["docs_total"])

        layouts = {"one file": lambda: run("one"), "many, grouped": lambda: run("many"),
                   "many, a task each": lambda: run("many", ungrouped=True)}
        times: dict[str, list[float]] = {k: [] for k in layouts}
        kept: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, fn in layouts.items():
                t0 = time.perf_counter()
                kept[name] = fn()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        print(f"{name:<20} {t:7.2f} s  ({kept[name]} documents kept)")
    one = med["one file"]
    print(f"{args.files} files, grouped: {med['many, grouped'] / one:.2f}x the time of one "
          f"file; a task each: {med['many, a task each'] / one:.2f}x "
          f"(medians of {args.repeats})")


if __name__ == "__main__":
    main()
