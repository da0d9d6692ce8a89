"""The memorization probe on a large training split: its time and peak memory against one
plain read of the same tokens (``np.sum`` over every shard), measured in the same run.

The split is synthetic (random tokens, documents of random length, a share of them copied
again elsewhere) and written straight in the tokenize stage's shard format, so a split of
hundreds of millions of tokens takes seconds to make. The model is a tiny one: the probe's
cost at scale is finding the documents and scanning the split, not the 3 x 64 forward
passes.

    python bench/memorization_scale.py --tokens 200e6 --doc-tokens 100 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import announce, at_least  # noqa: E402

from pretrain.eval import memorization  # noqa: E402
from pretrain.eval.config import EvalConfig  # noqa: E402
from pretrain.model.transformer import ModelConfig, Transformer  # noqa: E402
from pretrain.tokenizer.shards import FORMAT  # noqa: E402

VOCAB = 8192


def write_split(out: Path, split: str, tokens: int, doc_tokens: int, dup_share: float,
                shard_tokens: int, rng: np.random.Generator) -> dict:
    """Shards of ``tokens`` random tokens, documents of 1..2*doc_tokens tokens each
    starting with BOS (id 0); ``dup_share`` of the documents repeat an earlier one's
    opening."""
    shards, n_docs, left = [], 0, tokens
    while left > 0:
        n = min(shard_tokens, left)
        arr = rng.integers(2, VOCAB, n, dtype=np.uint16)
        lengths = rng.integers(1, 2 * doc_tokens, n // doc_tokens + 2)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        starts = starts[starts < n]
        lengths = np.diff(np.append(starts, n))
        arr[starts] = 0
        copy = np.flatnonzero(rng.random(len(starts)) < dup_share)
        for i in copy[copy > 0]:   # the opening 64 tokens of an earlier document
            src = starts[rng.integers(0, i)]
            k = min(64, lengths[i], n - src)
            arr[starts[i]:starts[i] + k] = arr[src:src + k]
        name = f"{split}-{len(shards):05d}"
        arr.tofile(out / f"{name}.bin")
        idx = np.stack([starts, lengths, np.zeros_like(starts)], axis=1).astype(np.int64)
        np.save(out / f"{name}.idx.npy", idx)
        shards.append(name)
        n_docs += len(starts)
        left -= n
    return {"shards": shards, "tokens": tokens, "docs": n_docs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=at_least(1, float), default=200e6, help="training tokens")
    ap.add_argument("--doc-tokens", type=at_least(1), default=100, help="mean document length")
    ap.add_argument("--dup-share", type=float, default=0.001)
    ap.add_argument("--rounds", type=at_least(1), default=3)
    ap.add_argument("--folder", type=Path, default=None,
                    help="where to write the split (default: a temporary folder)")
    args = ap.parse_args()
    if args.folder is not None and not args.folder.is_dir():
        raise SystemExit(f"--folder: no folder {args.folder}")
    announce()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        splits = {"train": write_split(out, "train", int(args.tokens), args.doc_tokens,
                                       args.dup_share, 1 << 27, rng),
                  "val": write_split(out, "val", 100_000, args.doc_tokens, 0, 1 << 27, rng)}
        meta = {"format": FORMAT, "dtype": "uint16", "vocab_size": VOCAB, "bos_id": 0,
                "eos_id": 1, "domains": ["d"], "splits": splits}
        (out / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        print(f"split: {splits['train']['tokens']:,} train tokens, "
              f"{splits['train']['docs']:,} documents, written in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        model = Transformer(ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4,
                                        seq_len=128)).eval()
        cfg = EvalConfig(memorization_docs=64)
        read, probe = [], []
        rep: dict = {}
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for n in splits["train"]["shards"]:   # every token read once
                np.sum(np.memmap(out / f"{n}.bin", dtype=np.uint16, mode="r"), dtype=np.uint64)
            read.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rep = memorization.probe(model, out, cfg)
            probe.append(time.perf_counter() - t0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        r, p = statistics.median(read), statistics.median(probe)
        print(f"one read of the train tokens: {r:.2f} s (median of {args.rounds})")
        print(f"memorization probe:           {p:.2f} s = {p / r:.1f}x the read")
        print(f"peak RSS of the process: {peak:.2f} GiB")
        print(memorization.table(rep))


if __name__ == "__main__":
    main()
