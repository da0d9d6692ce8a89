"""Model checkpoints: weights in safetensors, the model config as JSON.

Loading never unpickles (safetensors + JSON only). Resumable training checkpoints
(optimizer, loader and RNG state too) are ``train/state.py``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from ..config import ConfigError, build
from ..model.config import ModelConfig
from ..model.transformer import Transformer
from . import state

WEIGHTS, CONFIG = "model.safetensors", "model_config.json"


def save(model: Transformer, cfg: ModelConfig, folder: Path) -> None:
    save_state(model.state_dict(), state.tied_aliases(model), cfg, folder)


def save_state(model_sd: dict[str, torch.Tensor], aliases: dict[str, str], cfg: ModelConfig,
               folder: Path) -> None:
    """The weights of a full state dict (e.g. what FSDP gathers), each tied tensor once."""
    state.save_weights(model_sd, aliases, folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps(dataclasses.asdict(cfg), indent=2))


def load_any(path: Path) -> Transformer:
    """Weights to start from: a run directory, its ``train/`` folder, or an HF-format directory."""
    from ..model.hf import import_hf
    if (path / "train" / WEIGHTS).is_file():
        return load(path / "train")
    if (path / WEIGHTS).is_file() and (path / CONFIG).is_file():
        return load(path)
    if (path / "config.json").is_file():
        return import_hf(path)
    raise ConfigError(f"{path}: not a run directory, a checkpoint folder or an HF model directory")


def fingerprint_files(path: Path) -> list[tuple[str, int, int]]:
    """What identifies a checkpoint's weights without hashing them (name, size, mtime)."""
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*.safetensors")) + sorted(path.rglob("*config.json"))]


def load(folder: Path, device: str | torch.device = "cpu") -> Transformer:
    from safetensors.torch import load_model
    cfg_path = folder / CONFIG
    try:
        cfg = build(ModelConfig, json.loads(cfg_path.read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{cfg_path}: cannot read the model config: {e}") from None
    model = Transformer(cfg)
    try:
        load_model(model, str(folder / WEIGHTS), device=str(device))
    except RuntimeError as e:  # names or shapes of another layout (e.g. an older version's)
        raise ConfigError(f"{folder / WEIGHTS}: the weights do not fit {cfg_path.name} "
                          f"({str(e).strip().splitlines()[0][:300]}); if an older version of "
                          "pretrain wrote them, train again (`--force train`)") from None
    return model.to(device).eval()
