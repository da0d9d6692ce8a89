"""Where training metrics go besides ``log.jsonl``: TensorBoard (default) and Weights & Biases.

Both receive the same flat scalars (``train/loss``, ``val/loss/<domain>``, ``perf/mfu``...)
from rank 0 only. TensorBoard event files are written while training runs, to
``runs/<name>/tensorboard/train-<key>/`` (``tensorboard --logdir runs``). W&B is opt-in
(``train.wandb = "offline"`` needs no account and writes ``wandb/offline-run-*`` next to
the event files, for a later ``wandb sync``; ``"online"`` needs ``WANDB_API_KEY``). A
missing package is one logged line, never a failed run: metrics are still in ``log.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..config import Preempted, PretrainError
from ..log import log0
from ..rundir import write_failure


def memory_gb(device: torch.device) -> float:
    """Peak memory so far: CUDA bytes allocated by tensors on GPU, the process's peak
    resident set on CPU (model, optimizer, activations and everything else)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1e9 if sys.platform == "darwin" else rss * 1024 / 1e9  # bytes vs KiB


def flatten(rec: dict[str, Any]) -> dict[str, float]:
    """A log record as TensorBoard/W&B scalar names."""
    groups = {"loss": "train", "lr": "train", "grad_norm": "train", "tok_per_s": "perf",
              "mfu": "perf", "mem_gb": "perf", "val_loss": "val", "val_bpb": "val"}
    out: dict[str, float] = {}
    for k, v in rec.items():
        if k in groups:
            out[f"{groups[k]}/{k.removeprefix('val_')}"] = float(v)
    for domain, m in rec.get("val", {}).items():
        for name, v in m.items():
            out[f"val/{name}/{domain}"] = float(v)
    return out


LOGS = ("log", "events", "generations")   # the run's .jsonl files


def write_logs(out: Path, history: list[dict[str, Any]], events: list[dict[str, Any]],
               generations: list[dict[str, Any]]) -> None:
    """``log.jsonl``, ``events.jsonl`` and ``generations.jsonl`` in ``out``, strict JSON: a
    NaN or infinite value (a bad step's loss or norm) is null."""
    for name, rows in zip(LOGS, (history, events, generations), strict=True):
        path = out / f"{name}.jsonl"
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(_finite(r), ensure_ascii=False) + "\n" for r in rows)
        except OSError as e:
            raise PretrainError(f"train: {write_failure(path, e)}") from e


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return [_finite(x) for x in v] if isinstance(v, list) else v


@contextlib.contextmanager
def logs_on_failure(folder: Path | None, t: Any) -> Iterator[None]:
    """A run that fails (diverged, stopped, killed by an exception) leaves its logs in
    ``folder`` (the checkpoints'; the stage's own folder is removed with the failure): its
    events say why; a run that ends well removes them there (its own are in its folder).
    A failure to write them is said, never raised over the run's own. A run that failed
    before it recorded anything (refused at its resume) leaves the logs there as they are:
    they are an earlier run's, which it had replaced with empty files."""
    try:
        yield
        for name in LOGS:
            if folder is not None:
                (folder / f"{name}.jsonl").unlink(missing_ok=True)
    except BaseException as e:
        if folder is not None and (t.history or t.events or t.generations):
            run = "stopped" if isinstance(e, Preempted) else \
                "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            try:
                folder.mkdir(parents=True, exist_ok=True)   # a run failing before its first save
                write_logs(folder, t.history, t.events, t.generations)
                log0(f"train: the {run} run's log, events and generations are in {folder}")
            except (PretrainError, OSError) as why:
                log0(f"train: the {run} run's logs were not kept: {why}")
        raise


def val_fields(res: dict[str, dict[str, float]]) -> dict[str, Any]:
    """An evaluation (``Trainer.evaluate``'s) as a log record's fields: the overall loss
    and bits per byte, and each domain's when there is more than one."""
    rec: dict[str, Any] = {"val_loss": res["all"]["loss"]}
    if "bpb" in res["all"]:
        rec["val_bpb"] = res["all"]["bpb"]
    if len(res) > 2:  # more than one domain besides "all"
        rec["val"] = {d: {k: m[k] for k in ("loss", "bpb") if k in m}
                      for d, m in res.items() if d != "all"}
    return rec


