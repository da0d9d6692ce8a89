"""A trained run's model and tokenizer, as the evaluation and sampling stages use them, and
the precision they run at: bf16 autocast on a GPU that has it (training's default there),
fp32 elsewhere. The scorers take their log-softmax in fp32 either way."""

from __future__ import annotations

from pathlib import Path

import torch

from ..distributed import resolve_device
from ..model import io
from ..model.transformer import Transformer
from ..tokenizer.base import TextTokenizer
from ..tokenizer.files import load_tokenizer


def load_trained(train_dir: Path, tokenizer_dir: Path, device: str) -> tuple[Transformer, TextTokenizer]:
    """(model on ``device``, in eval mode; tokenizer) of a completed train stage."""
    return (io.load(train_dir, resolve_device(device)),
            load_tokenizer(tokenizer_dir / "tokenizer.json"))


def autocast(device: torch.device) -> torch.autocast:
    """The evaluation's autocast for ``device`` (enabled on a GPU with bf16)."""
    on = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)
