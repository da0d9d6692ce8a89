"""Heuristic quality filters of the FineWeb chain: Gopher repetition, Gopher quality, C4
lines and FineWeb's own three rules (plus the list-ratio rule its code has).

Thresholds are FineWeb's (datatrove's constructor defaults, which is what FineWeb ran);
the comparison each rule makes is written next to it. Every filter returns the reason of
a drop (a short snake_case string; a ``Why`` carrying the value measured and its limit,
for the audit trail) or ``None``; C4 also rewrites the text (it removes lines).

Why not datatrove's code: it splits every document into words with spaCy's English
tokenizer, which is ~95% of its cost (0.3-0.4 MB per CPU-second on this box). Here one
regular expression approximates spaCy's split (punctuation split off words, URLs and
numbers whole, "n't"/"'s" contractions cut) and every n-gram statistic works on integer
word ids with numpy. ``tests/parity/test_datatrove.py`` measures how often the two agree
on real web text (C4), rule by rule; the disagreements left are near a threshold.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import regex

from .config import C4Config, FineWebConfig, GopherQualityConfig, GopherRepetitionConfig
from .document import over
from .minhash import runs

# Words are split the way spaCy's English tokenizer does it (datatrove's word splitter for
# every English filter), rule for rule where it matters for these statistics: split on
# whitespace; peel punctuation, quotes, currency and symbols off both ends of each chunk
# (a trailing "." only after a digit, a lower-case letter, punctuation or two capitals,
# and never from a known abbreviation); cut contractions ("do" + "n't", "it" + "'s"); then
# split inside at hyphens and slashes before a letter, "a,b", "end.Next", "...", "1-2".
# Chunks made only of letters or digits, most of them, skip all of that.
_ABBREVIATIONS = frozenset("""
    Dr. Mr. Mrs. Ms. St. Jr. Sr. Prof. Gov. Gen. Rep. Sen. Rev. Inc. Ltd. Co. Corp. Bros.
    vs. Mt. a.m. p.m. i.e. e.g. Ph.D. Jan. Feb. Mar. Apr. Jun. Jul. Aug. Sep. Sept. Oct.
    Nov. Dec. Ala. Ariz. Ark. Calif. Colo. Conn. Del. Fla. Ga. Ill. Ind. Kan. Ky. La. Md.
    Mass. Mich. Minn. Miss. Mo. Mont. Neb. Nev. Okla. Ore. Pa. Tenn. Va. Wash. Wis.
    """.split())
_INITIALS = regex.compile(r"(?:\p{L}\.)+")                 # x. U.S. U.S.A.
_URL = regex.compile(r"(?:https?://|www\.)\S+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CONTRACTION = regex.compile(r"(\p{L}+)(n['’]t|['’](?:re|ve|ll|d|m))|(.+)(['’][sS])",
                             regex.IGNORECASE)
_INFIX = regex.compile(
    r"\.\.+|…"
    r"|(?<=\p{N})[+\-*^](?=[\p{N}-])"
    r"|(?<=[\p{Ll}'\"’”])\.(?=[\p{Lu}'\"‘“])"
    r"|(?<=\p{L}),(?=\p{L})"
    r"|(?<=[\p{L}\p{N}])(?:---|--|-|–|—|~)(?=\p{L})"
    r"|(?<=[\p{L}\p{N}])[:<>=/](?=\p{L})")
_UNIT = regex.compile(r"(\p{N}+(?:[.,]\p{N}+)*)((?:km|kg|mg|cm|mm|m|g|lb|lbs|oz|ft|in|mph|kmh"
                      r"|GB|MB|KB|TB|gb|mb|kb|tb|[ap]m|%|\p{Sc}))")


@functools.cache
def _edge(c: str) -> bool:
    """Peeled off either end of a chunk: punctuation (not - @ . / or backslash), symbols,
    currency."""
    cat = unicodedata.category(c)
    return (cat[0] == "P" and c not in "-@./\\") or cat in ("Sc", "So", "Sk") or c in "<>=%+"


def _split_chunk(chunk: str, out: list[str]) -> None:
    head: list[str] = []
    while chunk:  # prefixes
        if chunk.startswith("...") or (chunk[0] == "+" and chunk[1:2].isdigit()):
            if not chunk.startswith("..."):
                break
            n = len(chunk) - len(chunk.lstrip("."))
            head.append(chunk[:n])
            chunk = chunk[n:]
        elif _edge(chunk[0]) and chunk not in _ABBREVIATIONS:
            head.append(chunk[0])
            chunk = chunk[1:]
        else:
            break
    tail: list[str] = []
    while chunk:  # suffixes, collected right to left
        if chunk in _ABBREVIATIONS or _INITIALS.fullmatch(chunk) or (
                _URL.fullmatch(chunk) and chunk[-1] not in ".,;:!?)]}\"'»”’"):
            break
        if chunk.endswith("...") and len(chunk) > 3:
            n = len(chunk) - len(chunk.rstrip("."))
            tail.append(chunk[-n:])
            chunk = chunk[:-n]
        elif chunk[-1] == "." and len(chunk) > 1 and (
                chunk[-2].isdigit() or chunk[-2].islower() or _edge(chunk[-2])
                or (chunk[-2].isupper() and len(chunk) > 2 and chunk[-3].isupper())):
            tail.append(".")
            chunk = chunk[:-1]
        elif _edge(chunk[-1]) and len(chunk) > 1 or chunk in ("'", "’"):
            tail.append(chunk[-1])
            chunk = chunk[:-1]
        elif (m := _CONTRACTION.fullmatch(chunk)) and not (m[2] and m[1].isupper()
                                                             and m[2][-1].isupper()):
            tail.append(m[2] or m[4])
            chunk = m[1] or m[3]
        elif (m := _UNIT.fullmatch(chunk)):
            tail.append(m[2])
            chunk = m[1]
        else:
            break
    out += head
    if chunk:
        if chunk.lower() == "cannot":
            out += (chunk[:3], chunk[3:])
        elif chunk.isalnum() or _URL.fullmatch(chunk) or chunk in _ABBREVIATIONS:
            out.append(chunk)
        else:
            pos = 0
            for m in _INFIX.finditer(chunk):
                if m.start() > pos:
                    out.append(chunk[pos:m.start()])
                out.append(m.group())
                pos = m.end()
            if pos < len(chunk):
                out.append(chunk[pos:])
    out += reversed(tail)


# From Gopher (Rae et al. 2021, appendix A): a document needs two of these.
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


@functools.cache
def terminal_punct() -> tuple[str, ...]:
    """Every character with Unicode's Sentence_Terminal property (172; "…" is not one):
    what FineWeb's line-punctuation rule counts as a line ending properly."""
    is_terminal = regex.compile(r"\p{Sentence_Terminal}").match
    return tuple(c for c in map(chr, range(0x20000)) if is_terminal(c))


