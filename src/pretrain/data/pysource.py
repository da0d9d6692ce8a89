"""The ``python-installation`` source: the offline default corpus, built from the running
Python. ``part = "code"`` is the standard library's ``*.py`` files; ``part = "prose"`` is the
pydoc topic help, the docstrings of standard-library modules (read with ``ast``, no import),
and the descriptions of installed distributions (their ``METADATA``). It is real and messy:
licence headers, vendored copies, generated tables.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
import sysconfig
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .document import Document, Skip
from .sources import SourceConfig


@dataclass
class PythonInstallationSource(SourceConfig):
    part: Literal["code", "prose"] = "code"
    quality: Literal["web", "none"] = "none"
    license: str = "PSF-2.0"
    terms_url: str = "https://docs.python.org/3/license.html"
    source_url: str = "https://www.python.org/downloads/source/"
    notes: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.part == "prose" and not self.notes:
            self.notes = ("also the descriptions of the installed distributions (their "
                          "METADATA), each under its own licence")

    def label(self) -> str:
        return self.domain or self.part

    def _stdlib_files(self) -> list[Path]:
        std = Path(sysconfig.get_paths()["stdlib"])
        files = []
        # os.walk, pruning the installed packages: rglob walked every file under
        # site-packages (most of the tree) before dropping them, ~1.3 s a call
        for root, dirs, names in os.walk(std):
            dirs[:] = [d for d in dirs if d not in ("site-packages", "dist-packages")]
            for name in names:
                p = Path(root, name)
                if name.endswith(".py") and not p.is_symlink():
                    files.append(p)
        return sorted(files)

    def fingerprint(self) -> Any:
        files = self._stdlib_files()
        h = hashlib.sha256()
        for p in files:
            st = p.stat()
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        if self.part == "prose":
            for d in sorted(f"{d.metadata['Name']}=={d.version}" for d in _site_distributions()):
                h.update(f"{d}\n".encode())
        return {"python": sys.version, "stdlib_files": len(files), "hash": h.hexdigest()[:16]}

    def read(self, files: list[str] | None = None) -> Iterator[Document | Skip]:
        std = Path(sysconfig.get_paths()["stdlib"])
        if self.part == "code":
            for p in self._stdlib_files():
                doc_id = f"stdlib/{p.relative_to(std)}"
                try:
                    text = p.read_bytes().decode("utf-8")
                except UnicodeDecodeError as e:
                    yield Skip(doc_id, "invalid_utf8", f"{p}: {e}")
                    continue
                except OSError as e:
                    yield Skip(doc_id, "unreadable", f"{p}: {e}")
                    continue
                yield Document(doc_id, text, self.label(), {"path": str(p)})
            return
        yield from self._pydoc_topics()
        yield from self._docstrings(std)
        for name, text in _distributions():
            yield Document(f"metadata/{name}", text, self.label(), {"distribution": name})

    def _pydoc_topics(self) -> Iterator[Document]:
        try:
            from pydoc_data.topics import topics
        except ImportError:  # some distributions strip pydoc_data
            return
        for name in sorted(topics):
            yield Document(f"pydoc-topic/{name}", topics[name], self.label(), {"topic": name})

    def _docstrings(self, std: Path) -> Iterator[Document | Skip]:
        for p in self._stdlib_files():
            rel = p.relative_to(std)
            doc_id = f"docstrings/{rel}"
            try:
                with warnings.catch_warnings():  # invalid escapes in old test files
                    warnings.simplefilter("ignore")
                    tree = ast.parse(p.read_bytes(), filename=str(p))
            except (SyntaxError, ValueError, OSError) as e:
                # the stdlib ships deliberately broken files under test/ (bad encodings)
                yield Skip(doc_id, "unparsable", f"{p}: {type(e).__name__}: {e}")
                continue
            parts = []
            module = ".".join(rel.with_suffix("").parts)
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                     ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc:
                        title = module if isinstance(node, ast.Module) else f"{module}.{node.name}"
                        parts.append(f"{title}\n\n{doc}")
            if parts:
                yield Document(doc_id, "\n\n".join(parts), self.label(), {"module": module})


def _site_distributions() -> Any:
    """Distributions in this interpreter's site-packages, not in whatever else is on
    ``sys.path``: importing setuptools (torch.compile does) puts its ``_vendor`` folder
    there, which made the corpus and its fingerprint depend on what the process had
    imported before (a data stage looked out of date in the next process)."""
    from importlib import metadata
    paths = sorted({sysconfig.get_paths()[k] for k in ("purelib", "platlib")})
    return metadata.distributions(path=paths)


def _distributions() -> list[tuple[str, str]]:
    """(name, description) of installed distributions, deduplicated by name, sorted."""
    seen: dict[str, str] = {}
    for dist in _site_distributions():
        meta: Any = dist.metadata  # an email.message.Message underneath
        name = meta.get("Name") or ""
        if not name or name.lower() in seen:
            continue
        body = meta.get_payload() or meta.get("Description") or ""
        summary = meta.get("Summary") or ""
        text = f"{name}: {summary}\n\n{body}".strip()
        seen[name.lower()] = text
    return sorted(seen.items())


SourceConfig.variants["python-installation"] = PythonInstallationSource
