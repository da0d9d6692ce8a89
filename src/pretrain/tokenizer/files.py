"""Read back any canonical ``tokenizer.json`` the tokenizer stage writes, whatever its kind.

The file's ``format`` names the class: ``pretrain-bpe/1`` (``bpe.Tokenizer``) or
``pretrain-sentencepiece/1`` (``spm.SentencePieceTokenizer``). Shards, evaluation, sampling
and export load through here, so a new kind of tokenizer needs no change there.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import ConfigError
from . import bpe, spm
from .base import TextTokenizer


def load_tokenizer(path: Path) -> TextTokenizer:
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a readable tokenizer file: {e}") from None
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if fmt == bpe.FORMAT:
        return bpe.Tokenizer.from_dict(obj, path)
    if fmt == spm.FORMAT:
        return spm.SentencePieceTokenizer.from_dict(obj, path)
    raise ConfigError(f"{path}: unknown tokenizer format {fmt!r}; expected {bpe.FORMAT} or "
                      f"{spm.FORMAT} (written by `pretrain tokenizer`)")
