"""Our training step vs a reference loop written the nanoGPT way, same shapes, one invocation.

Run:  python bench/train_vs_reference.py [--steps 12] [--rounds 6] [--shapes tiny,mid,baby]

The reference is a plain PyTorch GPT-2 (LayerNorm, GELU MLP, SDPA causal attention, tied
embeddings, no biases as in nanoGPT's `bias=False`) trained with AdamW and grad clipping on
random windows of a uint16 array, written here from nanoGPT's description (no code copied).
Ours is `pretrain.train.loop.Trainer` on token shards of the same text (Tiny Shakespeare,
bytes) with the same model (`arch = "gpt2"`, `bias = false`, `gelu_approximate = "none"`:
nanoGPT's bias=False and PyTorch's exact GELU) and with the LLaMA-style default (more
FLOPs per token at these shapes: SwiGLU's three matrices; compare its MFU).
Per shape and loop: median step time over the timed steps of every round (rounds are
interleaved), tokens/s, MFU against the fp32 matmul peak measured in this run, and the
ratio ours/reference. Rounds alternate the order of the loops, and each loop of each round
runs in a fresh process (``--no-isolate``: all in this one). Load average is printed:
compare numbers from a quiet run only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pretrain.model.config import ModelConfig
from pretrain.tokenizer import shards
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import BOS, EOS, TokenizeConfig
from pretrain.train.config import TrainConfig
from pretrain.train.loop import RunPaths, Trainer
from pretrain.train.optim import measured_peak_flops
from pretrain.train.parallelize import Layout, build

SHAPES = {  # name: (layers, heads, d_model, seq_len, batch) as in the reference notes
    "tiny": (4, 4, 128, 64, 12),
    "mid": (4, 4, 128, 256, 32),
    "baby": (6, 6, 384, 256, 8),
}
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


class RefBlock(nn.Module):
    def __init__(self, d: int, h: int):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.out = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class RefGPT(nn.Module):
    def __init__(self, layers: int, h: int, d: int, T: int, V: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, d), nn.Embedding(T, d)
        self.blocks = nn.ModuleList(RefBlock(d, h) for _ in range(layers))
        self.ln = nn.LayerNorm(d, bias=False)
        self.head = nn.Linear(d, V, bias=False)
        self.head.weight = self.wte.weight
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.ln(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))


def reference_step(model: RefGPT, opt: torch.optim.Optimizer, data: np.ndarray, T: int, B: int,
                   rng: np.random.Generator) -> float:
    """One nanoGPT-style step on random windows of ``data``; returns the loss."""
    ix = rng.integers(0, len(data) - T - 1, B)
    xy = torch.from_numpy(np.stack([data[i:i + T + 1].astype(np.int64) for i in ix]))
    loss = model(xy[:, :-1], xy[:, 1:])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def reference_steps(data: np.ndarray, shape: tuple, steps: int) -> list[float]:
    L, H, D, T, B = shape
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = RefGPT(L, H, D, T, 258)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        reference_step(model, opt, data, T, B, rng)
        times.append(time.perf_counter() - t0)
    return times


def _model_cfg(arch: str, shape: tuple) -> ModelConfig:
    L, H, D, T, _ = shape
    gpt2 = dict(bias=False, gelu_approximate="none") if arch == "gpt2" else {}
    return ModelConfig(arch=arch, d_model=D, n_layers=L, n_heads=H, n_kv_heads=H, seq_len=T,  # type: ignore[arg-type]
                       vocab_size=258, tie_embeddings=True, **gpt2)


def our_steps(tokens: Path, shape: tuple, steps: int, arch: str, compile_: bool) -> list[float]:
    L, H, D, T, B = shape
    cfg = _model_cfg(arch, shape)
    tc = TrainConfig(steps=steps, batch_size=B, warmup_steps=1, eval_every=10**6,
                     eval_batches=1, log_every=1, checkpoint_every=0, lr=1e-3, compile=compile_)
    torch.manual_seed(0)
    layout = Layout(tc.parallel.degrees(1))
    model, net = build(cfg, tc, layout, torch.device("cpu"))  # compile per block, as training does
    t = Trainer(tc, model, tokens, RunPaths(tokens), 0, torch.device("cpu"), layout=layout, net=net)
    t.run()
    return [T * B / r["tok_per_s"] for r in t.history]


def _in_subprocess(tokens: Path, shape: str, steps: int, which: tuple | None) -> list[float]:
    loop = "ref" if which is None else f"{which[0]}+{'compile' if which[1] else 'eager'}"
    out = subprocess.run([sys.executable, __file__, "--one", str(tokens), shape, str(steps), loop],
                         capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--skip", type=int, default=3, help="untimed warm-up steps per run")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--shapes", default="tiny,mid,baby")
    ap.add_argument("--compile", action="store_true", help="also time ours with torch.compile")
    ap.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                    help="each loop and round in a fresh process (default), so that no loop "
                         "inherits another's allocator and cache state")
    ap.add_argument("--one", nargs=4, metavar=("TOKENS", "SHAPE", "STEPS", "LOOP"),
                    help=argparse.SUPPRESS)  # the child of --isolate
    args = ap.parse_args()
    if args.one:
        tokens, shape_name, steps, loop = args.one
        text = DATA.read_bytes()
        data = np.frombuffer(text, dtype=np.uint8).astype(np.uint16)
        shape = SHAPES[shape_name]
        if loop == "ref":
            ts = reference_steps(data, shape, int(steps))
        else:
            arch, compiled = loop.split("+")
            ts = our_steps(Path(tokens), shape, int(steps), arch, compiled == "compile")
        print(json.dumps(ts))
        return
    if not DATA.is_file():
        raise SystemExit(f"needs {DATA}")
    text = DATA.read_bytes()
    data = np.frombuffer(text, dtype=np.uint8).astype(np.uint16)
    tmp = Path(tempfile.mkdtemp())
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    docs = [{"id": str(i), "domain": "text", "text": text[i:i + 20000].decode("utf-8", "replace")}
            for i in range(0, len(text), 20000)]
    shards.run(TokenizeConfig(val_fraction=0.1), tok, iter(docs), ["text"], tmp, {})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load avg {os.getloadavg()[0]:.2f}")
    peak = measured_peak_flops(torch.device("cpu"), reps=5) or 1.0
    print(f"fp32 matmul peak (n=2048, this run): {peak / 1e9:.0f} GFLOP/s")
    loops = [("reference (nanoGPT-style GPT-2)", None), ("ours, same GPT-2", ("gpt2", False)),
             ("ours, llama", ("llama", False))]
    if args.compile:
        loops.append(("ours, llama + compile", ("llama", True)))
    for name in args.shapes.split(","):
        shape = SHAPES[name]
        L, H, D, T, B = shape
        times: dict[str, list[float]] = {n: [] for n, _ in loops}
        for r in range(args.rounds):
            # short rounds, order reversed every other round: a slow spell of this shared
            # machine then hits every loop alike instead of biasing whichever ran during it
            for label, which in (loops if r % 2 == 0 else loops[::-1]):
                ts = _in_subprocess(tmp, name, args.steps, which) if args.isolate else (
                    reference_steps(data, shape, args.steps) if which is None
                    else our_steps(tmp, shape, args.steps, *which))
                times[label] += ts[args.skip:]
        print(f"\n{name}: L{L} H{H} E{D} T{T} B{B}")
        ref_ms = statistics.median(times[loops[0][0]])
        for label, which in loops:
            ms = statistics.median(times[label])
            mc = _model_cfg(which[0] if which else "gpt2", shape)
            mfu = mc.flops_per_token() * T * B / ms / peak
            print(f"  {label:34} {ms * 1e3:8.1f} ms/step  {T * B / ms:9,.0f} tok/s  "
                  f"MFU {mfu:5.1%}  ours/ref {ref_ms / ms:5.2f}x")
    print(f"\nload avg after: {os.getloadavg()[0]:.2f}")



if __name__ == "__main__":
    main()
