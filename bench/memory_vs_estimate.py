"""Peak memory of real training steps against ``plan.memory.estimate``.

Each config trains 2 steps in a fresh process (one thread) through ``parallelize.build``,
the loop's optimizer and the loop's loss (the head fused with the cross-entropy in
chunks), and reports the growth of its peak resident set over what the process held
before building the model, after the same code ran once on one row (what torch loads on
its first run, ~50 MB with 2.13 and more with 2.11, is no part of the model's memory). On CPU that is everything
the estimate counts (fp32 weights, gradients, AdamW state, saved activations, one chunk
of logits and the head's gradient) plus the allocator's slack. The children run with glibc's
``MALLOC_MMAP_THRESHOLD_=65536``: every tensor above 64 KiB gets its own mapping, returned
to the system when freed, so the resident set follows the live tensors. With glibc's
default (a threshold that grows as large blocks are freed), freed activations stay in the
heap and the resident set creeps up by 10-30% over the first steps without any tensor
being alive. Prints one line per config and the ratio.

    python bench/memory_vs_estimate.py            # the configs of tests/unit/test_plan.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CONFIGS = [
    # (name, model overrides, batch, activation checkpointing[, micro-batches a step]):
    # 7-13.5 M parameters (as printed: embeddings included), so that
    # the state and the activations are hundreds of MB, well above the allocator's noise
    ("llama 12.6M b8", dict(d_model=384, n_layers=4, n_heads=6, n_kv_heads=2, seq_len=256,
                         vocab_size=8192), 8, False),
    ("llama 12.6M b8 AC", dict(d_model=384, n_layers=4, n_heads=6, n_kv_heads=2, seq_len=256,
                            vocab_size=8192), 8, True),
    ("llama 12.6M b24", dict(d_model=384, n_layers=4, n_heads=6, n_kv_heads=2, seq_len=256,
                          vocab_size=8192), 24, False),
    ("llama 7M T1024", dict(d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, seq_len=1024,
                            vocab_size=8192), 4, False),
    ("gpt2 13.5M b8", dict(arch="gpt2", d_model=384, n_layers=4, n_heads=6, seq_len=256,
                         vocab_size=16384), 8, False),
    ("gpt2 13.5M b8 AC", dict(arch="gpt2", d_model=384, n_layers=4, n_heads=6, seq_len=256,
                            vocab_size=16384), 8, True),
    ("mla 12.4M b8", dict(arch="mla", d_model=384, n_layers=4, n_heads=6, seq_len=256,
                       vocab_size=8192, kv_lora_rank=96, qk_nope_head_dim=48,
                       qk_rope_head_dim=16, v_head_dim=48), 8, False),
    # two micro-batches a step: the first one's gradients live through the second's forward
    ("llama 12.6M b8 x2", dict(d_model=384, n_layers=4, n_heads=6, n_kv_heads=2, seq_len=256,
                            vocab_size=8192), 8, False, 2),
    ("llama 12.6M b8 AC x2", dict(d_model=384, n_layers=4, n_heads=6, n_kv_heads=2, seq_len=256,
                               vocab_size=8192), 8, True, 2),
]

CHILD = r"""
import gc, json, sys, torch
torch.set_num_threads(1)
from pretrain.model.config import ModelConfig
from pretrain.plan.memory import estimate
from pretrain.train.config import TrainConfig
from pretrain.train.optim import make_optimizer
from pretrain.train.parallelize import Layout, build

def rss(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) * 1024

def train(batch, accum):
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len + 1))
    model, net = build(cfg, tc, Layout(tc.parallel.degrees(1)), torch.device("cpu"))
    opt = make_optimizer(model, tc)
    for _ in range(2):  # the second step holds the optimizer state and the activations
        for _ in range(accum):
            _, loss = net(x[:, :-1], x[:, 1:], fused_loss=True)   # the loop's chunked loss
            (loss / accum).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

kw, batch, ac, accum = json.loads(sys.argv[1])
cfg = ModelConfig(**kw)
tc = TrainConfig(activation_checkpointing=ac)
train(1, 1)   # the same code on one row first: what torch loads on a first run (code pages,
gc.collect()  # kernel tables) is resident from then on and is none of the estimate's
before = rss("VmRSS")
train(batch, accum)
est = estimate(cfg, batch, checkpointing=ac, grad_accum=accum)
print(json.dumps({"measured": rss("VmHWM") - before, "estimate": est.total,
                  "parts": est.as_gb(), "params": cfg.num_params()}))
"""


def measure(kw: dict, batch: int, ac: bool, accum: int = 1) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([kw, batch, ac, accum])],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_all() -> list[tuple[str, dict]]:
    """Every config, two processes at a time (each on one thread)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda c: measure(*c[1:]), CONFIGS))
    return [(c[0], r) for c, r in zip(CONFIGS, results, strict=True)]


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    from _common import announce  # here, not above: tests/unit/test_plan.py loads this file
    announce()                    # as a module, without bench/ on the path
    print(f"{'config':<18}{'params':>8}{'estimate MB':>13}{'measured MB':>13}{'ratio':>8}")
    for name, r in measure_all():
        print(f"{name:<18}{r['params'] / 1e6:>7.1f}M{r['estimate'] / 2**20:>13.0f}"
              f"{r['measured'] / 2**20:>13.0f}{r['measured'] / r['estimate']:>8.3f}")


if __name__ == "__main__":
    main()
