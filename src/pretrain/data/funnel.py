"""The data stage's accounting: the funnel (documents and bytes in and out of every step,
drops by reason, each step's own counts) and the drop records (``dropped.jsonl``, every
drop and unreadable record; ``samples.jsonl``, the first few dropped documents of each
reason with their text). Nothing leaves the stage without a row here.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .document import Document, Skip, Step


class Funnel:
    """Per step: documents and bytes in and out, drops by reason, and the step's own counts."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def row(self, step: str) -> dict[str, Any]:
        return self.rows.setdefault(step, {"docs_in": 0, "bytes_in": 0, "docs_out": 0,
                                           "bytes_out": 0, "dropped": Counter(),
                                           "stats": Counter()})

    def merge(self, rows: list[dict[str, Any]]) -> None:
        """Add the rows of another funnel (``as_json`` form: a task's). A step this funnel
        has not seen goes right after the step before it there, so that a source with
        fewer steps merged first does not put the later ones out of pipeline order."""
        before = ""
        for r in rows:
            if r["step"] not in self.rows:
                order = list(self.rows)
                at = order.index(before) + 1 if before in self.rows else 0
                self.row(r["step"])
                self.rows = {s: self.rows[s] for s in order[:at] + [r["step"]] + order[at:]}
            before = r["step"]
            mine = self.row(r["step"])
            for k in ("docs_in", "bytes_in", "docs_out", "bytes_out"):
                mine[k] += r[k]
            mine["dropped"].update(r["dropped"])
            mine["stats"].update(r["stats"])

    def dropped(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for row in self.rows.values():
            total.update(row["dropped"])
        return total

    def as_json(self) -> list[dict[str, Any]]:
        return [{"step": s, **{k: (dict(v) if isinstance(v, Counter) else v)
                               for k, v in r.items()}} for s, r in self.rows.items()]

    def run(self, steps: list[Step], docs: Iterator[Document],
            drop: Callable[[str, Document, str, str], None]) -> Iterator[Document]:
        """``docs`` through ``steps``, every step metered; ``drop(step, document, reason,
        detail)`` is told each drop as it happens (a long run of drops is never held); the
        detail is a :class:`Why` reason's (the value the step measured), else ''."""
        stream: Iterator[Document] = docs
        for step in steps:
            row = self.row(step.name)
            stream = _collect(step.name, step(_metered(stream, row)), row, drop)
        return stream


def _metered(stream: Iterator[Document], row: dict[str, Any]) -> Iterator[Document]:
    for doc in stream:
        row["docs_in"] += 1
        row["bytes_in"] += doc.nbytes
        yield doc


def _collect(name: str, stream: Iterator[Any], row: dict[str, Any],
             drop: Callable[[str, Document, str, str], None]) -> Iterator[Document]:
    for item in stream:
        if isinstance(item, tuple):
            doc, why = item
            row["dropped"][str(why)] += 1   # a Why counted as its reason
            drop(name, doc, str(why), getattr(why, "detail", ""))
        else:
            row["docs_out"] += 1
            row["bytes_out"] += item.nbytes
            yield item


SAMPLE_CHARS = 100_000   # a sample's text beyond this is left out ("chars": its length)


class DropLog:
    """The one writer of drop records: every drop to ``audit`` (no text), and the first
    ``max_samples`` dropped documents of each reason, with their text (its first
    ``SAMPLE_CHARS``), to ``samples``."""

    def __init__(self, audit: IO[str], samples: IO[str], max_samples: int):
        self.audit, self.samples, self.max_samples = audit, samples, max_samples
        self.sampled: Counter[str] = Counter()

    def skip(self, skip: Skip, domain: str) -> None:
        self.audit.write(json.dumps({"id": skip.id, "domain": domain, "step": "read",
                                     "reason": skip.reason, "detail": skip.detail,
                                     **({"records": skip.records} if skip.records != 1 else {})})
                         + "\n")

    def drop(self, step: str, rec: dict[str, Any], reason: str, detail: str = "",
             **extra: str) -> None:
        """A dropped document (``rec``: its record, as written to the shards); ``detail``
        and ``extra`` go to the audit line and the sample."""
        self.audit.write(json.dumps({"id": rec["id"], "domain": rec["domain"], "step": step,
                                     "reason": reason, **({"detail": detail} if detail else {}),
                                     **extra, "chars": len(rec["text"])}) + "\n")
        if self.sampled[reason] < self.max_samples:
            self.sampled[reason] += 1
            text = rec["text"]   # a sample is read by a person: a 200 MB one is cut short
            cut = {"text": text[:SAMPLE_CHARS], "chars": len(text)} \
                if len(text) > SAMPLE_CHARS else {}
            why = {"detail": detail} if detail else {}
            self.samples.write(json.dumps({"step": step, "reason": reason, **why, **extra,
                                           **rec, **cut},
                                          ensure_ascii=False) + "\n")

    def copy(self, audit: Path, samples: Path) -> None:
        """Append another DropLog's files (a task's), keeping the per-reason sample cap."""
        with open(audit, encoding="utf-8") as f:
            shutil.copyfileobj(f, self.audit)
        with open(samples, encoding="utf-8") as f:
            for line in f:
                reason = json.loads(line)["reason"]
                if self.sampled[reason] < self.max_samples:
                    self.sampled[reason] += 1
                    self.samples.write(line)


def format_funnel(rows: list[dict[str, Any]]) -> str:
    """The funnel as a plain table: one line per step."""
    lines = [f"{'step':<18}{'docs in':>10}{'docs out':>10}{'MB in':>9}{'MB out':>9}  dropped"]
    for r in rows:
        mb_in = f"{r['bytes_in'] / 1e6:9.2f}" if r.get("bytes_in") else f"{'':>9}"
        mb_out = f"{r['bytes_out'] / 1e6:9.2f}" if r.get("bytes_out") else f"{'':>9}"
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["dropped"].items(),
                                                          key=lambda kv: -kv[1]))
        lines.append(f"{r['step']:<18}{r['docs_in']:>10}{r['docs_out']:>10}{mb_in}{mb_out}  "
                     f"{reasons}")
    for r in rows:  # what steps did besides dropping: lines cut, PII replaced, hits
        if r.get("stats"):
            lines.append(f"  {r['step']}: " + ", ".join(f"{k} {v}" for k, v in r["stats"].items()))
    if any(a["docs_out"] != b["docs_in"] for a, b in itertools.pairwise(rows)):
        lines.append("  (a step's docs in differ from the step before's docs out where some "
                     "sources skip it: each step counts the documents it saw)")
    return "\n".join(lines)
