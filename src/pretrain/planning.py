"""``pretrain plan``: a run config (or a budget) through the ``plan`` package's tables.

Without a budget: the configured run's size, memory per device, time and cost, and where
it sits against the compute-optimal frontier. With ``--budget FLOPS``, ``--gpu-hours N`` or
``--dollars N``: a model of the config's family sized for that compute (the fitted law's
optimum when ``pretrain sweep`` wrote one, else 20 tokens per parameter), the same
tables for it, and the overrides that make the config that run.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import hardware, stages
from .config import ConfigError
from .log import log0
from .model.config import ModelConfig
from .plan import report
from .plan.laws import Law, chinchilla_rule, fit_caveats, read_fit
from .plan.memory import Split, kept_share
from .run_config import RunConfig
from .rundir import sound_manifest
from .train.config import TrainConfig, check_layout

FIT = Path("sweep") / "fit.json"


@dataclass
class Options:
    budget: float = 0.0        # FLOPs
    gpu_hours: float = 0.0
    dollars: float = 0.0
    gpu: str = "h100"
    gpus: int = 1
    mfu: float = 0.0           # 0 = the run's measured MFU when it has one, else 40%
    price: float | None = None
    fit: str = ""              # a fit.json; "" = runs/<name>/sweep/fit.json if there is one


def _model(cfg: RunConfig) -> ModelConfig:
    if cfg.model.vocab_size:
        return cfg.model
    if cfg.tokenizer.pretrained:
        meta = cfg.run_dir / "tokenize" / "meta.json"
        if meta.is_file():
            try:
                vocab = int(json.loads(meta.read_text(encoding="utf-8"))["vocab_size"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"{meta}: no vocabulary size to read ({type(e).__name__}: "
                                  f"{e}); rerun `pretrain tokenize --force tokenize`") from None
            return replace(cfg.model, vocab_size=vocab)
        raise ConfigError("the vocabulary of a pretrained tokenizer is known once it is loaded: "
                          "set --model.vocab_size or run `pretrain tokenize` first")
    return replace(cfg.model, vocab_size=cfg.tokenizer.vocab_size)


def precision(cfg: RunConfig, gpu: bool) -> str:
    """The precision the run computes in, as training resolves ``train.precision``: "auto"
    is bf16 on a GPU and fp32 on CPU."""
    return ("bf16" if gpu else "fp32") if cfg.train.precision == "auto" else cfg.train.precision


def shape(cfg: RunConfig, gpus: int, precision: str) -> report.Shape:
    try:
        deg = cfg.train.parallel.degrees(gpus)
    except ConfigError as e:   # plan's --gpus is 1 unless given
        raise ConfigError(f"{e} (plan this layout with --gpus "
                          f"{cfg.train.parallel.fewest_processes})") from None
    layout = Split(deg["dp_replicate"], deg["dp_shard"], deg["tp"], deg["pp"],
                    cfg.train.parallel.sequence_parallel, cfg.train.parallel.microbatches,
                    cfg.train.parallel.pp_schedule)
    return report.Shape(cfg.train.steps, cfg.train.batch_size, cfg.train.grad_accum, layout,
                        cfg.train.activation_checkpointing, cfg.train.optimizer, precision,
                        fused_loss=cfg.train.loss_path(1) == "chunked",
                        compiled=cfg.train.compile)


def refusal(model: ModelConfig, train: TrainConfig, split: Split,
            configured: bool = False) -> str | None:
    """Why training would refuse ``split`` for ``model``: training's own check, with the
    split's pipeline settings (its microbatches; a proposed pipeline without grad_accum, as
    the table counts it, the ``configured`` one with the config's); None where it runs it."""
    cfg = replace(train, grad_accum=1 if split.pp > 1 and not configured else train.grad_accum,
                  parallel=replace(train.parallel, pp_microbatches=split.microbatches,
                                   pp_schedule=split.schedule,  # type: ignore[arg-type]
                                   sequence_parallel=split.sequence_parallel))
    degrees = {"dp_replicate": split.dp_replicate, "dp_shard": split.dp_shard,
               "tp": split.tp, "pp": split.pp}
    try:
        check_layout(model, cfg, degrees)
    except ConfigError as e:
        return str(e)
    return None


def _fit(cfg: RunConfig, opts: Options) -> tuple[Law | None, dict[str, Any]]:
    """The sweep's law the plan uses (None: the published ones) and its fit.json."""
    path = Path(opts.fit) if opts.fit else cfg.run_dir / FIT
    if not path.is_file():
        if opts.fit:
            raise ConfigError(f"--fit {path}: no such file")
        return None, {}
    try:
        fit = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        fit = None
    law, why = read_fit(fit, str(path), source=f"fitted ({path})")
    if law is not None and (other := stages.fit_mismatch(fit, cfg, str(path))):
        if opts.fit:   # named on purpose: used, with the note
            log0(f"plan: note: {other}")
        else:
            law, why = None, other
    if law is None:
        if opts.fit:
            raise ConfigError(why)
        log0(f"plan: not using the run's own fit: {why}")
    return law, fit if law is not None else {}


