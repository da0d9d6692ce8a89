"""A trained run's model and tokenizer, as the evaluation and sampling stages use them."""

from __future__ import annotations

from pathlib import Path

from ..distributed import resolve_device
from ..model import io
from ..model.transformer import Transformer
from ..tokenizer.bpe import Tokenizer


def load_trained(train_dir: Path, tokenizer_dir: Path, device: str) -> tuple[Transformer, Tokenizer]:
    """(model on ``device``, in eval mode; tokenizer) of a completed train stage."""
    return (io.load(train_dir, resolve_device(device)),
            Tokenizer.load(tokenizer_dir / "tokenizer.json"))
