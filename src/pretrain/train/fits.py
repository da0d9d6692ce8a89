"""Whether a training run fits on its device, decided before anything is allocated: the
memory model of ``plan/memory.py`` for this layout, against the GPU's memory or the
memory Linux says is available; a run that cannot fit is refused with what would."""

from __future__ import annotations

from typing import Any

import torch

from ..config import PretrainError
from ..log import log0
from ..model.config import ModelConfig
from ..plan.memory import COMPILED_ACTIVATIONS, MARGIN, Split, estimate, kept_share, largest_batch
from .config import TrainConfig
from .parallelize import Layout, resolve_precision


def device_memory(device: torch.device) -> float | None:
    """Bytes a process may use: the GPU's memory, or the memory Linux says is available."""
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            return next(int(line.split()[1]) * 1024.0 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        return None


def check_memory(model_cfg: ModelConfig, cfg: TrainConfig, layout: Layout,
                  device: torch.device, have: float | None = None) -> None:
    """Log the memory estimate; refuse, before allocating anything, a run that cannot fit
    in ``have`` bytes (the device's: :func:`device_memory`), warn of one that fits without
    the margin for the estimate's error."""
    split = Split(layout["dp_replicate"], layout["dp_shard"], layout["tp"], layout["pp"],
                  cfg.parallel.sequence_parallel, cfg.parallel.microbatches, cfg.parallel.pp_schedule)
    kw: dict[str, Any] = dict(layout=split, checkpointing=cfg.activation_checkpointing,
                              optimizer=cfg.optimizer,
                              precision=resolve_precision(cfg.precision, device),
                              fused_loss=cfg.loss_path(layout["tp"]) == "chunked",
                              grad_accum=cfg.grad_accum, cpu=device.type == "cpu",
                              activation_share=kept_share(cfg.compile))
    est = estimate(model_cfg, cfg.batch_size, **kw)
    parts = ", ".join(f"{k} {round(v, 2) + 0.0:.2f}"   # + 0.0: never "-0.00"
                      for k, v in est.as_gb().items() if k != "total")
    have = have or device_memory(device)
    log0(f"train: memory estimate {est.total / 1e9:.2f} GB per device ({parts})"
         + (f" of {have / 1e9:.1f} GB" if have else "")
         + (f"; compiled: {COMPILED_ACTIVATIONS:g}x the eager activations" if cfg.compile else ""))
    if not have or est.total <= MARGIN * have:
        return
    fits = largest_batch(model_cfg, MARGIN * have, **kw)
    advice = (f"train.batch_size = {fits} leaves a {1 - MARGIN:.0%} margin for the "
              "estimate's error" if fits else "not even one sequence fits")
    if est.total <= have:
        log0(f"train: warning: the estimate is within {1 - MARGIN:.0%} of the "
             f"{have / 1e9:.1f} GB {device} has, and it is within 10% of measured peaks: "
             f"this run may be killed for memory; {advice}")
        return
    raise PretrainError(
        f"this run needs about {est.total / 1e9:.1f} GB per device ({parts} GB) and "
        f"{device} has {have / 1e9:.1f} GB: {advice}; or shard it "
        "(train.parallel.dp_shard = -1 under torchrun), recompute "
        "activations (train.activation_checkpointing = true), or see `pretrain plan`")
