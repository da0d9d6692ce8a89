"""Resumable training checkpoints: sharded model and optimizer state through
``torch.distributed.checkpoint`` (DCP), with the RNG and loop state, written atomically.

Layout: ``runs/<name>/checkpoints/<train key>/step-NNNNNNN/`` with

    .metadata, __R_0.distcp  DCP: every rank writes its own shards of ``{"model", "optim"}``
                             (parameters and optimizer state keyed by parameter name); no
                             process ever holds the whole state
    model_config.json        the model config, so a checkpoint is also a model folder
                             (``model/io.py`` consolidates its weights for export and
                             ``train.init_from``)
    rng.pt                   torch CPU (and CUDA) RNG states, each rank's (pipeline stages
                             draw dropout masks for other layers, a different number of
                             times), loaded ``weights_only=True``
    state.json               step, data position, schedule/guard state, the log so far
    checksums.json           every other file's size and sha256, written last: a resume
                             verifies them and falls back to the previous checkpoint when
                             the latest is damaged (a bad disk, a torn copy, tampering)

DCP records each tensor's global shape and which piece each file holds, so a checkpoint
written under one layout loads under any other (one process, DDP, FSDP, TP, PP): each
rank reads the pieces its own shards need. The folder is keyed by the train stage's key
(which leaves out the parallel layout), so a changed config never resumes from a stale
run. A checkpoint is written into ``step-N.tmp`` and renamed by rank 0 once every rank's
files and the state file are on disk; one without ``state.json`` is never used. The last
``keep_last`` checkpoints are kept, plus the one with the best validation loss.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from .. import distributed
from ..config import PretrainError, said_once
from ..log import log0
from ..model import io
from ..model.config import ModelConfig
from ..rundir import (
    CHECKSUMS,
    DELETING,
    file_sha256,
    fsync,
    read_checksums,
    train_checkpoints,
    verify_files,
    write_failure,
)
from .monitor import write_logs

STATE = "state.json"


def _fsync_tree(folder: Path) -> None:
    for p in [*folder.iterdir(), folder]:
        fsync(p)


def _interrupted(e: BaseException) -> bool:
    """Whether ``e`` is DCP's wrapping of a Ctrl-C on some rank (not a failed read or write)."""
    return isinstance(e, CheckpointException) and any(
        isinstance(f[0] if isinstance(f, tuple) else f, KeyboardInterrupt)
        for f in e.failures.values())


def _optimizers(opt: torch.optim.Optimizer) -> Any:
    """Several optimizers stepped as one (``optim.Optimizers``) are saved as the list."""
    return getattr(opt, "optimizers", opt)


