"""Optimizer parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from .. import hardware
from ..log import log0
from .config import TrainConfig


def _trainable(model: torch.nn.Module, embed_lr_mult: float
               ) -> tuple[list[tuple[str, torch.nn.Parameter]], list[dict[str, Any]]]:
    """The trainable parameters by name, less the input embedding table when
    ``embed_lr_mult != 1``; and then that table's own group, whose ``lr_mult`` the loop
    applies to the scheduled learning rate ([] otherwise, so that optimizer states saved
    without the group still load)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if embed_lr_mult == 1.0:
        return named, []
    table = [p for n, p in named if n.startswith("embed.")]
    rest = [(n, p) for n, p in named if not n.startswith("embed.")]
    return rest, [{"params": table, "weight_decay": 0.0, "lr_mult": embed_lr_mult}] if table else []


def _tied_to_embedding(model: torch.nn.Module) -> list[str]:
    """The names, outside the input embedding, of parameters that are its table (a tied
    output head): ``named_parameters`` gives them under the table's name only."""
    table = [p for n, p in model.named_parameters() if n.startswith("embed.")]
    return [n for n, p in model.named_parameters(remove_duplicate=False)
            if not n.startswith("embed.") and any(p is t for t in table)]


def param_groups(model: torch.nn.Module, weight_decay: float,
                 embed_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """Decayed matrices, then the rest (norm gains, biases, embedding tables: no decay),
    then the embedding table's own group when it has a learning-rate multiplier."""
    named, embed = _trainable(model, embed_lr_mult)
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in named:
        # matrices of linear layers decay; norms gains and embedding tables (the tokens',
        # and GPT-2's positions') do not
        table = name.startswith(("embed.", "pos_embed."))
        (decay if p.dim() == 2 and not table else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}, *embed]


class Optimizers(torch.optim.Optimizer):
    """Several optimizers stepped as one (Muon for hidden matrices, AdamW for the rest).

    ``param_groups`` is the concatenation of theirs, so setting ``lr`` on every group sets
    it everywhere; ``state_dict`` goes through ``torch.distributed.checkpoint.state_dict``
    with the list (``distributed.full_state`` handles it), never through this object.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers
        self.defaults: dict[str, Any] = {}
        self.state: Any = {}

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        # read through every time: loading a state dict replaces an optimizer's group dicts
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over everything, or Muon over the hidden layers' matrices + AdamW over the
    embeddings, the output head, norms and biases (as modded-nanogpt and nanochat do, and
    like theirs without weight decay: under Muon an untied head is not decayed, under
    AdamW it is, as every matrix but the embedding tables).

    fused AdamW runs on CPU too: 0.9 ms instead of 4.5 ms per step for the tiny GPT-2 of
    bench/train_vs_reference.py (foreach); one kernel over all parameters. Muon is
    ``torch.optim.Muon`` with ``adjust_lr_fn="match_rms_adamw"``: its updates are scaled to
    AdamW's RMS, so one ``train.lr`` serves both (Moonshot's recipe).
    """
    adamw = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "fused": True}
    if cfg.embed_lr_mult != 1.0 and (tied := _tied_to_embedding(model)):
        log0(f"train: warning: train.embed_lr_mult = {cfg.embed_lr_mult:g} applies to "
             f"{', '.join(tied)} too: the model ties it to the input embedding table "
             "(model.tie_embeddings; gpt2 always does)")
    if cfg.optimizer == "adamw":
        groups = param_groups(model, cfg.weight_decay, cfg.embed_lr_mult)
        return torch.optim.AdamW(groups, **adamw)  # type: ignore[arg-type]
    named, embed = _trainable(model, cfg.embed_lr_mult)
    hidden: list[torch.nn.Parameter] = []
    rest: list[torch.nn.Parameter] = []
    for name, p in named:
        is_hidden = p.dim() == 2 and not name.startswith(("embed.", "head.", "pos_embed."))
        (hidden if is_hidden else rest).append(p)
    muon = torch.optim.Muon(hidden, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            adjust_lr_fn="match_rms_adamw")
    rest_groups: list[dict[str, Any]] = [{"params": rest, "weight_decay": 0.0}, *embed]
    return Optimizers([muon, torch.optim.AdamW(rest_groups, **adamw)])  # type: ignore[arg-type]