def _mfu(cfg: RunConfig, opts: Options) -> tuple[float, str]:
    if opts.mfu:
        return opts.mfu, "given"
    manifest = sound_manifest(cfg.run_dir / "train")   # a damaged one: none measured
    if manifest is not None:
        counts = manifest.get("counts", {})
        mfu = counts.get("mfu") or counts.get("mfu_median")   # older runs: the median
        if mfu and str(counts.get("device", "")).startswith("cuda"):
            return float(mfu), f"measured in {cfg.run_dir}"
    return 0.4, "assumed"


CPU = "cpu"   # --gpu cpu: this machine, as a CPU run of the config measured it


def _this_cpu(cfg: RunConfig, given_mfu: float) -> tuple[hardware.Accelerator, float, str]:
    """(this machine as an accelerator, its MFU, where both came from) for ``--gpu cpu``: a
    CPU has no table peak, so the matmul a CPU run measured (MFU's denominator there) and
    the MFU it reached; ``train.peak_tflops`` stands for the former where it is set."""
    counts = (sound_manifest(cfg.run_dir / "train") or {}).get("counts") or {}
    on_cpu = str(counts.get("device", "")).startswith("cpu")
    peak = cfg.train.peak_tflops * 1e3 or (counts.get("peak_gflops") if on_cpu else None)
    mfu = given_mfu or ((counts.get("mfu") or counts.get("mfu_median")) if on_cpu else None)
    if not peak or not mfu:
        raise ConfigError(f"--gpu cpu plans at the speed a CPU run of this config measured: "
                          f"{cfg.run_dir} has no completed one (train it briefly first, e.g. "
                          "`pretrain train --train.steps=100`; or give --mfu and "
                          "train.peak_tflops)" if not (peak and cfg.train.peak_tflops)
                          else "--gpu cpu with train.peak_tflops needs --mfu (no CPU run "
                          f"of this config in {cfg.run_dir} measured one)")
    ram = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    acc = hardware.Accelerator(f"this CPU ({peak:,.0f} GFLOP/s)", ram,
                               dict.fromkeys(("bf16", "fp16", "fp32", "tf32"), peak / 1e3),
                               0.0, ())
    return acc, float(mfu), "given" if given_mfu else f"measured in {cfg.run_dir}"


