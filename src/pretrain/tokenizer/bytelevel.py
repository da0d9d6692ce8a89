"""The byte-level alphabet of Hugging Face ``tokenizer.json`` files (GPT-2's printable
stand-in for each byte), both ways, and the bytes of each id of such a file (or of a
SentencePiece one)."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..config import ConfigError


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (the alphabet of byte-level tokenizer.json)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_unicode().items()}


def text_to_bytes(token: str, where: str) -> bytes:
    table = unicode_to_byte()
    try:
        return bytes(table[c] for c in token)
    except KeyError as e:
        raise ConfigError(f"{where}: token {token!r} has a character outside the byte-level "
                          f"alphabet ({e}); not a byte-level BPE") from None


def hf_token_bytes(path: Path) -> dict[int, bytes] | None:
    """The bytes of each ordinary id of an HF ``tokenizer.json`` (added tokens left out):
    a byte-level BPE, or a SentencePiece model with byte fallback (ours exported, LLaMA-2's:
    a piece's text with "▁" as a space, ``<0xAB>`` the byte); None if it is neither (or
    has a normalizer beyond SentencePiece's space marking)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        model = obj["model"]
        added = {int(t["id"]) for t in obj.get("added_tokens", [])}
        if model.get("byte_fallback"):
            return _sentencepiece_bytes(obj, added)
        if model.get("type", "BPE") != "BPE" or obj.get("normalizer") is not None:
            return None
        return {int(i): text_to_bytes(t, str(path)) for t, i in model["vocab"].items()
                if int(i) not in added}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError):
        return None


SPACE = "\u2581"   # SentencePiece's "▁"
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
# the normalizers of a SentencePiece tokenizer.json that only mark spaces (the dummy prefix)
_SP_NORMALIZERS = ({"type": "Prepend", "prepend": SPACE},
                   {"type": "Replace", "pattern": {"String": " "}, "content": SPACE})


def _sentencepiece_bytes(obj: dict[str, Any], added: set[int]) -> dict[int, bytes] | None:
    model, norm = obj["model"], obj.get("normalizer")
    steps = (norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]) \
        if norm else []
    if model.get("type") not in ("Unigram", "BPE") or any(s not in _SP_NORMALIZERS for s in steps):
        return None
    vocab = model["vocab"]
    pieces = [(p, i) for i, (p, _) in enumerate(vocab)] if isinstance(vocab, list) \
        else [(p, int(i)) for p, i in vocab.items()]
    out = {}
    for piece, i in pieces:
        if i not in added:
            byte = _BYTE_PIECE.fullmatch(piece)
            out[i] = bytes([int(byte[1], 16)]) if byte else piece.replace(SPACE, " ").encode()
    return out
