"""What the training loop does when a step goes wrong or a stop is asked: roll back to a
checkpoint (after repeated bad steps, or on slow divergence, with a lower learning rate),
skip an fp16 step whose gradients overflowed, and stop at a step boundary with a checkpoint
when a scheduler sends SIGTERM/SIGUSR1; under torchrun, the ranks' agreement at a step
boundary on the stop and on the training clock. A mixin of ``loop.Trainer``: the state it
reads and writes is the trainer's, declared below."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..config import Diverged, Preempted
from ..log import log0
from . import state
from .config import TrainConfig
from .monitor import Monitor
from .stability import DivergenceMonitor

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)   # a scheduler's notice: stop, resumable

# the loss scale's floor (DeepSpeed's min_loss_scale): gradients that overflow at scale 1
# overflow in fp16 itself; halving on (to 0, then 0 x inf = NaN) never recovers
FP16_MIN_SCALE = 1.0

class Recovery:
    cfg: TrainConfig
    d: distributed.Dist
    device: torch.device
    ckpt_dir: Path | None
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    divergence: DivergenceMonitor
    monitor: Monitor | None
    step: int
    data_pos: int
    rollbacks: int
    lr_scale: float
    events: list[dict[str, Any]]
    stop_requested: bool
    t_train: float
    timed_steps: int
    _agreed: tuple[float, int]
    _clock_base: tuple[float, int]
    _bar: Any

    def save(self, folder: Path | None = None) -> Path | None:
        raise NotImplementedError

    def restore(self, ckpt: Path) -> None:
        raise NotImplementedError

    def _rewound(self) -> None:
        """After a rollback's restore: TensorBoard and the progress bar back at its step
        (the bar counted on: 42/40 steps at the end of a run of 40)."""
        assert self.monitor is not None
        self.monitor.rewind(self.step)   # TensorBoard drops the steps after it
        if self._bar is not None:
            self._bar.update(self.step - self._bar.n)

    def _no_checkpoint(self, saved: int) -> str:
        """Why there is no checkpoint to roll back to, the steps up to ``saved`` having had
        their chance to be saved, with what would have kept one."""
        every = self.cfg.checkpoint_every
        if not every:
            return "there is no checkpoint to roll back to (train.checkpoint_every = 0)"
        if saved < every:
            return (f"no checkpoint was written before it (the first comes at step {every}; "
                    "a smaller train.checkpoint_every keeps an earlier one)")
        return "no checkpoint is left to roll back to"

    def _intact_checkpoint(self, at_most: int | None = None,
                           oldest: bool = False) -> Path | None:
        """The newest (or ``oldest``) checkpoint that verifies, of step ``at_most`` or earlier
        if given (rank 0 checks, every rank takes its answer)."""
        found = state.latest_intact(self.ckpt_dir, at_most, oldest) if self.d.rank == 0 else None
        return distributed.broadcast(found, self.d)  # type: ignore[no-any-return]

    def _rollback(self, rec: dict[str, Any]) -> None:
        """Back to the newest intact checkpoint, past the data of the bad steps; at its end
        (none left, or the budget spent) the event is recorded and the run stops."""
        ckpt = self._intact_checkpoint()
        if ckpt is None or self.rollbacks >= self.cfg.max_rollbacks:
            rec["action"] = "stopped"
            self.events.append(rec)
            assert self.monitor is not None
            self.monitor.event(rec)
            raise Diverged(f"training diverged at step {rec['step']} ({rec['reason']}) and "
                           f"{self._no_checkpoint(self.step) if ckpt is None else 'the rollback budget is spent'}; "
                           "lower train.lr or raise train.warmup_steps")
        bad_pos = self.data_pos
        # a divergence's lower learning rate holds past a checkpoint saved before it
        events, rollbacks, lr_scale = self.events, self.rollbacks + 1, self.lr_scale
        self.restore(ckpt)
        ckpt_pos = self.data_pos
        self._rewound()
        self.data_pos, self.events, self.rollbacks = bad_pos, events, rollbacks  # skip that data
        self.lr_scale = min(self.lr_scale, lr_scale)
        rec["action"] = f"rollback to step {self.step}, data position {bad_pos}"
        # back to the same checkpoint again: the trouble is in its state, not the data
        # skipped, so the learning rate is lowered as a divergence's rollback lowers it (a
        # checkpoint is its step and data position: a step rewritten after a rollback is
        # another checkpoint)
        rec["restored"] = [self.step, ckpt_pos]
        again = sum(e.get("restored") == rec["restored"] for e in events)
        if again:   # once per rollback: the scale carried over holds the earlier ones
            self.lr_scale *= self.cfg.divergence_lr_factor
            rec["action"] += (f", learning rate x{self.lr_scale:g} from now on (rollback "
                              f"{again + 1} to this checkpoint)")

    def _diverged(self, loss: float) -> bool:
        """After an accepted step: watch for slow divergence; True if it rolled back."""
        cfg = self.cfg
        if cfg.on_divergence == "off":
            return False
        found = self.divergence.observe(self.step, loss)
        if found is None:
            return False
        assert self.monitor is not None
        reason, began = found
        rec: dict[str, Any] = {"step": self.step, "data_pos": self.data_pos - 1, "loss": loss,
                               "reason": reason, "began_at_step": began}
        ckpt, nearest = None, ""
        if cfg.on_divergence == "rollback":
            # from before it began; else the oldest one kept (rotation may have removed those)
            ckpt = self._intact_checkpoint(at_most=began)
            if ckpt is None:
                ckpt = self._intact_checkpoint(oldest=True)
                nearest = (f" (the oldest kept: none was written by step {began}, the first "
                           f"comes at step {cfg.checkpoint_every}; a smaller "
                           "train.checkpoint_every keeps an earlier one)"
                           if began < cfg.checkpoint_every else
                           f" (none is left from step {began} or earlier: the oldest kept; "
                           "raise train.keep_last to keep more)")
        if ckpt is None or self.rollbacks >= cfg.max_rollbacks:
            why = ("train.on_divergence = 'stop'" if cfg.on_divergence == "stop" else
                   self._no_checkpoint(self.step - 1) if ckpt is None   # (this one's is not yet)
                   else "the rollback budget (train.max_rollbacks) is spent")
            rec["action"] = "stopped"
            self.events.append(rec)
            self.monitor.event(rec)
            raise Diverged(
                f"training diverged at step {self.step} ({reason}; it began after step "
                f"{began}) and {why}; lower train.lr (to {cfg.lr * self.lr_scale * cfg.divergence_lr_factor:.3g}?) "
                "or raise train.warmup_steps")
        bad_pos, events, rollbacks = self.data_pos, self.events, self.rollbacks + 1
        lr_scale = self.lr_scale * cfg.divergence_lr_factor
        if self.d.rank == 0 and self.ckpt_dir is not None:
            gone = state.discard_after(self.ckpt_dir, state.step_of(ckpt))
            if gone:
                log0(f"train: removed the checkpoints of the diverged steps: {', '.join(gone)}")
        self.restore(ckpt)
        self.divergence.restart_trend()
        self._rewound()
        self.data_pos, self.events, self.rollbacks = bad_pos, events, rollbacks
        self.lr_scale = lr_scale
        rec["action"] = (f"rollback to step {self.step}, data position {bad_pos}, learning "
                         f"rate x{lr_scale:g} from now on{nearest}")
        self.events.append(rec)
        self.monitor.event(rec)
        log0(f"train: step {rec['step']}: {reason}; {rec['action']}")
        return True

    def _request_stop(self, signum: int, frame: Any) -> None:
        """SIGTERM/SIGUSR1 (a scheduler's notice): stop at the next step boundary."""
        self.stop_requested = True

    @contextlib.contextmanager
    def stop_signals(self) -> Iterator[None]:
        """SIGTERM/SIGUSR1 ask the run to stop (``_request_stop``) from here on: the loop
        stops at its next step boundary with a checkpoint; one that came after the last
        step stops the run once its end is written (a signal then had killed the process
        with no word, the last step's checkpoint unwritten)."""
        main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        if main:
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._request_stop)
        try:
            yield
            if self._agree():   # every rank: one was asked to stop after the loop
                kept = state.complete(self.ckpt_dir) if self.ckpt_dir is not None else []
                where = (f"its checkpoint {kept[-1]} and weights are written" if kept
                         and state.step_of(kept[-1]) == self.step else "its weights are written")
                raise Preempted(f"stopped by a signal after the last step ({self.step}), "
                                f"{where}; rerun the command to complete the stage")
        finally:
            if main:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def clock(self, ahead: int = 0) -> float:
        """The training time ``time_budget_s`` and a time-based schedule follow (``ahead``:
        once that many more steps are timed). Under torchrun ranks reading their own clocks
        would take different learning rates (the replicas drift apart) or stop at different
        steps (one waits forever in a collective): there it is the slowest rank's time agreed
        at the last step boundary (each step, or those read at once when lagged), carried on
        by the agreed mean step time: one clock for all."""
        if not self.d.enabled:
            return self.t_train
        (t, n), (t0, n0) = self._agreed, self._clock_base
        return t + (self.timed_steps + ahead - n) * ((t - t0) / (n - n0) if n > n0 else 0.0)

    def _agree(self) -> bool:
        """At a step boundary, one collective: the ranks agree on the training clock (the
        slowest rank's, ``clock``) and on whether any rank was asked to stop."""
        stop, clock = distributed.max_all([float(self.stop_requested), self.t_train], self.d,
                                          self.device)
        self._agreed = (clock, self.timed_steps)
        return bool(stop)

    def _stop(self, save: bool = True) -> None:
        """A rank was asked to stop (``_agree``): all write a checkpoint and stop. Not at a
        skipped update (``save`` False): a checkpoint there would hold a streak of bad
        steps half counted and become what a later rollback restores, so the resumed run
        would differ; the rerun resumes from the last checkpoint and redoes the steps."""
        ckpt = self.save() if save else None
        kept = state.complete(self.ckpt_dir) if self.ckpt_dir is not None else []
        where = (f"checkpoint {ckpt}" if ckpt else f"no checkpoint at a skipped update (the "
                 f"last is {kept[-1]})" if kept else "no checkpoint")
        raise Preempted(f"stopped by a signal at step {self.step}, {where}; rerun the "
                        "command to resume (without --force, which would start it over)")

    def _fp16_overflow(self, loss: float) -> bool:
        """fp16 gradients overflowed: skip the update, lower the scale, record the event;
        False (nothing done) once the scale is at its floor: the step is then a bad step
        like any other, toward a rollback (a scale halved to 0 overflowed forever)."""
        assert self.scaler is not None and self.monitor is not None
        if self.scaler.get_scale() <= FP16_MIN_SCALE:
            return False
        # halves the scale; under FSDP the overflow check on DTensor gradients is reduced
        # over the mesh, so every rank halves (tests/distributed: one rank's shard overflows)
        self._scale_update()
        self.opt.zero_grad(set_to_none=True)
        rec = {"step": self.step + 1, "data_pos": self.data_pos - 1, "loss": loss,
               "grad_norm": math.inf, "reason": "fp16 gradient overflow",
               "action": f"skipped update, loss scale now {self.scaler.get_scale():g}"}
        self.events.append(rec)
        self.monitor.event(rec)
        log0(f"train: step {rec['step']}: {rec['reason']}; {rec['action']}")
        if self._agree():   # a stop asked during a run of overflows is taken here
            self._stop(save=False)
        return True

    def _scale_update(self) -> None:
        """The scaler's update after a skipped step, the scale kept at or above
        ``FP16_MIN_SCALE`` (a read of the scale: not at the steps whose update was taken)."""
        assert self.scaler is not None
        self.scaler.update()
        if self.scaler.get_scale() < FP16_MIN_SCALE:
            self.scaler.update(new_scale=FP16_MIN_SCALE)