def save(folder: Path, step: int, model_cfg: ModelConfig, model: nn.Module,
         opt: torch.optim.Optimizer, state: dict[str, Any], keep_last: int,
         d: distributed.Dist, tokenizer: Path | None = None) -> Path:
    """Write one checkpoint (a collective: every rank calls it); see the module docstring.
    ``tokenizer``: the file of the tokenizer the model trains with, copied in, so that an
    export or an ``init_from`` of the checkpoint reads its ids with it, whatever the run's
    tokenizer is later."""
    final = folder / f"step-{step:07d}"
    tmp = folder / f"step-{step:07d}.tmp"
    try:
        if d.rank == 0:   # a read-only or inode-less disk fails here: the same message
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        distributed.barrier(d)
        # each rank's generator (a collective): one of rank 0's put on every rank had made
        # a resumed pipeline with dropout differ from the run it continued
        cpu_rngs = distributed.gather(torch.get_rng_state(), d)
        cuda_rngs = distributed.gather(torch.cuda.get_rng_state(), d) \
            if torch.cuda.is_available() else None
        with contextlib.nullcontext() if d.enabled else io.one_process_dcp():
            dcp.save({"model": get_model_state_dict(model),
                      "optim": get_optimizer_state_dict(model, _optimizers(opt), options=FLAT)},
                     checkpoint_id=tmp, no_dist=not d.enabled)
        if d.rank == 0:
            (tmp / io.CONFIG).write_text(json.dumps(io.config_dict(model_cfg), indent=2),
                                         encoding="utf-8")
            rng: dict[str, Any] = {"cpu": cpu_rngs[0], "cpu_ranks": cpu_rngs}
            if cuda_rngs is not None:
                rng["cuda"] = torch.cuda.get_rng_state_all()
                rng["cuda_ranks"] = cuda_rngs
            torch.save(rng, tmp / "rng.pt")
            (tmp / STATE).write_text(json.dumps({**state, "step": step}), encoding="utf-8")
            if tokenizer is not None and tokenizer.is_file():
                shutil.copyfile(tokenizer, tmp / tokenizer.name)
            sums = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
                    for p in sorted(tmp.iterdir()) if p.is_file()}
            (tmp / CHECKSUMS).write_text(json.dumps(sums, indent=1), encoding="utf-8")
            _fsync_tree(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            fsync(folder)   # the rename itself on disk
    except (Exception, CheckpointException) as e:   # DCP's is a BaseException
        if d.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        if _interrupted(e):
            raise KeyboardInterrupt from e   # Ctrl-C, which DCP wraps: no failed write
        before = [c for c in complete(folder) if c != final]
        # (none before it: the run's first, or --force train removed the earlier ones)
        kept = (f"the checkpoint before it, {before[-1]}, is intact; " if before
                else "it was the first of this attempt; ")
        why = write_failure(final, e)   # a full disk, or not: a peer lost mid-save
        room = "make room and " if "disk is full" in why or "size limit" in why else ""
        raise PretrainError(f"train: {why}; {kept}{room}rerun the same command to "
                            + ("resume (without --force, which would start it over)"
                               if before else "start again")) from e
    if d.rank == 0:   # written: what rotation does is no write failure
        _rotate(folder, keep_last)
    distributed.barrier(d)
    return final


def verify(ckpt: Path) -> str | None:
    """None if every file of ``ckpt`` matches the sizes and sha256 sums written with it;
    else what does not (one line naming the file)."""
    try:
        sums = read_checksums(ckpt)
    except (OSError, ValueError) as e:
        return f"{ckpt / CHECKSUMS}: unreadable ({type(e).__name__})"
    problems = verify_files(ckpt, sums)
    return problems[0] if problems else None


def latest_intact(folder: Path | None, at_most: int | None = None,
                  oldest: bool = False) -> Path | None:
    """The newest (``oldest``: the oldest) checkpoint in ``folder``, of step ``at_most`` or
    earlier if given, whose files verify; each damaged one passed over is a logged warning,
    never a traceback."""
    ckpts = complete(folder) if folder else []
    for ckpt in ckpts if oldest else reversed(ckpts):
        if at_most is not None and step_of(ckpt) > at_most:
            continue
        problem = verify(ckpt)
        if problem is None:
            return ckpt
        log0(f"train: warning: checkpoint {ckpt.name} is damaged ({problem}); "
             f"trying the one {'after' if oldest else 'before'} it")
    return None


def batch_rows(ckpt: Path) -> int | None:
    """The rows of one micro-step's batch over all data-parallel ranks ``ckpt`` was trained
    on (None when it does not say, or its state cannot be read)."""
    try:
        rows = json.loads((ckpt / STATE).read_text(encoding="utf-8")).get("batch_rows")
    except (OSError, ValueError):
        return None
    return rows if isinstance(rows, int) else None


def check_batch_rows(ckpt: Path, had: int | None, batch_size: int, dp: int) -> None:
    """A checkpoint resumes only under the batch it was trained on: the rows of a
    micro-step over all data-parallel ranks (``had``; None for a checkpoint that does not
    say) pick the data and make the global batch, and ``batch_size`` on ``dp`` ranks that
    make another number would silently change both."""
    rows = batch_size * dp
    if had is None or had == rows:
        return
    ranks = had // batch_size
    ways = [f"{ranks} data-parallel rank{'s' if ranks > 1 else ''}"] if had % batch_size == 0 \
        else []
    if had % dp == 0:
        ways.append(f"train.batch_size = {had // dp} (it continues from these checkpoints)")
    raise said_once(PretrainError(   # every rank reads the same checkpoint
        f"train: {ckpt} was trained on {had} rows a micro-step (train.batch_size x "
        f"data-parallel ranks) and this launch makes {batch_size} x {dp} = {rows}, which "
        "would change the global batch and the data; resume with "
        + (" or ".join(ways) or "the layout it was trained with")
        + ", or --force train to start over"))


def step_of(ckpt: Path) -> int:
    return int(ckpt.name.split("-")[1])


def discard_after(folder: Path, step: int) -> list[str]:
    """Remove the checkpoints of steps after ``step`` (a diverged stretch that was rolled
    back: a resume must never pick them); returns their names."""
    gone = [p for p in complete(folder) if step_of(p) > step]
    for p in gone:
        _remove(p)
    return [p.name for p in gone]


def _remove(ckpt: Path) -> None:
    """Delete a checkpoint: renamed first (a kill while its files go leaves a
    ``.deleting`` folder, swept at the next rotation, never a half checkpoint)."""
    gone = ckpt.with_name(ckpt.name + DELETING)
    shutil.rmtree(gone, ignore_errors=True)
    os.replace(ckpt, gone)
    shutil.rmtree(gone, ignore_errors=True)


def complete(folder: Path) -> list[Path]:
    """Checkpoints with a state file, oldest first."""
    return train_checkpoints(folder, STATE)


def _rotate(folder: Path, keep_last: int) -> None:
    ckpts = complete(folder)
    # the best of those evaluated at their step (the others' val_loss is inf: were one of
    # them the "best", the oldest such checkpoint would be kept forever)
    losses = {p: _val_loss(p) for p in ckpts}
    best = min((p for p in ckpts if math.isfinite(losses[p])), key=losses.__getitem__,
               default=None)
    for p in ckpts[:-keep_last]:
        if p != best:
            try:
                _remove(p)
            except OSError as e:   # rotation is housekeeping: never the end of a run
                log0(f"train: could not remove {p} ({type(e).__name__}: {e}); left in place")
    for p in [*folder.glob("step-*.tmp"), *folder.glob(f"step-*{DELETING}")]:
        shutil.rmtree(p, ignore_errors=True)


def _val_loss(ckpt: Path) -> float:
    """A checkpoint's val loss at its step (inf: not evaluated there, or a state file that
    cannot be read, which a resume skips with its own warning)."""
    try:
        state = json.loads((ckpt / STATE).read_text(encoding="utf-8"))
        return float(state.get("val_loss", math.inf))
    except (OSError, ValueError, AttributeError) as e:
        log0(f"train: {ckpt / STATE}: unreadable ({type(e).__name__}); not kept as the best")
        return math.inf


# The optimizer state keyed by parameter name, its param groups too. Unflattened, a
# group is keyed by its index and lists its parameters: each pipeline stage wrote its own
# list under the same key and DCP kept one, so a stage's parameters lost their group on
# load (KeyError 'betas' at the first step of a resumed PP run).
FLAT = StateDictOptions(flatten_optimizer_state_dict=True)


def _flat(ckpt: Path) -> bool:
    """Whether ``ckpt`` holds the optimizer state flattened (``FLAT``); earlier checkpoints
    hold it by group index ("optim.param_groups.0....")."""
    keys = io.safe_reader(ckpt).read_metadata().state_dict_metadata
    return not any(k.startswith("optim.param_groups.0.") for k in keys)


def load(ckpt: Path, model: nn.Module, opt: torch.optim.Optimizer,
         d: distributed.Dist | None = None, layout: dict[str, int] | None = None
         ) -> dict[str, Any]:
    """Fill ``model`` and ``opt`` (each rank its shards, whatever layout wrote them) from a
    checkpoint, restore the RNG states; returns the loop state. A collective. ``layout``:
    the degrees this run trains with (each rank takes back its own generator only under
    the layout that saved them)."""
    model_sd = get_model_state_dict(model)
    try:
        options = FLAT if _flat(ckpt) else None
        optim_sd = get_optimizer_state_dict(model, _optimizers(opt), options=options)
        with contextlib.nullcontext() if d and d.enabled else io.one_process_dcp():
            dcp.load({"model": model_sd, "optim": optim_sd}, checkpoint_id=ckpt,
                     storage_reader=io.safe_reader(ckpt), planner=io.safe_planner(),
                     no_dist=not (d and d.enabled))
    # what its checksums did not catch (they were rewritten with it): a one-line error
    except (pickle.UnpicklingError, CheckpointException) as e:   # DCP's is a BaseException
        if _interrupted(e):
            raise KeyboardInterrupt from e
        last = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
        raise PretrainError(f"train: {ckpt}: unreadable checkpoint ({last}); move it aside to "
                            "resume from the one before it") from None
    set_model_state_dict(model, model_sd)
    # the config's settings of each group stay: the flat state gives a group those of its
    # first parameter's group in the checkpoint, and a parameter that changed group (GPT-2's
    # position table, decayed before it counted as a table) brought its decay to them all
    config: list[dict[str, Any]] = [{k: g[k] for k in ("weight_decay", "lr_mult") if k in g}
                                    for g in opt.param_groups]
    set_optimizer_state_dict(model, _optimizers(opt), optim_sd, options=options)
    for group, settings in zip(opt.param_groups, config, strict=True):
        group.update(settings)
    state: dict[str, Any] = json.loads((ckpt / STATE).read_text(encoding="utf-8"))
    rng = torch.load(ckpt / "rng.pt", weights_only=True)
    # this rank's own state where the checkpoint has one per rank of this many, saved under
    # this layout; else (another world size or layout, or written before it kept them) rank
    # 0's on every rank: a pipeline's stages part their generators, and resumed as tensor
    # parallel ranks they drew different dropout masks on replicated weights, which drifted
    rank, world = (d.rank, d.world) if d and d.enabled else (0, 1)
    same = state.get("layout", layout) == layout
    own = same and len(rng.get("cpu_ranks", [])) == world
    torch.set_rng_state(rng["cpu_ranks"][rank] if own else rng["cpu"])
    if torch.cuda.is_available() and same and len(rng.get("cuda_ranks", [])) == world:
        torch.cuda.set_rng_state(rng["cuda_ranks"][rank])
    elif "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state


def final_weights(t: Any, checkpoints: Path | None, out: Path) -> dict[str, torch.Tensor] | None:
    """The trainer ``t``'s whole model state dict on rank 0 (None elsewhere). A model split
    over ranks is written as a checkpoint (each rank its shards, a collective) and read back
    whole by rank 0: its weights only, never the optimizer state. With checkpoints on,
    the last step is one too: what a later config of the run continues from, and the
    earlier config's model when one replaces this ``out`` (it had been lost, the last
    checkpoint 70 steps before the end of a time budget)."""
    keep = checkpoints if t.cfg.checkpoint_every else None   # 0: the run keeps none
    if not t.layout.sharded:
        if keep:
            # one of this step there already is written again if damaged: a resume passed
            # over it for an earlier one, and it would stay, the run's last checkpoint
            # (rank 0 decides, every rank saves)
            ckpts = complete(keep) if t.d.rank == 0 else []
            sound = bool(ckpts) and step_of(ckpts[-1]) == t.step and verify(ckpts[-1]) is None
            if not distributed.broadcast(sound, t.d):
                t.save(keep)
        return {k: v.detach().cpu() for k, v in t.model.state_dict().items()} \
            if t.d.rank == 0 else None
    # without checkpoints, a temporary one where every rank writes: beside the checkpoints
    # (under torchrun each rank but 0 has a stage folder of its own, in its temp directory)
    temp = (checkpoints or out) / ".final"
    if keep is None:
        if t.d.rank == 0:   # what a run that crashed here left
            shutil.rmtree(temp, ignore_errors=True)
        distributed.barrier(t.d)
    final = t.save(keep or temp)
    assert final is not None
    sd = io.consolidated(final) if t.d.rank == 0 else None
    if keep is None and t.d.rank == 0:
        shutil.rmtree(temp, ignore_errors=True)
    distributed.barrier(t.d)
    return sd


def write_final(t: Any, out: Path, model_cfg: ModelConfig,
                sd: dict[str, torch.Tensor] | None) -> None:
    """The run's logs and final weights in ``out``; a write that fails says where the same
    command will start again: the last checkpoint, or step 0 when none was kept."""
    assert sd is not None
    target = out / io.WEIGHTS
    try:
        write_logs(out, t.history, t.events, t.generations)
        io.save(out, model_cfg, sd, io.aliases_for(model_cfg))
    except Exception as e:   # noqa: BLE001 -- safetensors raises its own type for a full disk
        ckpt = latest_intact(t.ckpt_dir)
        rerun = (f"the last checkpoint, {ckpt}, is intact and the same command resumes from "
                 f"it" if ckpt else "no checkpoint was kept: the same command trains again "
                 "from step 0")
        why = str(e) if isinstance(e, PretrainError) else f"train: {write_failure(target, e)}"
        raise PretrainError(f"{why}; {rerun} once there is room") from e
