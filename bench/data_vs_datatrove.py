"""The data stage's filters and MinHash against datatrove and the MinHash libraries.

Run:  python bench/data_vs_datatrove.py [--rounds 3] [--copies 8]

Needs ``../shared/data/webtext/c4_sample.jsonl`` (1,000 C4 documents, 2.2 MB) and the dev
dependencies (datatrove, spaCy, datasketch). One process, one thread each; CPU seconds
(process time) are what is compared, so a busy machine moves wall time more than these.

1. Filter chain, FineWeb's order: Gopher repetition -> Gopher quality -> C4 lines ->
   FineWeb rules, each document through the chain until its first drop. Ours
   (``pretrain.data.quality``, one word split shared by the filters) against datatrove's
   classes (spaCy word split, cached between consecutive filters as in a datatrove
   pipeline). Docs/s and MB/s, and how many keep/drop decisions are the same.
   Language identification is left out of both: it is the same fastText model either way.
2. MinHash signatures, FineWeb's parameters (word 5-grams, 112 hashes), on the corpus
   repeated ``--copies`` times: ours (numpy shingle hashes fed to rensa's kernel), rensa
   fed the usual way (one Python string per shingle), datasketch (on a 200-doc slice).
3. The whole data stage on that repeated corpus (quality "none", exact + MinHash dedup),
   in a subprocess: MB/s and its peak resident memory.

Medians over ``--rounds`` rounds; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import announce, at_least

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _cpu(fn) -> tuple[float, object]:
    t = time.process_time()
    out = fn()
    return time.process_time() - t, out


def ours_chain(texts: list[str]) -> list[str | None]:
    from pretrain.data import quality as q
    rep, qual, c4, fw = (q.GopherRepetitionConfig(), q.GopherQualityConfig(), q.C4Config(),
                         q.FineWebConfig())
    out = []
    for text in texts:
        ws = q.words(text)
        reason = q.gopher_repetition(text, ws, rep) or q.gopher_quality(text, ws, qual)
        if reason is None:
            reason, text = q.c4_lines(text, c4)
            if reason is None:
                reason = q.fineweb(text, q.words(text), fw)
        out.append(reason)
    return out


def datatrove_chain(texts: list[str]) -> list[str | None]:
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    chain = [GopherRepetitionFilter(), GopherQualityFilter(),
             C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter()]
    out = []
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        reason = None
        for f in chain:
            r = f.filter(doc)
            if r is not True:
                reason = r[1] if isinstance(r, tuple) else "drop"
                break
        out.append(reason)
    return out


def shingles(text: str) -> list[str]:
    from pretrain.data.minhash import simplify
    w = simplify(text).split()
    return [" ".join(w[i:i + 5]) for i in range(max(1, len(w) - 4))]


def rensa_strings(texts: list[str]) -> None:
    import rensa
    for t in texts:
        m = rensa.RMinHash(num_perm=112, seed=1)
        m.update(shingles(t))
        m.digest()


def datasketch_sigs(texts: list[str]) -> None:
    import datasketch
    for t in texts:
        m = datasketch.MinHash(num_perm=112, seed=1)
        m.update_batch([s.encode() for s in shingles(t)])
        m.digest()


STAGE_CHILD = """
import json, sys, time
from pathlib import Path
from pretrain.data import stage
from pretrain.data.config import DataConfig
from pretrain.data.sources import LocalSource
cfg = DataConfig(sources=[LocalSource(paths=[sys.argv[1]], quality="none")], workers=1)
t = time.perf_counter()
counts = stage.process(cfg, Path(sys.argv[2])).counts()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"s": time.perf_counter() - t, "kept": counts["docs_total"],
                  "dropped": counts["dropped"], "rss_mb": hwm / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=at_least(1), default=3)
    ap.add_argument("--copies", type=at_least(1), default=8)
    args = ap.parse_args()
    announce()
    path = SHARED / "webtext" / "c4_sample.jsonl"
    if not path.exists():
        sys.exit(f"needs {path}")
    texts = [json.loads(line)["text"] for line in open(path, encoding="utf-8")]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"load average {os.getloadavg()}; corpus {len(texts)} C4 docs, {mb:.2f} MB")

    ours_t, theirs_t = [], []
    for _ in range(args.rounds):
        a, ours = _cpu(lambda: ours_chain(texts))
        b, theirs = _cpu(lambda: datatrove_chain(texts))
        ours_t.append(a)
        theirs_t.append(b)
    same = sum((x is None) == (y is None) for x, y in zip(ours, theirs, strict=True))  # type: ignore[arg-type]
    o, t = statistics.median(ours_t), statistics.median(theirs_t)
    print("\n1. filter chain (Gopher rep -> Gopher quality -> C4 -> FineWeb), CPU seconds, "
          f"median of {args.rounds}")
    print(f"   ours      {o:7.2f} s  {len(texts) / o:8.0f} docs/s  {mb / o:6.2f} MB/s")
    print(f"   datatrove {t:7.2f} s  {len(texts) / t:8.0f} docs/s  {mb / t:6.2f} MB/s")
    print(f"   ours / datatrove throughput: {t / o:.1f}x;  same keep/drop decision: "
          f"{same}/{len(texts)} ({same / len(texts):.1%}); kept ours "
          f"{sum(x is None for x in ours)}, datatrove {sum(x is None for x in theirs)}")

    from pretrain.data.config import MinHashConfig
    from pretrain.data.minhash import MinHasher
    big = texts * args.copies
    big_mb = mb * args.copies
    hasher = MinHasher(MinHashConfig())
    rows = {"ours (numpy shingles + rensa kernel)": lambda: hasher.signatures(big),
            "rensa, Python shingle strings": lambda: rensa_strings(big)}
    res: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(args.rounds):
        for k, fn in rows.items():
            res[k].append(_cpu(fn)[0])
    ds = statistics.median(_cpu(lambda: datasketch_sigs(texts[:200]))[0]
                           for _ in range(args.rounds))
    ds_mb = sum(len(t.encode()) for t in texts[:200]) / 1e6
    print(f"\n2. MinHash signatures, word 5-grams x 112 hashes, {big_mb:.1f} MB, "
          "MB per CPU-second")
    for k, v in res.items():
        print(f"   {k:<38} {big_mb / statistics.median(v):7.1f}")
    print(f"   {'datasketch (200-doc slice)':<38} {ds_mb / ds:7.1f}")

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "corpus.jsonl"
        with open(src, "w", encoding="utf-8") as f:
            for c in range(args.copies):
                for i, t in enumerate(texts):
                    # each copy edited a little: near-duplicates, not exact ones
                    f.write(json.dumps({"id": f"{c}-{i}", "text": re.sub(
                        r"\bthe\b", "a", t, count=c)}) + "\n")
        runs = []
        for r in range(args.rounds):
            out = Path(tmp) / f"out{r}"
            out.mkdir()
            res_ = subprocess.run([sys.executable, "-c", STAGE_CHILD, str(src), str(out)],
                                  capture_output=True, text=True, check=True)
            runs.append(json.loads(res_.stdout.strip().splitlines()[-1]))
        s = statistics.median(x["s"] for x in runs)
        print(f"\n3. data stage, {big_mb:.1f} MB ({len(big)} docs, {args.copies} lightly "
              f"edited copies), one worker: {s:.1f} s wall = {big_mb / s:.1f} MB/s; kept "
              f"{runs[0]['kept']}, dropped {runs[0]['dropped']}; peak RSS "
              f"{max(x['rss_mb'] for x in runs):.0f} MB")


if __name__ == "__main__":
    main()
