"""The two tokenizer stages.

- ``tokenizer``: train a tokenizer on a domain-balanced sample of the data stage's
  documents (``tokenizer.kind``: byte-level BPE, or SentencePiece Unigram / BPE), or load a
  published one; extend a BPE with domain tokens; write ``tokenizer.json`` and a compression
  report per domain (``report.json``).
- ``tokenize``: encode every kept document into the train/val token shards (``shards.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

from ..config import ConfigError
from ..data.docs import read_docs, read_output
from ..log import Progress, log0
from ..rundir import StageRun
from . import bpe, pretrained, shards, spm
from . import report as rep_mod
from .base import TextTokenizer
from .bpe import Tokenizer
from .config import GPT2_PATTERN, TokenizeConfig, TokenizerConfig, parse_spec
from .extend import extend
from .files import load_tokenizer


def build(cfg: TokenizerConfig, sample: Callable[[], Iterator[str]]) -> TextTokenizer:
    """The published tokenizer named by ``pretrained``, or one of ``kind`` trained on
    ``sample()``."""
    if cfg.pretrained:
        return pretrained.load(cfg.pretrained, cfg.regex(), cfg.special_tokens, cfg.bos_token,
                               cfg.eos_token)
    if cfg.kind == "bpe":
        return bpe.train(sample(), cfg)
    return spm.train(sample(), cfg)


def unused_settings(cfg: TokenizerConfig, tok: TextTokenizer) -> list[str]:
    """The training settings a loaded tokenizer does not take, where the config changed
    them from their defaults (or, for ``vocab_size``, they disagree with what was loaded):
    ``--tokenizer.pretrained=gpt2`` over a config that trains 32,768 tokens was silent."""
    default, out = TokenizerConfig(), []
    if cfg.vocab_size != default.vocab_size and cfg.vocab_size != tok.vocab_size:
        out.append(f"tokenizer.vocab_size = {cfg.vocab_size} is not used: the loaded "
                   f"tokenizer has {tok.vocab_size:,} tokens")
    # a .tiktoken file has no special tokens or split pattern of its own: it takes these
    if not str(parse_spec(cfg.pretrained)[1]).endswith(".tiktoken"):
        out += [f"tokenizer.{key} = {getattr(cfg, key)!r} is not used: a loaded tokenizer "
                "keeps its own" for key in ("special_tokens", "pattern")
                if getattr(cfg, key) != getattr(default, key)]
    return out


def run_tokenizer(run: StageRun, cfg: TokenizerConfig) -> None:
    data = run.inputs["data"]
    domains = read_output(data).domains
    # before training: a compare_with that cannot be read is said now, not after
    baseline = _baseline(cfg.compare_with) if cfg.report_chars else None
    t0 = time.time()
    chars = 0

    def sample() -> Iterator[str]:
        nonlocal chars
        with Progress("tokenizer sample", total=cfg.max_chars, unit="chars", every_s=5.0) as bar:
            for text in bpe.training_sample(read_docs(data, prefetch=512), cfg, domains):
                chars += len(text)
                bar.update(len(text))
                yield text
        log0(f"tokenizer: sampled {chars / 1e6:.1f} M chars in {time.time() - t0:.1f}s; "
             + (f"merging pairs up to a vocabulary of {cfg.vocab_size}" if cfg.kind == "bpe"
                else f"training a SentencePiece {cfg.kind} vocabulary of {cfg.vocab_size}"))

    tok = build(cfg, sample)
    if cfg.pretrained:
        run.counts["pretrained"] = cfg.pretrained
        log0(f"tokenizer: loaded {cfg.pretrained} (vocab {tok.vocab_size})")
        for line in unused_settings(cfg, tok):
            log0(f"tokenizer: note: {line}")
    else:
        log0(f"tokenizer: vocab {tok.vocab_size} trained on {chars / 1e6:.1f} M chars "
             f"in {time.time() - t0:.1f}s")
    texts: dict[str, list[str]] = {}
    if cfg.report_chars:
        texts = rep_mod.sample_by_domain(read_docs(data), cfg.report_chars, domains)
    words = list(cfg.extend_words)
    if cfg.extend_mined and cfg.report_chars:  # from training documents only, as the sample
        train = (d for d in read_docs(data) if d.get("split") != "val")
        mined = rep_mod.fragmenting_words(
            tok, rep_mod.sample_by_domain(train, cfg.report_chars, domains), cfg.extend_mined)
        words += [w for w in mined if w not in words]   # a given word mined too: not "given again"
    if words:
        if not isinstance(tok, Tokenizer):
            raise ConfigError("tokenizer.extend_words / extend_mined add merges to a byte-level "
                              f"BPE; {cfg.pretrained} is a SentencePiece model")
        tok, ext = extend(tok, words)
        (run.out / "extension.json").write_text(json.dumps(ext, indent=2, ensure_ascii=False),
                                                encoding="utf-8")
        run.counts["added_tokens"] = len(tok.added)
    tok.save(run.out / "tokenizer.json")
    run.counts.update({"vocab_size": tok.vocab_size, "train_chars": chars,
                       "vocab_hash": tok.vocab_hash(), "train_s": round(time.time() - t0, 2)})
    if texts:
        spec = cfg.compare_with
        kind, path = parse_spec(spec)
        rep = rep_mod.report(tok, texts, baseline, (kind or path.name) if baseline else "")
        (run.out / "report.json").write_text(json.dumps(rep, indent=2, ensure_ascii=False),
                                             encoding="utf-8")
        run.counts["bytes_per_token"] = {d: r["bytes_per_token"] for d, r in rep["domains"].items()}
        log0(rep_mod.table(rep))


def _baseline(spec: str) -> TextTokenizer | None:
    """The report's baseline: tiktoken's GPT-2 by name, or a file ``pretrained`` accepts."""
    if not spec:
        return None
    if spec == "gpt2":
        import tiktoken
        try:
            enc = tiktoken.get_encoding("gpt2")  # downloads once into tiktoken's cache
        except Exception as e:  # no network and no cache: the report goes on without it
            said = str(e).splitlines()[0] if str(e) else ""   # urllib3's run to a screen
            log0(f"tokenizer: warning: cannot load tiktoken's gpt2, not in its cache and not "
                 f"downloadable ({type(e).__name__}"
                 + (f": {said[:120]}{'...' if len(said) > 120 else ''}" if said else "")
                 + "); the report has no baseline column. Set tokenizer.compare_with to a "
                 "local GPT-2 folder, or run once with the network to fill the cache")
            return None
        eot = "<|endoftext|>"
        eot_id = enc.encode_single_token(eot)
        # GPT-2's ranks are its token ids, 0 .. 50255; <|endoftext|> comes after them
        ranks = [enc.decode_single_token_bytes(i) for i in range(enc.n_vocab) if i != eot_id]
        return Tokenizer(ranks, GPT2_PATTERN, {eot: eot_id}, eot, eot)
    try:
        return pretrained.load(spec, "", [], "", "")
    except ConfigError as e:   # its messages name the key that usually gives a tokenizer
        raise ConfigError(str(e).replace("tokenizer.pretrained", "tokenizer.compare_with")
                          ) from None


def run_tokenize(run: StageRun, cfg: TokenizeConfig) -> None:
    data = run.inputs["data"]
    out = read_output(data)
    tok = load_tokenizer(run.inputs["tokenizer"] / "tokenizer.json")
    shards.run(cfg, tok, read_docs(data, prefetch=512), out.domains, run.out, run.counts,
               total_docs=out.docs_total)
