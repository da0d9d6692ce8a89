"""Our training step vs a reference loop written the nanoGPT way, same shapes, one invocation.

Run:  python bench/train_vs_reference.py [--steps 12] [--rounds 6] [--shapes tiny,mid,baby]
      python bench/train_vs_reference.py --device cuda --compile   # GPT-2 124M, LLaMA 153M/0.76B

The reference is a plain PyTorch GPT-2 (LayerNorm, GELU MLP, SDPA causal attention, tied
embeddings, no biases as in nanoGPT's `bias=False`) trained with fused AdamW and grad
clipping on random windows of a uint16 array, written here from nanoGPT's description (no
code copied); on a GPU (``--device cuda``) in its strong form: bf16 autocast, batches pinned
and copied ahead, one host read a step, and torch.compile with ``--compile``.
Ours is `pretrain.train.loop.Trainer` on token shards of the same text (Tiny Shakespeare,
bytes) with the same model (`arch = "gpt2"`, `bias = false`, `gelu_approximate = "none"`:
nanoGPT's bias=False and PyTorch's exact GELU) and with the LLaMA-style default (more
FLOPs per token at these shapes: SwiGLU's three matrices; compare its MFU). The loop
``ref-llama`` is a second reference, a LLaMA written the llama2.c way (``nn.RMSNorm``,
separate q/k/v and gate/up matrices, rotate-half RoPE, repeated kv heads) at our LLaMA's
shape: ``--loops ref-llama,llama+eager --no-ref`` sets our LLaMA against it, which parts
what the architecture costs from what our implementation costs.
Per shape and loop: median step time over the timed steps of every round (rounds are
interleaved), tokens/s, MFU against the fp32 matmul peak measured in this run (a loop
with ``+bf16``, bf16 autocast on CPU: against the bf16 matmul measured), and the ratio
ours/reference. Rounds alternate the order of the loops, and each loop of each round
runs in a fresh process (``--no-isolate``: all in this one). Load average is printed:
compare numbers from a quiet run only.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import announce, at_least, pick
from torch import nn

from pretrain import hardware
from pretrain.model import loss as model_loss
from pretrain.model.config import ModelConfig
from pretrain.tokenizer import shards
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import BOS, EOS, TokenizeConfig
from pretrain.train.config import TrainConfig
from pretrain.train.loop import RunPaths, Trainer
from pretrain.train.optim import matmul_flops
from pretrain.train.parallelize import Layout, build

SHAPES = {  # name: (layers, heads, d_model, seq_len, batch) as in the reference notes
    "tiny": (4, 4, 128, 64, 12),
    "mid": (4, 4, 128, 256, 32),
    "baby": (6, 6, 384, 256, 8),
    # GPU shapes (issue 14): GPT-2 124M; LLaMA 153M and 0.76B with 4 kv heads
    "gpt2-124m": (12, 12, 768, 1024, 32),
    "llama-153m": (12, 12, 768, 2048, 16),
    "llama-760m": (24, 12, 1536, 2048, 8),
}
VOCAB = {"gpt2-124m": 50257, "llama-153m": 50257, "llama-760m": 50257}  # else bytes: 258
KV_HEADS = {"llama-153m": 4, "llama-760m": 4}   # our LLaMA loop only; else n_heads
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
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.ln(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))


class RefLlamaBlock(nn.Module):
    """A LLaMA block written the llama2.c way: separate gate/up/down and q/k/v matrices,
    ``nn.RMSNorm``, rotate-half RoPE on q and k, SDPA with the kv heads repeated."""

    def __init__(self, d: int, h: int, kv: int, hidden: int):
        super().__init__()
        self.h, self.kv, self.hd = h, kv, d // h
        self.n1, self.n2 = nn.RMSNorm(d, eps=1e-5), nn.RMSNorm(d, eps=1e-5)
        self.wq, self.wo = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.wk, self.wv = (nn.Linear(d, kv * self.hd, bias=False) for _ in range(2))
        self.w1, self.w3 = (nn.Linear(d, hidden, bias=False) for _ in range(2))
        self.w2 = nn.Linear(hidden, d, bias=False)

    @staticmethod
    def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        h = self.n1(x)
        q = self.wq(h).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.wk(h).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.wv(h).view(B, T, self.kv, self.hd).transpose(1, 2)
        q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
        k, v = (t.repeat_interleave(self.h // self.kv, dim=1) for t in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.wo(y.transpose(1, 2).reshape(B, T, C))
        h = self.n2(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class RefLlama(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, T = cfg.d_model, cfg.seq_len
        self.wte = nn.Embedding(cfg.vocab_size, d)
        self.blocks = nn.ModuleList(RefLlamaBlock(d, cfg.n_heads, cfg.kv_heads, cfg.hidden)
                                    for _ in range(cfg.n_layers))
        self.ln = nn.RMSNorm(d, eps=1e-5)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.head.weight = self.wte.weight
        hd = d // cfg.n_heads
        inv = 1.0 / 10000.0 ** (torch.arange(0, hd, 2).float() / hd)
        ang = torch.outer(torch.arange(T).float(), inv).repeat(1, 2)       # (T, hd)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx)
        for b in self.blocks:
            x = b(x, self.cos, self.sin)
        logits = self.head(self.ln(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))


def _windows(data: np.ndarray, T: int, B: int, rng: np.random.Generator,
             device: torch.device) -> torch.Tensor:
    ix = rng.integers(0, len(data) - T - 1, B)
    xy = torch.from_numpy(np.stack([data[i:i + T + 1].astype(np.int64) for i in ix]))
    return xy.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else xy


def reference_step(model: RefGPT, opt: torch.optim.Optimizer, data: np.ndarray, T: int, B: int,
                   rng: np.random.Generator) -> float:
    """One plain nanoGPT-style CPU step on random windows of ``data`` (the speedrun's
    reference recipe); returns the loss."""
    xy = _windows(data, T, B, rng, torch.device("cpu"))
    loss = model(xy[:, :-1], xy[:, 1:])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def reference_steps(data: np.ndarray, shape: str, steps: int, device: torch.device,
                    compile_: bool = False, profile: int = 0, arch: str = "gpt2",
                    bf16: bool = False) -> list[float]:
    """nanoGPT-style steps on random windows of ``data``; each step's seconds. On a GPU
    the strong form: bf16 autocast, fused AdamW, the next batch pinned and copied ahead
    while the step runs, ``compile_`` = torch.compile, one host read (the loss) a step.
    ``arch`` "llama": the llama2.c-style model (our LLaMA loop's shape) instead of GPT-2."""
    L, H, D, T, B = SHAPES[shape]
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model: nn.Module = (RefLlama(_model_cfg("llama", shape)) if arch == "llama"
                        else RefGPT(L, H, D, T, VOCAB.get(shape, 258))).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1,
                            fused=True)
    step_model = torch.compile(model) if compile_ else model
    cuda = device.type == "cuda"
    autocast = torch.autocast(device.type, torch.bfloat16) if cuda or bf16 \
        else contextlib.nullcontext()
    times = []
    xy = _windows(data, T, B, rng, device)
    with _profiler(steps, profile, device) as prof:
        for _ in range(steps):
            t0 = time.perf_counter()
            with autocast:
                loss = step_model(xy[:, :-1], xy[:, 1:])
            loss.backward()
            xy = _windows(data, T, B, rng, device)   # the next batch, while the GPU works
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            float(loss.detach())
            times.append(time.perf_counter() - t0)
            if prof is not None:
                prof.step()
    return times