def lr_at(step: int, cfg: TrainConfig, time_frac: float | None = None) -> float:
    """Learning rate before optimizer step ``step`` (0-based).

    All schedules warm up linearly over ``warmup_steps`` and decay towards ``lr *
    min_lr_ratio``, which they reach at step ``steps``: the last update (step ``steps - 1``)
    takes the rate one step of decay above it (with ``min_lr_ratio = 0``, WSD's last update
    is at ``lr / decay steps``, not 0). ``cosine`` decays along a half cosine over the rest
    of the run; ``linear`` decays in a straight line; ``wsd`` (warmup-stable-decay) holds
    ``lr`` and decays linearly over the last ``decay_frac`` of the run, which lets a run be
    extended or branched from a stable-phase checkpoint (MiniCPM, DeepSeek-V3).

    With a time budget, the run's progress after warmup is ``time_frac`` (training time
    spent / budget) or the step count's, whichever is further: the decay ends when the time
    does, or at ``steps`` when the step cap comes first (it stayed at the peak there).
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    floor = cfg.lr * cfg.min_lr_ratio
    if time_frac is not None:
        by_steps = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        progress = min(1.0, max(time_frac, by_steps))
        if cfg.schedule == "wsd":
            stable_end = 1.0 - cfg.decay_frac
            if progress < stable_end:
                return cfg.lr
            progress = (progress - stable_end) / cfg.decay_frac
    elif cfg.schedule == "wsd":
        # rounded before the floor: 10 * (1 - 0.8) is 1.9999999999999996, not 2
        decay_start = max(cfg.warmup_steps,
                          math.floor(round(cfg.steps * (1 - cfg.decay_frac), 9)))
        if step < decay_start:
            return cfg.lr
        progress = min(1.0, (step - decay_start) / max(1, cfg.steps - decay_start))
    else:
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    if cfg.schedule in ("wsd", "linear"):
        return cfg.lr + (floor - cfg.lr) * progress
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def rate(flops: float) -> str:
    """FLOP/s as a person reads it: 0.4 GFLOP/s, 268.0 GFLOP/s, 989.0 TFLOP/s."""
    return f"{flops / 1e12:,.1f} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:,.1f} GFLOP/s"


@dataclass(frozen=True)
class Peaks:
    """MFU's denominator and where it came from, and the matmul measured beside it."""

    mfu: float | None       # FLOP/s per device; None: no MFU is logged
    matmul: float | None    # the matmul measured at the start, where one was
    source: str             # where ``mfu`` came from
    device: str             # the device's name (a GPU's as torch reports it)
    # on CPU: the other precision and how many times as fast its matmul runs here as the
    # training's: bf16 beside fp32 (a CPU with bf16 instructions, AVX512-BF16 or AMX, runs
    # it several times as fast; one without, slower), fp32 beside bf16 and fp16
    other: tuple[str, float] | None = None

    @property
    def measured(self) -> bool:
        """On CPU: ``mfu`` is measured, the faster of ``matmul`` (in the training's dtype)
        and the other precision's."""
        return self.other is not None

    def describe(self) -> str:
        beside = f"a bf16 matmul measured {rate(self.matmul)}" if self.matmul else ""
        if not self.mfu:
            return (f"no MFU: {self.device} is not in the accelerator table; set "
                    "train.peak_tflops" + (f" ({beside})" if beside else ""))
        if self.measured:
            hint = ""
            if self.other and self.other[1] >= FASTER_HINT:
                name, speedup = self.other
                hint = (f"; {'an' if name.startswith('f') else 'a'} {name} matmul runs {speedup:.1f}x as fast on this CPU: "
                        f"train.precision = '{name}' may train faster")
            return f"MFU against {self.source}, {rate(self.mfu)}{hint}"
        return f"MFU against {rate(self.mfu)} ({self.source})" + (f"; {beside}" if beside else "")

    def summary(self, mfu: float | None) -> str:
        """The end line's MFU (over every timed step), and what one above 100% means."""
        if mfu is None or not self.mfu:
            return ""
        out = f", MFU {mfu:.1%} of {rate(self.mfu)}"
        return out + (f" ({self.above_100()})" if mfu > 1 else "")

    def above_100(self) -> str:
        """What an MFU above 100% means here."""
        return ("above 100%: the peak was measured low, a busy machine at the start? "
                "train.peak_tflops sets it" if self.measured else
                "above 100%: the peak is too low; train.peak_tflops is per device")


