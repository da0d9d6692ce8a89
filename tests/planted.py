"""Planted contamination: benchmark items written into real web documents the way quiz
pages, study guides and copied datasets carry them, for measuring decontamination
(``tests/unit/test_decontam.py`` on one seed, ``bench/decontam_planted.py`` on another).

The renderings are written from the benchmark records here, independently of
``pretrain.data.benchmarks`` (which decides what the decontamination indexes), so a
rendering the index does not foresee is a miss, not a tautology.
"""

from __future__ import annotations

import bz2
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LABEL = re.compile(r"^(Question|Passage|Q)\s*:\s*", re.I)
_ANSWER = re.compile(r"\s*(Answer|A)\s*:\s*$")


@dataclass
class Planted:
    benchmark: str
    text: str      # a web document with the item in it
    item: str      # the item as planted


def _clean_q(q: str) -> str:
    return _ANSWER.sub("", _LABEL.sub("", q.strip())).strip()


def _jitter(text: str, rng: random.Random) -> str:
    """What copying does to an item: case, quotes, spacing, a dropped question mark."""
    r = rng.random()
    if r < 0.2:
        text = text.upper() if rng.random() < 0.3 else text.capitalize()
    elif r < 0.4:
        text = text.replace("?", "").replace(",", " ,")
    elif r < 0.6:
        text = re.sub(r"\s+", lambda m: rng.choice([" ", "  ", "\n"]), text)
    return text


def render(rec: Any, rng: random.Random, category: str = "") -> str | None:
    """One benchmark record (llm-foundry schema, or a HellaSwag (context, gold, endings)
    tuple) as it might appear on a page; None for a record of no known schema."""
    if isinstance(rec, tuple):
        ctx, gold, endings = rec
        ctx = ctx.split(": ", 1)[1] if rng.random() < 0.5 and ": " in ctx else ctx
        return f"{ctx} {endings[gold]}"
    if "query" in rec and "choices" in rec:
        q, choices = _clean_q(rec["query"]), [str(c) for c in rec["choices"]]
        a = choices[int(rec["gold"])]
        form = rng.randrange(5)
        if form == 0:
            return f"Q: {q}\nA: {a}"
        if form == 1:
            return f"{q} {a}"
        if form == 2:
            return f"{q}\n\nAnswer: {a}"
        if form == 3:
            listed = "\n".join(f"{'ABCDE'[i]}) {c}" for i, c in enumerate(choices[:5]))
            return f"{rng.randrange(1, 40)}. {q}\n{listed}\nCorrect answer: {a}"
        return f"{q} ({a})"
    if "context_options" in rec:
        return f"{rec['context_options'][int(rec['gold'])]} {rec['continuation']}"
    if "context" in rec and "continuation" in rec:
        ctx, cont = rec["context"].strip(), str(rec["continuation"]).strip()
        if category or rng.random() < 0.3:
            return f"{_clean_q(ctx)}\nAnswer: {cont}"
        return f"{ctx} {cont}"
    return None


def read_records(path: Path) -> list[Any]:
    if path.name.endswith(".txt.bz2"):
        with bz2.open(path, "rt", encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
        return [(lines[i], int(lines[i + 1]), lines[i + 2:i + 6])
                for i in range(0, len(lines) - 5, 6)]
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def planted_set(benchmarks: list[Path], hosts: list[str], per_benchmark: int,
                seed: int) -> list[Planted]:
    """``per_benchmark`` items of each file, each planted between two paragraphs of a
    different web document from ``hosts``."""
    rng = random.Random(seed)
    out = []
    for path in benchmarks:
        records = read_records(path)
        for rec in rng.sample(records, min(per_benchmark, len(records))):
            item = render(rec, rng, category=rec.get("category", "")
                          if isinstance(rec, dict) else "")
            if item is None:
                continue
            item = _jitter(item, rng)
            host = rng.choice(hosts).split("\n\n")
            at = rng.randrange(len(host) + 1)
            text = "\n\n".join(host[:at] + [item] + host[at:])
            out.append(Planted(path.name.split(".")[0], text, item))
    return out


def web_texts(path: Path, limit: int, skip: int = 0) -> list[str]:
    """Texts of a jsonl(.gz) web sample, from record ``skip`` on."""
    import gzip
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    out: list[str] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < skip:
                continue
            if len(out) >= limit:
                break
            out.append(json.loads(line)["text"])
    return out


def clean_texts(shared: Path, c4_skip: int) -> dict[str, list[str]]:
    """Web and book-like text that carries no benchmark item, by kind: C4 from record
    ``c4_skip`` on (the records before host the planted items), Dolma CC, TinyStories
    (simple sentences, as COPA's), WikiText-2's validation articles (Wikipedia, as
    many questions' sources)."""
    out = {"c4": web_texts(shared / "webtext" / "c4_sample.jsonl", 10**9, skip=c4_skip),
           "dolma": [t for f in sorted((shared / "webtext").glob("dolma_cc_en_head-*.jsonl.gz"))
                     for t in web_texts(f, 10**9)]}
    stories = (shared / "tinystories" / "tinystories-valid-sample.txt").read_text("utf-8")
    out["tinystories"] = [t.strip() for t in stories.split("<|endoftext|>") if t.strip()]
    wiki = (shared / "eval" / "wikitext-2" / "valid.txt").read_text("utf-8")
    out["wikitext"] = [a for a in re.split(r"\n \n = [^=\n]+ = \n", wiki) if a.strip()]
    return out
