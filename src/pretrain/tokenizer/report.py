"""How well a tokenizer fits the corpus: compression per domain against a baseline tokenizer,
vocabulary usage, the longest tokens and the words that fragment most.

Written by the tokenizer stage to ``tokenizer/report.json`` and printed as a table. Words are
runs of letters (``\\p{L}+``); a word "fragments" when it needs many tokens, counted the way
documents encode it: as the tokenizer's split regex cuts the text, a piece that is a word
alone or after one space (SentencePiece, which has no regex, splits at whitespace and puts
its dummy-prefix ``▁`` there itself). An occurrence the split keeps with a character before
it (``ershades`` in ``o'ershades`` and ``ll`` in ``I'll`` under the GPT-4 pattern,
``weight`` in ``self.weight``) is not counted: a token made for the word would not be used
there (mined from such pieces, most of ``extend_mined``'s tokens went unused).
``<unk>`` ids are counted for tokenizers that have
one (a SentencePiece model without byte fallback loses that text). Only words
seen at least ``min_word_count`` times are ranked, so typos do not crowd out the domain
terms worth adding with ``pretrain tokenizer extend``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import regex

from .base import TextTokenizer

WORD = regex.compile(r"\p{L}+")
SPACED_WORD = regex.compile(r"( ?)(\p{L}+)")


def report(tok: TextTokenizer, texts_by_domain: dict[str, list[str]],
           baseline: TextTokenizer | None = None,
           baseline_name: str = "", top: int = 20, min_word_count: int = 3) -> dict[str, Any]:
    used: Counter[int] = Counter()
    domains: dict[str, Any] = {}
    for domain, texts in sorted(texts_by_domain.items()):
        ids = tok.encode_batch(texts)
        for seq in ids:
            used.update(seq)
        n_tokens = sum(map(len, ids))
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        words: Counter[str] = Counter(w for t in texts for w in WORD.findall(t))
        n_words = sum(words.values())
        row: dict[str, Any] = {
            "docs": len(texts), "bytes": n_bytes, "tokens": n_tokens, "words": n_words,
            "bytes_per_token": round(n_bytes / max(1, n_tokens), 4),
            "tokens_per_word": round(n_tokens / max(1, n_words), 4),
            "fragmenting_words": _fragmenting(tok, _forms(tok, texts), top, min_word_count),
        }
        if tok.unk_id is not None:   # text the tokenizer could only encode as <unk>
            row["unk_tokens"] = sum(seq.count(tok.unk_id) for seq in ids)
        if baseline is not None:
            base = sum(map(len, baseline.encode_batch(texts)))
            row["baseline_bytes_per_token"] = round(n_bytes / max(1, base), 4)
            row["tokens_vs_baseline"] = round(n_tokens / max(1, base), 4)
        domains[domain] = row
    ordinary = tok.ordinary_ids()
    unused = sum(1 for i in ordinary if used[i] == 0)
    size = tok.token_bytes()
    longest = sorted(ordinary, key=lambda i: (-size[i], i))[:top]
    out: dict[str, Any] = {
        "vocab_size": tok.vocab_size, "baseline": baseline_name or None, "domains": domains,
        "unused_tokens": unused, "ordinary_tokens": len(ordinary),
        "unused_share": round(unused / max(1, len(ordinary)), 4),
        "longest_tokens": [{"id": i, "bytes": size[i],
                            "text": tok.bytes_of(i).decode("utf-8", "replace")} for i in longest],
    }
    if tok.added:   # domain tokens (their chains' links included): used on the sample?
        never = sorted((a for a in tok.added if used[a.id] == 0), key=lambda a: (-len(a.bytes), a.id))
        out["added_tokens"] = len(tok.added)
        out["unused_added_tokens"] = len(never)
        out["unused_added"] = [a.bytes.decode("utf-8", "replace") for a in never[:top]]
    return out


def fragmenting_words(tok: TextTokenizer, texts_by_domain: dict[str, list[str]], top: int,
                      min_word_count: int = 3) -> list[str]:
    """The ``top`` most fragmented frequent words of each domain (what ``report`` lists),
    without the rest of the report: candidates for ``tokenizer/extend.py``."""
    out: list[str] = []
    for _, texts in sorted(texts_by_domain.items()):
        out += [w["word"] for w in _fragmenting(tok, _forms(tok, texts), top, min_word_count)]
    return out


def _forms(tok: TextTokenizer, texts: list[str]) -> Counter[tuple[str, bool]]:
    """How often each word is a piece of the split alone (False) or after a space (True)."""
    forms: Counter[tuple[str, bool]] = Counter()
    pattern = getattr(tok, "pattern", None)
    for t in texts:
        if pattern is not None:
            for found in regex.finditer(pattern, t):   # whole matches: a pattern may
                if (m := SPACED_WORD.fullmatch(found.group())) is not None:   # have groups
                    forms[m.group(2), bool(m.group(1))] += 1
            continue
        for m in WORD.finditer(t):   # SentencePiece: words after whitespace or at the start
            before = t[m.start() - 1] if m.start() else "\n"
            if before.isspace():
                forms[m.group(), before == " "] += 1
    return forms


def _fragmenting(tok: TextTokenizer, forms: Counter[tuple[str, bool]], top: int,
                 min_count: int) -> list[dict[str, Any]]:
    """The words seen ``min_count`` times or more, most tokens first, each as its more
    frequent form encodes."""
    count: Counter[str] = Counter()
    for (w, _), c in forms.items():
        count[w] += c
    frequent = [w for w, c in count.items() if c >= min_count]
    spaced = [forms[w, True] >= forms[w, False] for w in frequent]
    pieces = tok.encode_batch([tok.word_prefix + w if s else w
                               for w, s in zip(frequent, spaced, strict=True)])
    ranked = sorted(zip(frequent, pieces, strict=True),
                    key=lambda wp: (-len(wp[1]), -count[wp[0]], wp[0]))
    return [{"word": w, "tokens": len(p), "count": count[w],
             "pieces": [tok.bytes_of(i).decode("utf-8", "replace") for i in p]}
            for w, p in ranked[:top]]


def sample_by_domain(docs: Iterable[dict[str, Any]], max_chars_per_domain: int,
                     domains: list[str] | None = None) -> dict[str, list[str]]:
    """The first documents of each domain, up to ``max_chars_per_domain`` characters; with
    ``domains`` (all there are), the read stops once each has that many."""
    out: dict[str, list[str]] = {}
    size: Counter[str] = Counter()
    wanted = set(domains or ())
    short = len(wanted) or -1
    for d in docs:
        if size[d["domain"]] >= max_chars_per_domain:
            continue
        text = d["text"][: max_chars_per_domain - size[d["domain"]]]
        out.setdefault(d["domain"], []).append(text)
        size[d["domain"]] += len(text)
        short -= d["domain"] in wanted and size[d["domain"]] >= max_chars_per_domain
        if not short:
            break
    return out


def table(rep: dict[str, Any]) -> str:
    base = rep["baseline"]
    head = f"{'domain':>12} {'bytes/token':>12} {'tokens/word':>12}"
    if base:
        head += f" {base + ' bytes/token':>22} {'tokens vs ' + base:>18}"
    lines = [head]
    for name, r in rep["domains"].items():
        line = f"{name:>12} {r['bytes_per_token']:>12.3f} {r['tokens_per_word']:>12.3f}"
        if base:
            line += f" {r['baseline_bytes_per_token']:>22.3f} {r['tokens_vs_baseline']:>18.3f}"
        lines.append(line)
        frag = ", ".join(f"{w['word']} ({w['tokens']})" for w in r["fragmenting_words"][:6])
        lines.append(f"{'':>12} most fragmented: {frag}")
        if r.get("unk_tokens"):
            lines.append(f"{'':>12} <unk>: {r['unk_tokens']:,} tokens (text outside the vocabulary, lost)")
    # of the ordinary tokens, the share's denominator (the vocabulary has the specials too)
    of = f"{rep['ordinary_tokens']:,} ordinary" if "ordinary_tokens" in rep \
        else f"{rep['vocab_size']:,}"
    lines.append(f"unused tokens: {rep['unused_tokens']:,} of {of} "
                 f"({rep['unused_share']:.1%}); longest: "
                 + ", ".join(repr(t["text"]) for t in rep["longest_tokens"][:5]))
    if rep.get("added_tokens"):
        lines.append(f"added tokens: {rep['unused_added_tokens']:,} of {rep['added_tokens']:,} "
                     "never used on the sample (a chain's links among them)"
                     + (": " + ", ".join(map(repr, rep["unused_added"][:8]))
                        if rep["unused_added"] else ""))
    return "\n".join(lines)