def _model_cfg(arch: str, shape: str) -> ModelConfig:
    L, H, D, T, _ = SHAPES[shape]
    gpt2 = dict(bias=False, gelu_approximate="none") if arch == "gpt2" else {}
    kv = KV_HEADS.get(shape, H) if arch == "llama" else H
    return ModelConfig(arch=arch, d_model=D, n_layers=L, n_heads=H, n_kv_heads=kv, seq_len=T,  # type: ignore[arg-type]
                       vocab_size=VOCAB.get(shape, 258), tie_embeddings=True, **gpt2)


def our_steps(tokens: Path, shape: str, steps: int, arch: str, compile_: bool,
              device: torch.device, precision: str = "auto", loss: str = "auto",
              profile: int = 0, host_sync: str = "auto") -> list[float]:
    L, H, D, T, B = SHAPES[shape]
    cfg = _model_cfg(arch, shape)
    # per-step times from the log (a host read each step), or with host_sync named, the
    # mean over the timed steps, logging only the last (a logged step is read at once)
    by_mean = host_sync != "auto"
    tc = TrainConfig(steps=steps, batch_size=B, warmup_steps=1, eval_every=10**6,
                     eval_batches=1, log_every=steps if by_mean else 1, checkpoint_every=0,
                     lr=1e-3, compile=compile_,
                     precision=precision, tensorboard=False, probe_new_tokens=0,
                     loss=loss, host_sync=host_sync)  # type: ignore[arg-type]
    torch.manual_seed(0)
    layout = Layout(tc.parallel.degrees(1))
    model, net = build(cfg, tc, layout, device)  # compiled as training does
    t = Trainer(tc, model, tokens, RunPaths(tokens), 0, device, layout=layout, net=net)
    with _profiler(steps, profile, device) as prof:
        if prof is not None:   # a profiler step at each logged step (log_every = 1)
            record = t._record
            t._record = lambda *a: (record(*a), prof.step())  # type: ignore[method-assign]
        t.run()
    if by_mean:
        return [math.nan] + [t.t_train / t.timed_steps] * t.timed_steps
    # the first step (warm-up and compilation) is timed apart and has no tokens/s: NaN
    # keeps the steps aligned with the reference's for --skip, and is left out after it
    return [T * B / r["tok_per_s"] if "tok_per_s" in r else math.nan for r in t.history]


