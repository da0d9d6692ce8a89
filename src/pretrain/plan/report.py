"""``pretrain plan``: what a config costs before it runs, or what to run for a budget.

Sections: the model's size and FLOPs; memory per device under the layouts the device count
allows, with and without activation checkpointing, and the largest micro-batch that fits;
time and cost at an MFU (assumed, or a previous run's); where the run sits against the
compute-optimal frontier (Chinchilla's 20 tokens per parameter, Hoffmann's and Besiroglu's
laws, and the user's own fitted law when a sweep wrote one); the loss the laws predict.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .. import hardware
from ..model.config import ModelConfig
from .laws import BESIROGLU, HOFFMANN, Law, chinchilla_rule
from .memory import COMPILED_ACTIVATIONS, GB, MARGIN, Split, estimate, kept_share, largest_batch

__all__ = ["GB", "Split", "Shape", "duration", "estimate", "frontier", "memory", "size", "suggest",
           "time_and_cost"]


@dataclass
class Shape:
    """What of a run the plan needs besides the model: its batch and length, the layout."""

    steps: int
    batch: int                      # sequences per micro-batch per data-parallel rank
    grad_accum: int = 1
    layout: Split = field(default_factory=Split)
    checkpointing: bool = False
    optimizer: str = "adamw"
    precision: str = "bf16"         # "bf16" on a GPU (autocast), "fp32" on CPU
    fused_loss: bool = True         # the chunked loss wherever the head is whole (not TP)
    compiled: bool = False          # train.compile: fewer activations kept (COMPILED_ACTIVATIONS)

    def tokens(self, seq_len: int) -> int:
        dp = self.layout.dp_replicate * self.layout.dp_shard
        return self.steps * self.batch * self.grad_accum * dp * seq_len


def _n(x: float) -> str:
    x = float(f"{x:.3g}")   # the unit after rounding: 999,999 is "1 M", not "1e+03 k"
    for unit, v in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= v:
            return f"{x / v:.3g} {unit}"
    return f"{x:.3g}"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    if seconds < 2 * 365 * 86400:
        return f"{seconds / 86400:.1f} days"
    years = seconds / 86400 / 365
    return f"{years:.1f} years" if years < 1e4 else f"{years:.2e} years"


def size(cfg: ModelConfig) -> str:
    n, body = cfg.num_params(), cfg.num_params(embeddings=False)
    per_token, six_n = cfg.flops_per_token(), 6 * cfg.matmul_params()
    return (f"parameters {n:,} ({_n(n)}): non-embedding {body:,}, embedding {n - body:,}\n"
            f"training FLOPs per token {per_token:.4g} = 6 x {cfg.matmul_params():,} matmul "
            f"weights ({six_n:.4g}) + attention over {cfg.seq_len} positions "
            f"({per_token - six_n:.4g})")


def layouts(cfg: ModelConfig, shape: Shape, gpus: int) -> list[Split]:
    """The configured layout, and for ``gpus`` devices DDP, FSDP and (where the model
    allows) FSDP x TP 8 and PP x FSDP; under Muon DDP only."""
    out = [shape.layout]
    if gpus > 1 and shape.optimizer == "muon":   # whole matrices: no FSDP, TP (training's rule)
        out.append(Split(dp_replicate=gpus))
    elif gpus > 1:
        out += [Split(dp_replicate=gpus), Split(dp_shard=gpus)]
        tp = min(8, gpus)
        if tp > 1 and gpus % tp == 0 and cfg.arch != "mla" and cfg.kv_heads % tp == 0 \
                and math.gcd(cfg.hidden, cfg.n_heads) % tp == 0:
            out.append(Split(dp_shard=gpus // tp, tp=tp))
        # as training accepts a pipeline: microbatches dividing the batch, at least one per
        # stage for 1F1B (16 at most), and no grad_accum (memory() counts it as 1)
        mb = max((m for m in range(8, 17) if shape.batch % m == 0), default=0)
        if gpus >= 16 and gpus % 8 == 0 and not cfg.tied and cfg.n_layers >= 8 and mb:
            out.append(Split(dp_shard=gpus // 8, pp=8, microbatches=mb))
    seen, unique = set(), []
    for lay in out:
        key = (lay.dp_replicate, lay.dp_shard, lay.tp, lay.pp)
        if key not in seen:
            seen.add(key)
            unique.append(lay)
    return unique


def memory(cfg: ModelConfig, shape: Shape, gpus: int, device_gb: float | None,
           refusal: Callable[[Split, bool], str | None] | None = None) -> str:
    """The memory table of the configured layout and the others for ``gpus`` devices;
    ``refusal(layout, configured)``: why training refuses a layout (None where it runs
    it): another layout is then left out, the configured one is marked."""
    lines = [f"{'layout':<22}{'weights':>9}{'grads':>8}{'optim':>8}{'activ.':>8}{'work':>7}"
             f"{'overlap':>8}{'total':>8}{'with AC':>9}  GB per device"
             + (f" (fits {device_gb:g} GB?)" if device_gb else "")]
    refused = refusal(shape.layout, True) if refusal else None
    lays = [lay for lay in layouts(cfg, shape, gpus)
            if lay is shape.layout or not (refusal and refusal(lay, False))]
    room = MARGIN * (device_gb or 0) * GB   # as training decides: 10% left for the error
    for lay in lays:
        kw = dict(layout=lay, optimizer=shape.optimizer, precision=shape.precision,
                  fused_loss=shape.fused_loss and lay.tp == 1,   # TP splits the head
                  grad_accum=1 if lay.pp > 1 else shape.grad_accum,
                  cpu=False,   # the accelerators of the table: fp32 there is no CPU run
                  activation_share=kept_share(shape.compiled))
        m = estimate(cfg, shape.batch, checkpointing=False, **kw)  # type: ignore[arg-type]
        ac = estimate(cfg, shape.batch, checkpointing=True, **kw)  # type: ignore[arg-type]
        fits = ""
        if device_gb:   # the configured setting fits, or only with activation checkpointing
            best = largest_batch(cfg, room, checkpointing=shape.checkpointing, **kw)
            mine = ac if shape.checkpointing else m
            fits = "  yes" if mine.total <= room \
                else f"  yes, without the {1 - MARGIN:.0%} margin (training may warn)" \
                if mine.total <= device_gb * GB \
                else "  no (yes with AC)" if ac.total <= room else "  no"
            fits += (f", largest micro-batch {best}" if best else ", not one sequence") \
                + (" with AC" if shape.checkpointing else "")
        if refused and lay is shape.layout:
            fits = "  no: training refuses this layout (below)"
        mark = "*" if lay is lays[0] else " "
        cols = zip((m.weights, m.grads, m.optimizer, m.activations, m.working, -m.overlap,
                    m.total, ac.total), (8, 7, 7, 7, 6, 7, 7, 8), strict=True)
        lines.append(f"{mark}{lay.name():<21}" + "".join(f" {round(v / GB, 2) + 0.0:>{w}.2f}"
                                                         for v, w in cols)
                     + fits)
    lines.append(f"(* the configured layout; micro-batch {shape.batch} x {cfg.seq_len} tokens, "
                 f"{shape.precision}, {shape.optimizer}"
                 + (f", compiled ({COMPILED_ACTIVATIONS:g}x the eager activations)"
                    if shape.compiled else "")
                 + "; activations scale with the micro-batch;"
                 " overlap: backward frees activations as gradients fill, where a step has one"
                 " micro-batch" + (f"; fits: within {MARGIN:.0%} of the table's {device_gb:g} "
                                   "GB (1e9 bytes, a few % under what the device reports), by "
                                   "training's rule (the estimate's error is within 10%)"
                                   if device_gb else "") + ")")
    if refused:
        lines.append(f"(* training refuses the configured layout: {refused})")
    if gpus > 1 and shape.optimizer == "muon":
        lines.append("(muon orthogonalises whole matrices: no FSDP or TP layouts, as training "
                     "refuses them)")
    piped = [lay for lay in lays[1:] if lay.pp > 1]
    if piped:
        lines.append(f"(PP {piped[0].pp}: train.parallel.pp_microbatches = "
                     f"{piped[0].microbatches} and train.grad_accum = 1, as a pipeline trains: "
                     "its microbatches accumulate the gradients)")
    return "\n".join(lines)


def time_and_cost(flops: float, acc: hardware.Accelerator, gpus: int, mfu: float,
                  precision: str, price: float | None) -> str:
    peak = acc.peak(precision)
    seconds = flops / (gpus * peak * mfu)
    rate = price if price is not None else acc.dollars_per_hour
    dollars = seconds / 3600 * gpus * rate
    hours = f"{_amount(seconds * gpus / 3600)} device-hours" if not acc.match \
        else f"{_amount(seconds * gpus / 3600)} GPU-hours"   # --gpu cpu: no table entry
    cost = f", ${_amount(dollars)} at ${rate:g}/GPU-hour" if rate or acc.match else ""
    return (f"{flops:.3g} FLOPs on {gpus} x {acc.name} ({acc.peak_tflops[precision]:g} "
            f"TFLOP/s {precision}) at MFU {mfu_text(mfu)}: {duration(seconds)} ({hours}{cost})")


def mfu_text(mfu: float) -> str:
    """An MFU as a percentage that keeps a digit where it is small ("0%" for 0.3%)."""
    return f"{mfu:.0%}" if mfu >= 0.095 else f"{mfu:.2g}" if mfu < 0.001 else f"{mfu:.1%}"


def _amount(x: float) -> str:
    """Whole above 100, else 3 significant digits: `0.0333`, `3.16`, `1,234` (whole
    numbers had made 2 minutes on 4 GPUs "0 GPU-hours, $0")."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def frontier(cfg: ModelConfig, tokens: float, flops: float, fit: Law | None) -> str:
    n = cfg.num_params()
    lines = [f"this run: N = {_n(n)} parameters, D = {_n(tokens)} tokens "
             f"({_amount(tokens / n)} tokens per parameter), C = {flops:.3g} FLOPs"]
    n20, d20 = chinchilla_rule(flops)
    lines.append(f"compute-optimal for C (20 tokens/param): N = {_n(n20)}, D = {_n(d20)}; "
                 f"this run is {n / n20:.2g}x that N")
    for law in [HOFFMANN, BESIROGLU, *([fit] if fit else [])]:
        own = cfg.matmul_params() if law is fit else n  # a sweep's law counts matmul weights
        # the optimum for this run's compute as the law counts it (6 N D of its N): at the
        # run's FLOPs (attention in, embeddings out) a run could beat its own optimum
        no, do = law.optimum(6 * own * tokens)
        lines.append(f"{law.source + ':':<22} N_opt {_n(no)}, D_opt {_n(do)}; "
                     f"predicted loss {law.loss(own, tokens):.3f} for this run, "
                     f"{law.loss(no, do):.3f} at the optimum")
    if not fit:
        lines.append("(no fit of your own in use: `pretrain sweep` writes one; the published "
                     "laws are for their data and tokenizer, not yours)")
    return "\n".join(lines)


