"""Load published tokenizers instead of training one.

``tokenizer.pretrained`` names what to load; a byte-level BPE becomes our ``Tokenizer``
(ranks + split regex + special tokens, encoded by tiktoken), a SentencePiece model our
``SentencePieceTokenizer`` (``spm.py``), so the rest of the pipeline does not care where it
came from:

- a folder with OpenAI's GPT-2 ``encoder.json`` and ``vocab.bpe``;
- an HF ``tokenizer.json`` of a byte-level BPE (GPT-2's, OLMo-2's ``dolma2``, cl100k-style);
- ``llama3:PATH``: Meta's Llama-3 ``tokenizer.model`` (tiktoken ranks; its split regex and
  256 special tokens are defined in Meta's code, so they are restated here);
- a ``.tiktoken`` ranks file, with ``tokenizer.pattern`` and ``tokenizer.special_tokens``;
- ``sentencepiece:PATH`` or a ``.model`` file that is one: a SentencePiece model such as
  LLaMA-2's ``tokenizer.model`` (its own ``<s>`` / ``</s>`` unless ``tokenizer.bos_token`` /
  ``eos_token`` name other control pieces).

A BPE given as ranks merges by rank (the lowest-ranked adjacent pair first), a BPE given as
merges by merge order; the two agree when every merge ``i`` produces the token of rank
``first + i``. That is checked on load, and a file where it does not hold is refused rather
than encoded differently from its published ids. Added tokens of an HF file become special
tokens: like every special token here they are never matched inside document text (HF
matches them by default; we encode documents as ordinary text).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from ..config import ConfigError
from . import files, spm
from .base import TextTokenizer
from .bpe import Tokenizer
from .bytelevel import text_to_bytes
from .config import BOS, EOS, GPT2_PATTERN, parse_spec, uncovered

LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
                  r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
# Llama 3.1+ special tokens, ids 128000 onwards: 12 named, then reserved ones up to 256
_LLAMA3_NAMED = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                 "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                 "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
                 "<|python_tag|>", "<|image|>"]
LLAMA3_SPECIALS = _LLAMA3_NAMED + [f"<|reserved_special_token_{2 + i}|>"
                                   for i in range(256 - len(_LLAMA3_NAMED))]


def _ranks_from_vocab(vocab: dict[str, int], merges: list[tuple[str, str]], where: str
                      ) -> list[bytes]:
    """Ranks (index = id) from a byte-level vocab, checked against its merge list."""
    n = len(vocab)
    if sorted(vocab.values()) != list(range(n)):
        raise ConfigError(f"{where}: the BPE ids are not 0..{n - 1} without gaps")
    ranks: list[bytes] = [b""] * n
    for text, i in vocab.items():
        ranks[i] = text_to_bytes(text, where)
    singles = sum(1 for r in ranks if len(r) == 1)
    if singles != 256 or any(len(r) != 1 for r in ranks[:256]):
        raise ConfigError(f"{where}: expected the 256 single bytes as ids 0..255")
    if n - 256 != len(merges):
        raise ConfigError(f"{where}: {n - 256} merged tokens but {len(merges)} merges")
    for i, (a, b) in enumerate(merges):
        if vocab.get(a + b) != 256 + i:
            raise ConfigError(f"{where}: merge {i} ({a!r} + {b!r}) makes id {vocab.get(a + b)}, "
                              f"not {256 + i}: merge order differs from id order, which tiktoken "
                              "ranks cannot express")
    return ranks


def _named(special: dict[str, int], bos: str, eos: str, default_bos: str, default_eos: str,
           where: Path) -> tuple[str, str]:
    """``tokenizer.bos_token`` / ``eos_token`` ('' = the tokenizer's own), each one of its
    special tokens."""
    bos, eos = bos or default_bos, eos or default_eos
    for key, name in (("bos_token", bos), ("eos_token", eos)):
        if not name:   # no name given and none the tokenizer is known by
            raise ConfigError(f"{where}: name its BOS/EOS tokens (tokenizer.bos_token / "
                              f"eos_token); its special tokens: {sorted(special)[:10]}")
        if name not in special:
            raise ConfigError(f"{where}: tokenizer.{key} = {name!r} is not one of its special "
                              f"tokens ({', '.join(sorted(special)[:6])}"
                              f"{', ...' if len(special) > 6 else ''})")
    return bos, eos


def load_gpt2(folder: Path, bos: str = "", eos: str = "") -> Tokenizer:
    """OpenAI's ``encoder.json`` + ``vocab.bpe``: 50,257 ids, ``<|endoftext|>`` = 50256 as
    both BOS and EOS (its only special token)."""
    enc_path, bpe_path = folder / "encoder.json", folder / "vocab.bpe"
    try:
        encoder: dict[str, int] = json.loads(enc_path.read_text(encoding="utf-8"))
        lines = bpe_path.read_text(encoding="utf-8").split("\n")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{folder}: cannot read GPT-2 encoder.json / vocab.bpe: {e}") from None
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]  # the header OpenAI's file has; a copy may lack it
    merges = [tuple(line.split(" ")) for line in lines if line]
    eot = "<|endoftext|>"
    if eot not in encoder:
        raise ConfigError(f"{enc_path}: no {eot} entry; not GPT-2's encoder.json")
    special = {eot: encoder.pop(eot)}
    bos, eos = _named(special, bos, eos, eot, eot, folder)
    ranks = _ranks_from_vocab(encoder, merges, str(folder))  # type: ignore[arg-type]
    return Tokenizer(ranks, GPT2_PATTERN, special, bos=bos, eos=eos)


def _hf_pattern(pre: dict[str, Any] | None, where: str) -> str:
    """The split regex of an HF byte-level pre-tokenizer, where it splits text as tiktoken's
    ``findall`` of that regex does: the pieces are the matches, kept (``invert``) or
    isolated (the regexes of byte-level BPEs match every character, so there is no text
    between matches to differ on)."""
    if pre is None:
        raise ConfigError(f"{where}: no pre_tokenizer; not a byte-level BPE")
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if any(s.get("type") == "ByteLevel" and s.get("add_prefix_space") for s in steps):
        raise ConfigError(f"{where}: ByteLevel add_prefix_space = true (a space is put before "
                          "the text, which changes its first ids); not supported")
    if len(steps) == 1 and steps[0].get("type") == "ByteLevel" and steps[0].get("use_regex", True):
        return GPT2_PATTERN
    if (len(steps) == 2 and steps[0].get("type") == "Split"
            and "Regex" in steps[0].get("pattern", {})
            and (steps[0].get("behavior"), steps[0].get("invert")) in
            (("Removed", True), ("Isolated", True), ("Isolated", False))
            and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex", True)):
        pattern = str(steps[0]["pattern"]["Regex"])
        gap = uncovered(pattern) if steps[0].get("behavior") == "Isolated" else None
        if gap:   # HF keeps the text between matches as pieces; this encoder would drop it
            raise ConfigError(f"{where}: its Split pattern leaves text between its matches "
                              f"({gap[:20]!r}), which HF's Isolated keeps as pieces of their "
                              "own and tiktoken's encoder drops; not supported")
        return pattern
    raise ConfigError(f"{where}: unsupported pre_tokenizer {json.dumps(pre)[:200]}; supported: "
                      "ByteLevel, or Split(regex, Isolated, or Removed inverted) followed by "
                      "ByteLevel(use_regex=false)")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read an HF tokenizer.json: {e}") from None


def load_hf(path: Path, bos: str = "", eos: str = "", obj: Any = None) -> Tokenizer:
    """An HF ``tokenizer.json`` of a byte-level BPE without a normalizer (``obj``: its
    parsed contents, where the caller has them)."""
    obj = _read_json(path) if obj is None else obj
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        hint = " (GPT-2's encoder.json: give the folder holding it and vocab.bpe)" \
            if path.name == "encoder.json" else ""
        raise ConfigError(f"{path}: not a tokenizer.json: no \"model\" object{hint}")
    model = obj["model"]
    if model.get("type", "BPE") != "BPE" or "vocab" not in model:
        raise ConfigError(f"{path}: not a BPE tokenizer.json (model type {model.get('type')!r})")
    if obj.get("normalizer") is not None:
        raise ConfigError(f"{path}: has a normalizer ({obj['normalizer'].get('type')}); "
                          "tokenizers with normalizers are not supported")
    unlike = {k: model[k] for k in ("dropout", "end_of_word_suffix", "continuing_subword_prefix")
              if model.get(k)}
    if unlike:
        raise ConfigError(f"{path}: a BPE with {unlike} encodes otherwise than plain byte-level "
                          "BPE; not supported")
    pattern = _hf_pattern(obj.get("pre_tokenizer"), str(path))
    added = {t["content"]: int(t["id"]) for t in obj.get("added_tokens", [])}
    vocab = {k: v for k, v in model["vocab"].items() if k not in added}
    if added and vocab and min(added.values()) < min(vocab.values()):
        first = min(added, key=added.__getitem__)
        raise ConfigError(f"{path}: its added tokens come before the BPE's ids ({first!r} = "
                          f"{added[first]}, as StarCoder's and GPT-NeoX-style files have); "
                          "our ids put the BPE's first, so those ids cannot be kept: not supported")
    if added and vocab and min(vocab.values()) < min(added.values()) \
            and max(vocab.values()) > max(added.values()):   # added tokens amid the BPE's
        raise ConfigError(f"{path}: BPE tokens after its added tokens (ids above "
                          f"{min(added.values())}): the export of a tokenizer extended with "
                          "domain tokens? Give the run's own tokenizer (tokenizer/tokenizer.json "
                          "of the run, or a checkpoint folder), which keeps them")
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    ranks = _ranks_from_vocab(vocab, merges, str(path))  # type: ignore[arg-type]
    if any(i < len(ranks) for i in added.values()):
        raise ConfigError(f"{path}: added tokens inside the BPE id range are not supported")
    eot = next((t for t in ("<|endoftext|>", "</s>", "<|end_of_text|>") if t in added), "")
    bos, eos = _named(added, bos, eos, eot, eot, path)
    return Tokenizer(ranks, pattern, added, bos=bos, eos=eos)


def read_tiktoken(path: Path) -> list[bytes]:
    """A ``.tiktoken`` file (one ``base64(token) rank`` per line) as ranks, index = id."""
    ranks: dict[int, bytes] = {}
    try:
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    tok, rank = line.split()
                    ranks[int(rank)] = base64.b64decode(tok, validate=True)
                except ValueError as e:
                    raise ConfigError(f"{path}:{lineno}: not a 'base64 rank' line: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    if sorted(ranks) != list(range(len(ranks))):
        raise ConfigError(f"{path}: ranks are not 0..{len(ranks) - 1} without gaps")
    return [ranks[i] for i in range(len(ranks))]


def load_llama3(path: Path, bos: str = "", eos: str = "") -> Tokenizer:
    """Meta's Llama-3 ``tokenizer.model``; BOS/EOS its ``<|begin_of_text|>`` /
    ``<|end_of_text|>`` unless named (an instruct model's ``<|eot_id|>``, say)."""
    ranks = read_tiktoken(path)
    special = {t: len(ranks) + i for i, t in enumerate(LLAMA3_SPECIALS)}
    bos, eos = _named(special, bos, eos, "<|begin_of_text|>", "<|end_of_text|>", path)
    return Tokenizer(ranks, LLAMA3_PATTERN, special, bos=bos, eos=eos)


def load(spec: str, pattern: str, special_tokens: list[str], bos: str, eos: str) -> TextTokenizer:
    """``tokenizer.pretrained``: see the module docstring for what ``spec`` may be. A file
    whose structure is not what its kind has (a missing key, a field of another type, a
    merge line that is not two pieces) is a one-line error naming it."""
    try:
        return _load(spec, pattern, special_tokens, bos, eos)
    except ConfigError as e:   # the loaders' own messages start with the file, or the key
        if str(e).startswith((str(parse_spec(spec)[1]), "tokenizer.pretrained")):
            raise
        raise ConfigError(f"tokenizer.pretrained = {spec!r}: {e}") from None
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
        raise ConfigError(f"tokenizer.pretrained = {spec!r}: not a well-formed tokenizer file "
                          f"({type(e).__name__}: {e})") from e   # the traceback stays chained


def _load_json(path: Path, bos: str, eos: str) -> TextTokenizer:
    """An HF ``tokenizer.json``, or one that ``pretrain tokenizer`` wrote (a run's, domain
    tokens included: their HF export cannot be read back as a plain BPE)."""
    obj = _read_json(path)
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if not (isinstance(fmt, str) and fmt.startswith("pretrain-")):
        return load_hf(path, bos, eos, obj)
    tok = files.from_dict(obj, path)   # says so if it is a format version it does not know
    if isinstance(tok, Tokenizer):
        bos, eos = _named(tok.special, bos, eos, tok.bos, tok.eos, path)
        return Tokenizer(tok.ranks, tok.pattern, tok.special, bos, eos, tok.added)
    if (bos or tok.bos, eos or tok.eos) != (tok.bos, tok.eos):
        raise ConfigError(f"{path}: a trained SentencePiece model keeps the BOS/EOS it was "
                          "trained with; leave tokenizer.bos_token / eos_token empty")
    return tok


def _load(spec: str, pattern: str, special_tokens: list[str], bos: str, eos: str
          ) -> TextTokenizer:
    kind, path = parse_spec(spec)
    if kind == "llama3":
        return load_llama3(path, bos, eos)
    if kind == "sentencepiece" or (path.suffix == ".model" and not path.is_dir()):
        return spm.load_model(path, bos, eos)
    if path.is_dir():
        if (path / "encoder.json").is_file() and (path / "vocab.bpe").is_file():
            return load_gpt2(path, bos, eos)
        if (path / "tokenizer.json").is_file():
            return _load_json(path / "tokenizer.json", bos, eos)
        raise ConfigError(f"tokenizer.pretrained: {path} holds neither encoder.json + vocab.bpe "
                          "nor tokenizer.json")
    if path.suffix == ".json":
        return _load_json(path, bos, eos)
    if path.suffix == ".tiktoken":   # no names in the file: the config's, ids after the ranks
        ranks = read_tiktoken(path)
        special = {t: len(ranks) + i for i, t in enumerate(special_tokens)}
        bos, eos = _named(special, bos, eos, BOS, EOS, path)
        return Tokenizer(ranks, pattern, special, bos, eos)
    raise ConfigError(f"tokenizer.pretrained: cannot tell what {spec!r} is; give a GPT-2 folder, "
                      "a tokenizer.json, a .tiktoken file, llama3:PATH or a SentencePiece "
                      "model (sentencepiece:PATH)")