@contextlib.contextmanager
def _profiler(steps: int, last: int, device: torch.device):  # type: ignore[no-untyped-def]
    """``last`` > 0: torch.profiler over ``last`` steps before the final one (whose end runs
    our loop's evaluation); the caller calls ``step()`` after each step. Prints the kernels
    taking most device time, per step, to stderr."""
    if last <= 0:
        yield None
        return
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    sched = torch.profiler.schedule(wait=steps - last - 2, warmup=1, active=last, repeat=1)
    with torch.profiler.profile(activities=acts, schedule=sched) as prof:
        yield prof
    cuda = device.type == "cuda"
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    # on a GPU the kernels alone (the CPU ops that launched them carry their time too)
    events = [e for e in prof.key_averages() if getattr(e, attr) > 0
              and (not cuda or e.device_type == torch.autograd.DeviceType.CUDA)
              and not e.key.startswith("ProfilerStep")]   # the step's range, not a kernel
    total = sum(getattr(e, attr) for e in events)
    events.sort(key=lambda e: -getattr(e, attr))
    groups: dict[str, float] = {}
    for e in events:
        kind = _kernel_kind(e.key)
        groups[kind] = groups.get(kind, 0.0) + getattr(e, attr) / last / 1e3
    print(f"{device.type} time {total / last / 1e3:.2f} ms/step over {last} steps: "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(groups.items(), key=lambda kv: -kv[1])),
          file=sys.stderr)
    for e in events:   # all of them: the parent shows the first and keeps the rest
        print(f"  {getattr(e, attr) / last / 1e3:7.3f} ms {e.count / last:5.1f}x "
              f"{e.key[:150]}", file=sys.stderr)


KINDS = (  # (kind, substrings of a kernel's or op's name), the first match wins
    ("attention", ("sdpa", "attention", "flash", "fmha", "cudnn")),
    ("matmul", ("nvjet", "gemm", "cutlass", "xmma", "splitk", "cublas", "aten::mm",
                "aten::addmm", "aten::bmm")),
    ("clip", ("lpnorm", "vector_norm", "normtwo")),
    ("optimizer", ("adam", "multi_tensor_apply", "Optimizer")),
    ("loss", ("softmax", "nll", "cross_entropy", "LinearCrossEntropy")),
    ("activation", ("gelu", "silu")),
    ("norm", ("norm",)),
)