def family(cfg: ModelConfig) -> list[ModelConfig]:
    """Models of ``cfg``'s family, smallest first: its head size and query heads per kv
    head, widths in steps of the head size (64 from 128, 128 from 512), depth between
    d/128 and d/32 (the aspect ratios of GPT-3 and LLaMA), at least one layer. An MLA
    config whose heads do not divide d_model (its head sizes are settings of their own):
    widths in steps of 64, heads in the config's proportion to the width."""
    even = cfg.d_model % cfg.n_heads == 0
    step = cfg.d_model // cfg.n_heads if even else 64
    group = max(1, cfg.n_heads // cfg.kv_heads) if cfg.arch == "llama" else 1
    out = []
    for d in range(step, 32768 + 1, step):
        heads = d // step if even else max(1, round(d * cfg.n_heads / cfg.d_model))
        if heads % group or (d >= 128 and d % 64) or (d >= 512 and d % 128):
            continue
        for layers in range(max(1, d // 128), max(1, d // 32) + 1):
            out.append(replace(cfg, d_model=d, n_layers=layers, n_heads=heads,
                               n_kv_heads=heads // group, ffn_hidden=0))
    return sorted(out, key=lambda m: m.matmul_params())


def _count(model: ModelConfig, count: str) -> int:
    return model.matmul_params() if count == "matmul" else model.num_params()


def suggest(cfg: ModelConfig, flops: float, fit: Law | None, params: float | None = None,
            count: str = "total") -> tuple[ModelConfig, float]:
    """A model of ``cfg``'s family (``family``) with about ``params`` parameters (default:
    the compute-optimal N for ``flops``: the fitted law's optimum when there is one, else 20
    tokens per parameter) counted as ``count`` ("total", or "matmul": what a token
    multiplies by, the N of a fitted law), and the tokens ``flops`` buys it."""
    if fit is not None:
        count = "matmul"
    n_opt = params or (fit.optimum(flops)[0] if fit else chinchilla_rule(flops)[0])
    model = min(family(cfg), key=lambda m: abs(math.log(_count(m, count) / n_opt)))
    return model, flops / model.flops_per_token()


def ladder(cfg: ModelConfig, targets: list[float], count: str = "matmul") -> list[ModelConfig]:
    """Distinct models of ``cfg``'s family, one near each of ``targets`` (parameters)."""
    pool, out = family(cfg), []
    for target in targets:
        left = [m for m in pool if m not in out]
        if left:
            out.append(min(left, key=lambda m: abs(math.log(_count(m, count) / target))))
    return sorted(out, key=lambda m: _count(m, count))
