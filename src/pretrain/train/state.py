"""Resumable training checkpoints: model, optimizer, RNG and loop state, written atomically.

Layout: ``runs/<name>/checkpoints/<train key>/step-NNNNNNN/`` with

    model.safetensors   weights (safetensors: nothing is unpickled on load), unsharded
    model_config.json   the model config, so that a checkpoint is also a model folder
                        (``model/io.py``: export and ``train.init_from`` accept it)
    optimizer.pt        AdamW state keyed by parameter name, unsharded, loaded with
                        ``weights_only=True`` (tensors and numbers)
    rng.pt              torch CPU (and CUDA) RNG states, ``weights_only=True`` as well
    state.json          step, data position, schedule/guard state, the log so far

The folder is keyed by the train stage's key, so a changed config never resumes from a
stale run. A checkpoint is written into ``step-N.tmp``, fsynced and renamed; one without
``state.json`` is never used. The last ``keep_last`` checkpoints are kept, plus the one with
the best validation loss.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..model import io
from ..model.config import ModelConfig

STATE = "state.json"


def _fsync_tree(folder: Path) -> None:
    for p in [*folder.iterdir(), folder]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save(folder: Path, step: int, model_cfg: ModelConfig, model_sd: dict[str, torch.Tensor],
         opt_sd: dict[str, Any], aliases: dict[str, str], state: dict[str, Any],
         keep_last: int) -> Path:
    """Write one checkpoint from full (unsharded, CPU) state dicts; see the module docstring."""
    final = folder / f"step-{step:07d}"
    tmp = folder / f"step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    io.save(tmp, model_cfg, model_sd, aliases)  # a model folder: export and init_from read it
    torch.save(opt_sd, tmp / "optimizer.pt")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()  # type: ignore[assignment]
    torch.save(rng, tmp / "rng.pt")
    (tmp / STATE).write_text(json.dumps({**state, "step": step}))
    _fsync_tree(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _rotate(folder, keep_last)
    return final


def complete(folder: Path) -> list[Path]:
    """Checkpoints with a state file, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if p.is_dir() and (p / STATE).is_file()
                  and not p.name.endswith(".tmp"))


def _rotate(folder: Path, keep_last: int) -> None:
    ckpts = complete(folder)
    best = min(ckpts, key=lambda p: json.loads((p / STATE).read_text()).get("val_loss", 1e30),
               default=None)
    for p in ckpts[:-keep_last]:
        if p != best:
            shutil.rmtree(p, ignore_errors=True)
    for p in folder.glob("step-*.tmp"):
        shutil.rmtree(p, ignore_errors=True)


def load(ckpt: Path, aliases: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(model state dict, optimizer state dict, loop state) of a checkpoint, on CPU; restores
    the RNG states. Nothing is unpickled: safetensors, ``weights_only=True`` and JSON."""
    model_sd = io.load_weights(ckpt / io.WEIGHTS, aliases)
    opt_sd = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
    rng = torch.load(ckpt / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    state: dict[str, Any] = json.loads((ckpt / STATE).read_text())
    return model_sd, opt_sd, state
