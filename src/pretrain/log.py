"""Rank-aware logging and progress reporting.

``log0`` prints only on global rank 0 (read from the ``RANK`` variable torchrun sets), so
no code needs ``if rank == 0``. ``Progress`` draws a rich progress bar on a terminal and
falls back to plain lines with the seconds elapsed (at most one every ``every_s`` seconds)
when stderr is a pipe or a file, which is what CI logs and ``nohup`` need, or when asked
(``--plain``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import TracebackType
from typing import Any

_plain = False


def set_plain(plain: bool) -> None:
    """Progress as plain lines even on a terminal (``--plain``)."""
    global _plain
    _plain = plain


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def log0(msg: str) -> None:
    if rank() == 0:
        print(msg, file=sys.stderr, flush=True)


class Progress:
    """``with Progress("train", total=n) as p: p.update(1, loss=...)``. ``update`` may be
    called from several threads (the data stage's counts come from a watcher thread)."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "it", every_s: float = 10.0):
        self.desc, self.total, self.unit, self.every_s = desc, total, unit, every_s
        self.n = 0
        self.info = ""
        self._rich: Any = None
        self._task: Any = None
        self._t0 = self._last = time.monotonic()
        self._printed: tuple[int, str] = (-1, "")
        self._lock = threading.Lock()
        self.enabled = rank() == 0

    def __enter__(self) -> Progress:
        if self.enabled and sys.stderr.isatty() and not _plain:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress
            self._rich = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                      console=Console(stderr=True), transient=False)
            self._rich.start()
            self._task = self._rich.add_task(self.desc, total=self.total, info="")
        return self

    def update(self, n: int = 1, **info: Any) -> None:
        with self._lock:
            self._update(n, info)

    def _update(self, n: int, info: dict[str, Any]) -> None:
        self.n += n
        if info:
            self.info = "  ".join(f"{k}={_fmt(v)}" for k, v in info.items())
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, advance=n, info=self.info)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._line()

    def _line(self) -> None:
        self._printed = (self.n, self.info)
        total = f"/{self.total}" if self.total else ""
        elapsed = time.monotonic() - self._t0
        print(f"[{self.desc}] {self.n}{total} {self.unit}  {elapsed:.0f}s  {self.info}".rstrip(),
              file=sys.stderr, flush=True)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif self.enabled and et is None and self._printed != (self.n, self.info):
            self._line()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
