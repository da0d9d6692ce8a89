"""One large parquet file as several data tasks: consecutive row groups, cut from the footer;
and a batch's rows, one bad string costing its row.

A task is one file (``runner.plan_tasks``), so a corpus of a few large files (one 10 GB
export) runs in as many processes as it has files whatever ``data.workers`` says. A parquet
file's footer lists its row groups with their rows and sizes, so it can be cut into runs of
whole row groups without reading any data: each is a task, reading only its own groups.
The tasks are planned in file order and the stage concatenates their outputs in that
order into shards that run on across the parts of a file, so the shards, the documents,
their ids (a record's row within the whole file), the drops and the deduplication are
those of one task reading the file whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

Part = tuple[int, int]   # row groups [first, end) of one file


def row_group_parts(path: str | Path, max_bytes: int) -> list[Part]:
    """``path``'s row groups cut into runs of at most ``max_bytes`` (uncompressed, as the
    footer gives them; a larger group is a run of its own), in order; [] where the file is
    not worth cutting (``max_bytes`` 0, one run in all, no rows) or its footer cannot be
    read (the task reading it whole then counts it as unreadable, as it does any damaged
    file). A group without rows never starts a run, so that no task reads nothing."""
    if max_bytes <= 0:
        return []
    try:
        import pyarrow.parquet as pq
        meta = pq.ParquetFile(path).metadata
    except Exception:  # noqa: BLE001 -- pyarrow raises several types for a damaged footer
        return []
    parts: list[Part] = []
    first, size, rows = 0, 0, 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        if rows and group.num_rows and size + group.total_byte_size > max_bytes:
            parts.append((first, g))
            first, size, rows = g, 0, 0
        size += group.total_byte_size
        rows += group.num_rows
    parts.append((first, meta.num_row_groups))
    return parts if len(parts) > 1 else []


def first_row(meta: Any, group: int) -> int:
    """The row of the whole file that row group ``group`` starts at."""
    return sum(meta.row_group(g).num_rows for g in range(group))


def batch_rows(batch: Any) -> Iterator[dict[str, Any] | str]:
    """A parquet batch's rows as dicts; a row holding a string that is not UTF-8 (parquet
    writers do not all check) as what to say of it: it costs that row, not its batch."""
    try:
        rows = batch.to_pylist()
    except UnicodeDecodeError:
        rows = None
    if rows is not None:
        yield from rows
        return
    for i in range(batch.num_rows):
        one = batch.slice(i, 1)
        try:
            yield one.to_pylist()[0]
        except UnicodeDecodeError as e:
            for n, column in zip(one.schema.names, one.columns, strict=True):
                try:
                    column.to_pylist()
                except UnicodeDecodeError:
                    yield f"column {n!r}: {e}"
                    break
            else:
                yield str(e)
