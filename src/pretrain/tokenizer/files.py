"""Read back any canonical ``tokenizer.json`` the tokenizer stage writes, whatever its kind.

The file's ``format`` names the class: ``pretrain-bpe/1`` (``bpe.Tokenizer``) or
``pretrain-sentencepiece/1`` (``spm.SentencePieceTokenizer``). Shards, evaluation, sampling
and export load through here, so a new kind of tokenizer needs no change there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import ConfigError
from . import bpe, spm
from .base import TextTokenizer
from .bytelevel import hf_token_bytes

TOKENIZER = "tokenizer.json"


def load_tokenizer(path: Path) -> TextTokenizer:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a readable tokenizer file: {e}") from None
    return from_dict(obj, path)


def from_dict(obj: Any, path: Path) -> TextTokenizer:
    """The tokenizer of a parsed canonical ``tokenizer.json``, whatever its kind."""
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if fmt == bpe.FORMAT:
        return bpe.Tokenizer.from_dict(obj, path)
    if fmt == spm.FORMAT:
        return spm.SentencePieceTokenizer.from_dict(obj, path)
    raise ConfigError(f"{path}: unknown tokenizer format {fmt!r}; expected {bpe.FORMAT} or "
                      f"{spm.FORMAT} (written by `pretrain tokenizer`)")


def run_tokenizer(model_folder: Path) -> Path | None:
    """The tokenizer ``model_folder`` was trained with: a checkpoint's own copy; else that of
    the run it belongs to (its ``train/`` folder, or a checkpoint written before checkpoints
    carried one): the copy in ``tokenize/`` that encoded the shards the model trained on (a
    tokenizer stage rerun since has not changed it), else ``tokenizer/``'s."""
    if (model_folder / TOKENIZER).is_file():
        return model_folder / TOKENIZER
    for run in model_folder.resolve().parents[:3]:   # "." has no parents unresolved
        for stage in ("tokenize", "tokenizer"):
            path = run / stage / TOKENIZER
            if path.is_file():
                return path
    return None


def model_tokens(model_folder: Path, ours: bool) -> dict[int, bytes] | None:
    """What each id of text (``id_bytes``) of the tokenizer a model was trained with stands
    for: for a model folder of ours (``ours``) its run's tokenizer, else (a Hugging Face
    model directory) its own ``tokenizer.json`` if that is a byte-level BPE; None where
    there is none to read."""
    if ours:
        path = run_tokenizer(model_folder.resolve())
        return id_bytes(load_tokenizer(path)) if path is not None else None
    hf = model_folder / TOKENIZER
    return hf_token_bytes(hf) if hf.is_file() else None


def id_bytes(tok: TextTokenizer) -> dict[int, bytes]:
    """The bytes each id of document text stands for: ordinary and added (domain) tokens."""
    return {**{i: tok.bytes_of(i) for i in tok.ordinary_ids()},
            **{a.id: a.bytes for a in tok.added}}


def first_difference(a: dict[int, bytes], b: dict[int, bytes], below: int) -> int | None:
    """The lowest id under ``below`` that stands for different bytes in ``a`` and ``b`` (or
    is ordinary in one only); None if they agree."""
    ids = sorted({i for i in (*a, *b) if i < below and a.get(i) != b.get(i)})
    return ids[0] if ids else None