class Monitor:
    def __init__(self, folder: Path | None, tensorboard: bool, wandb_mode: str, project: str,
                 run_name: str, config: dict[str, Any], start_step: int, enabled: bool = True):
        self.tb: Any = None
        self.wandb: Any = None
        if not enabled or folder is None:
            return
        self._folder = folder
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log0("train: tensorboard is not installed (pip install tensorboard); "
                     "metrics go to log.jsonl only")
            else:
                self._writer = lambda step: SummaryWriter(str(folder), purge_step=step + 1)
                self._open(start_step)
        if wandb_mode != "off":
            try:
                import wandb
            except ImportError:
                log0("train: train.wandb is set but wandb is not installed (pip install wandb)")
            else:
                folder.mkdir(parents=True, exist_ok=True)
                # the id is the folder's name (the train key), so a resumed run continues
                # the same W&B run instead of starting a new one
                self.wandb = wandb.init(project=project, name=run_name, id=folder.name,
                                        dir=str(folder), mode=wandb_mode,  # type: ignore[arg-type]
                                        config=config,
                                        resume="allow")

    def _tb(self, write: Callable[[Any], Any]) -> None:
        """One TensorBoard call; a write that fails (a full disk, raised by the writer's
        thread at any later call) stops TensorBoard with one line, never the run."""
        if self.tb is None:
            return
        try:
            write(self.tb)
        except OSError as e:   # training goes on; the next checkpoint will tell
            log0(f"train: TensorBoard stopped: {write_failure(Path(self.tb.log_dir), e)}")
            self.tb = None

    def log(self, rec: dict[str, Any]) -> None:
        scalars = flatten(rec)
        self._tb(lambda tb: [tb.add_scalar(k, v, rec["step"]) for k, v in scalars.items()])
        if self.wandb is not None:
            self.wandb.log(scalars, step=rec["step"])

    def rewind(self, step: int) -> None:
        """Training goes on from ``step`` (a rollback): TensorBoard drops what was written
        after it. W&B cannot: it ignores points at steps below its last, so its charts miss
        the redone steps until they pass the step rolled back from."""
        self._tb(lambda tb: tb.close())
        if self.tb is not None:
            self._open(step)

    def _open(self, step: int) -> None:
        """A TensorBoard writer from ``step`` on; one that cannot be made (a folder that
        cannot be written) is said in one line, and the run goes on without it."""
        try:
            self.tb = self._writer(step)
        except OSError as e:
            log0(f"train: no TensorBoard: {write_failure(self._folder, e)}; metrics go to "
                 "log.jsonl only")
            self.tb = None

    def event(self, rec: dict[str, Any]) -> None:
        """A skipped step or rollback: text in TensorBoard, a table row in W&B."""
        text = f"step {rec['step']}: {rec['reason']}, loss {rec['loss']:.4g}; {rec['action']}"
        self._tb(lambda tb: tb.add_text("events", text, rec["step"]))
        if self.wandb is not None:
            self.wandb.log({"events/bad_steps": 1, "events/text": text}, step=rec["step"])

    def close(self) -> None:
        self._tb(lambda tb: tb.close())
        if self.wandb is not None:
            self.wandb.finish()


def log_line(rec: dict[str, Any], steps: int, budget_s: float = 0.0) -> str:
    """``train: step 100/500 loss 4.1234 lr 3.00e-03 ...``: one line per logged step."""
    where = f"step {rec['step']}/{steps}" if not budget_s else \
        f"step {rec['step']} ({rec['time_s']:.0f}/{budget_s:.0f} s)"
    parts = [f"train: {where}"]
    if "loss" in rec:   # else only evaluated (a run resumed at its last step)
        parts += [f"loss {rec['loss']:.4f}", f"lr {rec['lr']:.2e}",
                  f"gnorm {rec['grad_norm']:.3f}"]
    if "tok_per_s" in rec:   # not when only the warm-up step ran since the last line
        parts.append(f"{rec['tok_per_s']:,.0f} tok/s")
    if "mfu" in rec:
        parts.append(f"MFU {rec['mfu']:.1%}")
    if "mem_gb" in rec:
        parts.append(f"mem {rec['mem_gb']:.2f} GB")
    if "val_loss" in rec:
        val = f"val {rec['val_loss']:.4f}"
        if "val_bpb" in rec:
            val += f" ({rec['val_bpb']:.3f} bpb)"
        if "val" in rec:
            val += " [" + ", ".join(f"{d} {m['loss']:.3f}" for d, m in rec["val"].items()) + "]"
        parts.append(val)
    return "  ".join(parts)
