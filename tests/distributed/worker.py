"""Run by torchrun in the distributed tests: train() on the token shards given, under the
layout given. Usage:

    worker.py TOKENS OUT [--parallel dp_shard=2,tp=2] [--batch 4] [--accum 2] [--steps 6]
              [--arch llama] [--kill-at N] [--signal-at N] [--host-sync lagged]
              [--log-every 1] [--eval-every 3] [--nan-at N] [--budget S] [--clock-rank1 X]
              [--checkpoint-every 3] [--dropout P] [--sleep N:S] [--sleep N-:S]
              [--check-replicas 1]

``--nan-at N``: the gradient norm is NaN at data position N (every rank).
``--kill-at N``: every rank stops at data position N (a simulated kill); a rerun resumes
from OUT/ckpt. ``--signal-at N``: at data position N rank 1 alone sends itself SIGUSR1 (a
preemption notice that reached one process); every rank then exits 75. Rank 0 writes
OUT/counts.json. ``--budget S``: train.time_budget_s = S; every rank writes the learning
rates of the updates it took to OUT/lrs_rank{R}.json. ``--clock-rank1 X``: rank 1's
``time.perf_counter`` runs X times as fast as the real one (its own step times read X times
longer than rank 0's). ``--precision fp16 --overflow-at N``: at data position N one
gradient's local part on rank 1 alone overflows before the scaler looks; every rank writes
its loss scale after each step to OUT/scales_rank{R}.json. ``--sleep N:S``: every rank
sleeps S seconds in the step at data position N (``N-:S``: in each from N on); repeatable.
``--check-replicas``: after training, rank 0 writes OUT/replicas.json, the largest
difference across ranks of each parameter every rank holds whole (a replicated DTensor).
Every rank writes OUT/held_rank{R}.json: the elements of the parameters and of the
optimizer's state it holds itself (its shards under FSDP or TP).
"""

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor, Replicate

from pretrain import distributed
from pretrain.config import EXIT_PREEMPTED, Preempted
from pretrain.train.loop import RunPaths, Trainer, train

sys.path.insert(0, str(Path(__file__).parent))
from common import model_config, train_config  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("tokens", type=Path)
ap.add_argument("out", type=Path)
ap.add_argument("--parallel", default="")
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--accum", type=int, default=2)
ap.add_argument("--steps", type=int, default=6)
ap.add_argument("--arch", default="llama")
ap.add_argument("--kill-at", type=int, default=-1)
ap.add_argument("--signal-at", type=int, default=-1)
ap.add_argument("--host-sync", default="auto")
ap.add_argument("--nan-at", type=int, default=-1)
ap.add_argument("--log-every", type=int, default=1)
ap.add_argument("--eval-every", type=int, default=3)
ap.add_argument("--budget", type=float, default=0.0)
ap.add_argument("--clock-rank1", type=float, default=1.0)
ap.add_argument("--checkpoint-every", type=int, default=3)
ap.add_argument("--eval-batches", type=int, default=2)
ap.add_argument("--precision", default="auto")
ap.add_argument("--overflow-at", type=int, default=-1)   # rank 1's gradient shard overflows
ap.add_argument("--dropout", type=float, default=0.0)
ap.add_argument("--sleep", action="append", default=[])
ap.add_argument("--check-replicas", type=int, default=0)
args = ap.parse_args()

d = distributed.init("cpu")
cfg = train_config(args.steps, args.batch, args.accum, args.parallel, host_sync=args.host_sync,
                   log_every=args.log_every, eval_every=args.eval_every,
                   time_budget_s=args.budget, checkpoint_every=args.checkpoint_every,
                   eval_batches=args.eval_batches, precision=args.precision)
args.out.mkdir(parents=True, exist_ok=True)
real = Trainer.forward_backward
real_settle = Trainer._settle
lrs: list[float] = []


scales: list[float] = []
data_at = [-1]


trainers: list[Trainer] = []


