"""What every bench prints before it measures: the command that gives its figures again,
and how busy the machine is (a 2-thread PyTorch job slows 5-20x when the other core is
busy, so a figure means little without it)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path


def announce() -> None:
    """The command as typed (from the repository root) and the machine's load."""
    command = shlex.join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    print(f"$ {command}\n{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
          "at the start", flush=True)


def pick(ap: argparse.ArgumentParser, flag: str, value: str, known: list[str]) -> list[str]:
    """The comma-separated names of ``value``, each one of ``known`` (else a usage error)."""
    names = [v for v in value.split(",") if v]
    for name in names or [""]:
        if name not in known:
            ap.error(f"{flag}: unknown {name!r}; known: {', '.join(known)}")
    return names
