"""CPU speedrun on Tiny Shakespeare: best held-out bits per byte after a fixed training time.

Run:  python bench/speedrun_shakespeare.py [--budgets 30,120] [--ref-steps 2000] [--set KEY=V ...]

The held-out split is nanoGPT's: the last 10% of the characters of input.txt (the first
90% train). Ours is ``pretrain run -c speedrun-shakespeare`` (BPE tokenizer trained on the
train part only, LLaMA-style model) with ``train.time_budget_s`` set to each budget, so the
learning-rate schedule ends with the time. The reference, run in the same invocation, is
nanoGPT's CPU recipe for shakespeare_char (characters as tokens, GPT-2 4 layers x 4 heads
x 128, 64-character context, batch 12, 2000 steps, lr 1e-3 warmup 100 cosine to 1e-4,
no dropout), with the reference model of ``train_vs_reference.py``.

Both are scored the same way on the whole held-out split: the text cut into windows at
stride seq_len, each token predicted once with 0..seq_len-1 tokens of context; bits per
byte = summed NLL / ln 2 / UTF-8 bytes (the text is ASCII: 1 byte = 1 character). Training
time counts optimizer steps only, not evaluation or data preparation. The load average is
printed: numbers from a busy machine are not comparable.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import announce, at_least
from train_vs_reference import DATA, RefGPT, reference_step

from pretrain import stages
from pretrain.config import parse_override_args
from pretrain.pipeline import run_stages
from pretrain.run_config import load_config


def reference(text: str, steps: int) -> dict[str, float]:
    """nanoGPT's CPU shakespeare_char recipe; returns train time and val bpb."""
    L, H, D, T, B = 4, 4, 128, 64, 12
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = np.fromiter((lookup[c] for c in text), dtype=np.int64, count=len(text))
    n = int(len(ids) * 0.9)
    train, val = ids[:n], ids[n:]
    torch.manual_seed(1337)
    rng = np.random.default_rng(1337)
    model = RefGPT(L, H, D, T, len(chars))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    warmup, lr, min_lr = 100, 1e-3, 1e-4
    t_train = 0.0
    for it in range(steps):
        t0 = time.perf_counter()
        if it < warmup:
            g_lr = lr * (it + 1) / (warmup + 1)
        else:
            g_lr = min_lr + 0.5 * (1 + math.cos(math.pi * (it - warmup) / (steps - warmup))) * (lr - min_lr)
        for g in opt.param_groups:
            g["lr"] = g_lr
        reference_step(model, opt, train, T, B, rng)
        t_train += time.perf_counter() - t0
    model.eval()
    nll, count = 0.0, 0
    starts = range(0, len(val) - 1, T)
    full = [s for s in starts if s + T + 1 <= len(val)]
    batches = [np.stack([val[s:s + T + 1] for s in full[i:i + 64]]) for i in range(0, len(full), 64)]
    batches += [val[s:][None] for s in starts if s + T + 1 > len(val)]  # the shorter last one
    with torch.no_grad():
        for b in batches:
            xy = torch.from_numpy(b)
            k = xy[:, 1:].numel()
            nll += float(model(xy[:, :-1], xy[:, 1:])) * k  # the model returns the mean
            count += k
    nbytes = len(text[n + 1:].encode("utf-8"))  # the first character is not predicted
    return {"steps": steps, "train_s": t_train, "loss_per_char": nll / count,
            "bpb": nll / math.log(2) / nbytes}


def ours(budget: float, overrides: list[tuple[str, str]]) -> dict[str, float]:
    cfg = load_config("speedrun-shakespeare",
                      [("train.time_budget_s", str(budget)), *overrides])
    run_stages(cfg, stages.names(), {"train"})  # timed here, never taken from a --workdir's last run
    root = Path(cfg.runs_dir) / cfg.name
    tr = json.loads((root / "train" / "manifest.json").read_text(encoding="utf-8"))["counts"]
    ev = json.loads((root / "eval" / "manifest.json").read_text(encoding="utf-8"))["counts"]["all"]
    return {"steps": tr["steps"], "train_s": tr["train_time_s"], "tok_per_s": tr["tok_per_s"],
            "bpb": ev["bpb"], "tokens": ev["tokens"], "bytes": ev["bytes"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="30,120", help="training seconds, comma-separated")
    ap.add_argument("--ref-steps", type=at_least(1), default=2000)
    ap.add_argument("--workdir", default="", help="default: a new temporary folder")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for ours, e.g. model.d_model=192")
    args = ap.parse_args()
    announce()
    if not DATA.is_file():
        raise SystemExit(f"needs {DATA}")
    overrides = parse_override_args([f"--{kv}" for kv in args.set])
    text = DATA.read_text(encoding="utf-8")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="speedrun-"))
    work.mkdir(parents=True, exist_ok=True)
    # the config downloads input.txt; here it reads the shared copy (same sha256)
    overrides = [(f"data.sources.{i}.paths", json.dumps([str(DATA.resolve())]))
                 for i in (0, 1)] + overrides
    os.chdir(work)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load avg {os.getloadavg()[0]:.2f}; work dir {work}")
    ref = reference(text, args.ref_steps)
    print(f"reference (nanoGPT CPU recipe, chars): {ref['steps']} steps in {ref['train_s']:.1f} s, "
          f"val {ref['loss_per_char']:.4f} nats/char = {ref['bpb']:.4f} bits/byte")
    for budget in (float(b) for b in args.budgets.split(",")):
        r = ours(budget, overrides)
        print(f"ours, {budget:.0f} s budget: {r['steps']} steps in {r['train_s']:.1f} s, "
              f"{r['tok_per_s']:,.0f} tok/s, val {r['bpb']:.4f} bits/byte over {r['bytes']:,} bytes "
              f"({r['bytes'] / r['tokens']:.2f} bytes/token); reference/ours bpb "
              f"{ref['bpb'] / r['bpb']:.3f}x")


if __name__ == "__main__":
    main()