# the other precision's matmul at this many times the speed is worth a line at the start:
# bf16 measured 4.4x fp32 on this project's AMD EPYC (AVX512-BF16), where a compiled step at
# the bench's mid shape ran 1.9x the tokens/s of fp32 (bench/train_vs_reference.py); fp16
# there ran at 1/80 of fp32
FASTER_HINT = 1.5


def peaks(device: torch.device, peak_tflops: float = 0.0,
          dtype: torch.dtype = torch.float32) -> Peaks:
    """MFU's denominator: ``peak_tflops`` (``train.peak_tflops``) when set; else on a GPU
    the dense bf16 peak of the accelerator table (``hardware.py``, matched by device name;
    none for a GPU not in it), on CPU the FLOP/s of the faster of two matmuls measured with
    the current thread count: one in ``dtype`` (the training's autocast dtype, kept as
    ``Peaks.matmul``) and one in the other precision (``Peaks.other``: bf16 beside fp32,
    fp32 beside bf16 or fp16). On a GPU a bf16 matmul is measured beside it either way.

    The reference notes give 160 GFLOP/s on 1 thread and 268 on 2 for this project's
    machine when quiet (fp32); a busy machine reads lower, and MFU then reads higher.
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        acc = hardware.detect(name)
        mfu: float | None
        if peak_tflops:
            mfu, source = peak_tflops * 1e12, "train.peak_tflops"
        else:
            mfu = acc.peak("bf16") if acc else None
            source = f"{acc.name}, bf16 dense, from the table" if acc else ""
        return Peaks(mfu, matmul_flops(device), source, name)
    if peak_tflops:
        return Peaks(peak_tflops * 1e12, None, "train.peak_tflops", str(device))
    if device.type != "cpu":
        return Peaks(None, None, "", str(device))
    measured = matmul_flops(device, dtype=dtype)
    alt = torch.bfloat16 if dtype == torch.float32 else torch.float32
    alt_flops = matmul_flops(device, dtype=alt)
    # the faster of the two is the peak: a CPU without bf16 instructions multiplies bf16
    # matrices at a fraction of fp32's rate, yet compiled bf16 training ran well above that
    # rate (MFU 240-370% against it); as on a GPU, whose bf16 peak counts for any precision
    own, best = (dtype, measured) if measured >= alt_flops else (alt, alt_flops)
    source = f"the measured {DTYPE_NAMES.get(own, own)} matmul" + (
        "" if own == dtype else f" (faster here than {DTYPE_NAMES.get(dtype, dtype)}'s)")
    return Peaks(best, measured, source, str(device),
                 other=(DTYPE_NAMES[alt], alt_flops / measured))


def matmul_flops(device: torch.device, n: int | None = None, reps: int = 5,
                 dtype: torch.dtype | None = None) -> float:
    """FLOP/s of the fastest of ``reps`` square matmuls, measured here and now: by default
    fp32 of side 2048 on CPU, bf16 of side 8192 on a GPU (timed between synchronisations).
    A peak is the best the machine does, and a shared machine's slow spells only ever lower
    it, so the fastest counts, not the median. Well under a second on either.

    On CPU ``n`` is the largest side: a dtype the CPU has no fast path for runs at a
    fraction of fp32's speed (fp16 here: 2.5 GFLOP/s, 80 times slower), and one matmul of
    side 2048 would then take 7 s; the side stops growing from 256 at the first where the
    faster of two matmuls takes over 25 ms, so that the next (8 times the work) stays under
    about 0.2 s (the faster of two: one slow spell on a busy machine stops no growth). fp32,
    which every CPU runs fast, starts at 1024: on a machine busy for long, growth stopped at
    256, whose matmul measured 0.8 GFLOP/s for a usual 215 (MFU 121% logged later)."""
    cuda = device.type == "cuda"
    n = n or (8192 if cuda else 2048)
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    # its own generator: the training's dropout draws from the global one, and a measurement
    # must not move it (else train.peak_tflops, which skips this, changed the losses)
    gen = torch.Generator(device).manual_seed(0)
    if not cuda:
        side = min(n, 1024 if dtype == torch.float32 else 256)
        while side < n:
            a = torch.randn(side, side, dtype=dtype, generator=gen)
            took = []
            for _ in range(2):
                t0 = time.perf_counter()
                a @ a
                took.append(time.perf_counter() - t0)
            if min(took) > 0.025:
                break
            side *= 2
        n = min(side, n)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)
    a @ b
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times)
