"""Which files a local source's globs name: each file once, and ``**`` through linked
folders in time linear in the folders there are.

Python's ``glob`` follows linked folders under ``**`` as it finds them: one link to a
folder above goes round 40 times before the system stops it (ELOOP), and two such links
in one folder make 2^40 paths. :func:`expand` matches as ``glob`` does (hidden names
only by a part starting with ".", ``**`` alone in a part for any depth of folders,
linked folders followed), but visits each real folder once for each place in the
pattern, the name it is reached by first being the one without links where there is
one, else the shortest.
"""

from __future__ import annotations

import fnmatch
import glob
import heapq
import os
from collections.abc import Sequence
from pathlib import Path

from ..config import ConfigError


def expand(pattern: str) -> list[str]:
    """The paths ``pattern`` matches, sorted; a pattern without ``**`` is ``glob``'s."""
    parts = pattern.split(os.sep)
    if "**" not in parts:
        return sorted(glob.glob(pattern, recursive=True))
    start = os.sep if parts[0] == "" else ""
    parts = [p for p in parts if p]
    found: set[str] = set()
    done: set[tuple[str, int]] = set()
    queue: list[tuple[tuple[bool, int, str], int, str]] = []

    def reach(path: str, i: int) -> None:   # resolved once: a syscall per part of the path
        real = os.path.realpath(path or ".")
        heapq.heappush(queue, ((os.path.abspath(path or ".") != real, path.count(os.sep),
                                path), i, real))

    reach(start, 0)
    while queue:
        (_, _, path), i, real = heapq.heappop(queue)
        state = (real, i)
        if state in done:   # this folder at this place in the pattern: by a better name before
            continue
        done.add(state)
        if i == len(parts):
            found.add(path)
            continue
        part, last = parts[i], i + 1 == len(parts)
        if part == "**":
            reach(path, i + 1)   # no folder at all
            for name, is_dir in _names(path, part):
                child = os.path.join(path, name)
                if is_dir:
                    reach(child, i)
                elif last:
                    found.add(child)
        elif not glob.has_magic(part):
            child = os.path.join(path, part)
            if last and os.path.lexists(child):
                found.add(child)
            elif not last and os.path.isdir(child):
                reach(child, i + 1)
        else:
            for name, is_dir in _names(path, part):
                if fnmatch.fnmatch(name, part):
                    child = os.path.join(path, name)
                    if last:
                        found.add(child)
                    elif is_dir:
                        reach(child, i + 1)
    if pattern.endswith(os.sep):   # a folder's pattern: folders only, as glob
        return sorted(f + os.sep for f in found if os.path.isdir(f))
    return sorted(found)


def _names(folder: str, part: str) -> list[tuple[str, bool]]:
    """What ``folder`` holds that a wildcard ``part`` may match, each with whether it
    is a folder (through links): hidden names only for a part starting with "."; nothing
    where the folder cannot be listed."""
    out = []
    try:
        with os.scandir(folder or os.curdir) as entries:
            for e in entries:
                if part.startswith(".") or not e.name.startswith("."):
                    try:
                        out.append((e.name, e.is_dir()))
                    except OSError:   # a link going round, past what the system resolves
                        out.append((e.name, False))
    except OSError:
        return []
    return out


def local_files(patterns: Sequence[str]) -> list[Path]:
    """The files ``patterns`` match, in order, each once however many names it has:
    two patterns that match it ("*.jsonl", "a*"), a link beside it, or a linked folder
    "**" goes round; by its own name where that matches, else its shortest (the ids of
    its records are made of it). A pattern matching no file, and a matched link to
    nothing, are errors."""
    out: list[Path] = []
    seen: set[str] = set()
    for pattern in patterns:
        matched = [Path(m) for m in expand(os.path.expanduser(pattern))]
        real = {m: os.path.realpath(m) for m in matched}
        broken = [m for m in matched if not os.path.exists(real[m])]
        if broken:   # a file meant to be read, gone: not passed over as a folder is
            raise ConfigError(f"local source: {broken[0]} (matched by {pattern!r}) is a "
                              f"link to {real[broken[0]]}, which does not exist; "
                              "restore that file or remove the link")
        files = [m for m in matched if os.path.isfile(real[m])]
        if not files:
            what = "only folders match" if matched else "no file matches"
            where = "" if os.path.isabs(os.path.expanduser(pattern)) else \
                f" (relative to {os.getcwd()})"
            raise ConfigError(f"local source: {what} {pattern!r}{where}")
        best: dict[str, Path] = {}
        for f in files:
            if real[f] not in seen:
                best[real[f]] = min(best.get(real[f], f), f, key=lambda m: (
                    os.path.abspath(m) != real[m], len(m.parts), str(m)))
        out += [f for f in files if best.get(real[f]) == f]
        seen.update(best)
    return out


def glob_root(patterns: Sequence[str]) -> str:
    """The folder all of ``patterns`` start in (a glob's part before its first wildcard,
    a file's folder), absolute."""
    bases = []
    for pattern in patterns:
        parts = Path(os.path.expanduser(pattern)).parts
        i = next((k for k, part in enumerate(parts) if glob.has_magic(part)), len(parts) - 1)
        bases.append(os.path.abspath(os.path.join(*parts[:i]) if i else "."))
    return os.path.commonpath(bases)