def _kernel_kind(name: str) -> str:
    """A profiled kernel's (or CPU op's) kind, for the per-kind sums of a profile."""
    low = name.lower()
    return next((kind for kind, keys in KINDS if any(k.lower() in low for k in keys)), "other")


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6   # KB -> GB


def _in_subprocess(tokens: Path, shape: str, steps: int, loop: str, device: str,
                   profile: int, profile_dir: str = "") -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", str(tokens), shape, str(steps), loop,
                          device, "--profile", str(profile)], capture_output=True, text=True)
    if out.returncode:   # the others still run
        print(f"{loop} at {shape} failed:\n{out.stderr[-3000:]}")
        return {"times": [], "peak_gb": 0.0}
    if profile:
        table = out.stderr[out.stderr.rfind(f"{device} time"):]
        print(f"profile of {loop} at {shape}: " + "\n".join(table.splitlines()[:13]))
        if profile_dir:
            Path(profile_dir, f"profile_{shape}_{loop.replace('+', '-')}.txt").write_text(
                table, encoding="utf-8")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _one(data: np.ndarray, tokens: Path, shape: str, steps: int, loop: str,
         device: torch.device, profile: int = 0) -> dict:
    """One loop's step times and peak memory, in this process. ``loop``: "ref" or
    "ref-llama" [+ "compile"] [+ "bf16"], or our arch + "eager"/"compile", + "fp8" for
    torchao's float8 linears or "bf16" (``train.precision``), + "full" or "chunked" for ``train.loss``, + "chunkN" for N tokens per
    chunk of the chunked loss, + "lagged" or "step" for ``train.host_sync``.
    ``profile``: the last steps profiled, and left out of the times returned."""
    name, *modes = loop.split("+")
    if name in ("ref", "ref-llama"):
        ts = reference_steps(data, shape, steps, device, "compile" in modes, profile,
                             "llama" if name == "ref-llama" else "gpt2", "bf16" in modes)
    else:
        for m in modes:
            if m.startswith("chunk") and m[5:].isdigit():
                model_loss.CHUNK_TOKENS = int(m[5:])
        loss = "full" if "full" in modes else "chunked" if "chunked" in modes else "auto"
        sync = "lagged" if "lagged" in modes else "step" if "step" in modes else "auto"
        ts = our_steps(tokens, shape, steps, name, "compile" in modes, device,
                       next((p for p in ("fp8", "bf16", "fp32") if p in modes), "auto"),
                       loss, profile, sync)
    kept = len(ts) - profile - 1 if profile else len(ts)   # the profiled steps left out
    return {"times": ts[:kept], "peak_gb": _peak_memory_gb(device)}


# our loops' modes, at most one of each group (chunkN: N tokens a chunk of the chunked loss)
OURS_MODES = (("eager", "compile"), ("fp8", "bf16", "fp32"), ("full", "chunked"),
              ("lagged", "step"), ("chunkN",))


def check_loop(loop: str) -> str | None:
    """Why ``loop`` (see ``_one``) names no loop this bench can time; None when it does."""
    name, *modes = loop.split("+")
    if name in ("ref", "ref-llama"):
        groups: tuple[tuple[str, ...], ...] = (("compile",), ("bf16",))
    elif name in ("gpt2", "llama", "mla"):
        groups = OURS_MODES
    else:
        return f"{loop!r}: {name!r} is not ref, ref-llama, gpt2, llama or mla"
    known = [m for g in groups for m in g]
    generic = ["chunkN" if m.startswith("chunk") and m[5:].isdigit() else m for m in modes]
    bad = [m for m, g in zip(modes, generic, strict=True) if g not in known]
    if bad:
        return f"{loop!r}: unknown mode {bad[0]!r}; known: {', '.join(known)}"
    both = next((g for g in groups if sum(m in g for m in generic) > 1), None)
    return f"{loop!r}: at most one of {', '.join(both)}" if both else None


def _rate(flops: float) -> str:
    return f"{flops / 1e12:.1f} TFLOP/s" if flops >= 1e11 else f"{flops / 1e9:.2f} GFLOP/s"


