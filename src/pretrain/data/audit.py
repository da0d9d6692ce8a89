"""Reading a data stage's audit trail back: the funnel, drop reasons, dropped examples.

``pretrain data inspect RUN [--reason R]`` prints it; the files are described in
``docs.py`` (``funnel.json``, ``dropped.jsonl``, ``samples.jsonl``, ``shards.json``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import PretrainError
from .funnel import format_funnel

FAILED = "data-failed"   # a data stage that kept nothing leaves its audit trail here


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise PretrainError(f"{path}: {_why(e)}; {RERUN}") from None


def _jsonl(path: Path, holding: str = "") -> Iterator[dict[str, Any]]:
    """The records of an audit file (only the lines ``holding`` a text, which is cheaper
    than parsing every one); a damaged line is an error naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if holding not in line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    raise PretrainError(f"{path}: line {i} is damaged ({e}); {RERUN}") from None
                if not isinstance(rec, dict):
                    raise PretrainError(f"{path}: line {i} is not a record; {RERUN}")
                yield rec
    except (OSError, UnicodeDecodeError) as e:
        raise PretrainError(f"{path}: {_why(e)}; {RERUN}") from None


def _why(e: Exception) -> str:
    return "missing" if isinstance(e, FileNotFoundError) else f"unreadable or damaged ({e})"


RERUN = "the audit is written by the data stage: rerun it with `pretrain data --force data`"


def _data_dir(run: Path) -> Path:
    """The data stage's output in ``run`` (or ``run`` itself): of a completed stage and a
    failed rerun beside it, the later (the failure's message sends one here)."""
    if (run / "funnel.json").is_file():
        return run
    found = [d for d in (run / "data", run / FAILED) if (d / "funnel.json").is_file()]
    if found:
        return max(found, key=lambda d: (d / "funnel.json").stat().st_mtime_ns)
    raise PretrainError(f"{run}: no data stage output here (looked for funnel.json in it, "
                        f"in its data/ and {FAILED}/ folders); run `pretrain data` first")


def _licenses(counts: dict[str, Any]) -> list[str]:
    """The kept documents by licence, and which sources have none."""
    lic = counts.get("licenses")
    if not lic:
        return []
    out = ["", "kept by licence:"]
    for name, c in sorted(lic.items(), key=lambda kv: -kv[1]["bytes"]):
        out.append(f"  {name or '(none given)':<24}{c['docs']:>10} docs {c['bytes'] / 1e6:>10.2f} MB")
    missing = [s for s, g in counts.get("sources", {}).items() if not g.get("license")]
    if missing:
        out.append(f"  sources without a licence: {', '.join(missing)}")
    return out