def words(text: str) -> list[str]:
    """Split ``text`` into words and punctuation tokens (see the module docstring)."""
    out: list[str] = []
    append = out.append
    for chunk in text.split():
        if chunk.isalpha():  # most chunks: a plain word
            if len(chunk) == 6 and chunk.lower() == "cannot":
                out += (chunk[:3], chunk[3:])
            else:
                append(chunk)
            continue
        last, body = chunk[-1], chunk[:-1]
        if body.isalpha() and (last in _SIMPLE_SUFFIX or (
                last == "." and (body[-1].islower() or (len(body) > 1 and body.isupper()))
                and chunk not in _ABBREVIATIONS and len(body) > 1)):
            # a word and one trailing , ; : ! ? ) or a sentence period: the next commonest
            # case, settled here with the same rules _split_chunk applies
            if len(body) == 6 and body.lower() == "cannot":
                out += (body[:3], body[3:])
            else:
                append(body)
            append(last)
        elif chunk.isalnum() and not chunk[0].isdigit():
            append(chunk)
        else:
            _split_chunk(chunk, out)
    return out


_SIMPLE_SUFFIX = frozenset(',;:!?)"')


def _is_symbol(word: str) -> bool:
    return not any(c.isalnum() for c in word)


# --- Gopher repetition --------------------------------------------------------------

_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")


def _duplicates(items: Sequence[str]) -> tuple[int, int]:
    """(count, characters) of the items equal to an earlier one."""
    seen: set[str] = set()
    n = chars = 0
    for s in items:
        if s in seen:
            n += 1
            chars += len(s)
        else:
            seen.add(s)
    return n, chars


