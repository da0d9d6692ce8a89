"""What the local readers share with the other sources: a record's metadata, whether a
line parses as JSON, and a file that gave no record counted as such."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .document import Document, Skip
from .filelines import BOM


def record_meta(rec: dict[str, Any], text_field: str, id_field: str) -> dict[str, Any]:
    """A record's scalar fields but its text and id, as a document's metadata; Dolma's
    nested ``metadata`` (url, language, ...) lifted one level up. ``url`` is kept when it
    is the id too (C4 has no other id), since the URL filter reads it there."""
    meta = {k: v for k, v in rec.items() if k != text_field and (k != id_field or k == "url")
            and isinstance(v, (str, int, float))}
    nested = rec.get("metadata")  # Dolma keeps url, language, ... one level down
    if isinstance(nested, dict):
        for k, v in nested.items():   # (a url that is no string gives way to one that is)
            if isinstance(v, (str, int, float)) and (
                    k not in meta or k == "url" and not isinstance(meta[k], str)):
                meta[k] = v
    return meta


def is_json(raw: bytes) -> bool:
    try:
        json.loads(raw.removeprefix(BOM))
    except (ValueError, RecursionError):
        return False
    return True


def nonempty(items: Iterator[Document | Skip], path: Path, name: str
             ) -> Iterator[Document | Skip]:
    """``items`` of one file, and a skip (``empty_file``, with the file's ``name`` in
    the ids' form as its id) when it had none: an empty or blank file is counted and
    logged, not silently nothing."""
    n = 0
    for n, item in enumerate(items, 1):  # noqa: B007
        yield item
    if not n:
        yield Skip(name, "empty_file", f"{path}: empty or blank file, no records")


def no_text(rec: dict[str, Any], field: str) -> str:
    """Why ``rec`` has no text in ``field``: missing (its fields named, for ``text_field``),
    null, or a value of another type."""
    if field not in rec:
        keys = list(rec)
        shown = ", ".join(map(repr, keys[:8])) + (", ..." if len(keys) > 8 else "")
        return f"no field {field!r} (its fields: {shown or 'none'}; text_field names the text)"
    value = rec[field]
    if value is None:
        return f"field {field!r} is null"
    return f"field {field!r} is a {type(value).__name__}, not a string"