def shorten(text: str, chars: int) -> str:
    """``text`` on one line, cut to about ``chars`` characters at a space where there is one
    in its second half, else within the word: ``textwrap.shorten`` drops a whole first
    word longer than ``chars``, which is all of a Chinese or Thai paragraph."""
    flat = " ".join(text.split())
    if len(flat) <= chars:
        return flat
    cut = flat[:max(1, chars - 4)]
    space = cut.rfind(" ")
    return (cut[:space] if space > chars // 2 else cut) + " ..."


def why_empty(d: Path, top: int = 5, chars: int = 160) -> str:
    """For a data stage that kept nothing: where documents were lost, the most frequent
    reasons (records that could not be read count as such, not as filtered) and one
    example of each, from the audit files in ``d``."""
    rows = _json(d / "funnel.json")
    totals: Counter[str] = Counter()
    steps: dict[str, str] = {}
    for r in rows:
        for reason, k in r["dropped"].items():
            totals[reason] += k
            steps.setdefault(reason, r["step"])
    examples: dict[str, str] = {}
    for rec in _jsonl(d / "dropped.jsonl"):
        if rec["reason"] not in examples:   # a reader's detail starts with the record
            detail = rec.get("detail", "")  # (its file as given: the id is the path below
            named = detail.split(": ", 1)[0].endswith(rec["id"])   # the source's root)
            examples[rec["reason"]] = detail if named else f"{rec['id']}: {detail}".rstrip(": ")
        if len(examples) == len(totals):
            break
    sampled: set[str] = set()   # a dropped document's first sample: its text and detail
    for rec in _jsonl(d / "samples.jsonl"):
        if rec["reason"] not in sampled:
            sampled.add(rec["reason"])
            why = f" ({rec['detail']})" if rec.get("detail") else ""
            examples[rec["reason"]] = f"{rec['id']}{why}: " + shorten(rec["text"], chars)
    read = next((r for r in rows if r["step"] == "read"), None)
    out = [format_funnel(rows), ""]
    if read is not None and read["docs_out"] == 0:
        out.append(f"no source produced a document: all {read['docs_in']} records were "
                   "skipped while read (the reasons below: check the source's paths, format and "
                   "text_field)")
    out.append("top reasons, with an example each:")
    for reason, k in totals.most_common(top):
        out.append(f"  {reason} ({steps[reason]}): {k}  e.g. {examples.get(reason, '?')}")
    return "\n".join(out)


def inspect(run: Path, reason: str = "", n: int = 3, chars: int = 600) -> str:
    d = _data_dir(run)
    funnel = _json(d / "funnel.json")
    mpath = d / "manifest.json"
    manifest = _json(mpath) if mpath.exists() else {}
    counts = manifest.get("counts", {}) if isinstance(manifest, dict) else None
    if not isinstance(counts, dict):
        raise PretrainError(f"{mpath}: not the manifest a data stage writes; {RERUN}")
    out = [f"data stage: {d}", "", format_funnel(funnel)]
    if counts:
        per = counts.get("docs_kept") or {}
        out += ["", f"kept: {counts.get('docs_total')} documents ("
                    + ", ".join(f"{k} {v:,}" for k, v in per.items()) + "), "
                    f"{sum(counts.get('bytes_kept', {}).values()) / 1e6:.2f} MB"]
        out += _licenses(counts)
    samples = list(_jsonl(d / "samples.jsonl"))
    by_reason = Counter(s["reason"] for s in samples)
    if not reason:
        out += ["", "examples kept per drop reason (show with --reason R): "
                + ", ".join(f"{r} {k}" for r, k in by_reason.most_common()) if by_reason else
                "examples kept per drop reason: none (a record that could not be read keeps "
                "only its details: --reason R)"]
        return "\n".join(out)
    chosen = [s for s in samples if s["reason"] == reason][:n]
    if not chosen:   # records dropped without their text (unreadable input): their details
        records = _dropped(d, reason, n)
        if not records:
            counted = {r for row in funnel for r in row["dropped"]}   # every reason counted
            known = ", ".join(sorted({*by_reason, *counted})) or "none"
            raise PretrainError(f"no dropped records with reason {reason!r}; reasons: {known}")
        for r in records:
            out += ["", f"--- {r['id']}  [{r.get('domain', '')}] step {r.get('step', '')}: "
                        f"{r['reason']} (no text kept)", str(r.get("detail", ""))]
        return "\n".join(out)
    for s in chosen:
        extra = f" ({s['detail']})" if "duplicate_of" in s and s.get("detail") else \
            f" (duplicate of {s['duplicate_of']})" if "duplicate_of" in s else \
            f" ({s['detail']})" if s.get("detail") else ""   # what the filter measured
        cut = f"  [{s['chars']:,} characters, the first {len(s['text']):,} kept]" \
            if isinstance(s.get("chars"), int) else ""
        out += ["", f"--- {s['id']}  [{s['domain']}] step {s['step']}: {s['reason']}{extra}"
                    f"{cut}", shorten(s["text"], chars) if chars < len(s["text"]) else s["text"]]
    return "\n".join(out)


def _dropped(d: Path, reason: str, n: int) -> list[dict[str, Any]]:
    """The first ``n`` records of ``dropped.jsonl`` with ``reason``."""
    out: list[dict[str, Any]] = []
    for rec in _jsonl(d / "dropped.jsonl", holding=json.dumps(reason)):
        if rec.get("reason") == reason:
            out.append(rec)
            if len(out) >= n:
                break
    return out

