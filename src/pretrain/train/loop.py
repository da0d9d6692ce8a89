"""The training stage: next-token cross-entropy with AdamW, warmup + cosine decay.

Importable and callable from tests (``train(cfg, model_cfg, shards_dir, out, seed)``).
This foundation version trains on one process; issue 4 adds exact resume, the
mixture-aware loader, spike/NaN handling and DDP/FSDP2.

Batches are drawn deterministically from (seed, step, micro-step): random windows of
``seq_len + 1`` tokens over the memory-mapped train shards, each shard weighted by its
size. Documents are packed (a window may cross a BOS/EOS boundary), as in nanoGPT.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..config import ConfigError, PretrainError
from ..log import Progress, log0
from ..model.config import ModelConfig
from ..model.transformer import Transformer
from ..tokenizer.shards import TokenShards
from . import checkpoint


@dataclass
class TrainConfig:
    steps: int = 500
    batch_size: int = 16              # sequences per micro-batch
    grad_accum: int = 1               # micro-batches per optimizer step
    lr: float = 3e-3
    min_lr_ratio: float = 0.1         # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    schedule: Literal["cosine"] = "cosine"
    weight_decay: float = 0.1         # matrices only; norms and embeddings are not decayed
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0            # 0 = off
    eval_every: int = 100
    eval_batches: int = 8
    log_every: int = 10
    threads: int = 0                  # torch intra-op threads; 0 = torch's default
    device: Literal["auto", "cpu", "cuda"] = "auto"
    peak_tflops: float = 0.0          # hardware peak for MFU; 0 = do not report MFU
    init_from: str = ""               # continue from: run dir, checkpoint or HF model dir

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "eval_batches", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("lr must be positive and min_lr_ratio within [0, 1]")
        if self.warmup_steps < 0:
            raise ConfigError("warmup_steps must be >= 0")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine down to ``lr * min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


class RandomWindows:
    """Deterministic random training windows over memory-mapped shards."""

    def __init__(self, shards: TokenShards, seq_len: int, seed: int):
        # a window is seq_len + 1 tokens (inputs and shifted targets): a shard of n tokens
        # has n - seq_len possible starts
        self.arrays = [a for a in shards.shards if len(a) >= seq_len + 1]
        if not self.arrays:
            raise ConfigError(f"no train shard holds seq_len + 1 = {seq_len + 1} tokens; "
                              "use more data or a shorter model.seq_len")
        sizes = np.array([len(a) - seq_len for a in self.arrays], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.seq_len, self.seed = seq_len, seed

    def batch(self, step: int, micro: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step, micro])
        which = rng.choice(len(self.arrays), size=batch_size, p=self.weights)
        rows = []
        for s in which:
            arr = self.arrays[s]
            start = int(rng.integers(0, len(arr) - self.seq_len))
            rows.append(np.asarray(arr[start:start + self.seq_len + 1], dtype=np.int64))
        xy = torch.from_numpy(np.stack(rows))
        return xy[:, :-1], xy[:, 1:]


def fixed_val_batches(shards: TokenShards, seq_len: int, batch_size: int,
                      n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Contiguous windows from the start of the val split: the same ones at every eval."""
    rows = []
    for arr in shards.shards:
        for start in range(0, len(arr) - seq_len, seq_len):
            rows.append(np.asarray(arr[start:start + seq_len + 1], dtype=np.int64))
            if len(rows) == batch_size * n_batches:
                break
        if len(rows) == batch_size * n_batches:
            break
    if not rows:
        raise ConfigError(f"the val split holds fewer than seq_len + 1 = {seq_len + 1} tokens")
    xy = torch.from_numpy(np.stack(rows))
    return [(xy[i:i + batch_size, :-1], xy[i:i + batch_size, 1:])
            for i in range(0, len(rows), batch_size)]


