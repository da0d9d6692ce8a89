"""One large parquet file as several data tasks: consecutive row groups, cut from the footer.

A task is one file (``runner.plan_tasks``), so a corpus of a few large files (one 10 GB
export) runs in as many processes as it has files whatever ``data.workers`` says. A parquet
file's footer lists its row groups with their rows and sizes, so it can be cut into runs of
whole row groups without reading any data: each is a task, reading only its own groups.
The tasks are planned in file order and the stage concatenates their outputs in that
order, so the documents, their ids (a record's row within the whole file), the drops and
the deduplication are those of one task reading the file whole; only the shard files
start anew at each part, as they do at each file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

Part = tuple[int, int]   # row groups [first, end) of one file


def _metadata(path: str | Path) -> Any:
    import pyarrow.parquet as pq
    return pq.ParquetFile(path).metadata


def row_group_parts(path: str | Path, max_bytes: int) -> list[Part]:
    """``path``'s row groups cut into runs of at most ``max_bytes`` (uncompressed, as the
    footer gives them; a larger group is a run of its own), in order; [] where the file is
    not worth cutting (``max_bytes`` 0, one run in all) or its footer cannot be read (the
    task reading it whole then counts it as unreadable, as it does any damaged file)."""
    if max_bytes <= 0:
        return []
    try:
        meta = _metadata(path)
    except Exception:  # noqa: BLE001 -- pyarrow raises several types for a damaged footer
        return []
    parts: list[Part] = []
    first, size = 0, 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).total_byte_size
        if g > first and size + n > max_bytes:
            parts.append((first, g))
            first, size = g, 0
        size += n
    parts.append((first, meta.num_row_groups))
    return parts if len(parts) > 1 else []


def first_row(meta: Any, group: int) -> int:
    """The row of the whole file that row group ``group`` starts at."""
    return sum(meta.row_group(g).num_rows for g in range(group))


def fingerprint(path: str | Path, part: Part) -> dict[str, Any]:
    """What a part's documents were read from: the file, its row groups and rows, and the
    sha256 of the bytes its column chunks span (each part hashes its own bytes: every
    part hashing the whole file would read it once per part)."""
    meta = _metadata(path)
    lo, hi = part
    starts, ends = [], []
    for g in range(lo, hi):
        rg = meta.row_group(g)
        for c in range(rg.num_columns):
            col = rg.column(c)
            start = col.dictionary_page_offset if col.has_dictionary_page and \
                col.dictionary_page_offset else col.data_page_offset
            starts.append(start)
            ends.append(start + col.total_compressed_size)
    begin, end = (min(starts), max(ends)) if starts else (0, 0)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(begin)
        left = end - begin
        while left > 0 and (block := f.read(min(left, 1 << 22))):
            h.update(block)
            left -= len(block)
    row = first_row(meta, lo)
    return {"path": str(path), "bytes": Path(path).stat().st_size, "row_groups": [lo, hi],
            "rows": [row, row + sum(meta.row_group(g).num_rows for g in range(lo, hi))],
            "byte_range": [begin, end], "sha256": h.hexdigest()}
