"""Reading a data stage's audit trail back: the funnel, drop reasons, dropped examples.

``pretrain data inspect RUN [--reason R]`` prints it; the files are described in
``docs.py`` (``funnel.json``, ``dropped.jsonl``, ``samples.jsonl``, ``shards.json``).
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

from ..config import PretrainError
from .funnel import format_funnel


def _data_dir(run: Path) -> Path:
    for d in (run, run / "data"):
        if (d / "funnel.json").is_file():
            return d
    raise PretrainError(f"{run}: no data stage output here (looked for funnel.json in it and "
                        "in its data/ folder); run `pretrain data` first")


def inspect(run: Path, reason: str = "", n: int = 3, chars: int = 600) -> str:
    d = _data_dir(run)
    funnel = json.loads((d / "funnel.json").read_text())
    manifest = json.loads((d / "manifest.json").read_text()) if (d / "manifest.json").exists() \
        else {}
    counts = manifest.get("counts", {})
    out = [f"data stage: {d}", "", format_funnel(funnel)]
    if counts:
        out += ["", f"kept: {counts.get('docs_total')} documents "
                    f"{counts.get('docs_kept')}, {sum(counts.get('bytes_kept', {}).values()) / 1e6:.2f} MB"]
    samples = [json.loads(line) for line in open(d / "samples.jsonl", encoding="utf-8")]
    by_reason = Counter(s["reason"] for s in samples)
    if not reason:
        out += ["", "examples kept per drop reason (show with --reason R): "
                + ", ".join(f"{r} {k}" for r, k in by_reason.most_common())]
        return "\n".join(out)
    chosen = [s for s in samples if s["reason"] == reason][:n]
    if not chosen:
        known = ", ".join(sorted(by_reason)) or "none"
        raise PretrainError(f"no dropped examples with reason {reason!r}; reasons with "
                            f"examples: {known}")
    for s in chosen:
        extra = f" (duplicate of {s['duplicate_of']})" if "duplicate_of" in s else ""
        out += ["", f"--- {s['id']}  [{s['domain']}] step {s['step']}: {s['reason']}{extra}",
                textwrap.shorten(s["text"], chars, placeholder=" ...") if chars < len(s["text"])
                else s["text"]]
    return "\n".join(out)
