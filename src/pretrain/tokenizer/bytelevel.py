"""The byte-level alphabet of Hugging Face ``tokenizer.json`` files (GPT-2's printable
stand-in for each byte), both ways, and the bytes of each id of such a file."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

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
    """The bytes of each ordinary id of an HF byte-level BPE ``tokenizer.json`` (added
    tokens left out); None if it is not one (a SentencePiece export, a normalizer)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        model = obj["model"]
        if model.get("type", "BPE") != "BPE" or obj.get("normalizer") is not None:
            return None
        added = {int(t["id"]) for t in obj.get("added_tokens", [])}
        return {int(i): text_to_bytes(t, str(path)) for t, i in model["vocab"].items()
                if int(i) not in added}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError):
        return None