@torch.no_grad()
def evaluate(model: Transformer, batches: list[tuple[torch.Tensor, torch.Tensor]],
             device: torch.device) -> float:
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        _, loss = model(x.to(device), y.to(device), reduction="sum")
        total += float(loss)
        count += y.numel()
    model.train()
    return total / count


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # matrices of linear layers decay; norms gains and embedding tables do not
        (decay if p.dim() == 2 and not name.startswith("embed.") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA device is available")
    return torch.device(name)


def train(cfg: TrainConfig, model_cfg: ModelConfig, tokens_dir: Path, out: Path, seed: int,
          counts: dict[str, Any], init: Transformer | None = None) -> Transformer:
    """Train a new model of ``model_cfg``, or continue from ``init`` (its config then rules)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    torch.manual_seed(seed)
    train_shards, val_shards = TokenShards(tokens_dir, "train"), TokenShards(tokens_dir, "val")
    if init is not None:
        model_cfg = init.cfg
    model = (init if init is not None else Transformer(model_cfg)).to(device).train()
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                            betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")
    windows = RandomWindows(train_shards, model_cfg.seq_len, seed)
    val = fixed_val_batches(val_shards, model_cfg.seq_len, cfg.batch_size, cfg.eval_batches)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    tokens_per_step = cfg.batch_size * cfg.grad_accum * model_cfg.seq_len
    flops_per_step = model_cfg.flops_per_token() * tokens_per_step
    n_params = model_cfg.num_params()
    log0(f"train: {n_params / 1e6:.2f} M params, {tokens_per_step:,} tokens/step, "
         f"{cfg.steps} steps on {device}")

    history: list[dict[str, Any]] = []
    val_losses: dict[int, float] = {0: evaluate(model, val, device)}
    log0(f"train: step 0 val loss {val_losses[0]:.4f}")
    log_f = open(out / "log.jsonl", "w")
    t_train = 0.0
    with Progress("train", total=cfg.steps, unit="steps") as bar:
        for step in range(cfg.steps):
            t0 = time.perf_counter()
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            loss_sum = 0.0
            for micro in range(cfg.grad_accum):
                x, y = windows.batch(step, micro, cfg.batch_size)
                with autocast:
                    _, loss = model(x.to(device), y.to(device))
                (loss / cfg.grad_accum).backward()
                loss_sum += float(loss.detach())
            grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                         if cfg.grad_clip > 0 else torch.tensor(0.0))
            opt.step()
            opt.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            t_train += dt
            train_loss = loss_sum / cfg.grad_accum
            if not math.isfinite(train_loss):
                raise PretrainError(f"train loss is {train_loss} at step {step}; lower train.lr "
                                   "(loss-spike and NaN recovery arrive with issue 4)")
            done = step + 1
            rec: dict[str, Any] = {"step": done, "loss": round(train_loss, 5), "lr": lr,
                                   "grad_norm": round(float(grad_norm), 4),
                                   "tok_per_s": round(tokens_per_step / dt, 1)}
            if cfg.peak_tflops:
                rec["mfu"] = round(flops_per_step / dt / (cfg.peak_tflops * 1e12), 4)
            if done % cfg.eval_every == 0 or done == cfg.steps:
                val_losses[done] = rec["val_loss"] = round(evaluate(model, val, device), 5)
            if done % cfg.log_every == 0 or "val_loss" in rec:
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
            history.append(rec)
            bar.update(1, loss=train_loss, **({"val": rec["val_loss"]} if "val_loss" in rec else {}))
    log_f.close()
    checkpoint.save(model, model_cfg, out)
    first, last = val_losses[0], val_losses[cfg.steps]
    counts.update({"params": n_params, "tokens_seen": tokens_per_step * cfg.steps,
                   "val_loss_initial": round(first, 5), "val_loss_final": round(last, 5),
                   "train_loss_final": history[-1]["loss"],
                   "tok_per_s": round(tokens_per_step * cfg.steps / t_train, 1),
                   "device": str(device)})
    log0(f"train: val loss {first:.4f} -> {last:.4f} "
         f"({counts['tok_per_s']:,.0f} tokens/s over {t_train:.0f}s of steps)")
    return model