def _top_ngram_chars(h: np.ndarray, lens: np.ndarray, n: int) -> int:
    """Characters covered by the most frequent n-gram (length with spaces x count); among
    equally frequent ones, the first to occur."""
    _, first, counts = np.unique(h, return_index=True, return_counts=True)
    best = counts.max()
    i = int(first[counts == best].min())
    return (int(lens[i:i + n].sum()) + n - 1) * int(best)


def _dup_ngram_chars(h: np.ndarray, lens: np.ndarray, n: int, limit: float) -> int:
    """Characters of words inside n-grams that repeat an earlier n-gram, scanning left to
    right and jumping over a repeat (so overlapping repeats are not counted twice).

    Only whether the count exceeds ``limit`` matters: when even the sum over every
    repeated position (an upper bound of the scan's count) does not, return that bound
    without the Python scan."""
    _, first = np.unique(h, return_index=True)
    if len(first) == len(h):  # nothing repeats: the common case, no scan needed
        return 0
    repeated = np.ones(len(h), bool)
    repeated[first] = False
    csum = np.concatenate([[0], np.cumsum(lens)])
    idx = np.flatnonzero(repeated)
    bound = int((csum[idx + n] - csum[idx]).sum())
    if bound <= limit:
        return bound
    seen: set[int] = set()
    chars, i, hl = 0, 0, h.tolist()
    while i < len(hl):
        if hl[i] in seen:
            chars += int(lens[i:i + n].sum())
            i += n
        else:
            seen.add(hl[i])
            i += 1
    return chars


def gopher_repetition(text: str, ws: list[str], cfg: GopherRepetitionConfig) -> str | None:
    if not text:
        return "empty"
    paras = _PARAGRAPHS.split(text.strip())
    n, chars = _duplicates(paras)
    if n / len(paras) > cfg.dup_para_frac:
        return over("dup_para_frac", n / len(paras), cfg.dup_para_frac)
    if chars / len(text) > cfg.dup_para_char_frac:
        return over("dup_para_char_frac", chars / len(text), cfg.dup_para_char_frac)
    lines = _LINES.split(text)
    n, chars = _duplicates(lines)
    if n / len(lines) > cfg.dup_line_frac:
        return over("dup_line_frac", n / len(lines), cfg.dup_line_frac)
    if chars / len(text) > cfg.dup_line_char_frac:
        return over("dup_line_char_frac", chars / len(text), cfg.dup_line_char_frac)
    if len(ws) < 2:
        return None
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(w, len(vocab) + 1) for w in ws), np.uint64, len(ws))
    lens = np.fromiter(map(len, ws), np.int64, len(ws))
    for n, frac in zip((2, 3, 4), cfg.top_ngram_char_frac, strict=True):
        if len(ws) >= n and (v := _top_ngram_chars(runs(ids, n), lens, n) / len(text)) > frac:
            return over(f"top_{n}_gram", v, frac)
    for n, frac in zip(range(5, 11), cfg.dup_ngram_char_frac, strict=True):
        if len(ws) >= n and (v := _dup_ngram_chars(runs(ids, n), lens, n,
                                                   frac * len(text)) / len(text)) > frac:
            return over(f"duplicated_{n}_n_grams", v, frac)
    return None


# --- Gopher quality -----------------------------------------------------------------

