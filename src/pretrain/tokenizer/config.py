"""The tokenizer stages' configuration: ``[tokenizer]`` (train or load a tokenizer) and
``[tokenize]`` (encode the documents into token shards).

Light on purpose (no torch, nothing that reads data): ``pretrain config show`` imports it.
The split patterns and special-token names live here because the config validates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import regex

from ..config import ConfigError, absolute

# The "GPT-4" split as used by minbpe/rustbpe, with digits in runs of 1-3.
GPT4_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
                r"""|\s*[\r\n]|\s+(?!\S)|\s+""")
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PATTERNS = {"gpt4": GPT4_PATTERN, "gpt2": GPT2_PATTERN}

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"

# text a split pattern must cover whole: a byte-level BPE (tiktoken's and rustbpe's findall)
# keeps only what its pattern matches, so text between matches is lost without a word
_PROBE = ("Hello, world!  It's 42.5% of $1,234 -- ok?\n\n\tend  \r\n\r\n"
          "日本語のテキスト、です。 مرحبا بالعالم नमस्ते दुनिया Ünïcödé e\u0301 "
          "🇫🇷👍🏽👨\u200d👩\u200d👧 \u00a0\u3000 \x00\x07 (a)[b]{c}<d>/\\|`~_-+=;:'\"\n")


def uncovered(pattern: str) -> str | None:
    """The first text of a probe of many scripts, digits, punctuation and white space that
    ``pattern`` leaves between its matches; None when it covers the probe whole."""
    at = 0
    for m in regex.finditer(pattern, _PROBE):
        if m.start() > at:
            return _PROBE[at:m.start()]
        at = max(at, m.end())
    return _PROBE[at:] or None


def rust_regex_error(pattern: str) -> str | None:
    """What tiktoken's regex engine (fancy-regex, as rustbpe's) says of ``pattern`` where it
    cannot compile it (Python's ``regex`` has more: ``\\X``), or None."""
    import tiktoken
    try:
        tiktoken.Encoding("check", pat_str=pattern,
                          mergeable_ranks={bytes([i]): i for i in range(256)}, special_tokens={})
    except ValueError as e:
        return str(e)
    return None


# tokenizer.kind: what `pretrain tokenizer` trains. "bpe": byte-level BPE (rustbpe, bpe.py);
# "unigram" and "sp_bpe": SentencePiece's Unigram and BPE trainers (spm.py), byte fallback on
SP_KINDS = ("unigram", "sp_bpe")
KINDS = ("bpe", *SP_KINDS)
SPEC_PREFIXES = ("llama3", "sentencepiece")


def parse_spec(spec: str) -> tuple[str, Path]:
    """``tokenizer.pretrained``: ``llama3:PATH`` -> ("llama3", PATH), ``sentencepiece:PATH`` ->
    ("sentencepiece", PATH); else ("", the path)."""
    kind, _, rest = spec.partition(":")
    if kind in SPEC_PREFIXES and rest:
        return kind, Path(rest).expanduser()
    return "", Path(spec).expanduser()


def absolute_spec(spec: str) -> str:
    """``tokenizer.pretrained`` with its path absolute (see ``config.PATH``); a prefix kept."""
    kind, _, rest = spec.partition(":")
    if kind in SPEC_PREFIXES and rest:
        return f"{kind}:{absolute(rest)}"
    return absolute(spec)


def _baseline_spec(spec: str) -> str:
    """``tokenizer.compare_with``: ``gpt2`` names tiktoken's; anything else is a spec."""
    return spec if spec == "gpt2" else absolute_spec(spec)


@dataclass
class TokenizerConfig:
    kind: str = "bpe"                 # "bpe" (byte-level), "unigram" or "sp_bpe" (SentencePiece)
    vocab_size: int = 4096            # including special tokens
    pattern: str = "gpt4"             # "gpt4", "gpt2", or a regex of your own (kind "bpe" only)
    special_tokens: list[str] = field(default_factory=lambda: [BOS, EOS, PAD])
    max_chars: int = 20_000_000       # training sample size (characters, across domains)
    doc_cap_chars: int = 10_000       # each document contributes at most this many characters
    # load a published tokenizer instead of training (tokenizer/pretrained.py): a GPT-2
    # folder, an HF tokenizer.json, llama3:PATH or a .tiktoken file
    # a SentencePiece model (LLaMA-2's tokenizer.model): sentencepiece:PATH or a .model file
    pretrained: str = field(default="", metadata={"resolve": absolute_spec})
    bos_token: str = ""               # for a loaded tokenizer; "" = its own (e.g. <|endoftext|>)
    eos_token: str = ""
    # domain tokens added after training or loading (tokenizer/extend.py): words given, and
    # the `extend_mined` most fragmented words of each domain in the report
    extend_words: list[str] = field(default_factory=list)
    extend_mined: int = 0
    report_chars: int = 1_000_000     # per domain, for report.json; 0 = no report
    # baseline of the report: "gpt2" (tiktoken's, downloaded once and cached) or anything
    # `pretrained` accepts (e.g. a local GPT-2 folder); "" = none
    compare_with: str = field(default="", metadata={"resolve": _baseline_spec})

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"tokenizer.kind: unknown {self.kind!r}; one of {', '.join(KINDS)}")
        if self.kind != "bpe":
            self._check_sentencepiece()
        if self.vocab_size < 256 + len(self.special_tokens) + 1:
            raise ConfigError(f"vocab_size must exceed 256 bytes + {len(self.special_tokens)} "
                              "special tokens")
        for tok in (BOS, EOS):
            if tok not in self.special_tokens:
                raise ConfigError(f"special_tokens must include {tok}")
        if len(set(self.special_tokens)) != len(self.special_tokens):
            raise ConfigError(f"special_tokens has duplicates: {self.special_tokens}")
        for t in self.special_tokens:
            # the Hugging Face export finds a special token's text in what it encodes: "a"
            # made every "a" of a text the token ("banana" read back as "bnn")
            if not t.strip() or regex.fullmatch(r"[\w\s]+", t):
                raise ConfigError(
                    f"special_tokens: {t!r} is {'blank' if not t.strip() else 'ordinary text'}"
                    "; a special token's text is found in the text a Hugging Face tokenizer "
                    "encodes, so it needs marks no prose has: name it like "
                    f"<|{t.strip() or 'name'}|>")
        try:
            regex.compile(self.regex())  # the engine tiktoken's patterns are written for
        except regex.error as e:
            raise ConfigError(f"pattern: invalid regex {self.regex()!r}: {e}") from None
        if self.pattern not in PATTERNS:   # one's own
            self._check_pattern()
        if (self.bos_token or self.eos_token) and not self.pretrained:
            raise ConfigError("tokenizer.bos_token and eos_token name a loaded tokenizer's "
                              f"tokens (tokenizer.pretrained); a trained one's are {BOS} and "
                              f"{EOS}, among special_tokens")
        if self.max_chars <= 0 or self.doc_cap_chars <= 0:
            raise ConfigError("max_chars and doc_cap_chars must be positive")
        if self.report_chars < 0 or self.extend_mined < 0:
            raise ConfigError("report_chars and extend_mined must be >= 0")
        if self.extend_mined and not self.report_chars:
            raise ConfigError("extend_mined needs the report (report_chars > 0) to mine words from")

    def _check_pattern(self) -> None:
        """A pattern of one's own compiles in the Rust engine that trains and encodes with
        it (it failed with a traceback in the stage), and covers all text."""
        if why := rust_regex_error(self.pattern):
            raise ConfigError(f"tokenizer.pattern {self.pattern!r}: {why} (rustbpe and "
                              "tiktoken compile it with fancy-regex, which lacks some of "
                              "Python regex's syntax)")
        if gap := uncovered(self.pattern):
            raise ConfigError(
                f"tokenizer.pattern {self.pattern!r} leaves {gap[:20]!r} between its "
                "matches: a byte-level BPE keeps only the text its pattern matches, so that "
                "text would be lost; end it with alternatives for the rest (GPT-4's ends "
                "in |\\s+(?!\\S)|\\s+), or use \"gpt4\"")

    def _check_sentencepiece(self) -> None:
        """What a SentencePiece ``kind`` cannot combine with, named by flag."""
        if self.pretrained:
            raise ConfigError(f"tokenizer.kind={self.kind!r} trains a tokenizer and "
                              f"tokenizer.pretrained loads one ({self.pretrained!r}): set one of "
                              "them (a loaded SentencePiece model needs no kind)")
        if self.pattern != "gpt4":
            raise ConfigError(f"tokenizer.pattern applies to kind='bpe' only; SentencePiece "
                              f"({self.kind!r}) splits on whitespace itself")
        if self.extend_words or self.extend_mined:
            raise ConfigError("tokenizer.extend_words / extend_mined add merges to a byte-level "
                              f"BPE; kind={self.kind!r} cannot be extended")

    def regex(self) -> str:
        return PATTERNS.get(self.pattern, self.pattern)

    def fingerprint(self) -> list[tuple[str, int, int]]:
        """Size and mtime of the files ``pretrained`` names ([] when training)."""
        if not self.pretrained:
            return []
        path = parse_spec(self.pretrained)[1]
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]


@dataclass
class TokenizeConfig:
    val_fraction: float = 0.02        # of documents, chosen by hash of the id
    min_val_docs: int = 1             # per domain: its first documents go to val if needed
    shard_tokens: int = 100_000_000   # start a new shard after this many tokens
    batch_docs: int = 512             # documents per encode call
    num_threads: int = 0              # tiktoken threads; 0 = all cores

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("val_fraction must be within (0, 1)")
        if self.min_val_docs < 0:
            raise ConfigError("min_val_docs must be >= 0")
        if self.shard_tokens <= 0 or self.batch_docs <= 0 or self.num_threads < 0:
            raise ConfigError("shard_tokens and batch_docs must be positive, num_threads >= 0")
