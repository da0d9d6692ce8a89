"""What every bench prints before it measures: the command that gives its figures again,
and how busy the machine is (a 2-thread PyTorch job slows 5-20x when the other core is
busy, so a figure means little without it)."""

from __future__ import annotations

import argparse
import atexit
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def announce() -> None:
    """The command as typed (from the repository root) and the machine's load, now and
    when the bench ends (however it ends)."""
    command = shlex.join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    print(f"$ {command}\n{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
          "at the start", flush=True)
    atexit.register(lambda: print(f"load average {os.getloadavg()[0]:.2f} at the end",
                                  flush=True))


def at_least(low: float, kind: type = int) -> Callable[[str], Any]:
    """An option's ``type``: a number of ``kind`` no smaller than ``low`` (else a usage
    error, not a traceback after minutes of work: ``--repeats 0`` has no median)."""
    what = "an int" if kind is int else f"a {kind.__name__}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value >= low:   # NaN too
            raise argparse.ArgumentTypeError(f"expected {what} >= {low:g}, got {text!r}")
        return value
    return parse


def pick(ap: argparse.ArgumentParser, flag: str, value: str, known: list[str]) -> list[str]:
    """The comma-separated names of ``value``, each one of ``known`` (else a usage error)."""
    names = [v for v in value.split(",") if v]
    for name in names or [""]:
        if name not in known:
            ap.error(f"{flag}: unknown {name!r}; known: {', '.join(known)}")
    return names