def _label(loop: str) -> str:
    if loop.startswith("ref"):
        arch = "llama2.c-style LLaMA" if loop.startswith("ref-llama") else "nanoGPT-style GPT-2"
        modes = loop.split("+")[1:]
        return f"reference ({arch}" + "".join(f", {m}" for m in modes) + ")"
    arch, *modes = loop.split("+")
    name = "ours, same GPT-2" if arch == "gpt2" else f"ours, {arch}"
    return name + "".join(f" + {m}" for m in modes if m != "eager")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=at_least(1), default=12)
    ap.add_argument("--skip", type=at_least(0), default=3, help="untimed warm-up steps per run")
    ap.add_argument("--rounds", type=at_least(1), default=6)
    ap.add_argument("--shapes", default="tiny,mid,baby")
    ap.add_argument("--compile", action="store_true", help="also time ours with torch.compile")
    ap.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                    help="each loop and round in a fresh process (default), so that no loop "
                         "inherits another's allocator and cache state")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: bf16 autocast in both loops, the reference compiled with "
                         "--compile too, MFU against the accelerator table's bf16 peak and a "
                         "measured bf16 matmul; shapes gpt2-124m,llama-153m,llama-760m")
    ap.add_argument("--loops", default="",
                    help="ours to time against the reference, comma-separated, each an arch "
                         "(gpt2, llama, mla) + eager|compile [+fp8|bf16|fp32] [+full|chunked] "
                         "[+lagged|step] [+chunkN]: e.g. gpt2+compile,"
                         "llama+compile,llama+compile+fp8 (default: gpt2 and llama, eager, "
                         "and compiled with --compile); ref-llama[+compile] is the "
                         "llama2.c-style reference; ref+bf16: the reference under bf16 "
                         "autocast on CPU")
    ap.add_argument("--no-ref", action="store_true",
                    help="time only the --loops named (ratios against the first)")
    ap.add_argument("--profile", type=at_least(0), default=0, metavar="K",
                    help="torch.profiler over K steps at each run's end (K + 1 more steps are "
                         "run, not timed); the first kernels printed, all in --profile-dir")
    ap.add_argument("--profile-dir", default="",
                    help="where each run's whole profile goes, as profile_SHAPE_LOOP.txt")
    ap.add_argument("--one", nargs=5, metavar=("TOKENS", "SHAPE", "STEPS", "LOOP", "DEVICE"),
                    help=argparse.SUPPRESS)  # the child of --isolate
    args = ap.parse_args()
    if args.one:
        tokens, shape_name, steps, loop, device = args.one
        data = np.frombuffer(DATA.read_bytes(), dtype=np.uint8).astype(np.uint16)
        print(json.dumps(_one(data, Path(tokens), shape_name, int(steps), loop,
                              torch.device(device), args.profile)))
        return
    if args.steps <= args.skip:
        ap.error(f"--steps {args.steps} leaves no step to time after --skip {args.skip}")
    if args.profile_dir and not (args.profile and args.isolate):
        ap.error("--profile-dir keeps the profiles of --profile K, run with --isolate")
    if args.profile_dir:   # made now, not found missing after the measurement
        Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
    shape_names = pick(ap, "--shapes", args.shapes, list(SHAPES))
    for loop in args.loops.split(",") if args.loops else []:
        if why := check_loop(loop):
            ap.error(f"--loops {why}")
    announce()
    dev = torch.device(args.device)
    if not DATA.is_file():
        raise SystemExit(f"needs {DATA}")
    text = DATA.read_bytes()
    data = np.frombuffer(text, dtype=np.uint8).astype(np.uint16)
    tmp = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    docs = [{"id": str(i), "domain": "text", "text": text[i:i + 20000].decode("utf-8", "replace")}
            for i in range(0, len(text), 20000)]
    shards.run(TokenizeConfig(val_fraction=0.1), tok, iter(docs), ["text"], tmp, {})
    cuda = dev.type == "cuda"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads"
          + (f", {torch.cuda.get_device_name(dev)}" if cuda else ""))
    peak = matmul_flops(dev)
    peak_bf16 = peak if cuda else matmul_flops(dev, dtype=torch.bfloat16)   # +bf16 loops' MFU
    acc = hardware.detect(torch.cuda.get_device_name(dev)) if cuda else None
    table = acc.peak("bf16") if acc else None
    print(f"{'bf16 matmul peak (n=8192' if cuda else 'fp32 matmul peak (n=2048'}, this run): "
          f"{_rate(peak)}" + (f"; table bf16 dense peak {table / 1e12:.0f} TFLOP/s"
                              if table else f"; bf16 {_rate(peak_bf16)}"))
    ref = "ref+compile" if cuda and args.compile else "ref"
    if args.loops:
        keys = [ref, *(k for k in args.loops.split(",") if k != ref)]   # e.g. ref+compile on CPU
    else:
        keys = [ref, "gpt2+eager", *(["gpt2+compile"] if cuda and args.compile else []),
                "llama+eager", *(["llama+compile"] if args.compile else [])]
    if args.no_ref:   # ratios then against the first loop named
        keys = keys[1:]
    loops = [(_label(k), k) for k in keys]
    w = max(len(label) for label, _ in loops)
    shapes = shape_names if args.shapes != "tiny,mid,baby" or not cuda \
        else ["gpt2-124m", "llama-153m", "llama-760m"]
    failed: list[str] = []
    above = False
    for name in shapes:
        L, H, D, T, B = SHAPES[name]
        times: dict[str, list[float]] = {n: [] for n, _ in loops}
        mem: dict[str, float] = {n: 0.0 for n, _ in loops}
        for r in range(args.rounds):
            # short rounds, order reversed every other round: a slow spell of this shared
            # machine then hits every loop alike instead of biasing whichever ran during it
            for label, loop in (loops if r % 2 == 0 else loops[::-1]):
                steps = args.steps + (args.profile + 1 if args.profile else 0)
                res = _in_subprocess(tmp, name, steps, loop, args.device, args.profile,
                                     args.profile_dir) \
                    if args.isolate else _one(data, tmp, name, steps, loop, dev, args.profile)
                times[label] += [t for t in res["times"][args.skip:] if not math.isnan(t)]
                mem[label] = max(mem[label], res["peak_gb"])
        print(f"\n{name}: L{L} H{H} E{D} T{T} B{B} vocab {VOCAB.get(name, 258)}")
        ref_ms = statistics.median(times[loops[0][0]] or [math.nan])
        for label, loop in loops:
            if not times[label]:
                print(f"  {label:{w}} failed")
                failed.append(f"{loop} at {name}")
                continue
            ms = statistics.median(times[label])
            arch = ("llama" if loop.startswith("ref-llama") else "gpt2" if loop.startswith("ref")
                    else loop.split("+")[0])
            flops = _model_cfg(arch, name).flops_per_token() * T * B / ms
            above |= flops > (peak_bf16 if 'bf16' in loop else peak)
            mfu = f"MFU {flops / (peak_bf16 if 'bf16' in loop else peak):5.1%}" + (f" ({flops / table:5.1%} of table)"
                                                 if table else "")
            print(f"  {label:{w}} {ms * 1e3:8.1f} ms/step  {T * B / ms:9,.0f} tok/s  {mfu}  "
                  f"peak {mem[label]:5.1f} GB  {'vs first' if args.no_ref else 'ours/ref'} "
                  f"{ref_ms / ms:5.2f}x")
    if any(m in loop.split("+") for _, loop in loops for m in ("lagged", "step")):
        print("\n+lagged/+step loops: their mean step time after the first step (they log "
              "only the last step), --skip not applied; the others' median after --skip")
    if above:
        print("\nMFU above 100%: the step ran faster than the matmul measured above, so that "
              "figure is no ceiling here (measured in a busy spell of the machine, or, for "
              "bf16 on a CPU without bf16 instructions, a matmul slower than the step's mix)")
    if failed:   # the others' figures are printed; the run still fails
        raise SystemExit(f"failed: {', '.join(failed)}")



if __name__ == "__main__":
    main()
