"""Progress of the data stage in documents and bytes, reported from inside running tasks.

Counting finished tasks says nothing for most of a run that streams a few large files
(FineWeb-Edu: 14 tasks of 2 GB each). So each task rewrites a small file,
``t-NNNNN.progress.json`` = ``{"docs": n, "bytes": n}`` (records read and UTF-8 bytes of
text read, as the funnel's ``read`` row counts them), at most every ``BEAT_S`` seconds and
when it ends; the process running the stage sums the files of its tasks once a second and
shows the totals on its progress line (a task's file is not read again once it says
the task is done).

Files rather than a queue or shared counter: the same code serves the in-process run,
worker processes and Ray tasks on other machines (whose work folder is on storage every
node sees, which the Ray executor needs anyway); a task never blocks on its reader, and a
reader that misses a write sees the next one. The cost is one small file write every
``BEAT_S`` per running task.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from types import TracebackType

from ..log import Progress

BEAT_S = 2.0    # how often a task rewrites its file; the line itself prints every 10 s
POLL_S = 1.0    # how often the stage sums the files


def beat_path(work: Path, stem: str) -> Path:
    return work / f"{stem}.progress.json"


class Beat:
    """In a task: ``beat(docs, nbytes)`` per record; writes at most every ``every_s``
    seconds (``final=True``: now), through a temporary file renamed into place, so a
    reader never sees half a file."""

    def __init__(self, path: Path, tmp: Path, every_s: float | None = None) -> None:
        self.path, self.tmp = path, tmp
        self.every_s = BEAT_S if every_s is None else every_s
        self._last = float("-inf")

    def __call__(self, docs: int, nbytes: int, final: bool = False, done: bool = False) -> None:
        """``done``: the task has ended (implies ``final``); readers keep these counts."""
        now = time.monotonic()
        if not (final or done) and now - self._last < self.every_s:
            return
        self._last = now
        self.tmp.write_text(json.dumps({"docs": docs, "bytes": nbytes, "done": done}),
                            encoding="utf-8")
        os.replace(self.tmp, self.path)


def read_beats(paths: list[Path], done: dict[Path, tuple[int, int]] | None = None
               ) -> tuple[int, int]:
    """(documents, bytes) summed over the files that exist and parse. ``done`` (kept by the
    caller between polls) remembers the counts of tasks that have ended, which are not read
    again: a stage of many thousands of files re-reads only its running tasks'."""
    docs = nbytes = 0
    for p in paths:
        if done is not None and p in done:
            d_docs, d_bytes = done[p]
        else:
            try:
                d = json.loads(p.read_text(encoding="utf-8"))
                d_docs, d_bytes = int(d["docs"]), int(d["bytes"])
            except (OSError, ValueError, KeyError, TypeError):
                continue   # not written yet
            if done is not None and d.get("done") is True:
                done[p] = (d_docs, d_bytes)
        docs, nbytes = docs + d_docs, nbytes + d_bytes
    return docs, nbytes


class Watch:
    """``with Watch(bar, paths):`` a thread puts the summed counts of ``paths`` on the
    progress bar every ``POLL_S`` seconds, and once more when the block ends."""

    def __init__(self, bar: Progress, paths: list[Path]) -> None:
        self.bar, self.paths = bar, paths
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="data-progress")
        self._seen = (-1, -1)
        self._done: dict[Path, tuple[int, int]] = {}

    def poll(self) -> None:
        counts = read_beats(self.paths, self._done)
        if counts != self._seen:
            self._seen = counts
            self.bar.update(0, docs=f"{counts[0]:,}", read=f"{counts[1] / 1e6:,.1f} MB")

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self.poll()

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._done.clear()   # the last totals from every file as it is now (a retried task)
        self.poll()