def plan(cfg: RunConfig, opts: Options) -> str:
    cpu = opts.gpu.lower() == CPU
    acc = hardware.get(opts.gpu) if not cpu else None
    if opts.gpus < 1:
        raise ConfigError("--gpus must be >= 1")
    if sum(bool(x) for x in (opts.budget, opts.gpu_hours, opts.dollars)) > 1:
        raise ConfigError("give one budget: --budget, --gpu-hours or --dollars")
    if min(opts.budget, opts.gpu_hours, opts.dollars) < 0 or not 0 <= opts.mfu <= 1:
        raise ConfigError("budgets must be positive and --mfu within (0, 1]")
    model, (fit, fit_json) = _model(cfg), _fit(cfg, opts)
    if acc is None:
        acc, mfu, mfu_from = _this_cpu(cfg, opts.mfu)
    else:
        mfu, mfu_from = _mfu(cfg, opts)
    prec = precision(cfg, gpu=not cpu)
    timed = "bf16" if prec == "fp8" else prec   # fp8's speed-up is not assumed (README)
    price = opts.price if opts.price is not None else acc.dollars_per_hour
    if mfu_from != "assumed" and timed != "bf16" and not cpu:   # of bf16's peak on a GPU
        of_bf16 = mfu
        mfu = min(1.0, mfu * acc.peak("bf16") / acc.peak(timed))
        mfu_from += f", {of_bf16:.0%} of the bf16 peak" + (" (capped at 100%)" if mfu == 1.0
                                                           else "")
    flop_s = opts.gpus * acc.peak(timed) * mfu
    if opts.dollars and price <= 0:   # a CPU's, or --price 0: no dollars buy hours
        raise ConfigError(f"--dollars needs a price per hour: {acc.name} has none "
                          f"({price:g}); give --price, or --gpu-hours")
    hours = opts.gpu_hours or (opts.dollars / price if opts.dollars else 0.0)
    budget = opts.budget or hours * 3600 * flop_s / opts.gpus
    sh = shape(cfg, opts.gpus, prec)
    per_step = sh.tokens(model.seq_len) // max(sh.steps, 1)
    out = [f"# plan for {cfg.name} ({acc.name} x {opts.gpus}, MFU {report.mfu_text(mfu)} "
           f"{mfu_from})"]
    if cfg.device == CPU and not cpu:
        out.append("note: this config trains on a CPU (device = 'cpu'); `--gpu cpu` plans at "
                   "the speed a CPU run of it measured")
    if prec == "fp8" and not acc.fp8_training:
        out.append(f"note: training refuses train.precision = 'fp8' on {acc.name} (it needs "
                   "Hopper or newer" + (", though the card has fp8 tensor cores"
                                        if "fp8" in acc.peak_tflops else "")
                   + "); planned at bf16's speed")
    if budget:
        model, tokens = report.suggest(model, budget, fit)
        if tokens < per_step:
            raise ConfigError(f"a budget of {budget:.3g} FLOPs buys {tokens:,.0f} tokens for "
                              f"the model it suggests (d_model {model.d_model}, "
                              f"{model.n_layers} layers), less than one step of {per_step:,} "
                              "tokens: raise the budget, or lower train.batch_size or "
                              "model.seq_len")
        sh = replace(sh, steps=round(tokens / per_step))
        out.append(f"\n## budget {budget:.3g} FLOPs\n"
                   f"suggested: d_model {model.d_model}, n_layers {model.n_layers}, n_heads "
                   f"{model.n_heads}, n_kv_heads {model.n_kv_heads}, {sh.steps:,} steps of "
                   f"{per_step:,} tokens\n  --model.d_model={model.d_model} "
                   f"--model.n_layers={model.n_layers} --model.n_heads={model.n_heads} "
                   f"--model.n_kv_heads={model.n_kv_heads} --model.ffn_hidden=0 "
                   f"--train.steps={sh.steps}"
                   + (" --train.time_budget_s=0" if cfg.train.time_budget_s else ""))
        n_opt = fit.optimum(budget)[0] if fit else chinchilla_rule(budget)[0]
        n = model.matmul_params() if fit else model.num_params()
        out += [f"note: {c}" for c in fit_caveats(fit_json, budget)]
        if n < n_opt / 2:
            out.append(f"note: the family's largest model ({n:.3g} parameters) is "
                       f"{n / n_opt:.2g}x the compute-optimal N for this budget ({n_opt:.3g}); "
                       "it is trained on more tokens instead")
        elif n > 2 * n_opt:   # the family's widths step coarsely (a multiple of the head
            # size and of 64), or its smallest model's embedding already outweighs the optimum
            out.append(f"note: the family's nearest model ({n:.3g} parameters) is "
                       f"{n / n_opt:.2g}x the compute-optimal N for this budget ({n_opt:.3g}), "
                       f"trained on {sh.tokens(model.seq_len) / n:.2g} tokens per parameter; "
                       "a smaller vocabulary, head size or seq_len lets the family come closer")
    elif cfg.train.time_budget_s:
        fits_in = cfg.train.time_budget_s * flop_s / (model.flops_per_token() * per_step)
        if fits_in < sh.steps:   # the time budget ends the run first
            sh = replace(sh, steps=max(1, int(fits_in)))
            out.append(f"\ntrain.time_budget_s = {cfg.train.time_budget_s:g} s ends the run "
                       f"before train.steps = {cfg.train.steps:,}: at MFU {report.mfu_text(mfu)} about "
                       f"{sh.steps:,} steps, which the tables below are for")
    tokens = sh.tokens(model.seq_len)
    flops = model.flops_per_token() * tokens
    out += ["\n## size", report.size(model),
            f"training: {tokens:,} tokens ({sh.steps:,} steps) = {flops:.3g} FLOPs",
            "\n## memory per device", report.memory(model, sh, opts.gpus, acc.memory_gb,
                                                     functools.partial(refusal, model, cfg.train)),
            "\n## time and cost", report.time_and_cost(flops, acc, opts.gpus, mfu, timed,
                                                         opts.price),
            "\n## compute-optimal", report.frontier(model, tokens, flops, fit)]
    return "\n".join(out)


def dry_run_summary(cfg: RunConfig) -> str:
    """Size and memory per device of the configured run, for ``--dry-run``."""
    try:
        model = _model(cfg)
    except ConfigError as e:   # a pretrained tokenizer not loaded yet: nothing to size
        return f"size and memory not estimated: {e}"
    # device "auto" is decided when the run starts (torch is not imported here): both
    devices = {"cpu": [False], "cuda": [True]}.get(cfg.device, [False, True])
    lines = [report.size(model)]
    world = cfg.train.parallel.fewest_processes   # a layout for torchrun: its own count
    for gpu in devices:
        prec = precision(cfg, gpu)
        sh = shape(cfg, world, prec)
        m = report.estimate(model, sh.batch, layout=sh.layout, checkpointing=sh.checkpointing,
                            optimizer=sh.optimizer, precision=prec,
                            fused_loss=cfg.train.loss_path(sh.layout.tp) == "chunked",
                            grad_accum=sh.grad_accum, cpu=not gpu,
                            activation_share=kept_share(sh.compiled))
        if len(lines) == 1:
            tokens = sh.tokens(model.seq_len)
            lines.append(f"training: {tokens:,} tokens = {model.flops_per_token() * tokens:.3g} "
                         "FLOPs" + (f", at most: train.time_budget_s = "
                                    f"{cfg.train.time_budget_s:g} s may end it first (`pretrain "
                                    "plan` says when)" if cfg.train.time_budget_s else ""))
        procs = f"{world} processes" if world > 1 else "one process"
        lines.append(f"memory per device, {procs}{' on a GPU' if gpu else ''} ({prec}): "
                     + ", ".join(f"{k} {v:.3g} GB" for k, v in m.as_gb().items()))
    return "\n".join(lines) + ("\n(`pretrain plan` for other layouts, time, cost and the "
                               "compute-optimal size)")
