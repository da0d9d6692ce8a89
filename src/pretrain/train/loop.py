"""The training loop: next-token cross-entropy with the configured optimizer (``optim.py``:
AdamW or Muon) and schedule (cosine, linear or warmup-stable-decay), gradient accumulation
and clipping, evaluation on fixed held-out windows, exact resume and a spike guard.

Importable and callable from tests (``train(cfg, model_cfg, tokens_dir, RunPaths(out))``).
Under torchrun the model is built and split by ``parallelize.py`` (DDP, FSDP2/HSDP, tensor
and sequence parallel, and pipeline stages run by ``pipelining.py``); each data-parallel
rank reads its own rows of every global batch, so any layout takes the steps one process
takes with the same global batch. Metrics to log.jsonl, a plain log line, TensorBoard and
optionally W&B (``monitor.py``).

Resume is exact: the loader's state is one integer (the data position), and a checkpoint
holds the model, the optimizer, the RNG states and the loop state (``train/state.py``,
sharded through DCP, loadable under any layout), so on CPU ``k`` steps + kill + resume
gives the same weights and losses, bit for bit, as an uninterrupted run. Bad steps (NaN/Inf,
loss spikes: ``train/stability.py``) skip their update; repeated ones roll back to the last
checkpoint and skip the data that caused them (``recovery.py``). The host reads each step
(``host_sync = "step"``) or lets the device skip bad updates and reads a step late
("lagged"): the same decisions either way.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.tensor import DTensor

from .. import distributed
from ..config import ConfigError
from ..eval.loss import domain_windows, score
from ..log import Progress, log0
from ..model.attention import sdpa_backend
from ..model.config import ModelConfig
from ..model.generate import generate
from ..model.transformer import Transformer
from ..tokenizer.shards import TokenShards
from . import state
from .config import TrainConfig
from .data import MixtureWindows, Prefetcher, RandomWindows, probe_prompts
from .fits import check_memory
from .monitor import Monitor, log_line, logs_on_failure, memory_gb, val_fields
from .optim import lr_at, make_optimizer, peaks
from .parallelize import (
    Layout,
    build,
    make_layout,
    resolve_host_sync,
    resolve_loss,
    resolve_precision,
)
from .pipelining import Pipeline
from .recovery import Recovery
from .stability import DivergenceMonitor, SpikeGuard


@dataclass
class RunPaths:
    """Where a training run writes."""
    out: Path                         # final weights, log.jsonl, events.jsonl, generations.jsonl
    checkpoints: Path | None = None   # resumable checkpoints; a rerun resumes from the latest
    monitor: Path | None = None       # TensorBoard event files
    name: str = "train"               # the run's name (W&B)


@dataclass
class _Pending:
    """A step launched with its skip decided on the device, not read yet (host_sync lagged)."""

    values: torch.Tensor              # loss, gradient norm, skipped (1.0) or not: on the host
    event: torch.cuda.Event | None    # recorded after the copy (GPU); None: already there
    data_pos: int
    lr: float
    t0: float



class Trainer(Recovery):
    """The loop around one rank's model. ``layout`` says where the rank sits in the device
    mesh (one process when None); ``net`` is what forward and backward run through (a DDP
    wrapper, or the model itself); ``parallelize.build`` makes both."""

    def __init__(self, cfg: TrainConfig, model: Transformer, tokens_dir: Path, paths: RunPaths,
                 seed: int, device: torch.device, d: distributed.Dist | None = None,
                 layout: Layout | None = None, net: torch.nn.Module | None = None):
        self.cfg, self.model, self.device, self.paths = cfg, model, device, paths
        self.ckpt_dir = paths.checkpoints
        self.d = d or distributed.Dist()
        self.layout = layout or Layout(cfg.parallel.degrees(1))
        self.net: torch.nn.Module = net if net is not None else model
        self.model_cfg = model.cfg
        self.pipeline = Pipeline(self.net, self.layout.index("pp"), self.layout["pp"],
                                 cfg.parallel.microbatches, cfg.parallel.pp_schedule, device,
                                 self.layout.group("pp")) if self.layout["pp"] > 1 else None
        # created after parallelizing: FSDP2 and TP replace the parameters with sharded ones
        self.opt = make_optimizer(model, cfg)
        seq_len = model.cfg.seq_len
        dp = self.layout.dp
        train_shards = TokenShards(tokens_dir, "train")
        self.tokenizer_file = train_shards.tokenizer_file   # copied into each checkpoint
        self.windows: RandomWindows | MixtureWindows
        self.data_end: int | None = None   # a capped mixture's end under a time budget
        if cfg.mixture:
            self.windows = MixtureWindows(train_shards, seq_len, seed, cfg.mixture, cfg.steps,
                                          cfg.batch_size * cfg.grad_accum * dp,
                                          cfg.mixture_phases)
            self.data_end = self.windows.check_end(budgeted=bool(cfg.time_budget_s))
            self.windows.say_repeats()
        else:
            self.windows = RandomWindows(train_shards, seq_len, seed)
        rank, layout_dp = self.layout.dp_rank, dp
        self.batches = Prefetcher(lambda key: self.windows.batch(
            key[0], key[1], cfg.batch_size, rank, layout_dp), device)
        # fixed val windows (eval_batches micro-batches of every data-parallel rank, split
        # evenly over the domains), scored on every rank so that all take the same decisions
        val = TokenShards(tokens_dir, "val")
        rows = cfg.batch_size * dp * cfg.eval_batches
        n_domains = max(1, len(val.domain_ids()))
        self.val = domain_windows(val, seq_len, max(1, rows // n_domains) * seq_len)
        if not self.val:
            raise ConfigError("the val split is empty: nothing to evaluate on")
        self.token_bytes, self.doc_start = val.token_bytes(), val.doc_start()
        # none sharded (each rank in the generation's collectives) or with no room (seq_len < 3)
        self.probes = {} if self.layout.sharded or not cfg.probe_new_tokens or seq_len < 3 \
            else probe_prompts(val, min(cfg.probe_prompt_tokens, seq_len // 2))
        self.tokenizer = val.tokenizer() if self.probes else None
        self.generations: list[dict[str, Any]] = []
        self.precision = resolve_precision(cfg.precision, device)
        self.batch_rows = cfg.batch_size * dp   # of one micro-step, over the ranks
        self.tokens_per_step = self.batch_rows * cfg.grad_accum * seq_len
        self.flops_per_step = model.cfg.flops_per_token() * self.tokens_per_step
        self.fused_loss = resolve_loss(cfg, self.layout) == "chunked"   # head + loss in chunks
        self.host_sync = resolve_host_sync(cfg, self.layout, device)   # "step" or "lagged"
        self.lagged = self.host_sync == "lagged"
        # a lagged step's values land here (pinned); one suffices: each is read before the next
        self._host_values = torch.empty(3, dtype=torch.float64, pin_memory=True) \
            if self.lagged and device.type == "cuda" else None
        low = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.bfloat16}
        low_dtype = low.get(self.precision, torch.float32)
        self.autocast = torch.autocast(device.type, dtype=low_dtype, enabled=self.precision in low)
        # fp16's narrow range: the loss scaled up before backward, the gradients unscaled
        # before clipping, a step with overflowed gradients skipped and the scale lowered
        self.scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        self.guard = SpikeGuard(cfg.spike_window, cfg.spike_zscore, cfg.max_bad_steps)
        self.divergence = DivergenceMonitor(cfg.divergence_factor, cfg.divergence_window,
                                            cfg.divergence_rise)
        self.lr_scale = 1.0   # lowered by each divergence rollback
        self.peaks = peaks(device, cfg.peak_tflops, low_dtype)  # MFU's (CPU: in low_dtype)
        # which SDPA kernel the attention runs here (flash, cuDNN, memory-efficient, math)
        self.sdpa = sdpa_backend(self.model_cfg, device, low_dtype)
        # the loop state, all of it saved in checkpoints
        self.step = self.data_pos = self.rollbacks = 0
        self.history: list[dict[str, Any]] = []      # logged records
        self.val_losses: dict[str, float] = {}       # step (as str, for JSON) -> val loss
        self.val_initial: dict[str, Any] = {}        # step 0's evaluation (val_fields)
        self.events: list[dict[str, Any]] = []
        self.t_train = 0.0
        # the first step of a process (CUDA warm-up, compilation) is timed apart: it counts
        # neither toward time_budget_s nor toward the throughput
        self.t_warmup, self.timed_steps = 0.0, 0
        # (t_train, timed_steps): as the ranks last agreed, and at the start or last restore
        self._agreed = self._clock_base = self._logged = (0.0, 0)   # _logged: at the last record
        self._said_mfu = False   # an MFU above 100% explained
        self._warm = True   # the next step is this process's first
        self._last_end = 0.0   # when the last lagged step's values were read
        self._bar: Any = None
        self.stop_requested = False
        self.monitor: Monitor | None = None

    def evaluate(self) -> dict[str, dict[str, float]]:
        batch = self.cfg.batch_size * self.layout.dp
        if self.pipeline is None:
            # sequence parallel splits the positions over the tp ranks: whole windows only
            split = self.layout["tp"] > 1 and self.cfg.parallel.sequence_parallel
            return score(self.model, self.val, self.token_bytes, batch, self.device,
                         width=self.model_cfg.seq_len + 1 if split else 0, doc_start=self.doc_start,
                         fused=self.fused_loss)
        return self.pipeline.score(self.val, self.token_bytes, self.cfg.batch_size,
                                   self.model_cfg.seq_len, self.d, self.doc_start)

    def done(self, pos: int | None = None) -> bool:
        """Trained enough steps, the time budget is spent, or a capped mixture has nothing
        left to draw at data position ``pos`` (default: the next step's)."""
        budget = self.cfg.time_budget_s
        pos = self.data_pos if pos is None else pos
        return (self.step >= self.cfg.steps or bool(budget and self.clock() >= budget)
                or (self.data_end is not None and pos >= self.data_end))

    def forward_backward(self, data_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step's gradients; returns (mean loss, gradient norm before
        clipping), on the device: nothing is read back here. The batches come from the
        prefetcher, made while the previous micro-step computed."""
        cfg, layout = self.cfg, self.layout
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        has_loss = self.pipeline is None or layout.last_stage
        for micro in range(cfg.grad_accum):
            ahead = (data_pos, micro + 1) if micro + 1 < cfg.grad_accum else (data_pos + 1, 0)
            x, y = self.batches.get((data_pos, micro), ahead)
            if self.pipeline is not None:  # forward and backward of every microbatch
                with self.autocast:
                    loss_sum += self.pipeline.step(x, y) or 0.0
                if layout.ddp:  # replicated stages: average their gradients
                    distributed.average_grads(self.model.parameters(), layout.group("dp_replicate"))
                continue
            sync = micro == cfg.grad_accum - 1  # reduce the gradients once per step
            no_sync = contextlib.nullcontext()
            if layout["dp_shard"] > 1:
                self.model.set_requires_gradient_sync(sync)  # type: ignore[operator]
            elif layout.ddp and not sync:
                no_sync = self.net.no_sync()  # type: ignore[operator]
            with self.autocast, no_sync:
                _, loss = self.net(x, y, fused_loss=self.fused_loss)
                scaled = loss / cfg.grad_accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            loss_sum += loss.detach().double()
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        norm = self._clip()
        # every rank must take the same skip/rollback decision: use the global mean loss
        mean = distributed.mean_tensor(loss_sum / cfg.grad_accum, self.d,
                                       weight=1.0 if has_loss else 0.0)
        return mean.double(), norm.double()

    def _clip(self) -> torch.Tensor:
        """The norm of all gradients (sharded, split by stage, or whole) before clipping, on
        the device; clips them to ``grad_clip`` (0 = only measure)."""
        cfg, layout = self.cfg, self.layout
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not any(isinstance(p, DTensor) for p in params) and layout["pp"] == 1:
            if not params:
                return torch.zeros((), device=self.device)
            # on the device: the clip factor is applied without reading the norm back
            return torch.nn.utils.clip_grad_norm_(params, max_norm).detach()
        squares = torch.zeros((), dtype=torch.float64, device=self.device)
        for group in ([p for p in params if isinstance(p, DTensor)],
                      [p for p in params if not isinstance(p, DTensor)]):
            if group:
                n = torch.nn.utils.get_total_norm([p.grad for p in group if p.grad is not None])
                n = n.full_tensor() if isinstance(n, DTensor) else n  # over the whole mesh
                squares += n.double() ** 2
        if layout["pp"] > 1:  # each stage holds different parameters
            squares = distributed.all_reduce_sum(squares, layout.group("pp"))
        norm = float(squares.sqrt())   # sharded grads take a Python factor: a host sync here
        if math.isfinite(norm) and norm > max_norm:
            for p in params:
                p.grad.mul_(max_norm / (norm + 1e-6))  # type: ignore[union-attr]
        return torch.tensor(norm, device=self.device)

    # ---- checkpoints -----------------------------------------------------------------------
    def _loop_state(self) -> dict[str, Any]:
        return {"data_pos": self.data_pos, "batch_rows": self.batch_rows,
                "rollbacks": self.rollbacks, "history": self.history,
                "val_losses": self.val_losses, "val_initial": self.val_initial,
                "events": self.events, "t_train": self.clock(),
                "timed_steps": self.timed_steps, "logged": list(self._logged), "guard": self.guard.state(),
                "generations": self.generations, "divergence": self.divergence.state(), "lr_scale": self.lr_scale,
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "val_loss": self.val_losses.get(str(self.step), math.inf),
                "layout": self.layout.degrees}

    def save(self, folder: Path | None = None) -> Path | None:
        """A resumable checkpoint (a collective: each rank writes its shards)."""
        folder = folder or self.ckpt_dir
        if folder is None:
            return None
        return state.save(folder, self.step, self.model_cfg, self.model, self.opt,
                          self._loop_state(), self.cfg.keep_last, self.d, self.tokenizer_file)

    def restore(self, ckpt: Path) -> None:
        st = state.load(ckpt, self.model, self.opt, self.d, self.layout.degrees)
        state.check_batch_rows(ckpt, st.get("batch_rows"), self.cfg.batch_size, self.layout.dp)
        self.step, self.data_pos, self.rollbacks = st["step"], st["data_pos"], st["rollbacks"]
        self.history, self.val_losses, self.events = st["history"], st["val_losses"], st["events"]
        self.t_train, self.val_initial = st["t_train"], st.get("val_initial", {})
        # the steps that time covers (each process's first step is not timed); a checkpoint
        # of before they were saved: all but its first
        self.timed_steps = st.get("timed_steps", max(0, self.step - 1))
        # the same checkpoint on every rank: the clock goes on from its time, records from the last's
        self._agreed = self._clock_base = (self.t_train, self.timed_steps)
        self._logged = tuple(st.get("logged", self._agreed))  # type: ignore[assignment]
        self.generations = st.get("generations", [])
        self.guard.load(st["guard"])
        self.divergence.load(st.get("divergence"))
        self.lr_scale = st.get("lr_scale", 1.0)
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        cfg = self.cfg
        distributed.barrier(self.d)  # rank 0 may have just cleared the checkpoints (--force)
        ckpt = self._intact_checkpoint() if cfg.resume else None
        if ckpt is not None:
            self.restore(ckpt)
            log0(f"train: resumed from {ckpt} (step {self.step})")
        elif cfg.resume and self.ckpt_dir is not None and state.complete(self.ckpt_dir):
            log0("train: no checkpoint of this config is intact: training starts from step 0")
        self.monitor = Monitor(self.paths.monitor, cfg.tensorboard, cfg.wandb, cfg.wandb_project,
                               self.paths.name, {"train": asdict(cfg), "model": asdict(self.model_cfg)},
                               self.step, enabled=self.d.rank == 0)
        if ckpt is None:   # step 0's evaluation: in TensorBoard and the manifest, not log.jsonl
            res = self.evaluate()
            self.val_losses["0"] = res["all"]["loss"]
            self.val_initial = val_fields(res)
            self.monitor.log({"step": 0, **self.val_initial})
            log0(f"train: step 0 val loss {self.val_losses['0']:.4f}")
            self._generate(0)
        try:
            self._loop()
            if self.data_end is not None and self.data_pos >= self.data_end:
                log0(f"train: every train.mixture domain is at its max_epochs: the run ends at "
                     f"step {self.step}, before its time budget")
            if str(self.step) not in self.val_losses:  # resumed at its end, never evaluated
                self._record_eval(self.step, {"step": self.step})
        finally:
            self.batches.close()
            self.monitor.close()

    def _loop(self) -> None:
        """Steps until done. With ``host_sync = "step"`` the host reads each step's loss and
        norm and then takes or skips its update; with "lagged" the device skips a bad update
        itself and the host reads a step late (``_launch``, ``_read``), while the next
        step's forward and backward already run, except at steps that log, evaluate,
        checkpoint or end, which are read at once: the same decisions, in the same order."""
        pending: _Pending | None = None
        with Progress("train", total=None if self.cfg.time_budget_s else self.cfg.steps,
                      unit="steps") as bar:
            self._bar = bar
            bar.update(self.step)
            # a pending step is never the last (_read_now) and is read before the budget is
            # looked at again: the loop ends with none
            while not self.done():
                t0 = time.perf_counter()
                pos = self.data_pos
                mean, norm = self.forward_backward(pos)
                self.data_pos = pos + 1
                if pending is not None:
                    rolled = self._read(pending, late=True)
                    pending = None
                    if rolled or self.done(pos):  # this step's gradients are of a state now gone
                        self.opt.zero_grad(set_to_none=True)
                        if not rolled:   # the budget is spent: this data was not used
                            self.data_pos = pos
                        continue
                frac = self.clock() / self.cfg.time_budget_s if self.cfg.time_budget_s else None
                lr = lr_at(self.step, self.cfg, frac) * self.lr_scale
                for g in self.opt.param_groups:  # every optimizer's groups
                    g["lr"] = lr * g.get("lr_mult", 1.0)
                if self.lagged:
                    pending = self._launch(mean, norm, pos, lr, t0)
                    if self._read_now():
                        self._read(pending, late=False)
                        pending = None
                    continue
                loss, norm_v = torch.stack([mean, norm]).tolist()  # the step's one host read
                if self.scaler is not None and math.isfinite(loss) and not math.isfinite(norm_v) \
                        and self._fp16_overflow(loss):   # not a bad step: the scale was too high
                    continue
                reason = self.guard.check(loss, norm_v)
                if reason is None and self.scaler is not None:
                    self.scaler.step(self.opt)
                elif reason is None:
                    self.opt.step()
                if self.scaler is not None and reason is None:
                    self.scaler.update()   # an update taken: the scale can only grow
                elif self.scaler is not None:
                    self._scale_update()
                self.opt.zero_grad(set_to_none=True)
                self._settle(loss, norm_v, reason, lr, time.perf_counter() - t0, True)

    def _launch(self, mean: torch.Tensor, norm: torch.Tensor, pos: int, lr: float,
                t0: float) -> _Pending:
        """The update, skipped on the device if the step is bad (a non-finite loss or norm,
        or a loss above the spike guard's threshold): fused AdamW's ``found_inf`` leaves the
        weights, moments and step count as they were. The loss, norm and skip flag are
        copied to pinned host memory behind an event, to be read later."""
        bad = ~(torch.isfinite(mean) & torch.isfinite(norm)) | (mean > self.guard.threshold())
        self.opt.found_inf = bad.float()  # type: ignore[attr-defined]
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        values = torch.stack([mean, norm, bad.double()])
        event = None
        if self.device.type == "cuda":
            assert self._host_values is not None
            values = self._host_values.copy_(values, non_blocking=True)
            event = torch.cuda.Event(blocking=True)  # waits without spinning
            event.record()
        return _Pending(values, event, pos, lr, t0)

    def _read_now(self) -> bool:
        """Whether the step just launched is read at once: it logs, evaluates, checkpoints
        or may end the run (step number known: the step before was read), it is the first
        of this process (timed apart) or a stop was asked (one process; under torchrun the
        ranks agree on it at the steps read at once). Under torchrun with a time budget the
        ranks carry the clock on between those steps with the mean step time they agreed
        on (``clock``): they also agree at the 1st, 2nd, 4th, 8th... timed step since the
        clock's base (the process's start or a rollback), and every 64th, so that a first
        step slower or faster than the rest is soon outweighed, and at each step the carried
        clock says would end the run (it ends when the time agreed is spent, not the guess)."""
        cfg, n = self.cfg, self.step + 1
        k = self.timed_steps + 1 - self._clock_base[1]   # this step's, among those timed
        budget = cfg.time_budget_s
        return (n % cfg.log_every == 0 or n % cfg.eval_every == 0 or n >= cfg.steps
                or bool(cfg.checkpoint_every and n % cfg.checkpoint_every == 0)
                or (self.data_end is not None and self.data_pos >= self.data_end)
                or self._warm or (self.stop_requested and not self.d.enabled)
                or (self.d.enabled and bool(budget)
                    and (k & (k - 1) == 0 or k % 64 == 0 or self.clock(1) >= budget)))

    def _read(self, p: _Pending, late: bool) -> bool:
        """The host's part of a lagged step: read its values (``late``: with the next step's
        forward and backward launched) and record it as ``_settle`` does; True if that
        rolled back. Its time runs from its launch, or from the end of the step before if
        that was later, to when its values are there: a GPU-bound step's own time, whether
        read late or at once (the sum is the wall time either way)."""
        if p.event is not None:
            p.event.synchronize()
        end = time.perf_counter()
        dt, self._last_end = end - max(p.t0, self._last_end), end
        loss, norm, bad = p.values.tolist()
        next_pos = self.data_pos
        reason = (self.guard.check(loss, norm) or "loss spike") if bad else None
        self.data_pos = p.data_pos + 1  # as when it was made (records, rollbacks)
        rolled = self._settle(loss, norm, reason, p.lr, dt, not late)
        if not rolled:
            self.data_pos = next_pos
        return rolled

    def _settle(self, loss: float, norm: float, reason: str | None, lr: float, dt: float,
                boundary: bool) -> bool:
        """Record a step whose update was taken (``reason`` None) or skipped; True if it rolled
        back. ``boundary``: no later step's work has begun, so a checkpoint or a stop may
        be taken here."""
        assert self.monitor is not None
        if reason is not None:
            # the step it was to be, as log.jsonl numbers steps (it said the one before)
            rec = {"step": self.step + 1, "data_pos": self.data_pos - 1, "loss": loss,
                   "grad_norm": norm, "reason": reason, "action": "skipped update"}
            rolled = self.guard.reject()
            if rolled:
                self._rollback(rec)   # records the event itself if it stops the run
            self.events.append(rec)
            self.monitor.event(rec)
            log0(f"train: step {rec['step']}: {reason}, loss {loss:.4g}; {rec['action']}")
            if not rolled and boundary and self._agree():   # a stop is taken at skips too
                self._stop(save=False)
            return rolled
        self.guard.accept(loss)
        self.step += 1
        if self._warm:
            self.t_warmup += dt
            self._warm = False
        else:
            self.t_train += dt
            self.timed_steps += 1
        stop = boundary and self._agree()   # before done() is asked again, in _record
        self._record(loss, lr, norm, self.tokens_per_step, self.flops_per_step)
        self._bar.update(1, loss=loss)
        if self._diverged(loss):
            return True   # rolled back: nothing of the diverged state is saved
        every = self.cfg.checkpoint_every
        if boundary and every and self.step % every == 0 and not self.done():
            self.save()
        if stop:
            self._stop()
        return False

    def _record(self, loss: float, lr: float, norm: float, tokens: int, flops: int) -> None:
        """Log (and evaluate) if due; tokens/s and MFU over the timed steps since the last
        record (a late-read step's time is not its own work's: on CPU that ran earlier)."""
        cfg, done = self.cfg, self.step
        evaluate = done % cfg.eval_every == 0 or self.done()
        if not evaluate and done % cfg.log_every:
            return  # most steps: nothing to record
        rec: dict[str, Any] = {"step": done, "loss": round(loss, 5), "lr": lr,
                               "grad_norm": round(norm, 4)}
        t, n = self.t_train - self._logged[0], self.timed_steps - self._logged[1]
        self._logged = (self.t_train, self.timed_steps)
        if n and t > 0:   # none when only the warm-up step ran since (timed apart)
            rec["tok_per_s"] = round(tokens * n / t, 1)
            if self.peaks.mfu:   # per device; 4 significant digits (tiny models on a GPU: 1e-6)
                rec["mfu"] = float(f"{flops * n / t / (self.peaks.mfu * self.d.world):.4g}")
                if rec["mfu"] > 1 and not self._said_mfu:   # once, not on every line
                    self._said_mfu = True
                    log0(f"train: MFU {rec['mfu']:.0%} at step {done}: {self.peaks.above_100()}")
        rec["mem_gb"] = round(memory_gb(self.device), 3)
        if evaluate:
            self._record_eval(done, rec)
        else:
            self._log(rec)

    def _record_eval(self, done: int, rec: dict[str, Any]) -> None:
        """Evaluate and generate at step ``done``, into ``rec``, and log it."""
        res = self.evaluate()
        rec.update(val_fields(res))
        self.val_losses[str(done)] = rec["val_loss"]
        self._generate(done)
        self._log(rec)

    def _log(self, rec: dict[str, Any]) -> None:
        rec["time_s"] = round(self.t_train, 2)
        self.history.append(rec)
        assert self.monitor is not None
        self.monitor.log(rec)
        log0(log_line(rec, self.cfg.steps, self.cfg.time_budget_s))

    def _generate(self, step: int) -> None:
        if not self.probes or self.tokenizer is None:
            return
        with torch.compiler.set_stance("force_eager"):   # compiled, a cache and padding recompile
            outs = generate(self.model, list(self.probes.values()), self.cfg.probe_new_tokens,
                            temperature=0.0)  # greedy: draws nothing from the RNG
        self.model.train()
        for (domain, prompt), out in zip(self.probes.items(), outs, strict=True):
            self.generations.append({"step": step, "domain": domain,
                                     "prompt": self.tokenizer.decode(prompt[1:]),
                                     "completion": self.tokenizer.decode_after(prompt, out)})


def train(cfg: TrainConfig, model_cfg: ModelConfig, tokens_dir: Path, paths: RunPaths,
          seed: int = 0, device: str = "auto", init: Transformer | None = None,
          d: distributed.Dist | None = None) -> dict[str, Any]:
    """Train a new model of ``model_cfg``, or continue from ``init`` (its config then rules);
    returns the run's counts (what the train stage's manifest records).

    With ``paths.checkpoints``, resumable checkpoints go there every ``checkpoint_every``
    steps and a rerun continues from the latest one (``resume``). The final model,
    ``log.jsonl``, ``events.jsonl`` and ``generations.jsonl`` are written to ``paths.out`` (by
    rank 0 when data parallel: pass ``d``). ``batch_size`` is per rank; the global batch is
    ``batch_size * grad_accum * world``.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    d = d or distributed.Dist()
    dev = distributed.device_for(d, distributed.resolve_device(device))
    torch.manual_seed(seed)
    model_cfg = init.cfg if init is not None else model_cfg
    layout = make_layout(cfg.parallel, d, dev)
    check_memory(model_cfg, cfg, layout, dev)
    model, net = build(model_cfg, cfg, layout, dev, init)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * layout.dp * model_cfg.seq_len
    budget = f" or {cfg.time_budget_s:g} s" if cfg.time_budget_s else ""
    log0(f"train: {model_cfg.num_params() / 1e6:.2f} M params, {tokens_per_step:,} tokens/step, {cfg.steps:,} "
         f"steps{budget} on {dev}" + (f" x {d.world} processes ({layout.describe()})" if d.enabled else ""))
    t = Trainer(cfg, model, tokens_dir, paths, seed, dev, d, layout, net)
    log0(f"train: {t.precision}, {cfg.optimizer}, attention kernel {t.sdpa}, host_sync "
         f"{t.host_sync}, {t.peaks.describe()}")
    with logs_on_failure(paths.checkpoints if d.rank == 0 else None, t), t.stop_signals():
        t.run()
        final_sd = state.final_weights(t, paths.checkpoints, paths.out)
        if d.rank == 0:   # a failure to write them keeps the logs with the checkpoints
            state.write_final(t, paths.out, model_cfg, final_sd)
    if d.rank != 0:
        return {}
    first, last = t.val_losses["0"], t.val_losses[str(t.step)]
    counts: dict[str, Any] = {
        "params": model_cfg.num_params(), "steps": t.step, "tokens_seen": tokens_per_step * t.step,
        "val_loss_initial": round(first, 5), "val_loss_final": round(last, 5),
        "train_loss_final": next((r["loss"] for r in reversed(t.history) if "loss" in r), None),
        # over the timed steps of every process of the run (None: only a warm-up step ran)
        "tok_per_s": round(tokens_per_step * t.timed_steps / t.t_train, 1)
        if t.timed_steps and t.t_train > 0 else None,
        "train_time_s": round(t.t_train, 2), "warmup_time_s": round(t.t_warmup, 2),
        "skipped_steps": sum(1 for e in t.events if e["action"] == "skipped update"),
        "rollbacks": t.rollbacks, "device": str(dev), "processes": d.world, "layout": layout.describe(),
        "precision": t.precision, "sdpa_backend": t.sdpa, "host_sync": t.host_sync,
        # batches are drawn by data position (skipped updates and rollbacks move it on)
        "epochs": t.windows.epochs(t.data_pos, tokens_per_step // model_cfg.seq_len)}
    last_val = next(r for r in reversed(t.history) if "val_loss" in r)
    for key in ("val_bpb", "val"):
        if key in t.val_initial:   # each domain's start of the report's curves
            counts[f"{key}_initial"] = t.val_initial[key]
        if key in last_val:
            counts[f"{key}_final"] = last_val[key]
    if t.peaks.matmul:
        counts["matmul_gflops"] = round(t.peaks.matmul / 1e9, 1)
    mfus = [r["mfu"] for r in t.history if "mfu" in r]
    if mfus:   # of the records (each one counts once), and over every timed step
        counts["mfu_median"] = statistics.median(mfus)
        counts["peak_gflops"], counts["peak_source"] = round((t.peaks.mfu or 0) / 1e9, 1), \
            t.peaks.source   # e.g. "the measured bf16 matmul"
        if counts["tok_per_s"] and t.peaks.mfu:
            per_device = counts["tok_per_s"] * model_cfg.flops_per_token() / d.world
            counts["mfu"] = float(f"{per_device / t.peaks.mfu:.4g}")
    mfu = t.peaks.summary(counts.get("mfu"))
    tps = counts["tok_per_s"]
    log0(f"train: val loss {first:.4f} -> {last:.4f} "
         f"({'n/a' if tps is None else f'{tps:,.0f}'} tokens/s over {t.t_train:.0f}s of steps{mfu})")
    return counts