def settle(self, loss, norm, reason, lr, dt, boundary):
    trainers[:] = [self]
    if reason is None:
        lrs.append(lr)
    if self.scaler is not None:
        scales.append(self.scaler.get_scale())
    return real_settle(self, loss, norm, reason, lr, dt, boundary)


real_unscale = torch.amp.GradScaler.unscale_


def unscale(scaler, opt):
    """On rank 1 at ``--overflow-at``, one gradient's local shard overflows before the
    scaler looks (as an fp16 overflow in one rank's part of the model does)."""
    if d.rank == 1 and data_at[0] == args.overflow_at:
        grad = opt.param_groups[0]["params"][0].grad
        (grad.to_local() if hasattr(grad, "to_local") else grad).mul_(math.inf)
    return real_unscale(scaler, opt)


if d.rank == 1 and args.clock_rank1 != 1.0:
    real_clock, t_start = time.perf_counter, time.perf_counter()
    time.perf_counter = lambda: t_start + (real_clock() - t_start) * args.clock_rank1


def pause(data_pos):
    """The sleep ``--sleep`` asks for at this data position (the last that matches)."""
    secs = 0.0
    for spec in args.sleep:
        where, s = spec.split(":")
        hit = data_pos >= int(where[:-1]) if where.endswith("-") else data_pos == int(where)
        secs = float(s) if hit else secs
    return secs


def killed(self, data_pos):
    data_at[0] = data_pos
    time.sleep(pause(data_pos))
    if data_pos == args.kill_at:
        sys.exit(3)
    if data_pos == args.signal_at and d.rank == 1:
        os.kill(os.getpid(), signal.SIGUSR1)
    loss, norm = real(self, data_pos)
    if data_pos == args.nan_at:   # as a NaN in one rank's gradients is, once all-reduced
        return loss, norm.new_tensor(float("nan"))
    return loss, norm


Trainer.forward_backward = killed
Trainer._settle = settle
torch.amp.GradScaler.unscale_ = unscale
# gloo on CPU whatever the machine has: on a one-GPU machine "auto" would put rank 1 on cuda:1
try:
    counts = train(cfg, dataclasses.replace(model_config(args.arch), dropout=args.dropout),
                   args.tokens,
                   RunPaths(args.out, checkpoints=args.out / "ckpt"), seed=5, device="cpu", d=d)
except Preempted as e:
    sys.stderr.write(f"rank {d.rank}: preempted: {e}\n")  # one write: the ranks share a pipe
    sys.stderr.flush()
    # torchrun stops the other workers as soon as one exits non-zero: none leaves before all spoke
    distributed.barrier(d)
    distributed.shutdown()
    sys.exit(EXIT_PREEMPTED)
if d.rank == 0:
    (args.out / "counts.json").write_text(json.dumps(counts))
if args.check_replicas:
    spread = {}
    for name, p in trainers[0].model.named_parameters():
        if isinstance(p, DTensor) and all(isinstance(x, Replicate) for x in p.placements):
            local = p.to_local().detach()
            every = [torch.empty_like(local) for _ in range(d.world)]
            torch.distributed.all_gather(every, local)
            spread[name] = max(float((x - local).abs().max()) for x in every)
    if d.rank == 0:
        (args.out / "replicas.json").write_text(json.dumps(spread))


def held(t: torch.Tensor) -> int:
    return (t.to_local() if isinstance(t, DTensor) else t).numel()


if trainers:   # none where a rerun found every step done
    trainer = trainers[0]
    (args.out / f"held_rank{d.rank}.json").write_text(json.dumps({
        "params": sum(held(p) for p in trainer.model.parameters()),
        "optimizer": sum(held(v) for s in trainer.opt.state.values() for v in s.values()
                         if isinstance(v, torch.Tensor) and v.dim() > 0)}))
if args.budget:
    (args.out / f"lrs_rank{d.rank}.json").write_text(json.dumps(lrs))
if scales:
    (args.out / f"scales_rank{d.rank}.json").write_text(json.dumps(scales))
distributed.barrier(d)
distributed.shutdown()