def gopher_quality(text: str, ws: list[str], cfg: GopherQualityConfig) -> str | None:
    if not ws:
        return "gopher_short_doc"
    n_real = real_chars = n_alpha = 0
    for w in ws:
        if w.isalpha():
            n_real += 1
            real_chars += len(w)
            n_alpha += 1
        elif w.isdigit() or not _is_symbol(w):
            n_real += 1
            real_chars += len(w)
            n_alpha += any(c.isalpha() for c in w)
    if n_real < cfg.min_words:
        return over("gopher_short_doc", n_real, cfg.min_words, "<")
    if n_real > cfg.max_words:
        return over("gopher_long_doc", n_real, cfg.max_words)
    mean_len = real_chars / n_real
    if mean_len < cfg.min_mean_word_len:
        return over("gopher_below_avg_threshold", mean_len, cfg.min_mean_word_len, "<")
    if mean_len > cfg.max_mean_word_len:
        return over("gopher_above_avg_threshold", mean_len, cfg.max_mean_word_len)
    if (v := text.count("#") / len(ws)) > cfg.max_symbol_word_ratio:
        return over("gopher_too_many_hashes", v, cfg.max_symbol_word_ratio)
    if (v := (text.count("...") + text.count("…")) / len(ws)) > cfg.max_symbol_word_ratio:
        return over("gopher_too_many_ellipsis", v, cfg.max_symbol_word_ratio)
    lines = text.splitlines() or [""]
    if (v := sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines)
            ) > cfg.max_bullet_lines:
        return over("gopher_too_many_bullets", v, cfg.max_bullet_lines)
    if (v := sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines)
            ) > cfg.max_ellipsis_lines:
        return over("gopher_too_many_end_ellipsis", v, cfg.max_ellipsis_lines)
    if n_alpha / len(ws) < cfg.min_alpha_words:
        return over("gopher_below_alpha_threshold", n_alpha / len(ws), cfg.min_alpha_words, "<")
    if (n := len(set(STOP_WORDS).intersection(ws))) < cfg.min_stop_words:
        return over("gopher_enough_stop_words", n, cfg.min_stop_words, "<")
    return None


# --- C4 -----------------------------------------------------------------------------

_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies",
           "use of cookies", "use cookies")


def _sentences(line: str) -> int:
    """Sentences in a line, by spaCy's sentencizer rule on our tokens: a token that is a
    sentence terminal ("." "!" "?" ...; not "..." or "Dr.", which are tokens of their own)
    ends a sentence, and the next token that is not punctuation starts the next one."""
    terminals = _terminal_set()
    n, seen_end = 1, False
    for tok in words(line):
        if tok in terminals:
            seen_end = True
        elif seen_end and not all(unicodedata.category(c)[0] == "P" for c in tok):
            n += 1
            seen_end = False
    return n


@functools.cache
def _terminal_set() -> frozenset[str]:
    return frozenset(terminal_punct())


def c4_lines(text: str, cfg: C4Config) -> tuple[str | None, str]:
    """(drop reason or None, the text with C4's line filters applied)."""
    kept: list[str] = []
    sentences = 0
    for line in text.splitlines():
        line = line.strip()
        ws = line.split()
        if any(len(w) > cfg.max_word_len for w in ws):
            continue
        if cfg.remove_citations:
            line = _CITATION.sub("", line)
        if cfg.drop_lines_without_terminal_punct and (
                not line.endswith((".", "?", "!", '"', "'")) or line.endswith("...")):
            continue
        if len(ws) < cfg.min_words_per_line:
            continue
        low = line.lower()
        if "lorem ipsum" in low:
            return "lorem_ipsum", text
        if "javascript" in low:
            continue
        if "{" in line:
            return "curly_bracket", text
        if any(p in low for p in _POLICY):
            continue
        if sentences < cfg.min_sentences:  # only whether there are enough matters
            sentences += _sentences(line)
        kept.append(line)
    if sentences < cfg.min_sentences:
        return over("too_few_sentences", sentences, cfg.min_sentences, "<"), text
    return None, "\n".join(kept).strip()


# --- FineWeb ------------------------------------------------------------------------

def fineweb(text: str, ws: list[str], cfg: FineWebConfig) -> str | None:
    lines = [s for s in text.split("\n") if s.strip()]
    if not lines:
        return "empty"
    if (v := sum(s.endswith(terminal_punct()) for s in lines) / len(lines)
            ) < cfg.min_punct_lines:
        return over("line_punct_ratio", v, cfg.min_punct_lines, "<")
    if (v := sum(len(s) <= cfg.short_line_chars for s in lines) / len(lines)
            ) > cfg.max_short_lines:
        return over("short_line_ratio", v, cfg.max_short_lines)
    chars = len(text) - text.count("\n")
    if chars and (v := _duplicates(lines)[1] / chars) > cfg.max_dup_line_chars:
        return over("char_dup_ratio", v, cfg.max_dup_line_chars)
    if not ws:
        return "list_ratio"
    if (v := text.count("\n") / len(ws)) > cfg.max_newlines_per_word:
        return over("list_ratio", v, cfg.max_newlines_per_word)
    return None
