"""SentencePiece tokenizers: LLaMA-2's published ``tokenizer.model``, or a Unigram / BPE model
trained by the ``sentencepiece`` library (``tokenizer.kind = "unigram"`` or ``"sp_bpe"``).

The model proto is the tokenizer: encoding and decoding go through ``sentencepiece`` itself,
so a published model gives its published ids (``<s>`` = 1, ``</s>`` = 2 for LLaMA-2), and a
trained one is read by every SentencePiece consumer. Our canonical ``tokenizer.json`` wraps
it::

    {"format": "pretrain-sentencepiece/1", "model": <base64 ModelProto>,
     "bos": "<s>", "eos": "</s>", "vocab_size": n}

Training settings, and why (each a ``SentencePieceTrainer`` flag):

- ``byte_fallback``: a character outside the vocabulary becomes its UTF-8 bytes, never
  ``<unk>``, so no text is lost (the report still counts ``<unk>``, for loaded models
  without it);
- ``normalization_rule_name="identity"``, ``remove_extra_whitespaces=False``: the default
  NFKC and whitespace squeezing would change the text (decode(encode(x)) != x);
- ``add_dummy_prefix``, ``split_digits``, ``allow_whitespace_only_pieces``: as LLaMA-2, so a
  trained model and the published one behave alike;
- documents go in line by line: the trainer skips a "sentence" longer than
  ``max_sentence_length`` bytes, and a newline then encodes as byte ``<0x0A>`` (as in LLaMA-2).

Control pieces (BOS/EOS, other special tokens) are never produced from document text, like
every special token here. One byte per encoded text is not in the text: the dummy prefix
``▁`` before the first word, counted in ``token_bytes`` as the space it stands for.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..log import log0
from .base import AddedToken, TextTokenizer
from .config import BOS, EOS, TokenizerConfig

FORMAT = "pretrain-sentencepiece/1"
SPACE = "\u2581"   # "▁", SentencePiece's stand-in for a space
INSTALL_HINT = "pip install 'pretrain[sentencepiece]' (or: pip install sentencepiece)"
# SentencePiece's trainers split the sample over their threads and the Unigram's pieces
# depend on the split: a fixed count (the library's default), not the machine's cores, so
# that a config trains the same tokenizer on a laptop and on a 16-core GPU node
THREADS = 16


def _sentencepiece() -> Any:
    try:
        import sentencepiece
    except ImportError:
        raise ConfigError(f"SentencePiece tokenizers need the sentencepiece library: "
                          f"{INSTALL_HINT}") from None
    return sentencepiece


class SentencePieceTokenizer(TextTokenizer):
    """A SentencePiece model proto and the two control pieces that frame documents."""

    def __init__(self, proto: bytes, bos: str = "", eos: str = "", where: str = "model"):
        """``bos`` / ``eos``: piece names; "" = the model's own (``<s>`` / ``</s>``)."""
        self.proto = proto
        self.where = where
        spm = _sentencepiece()
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=proto)
        except (RuntimeError, OSError) as e:
            raise ConfigError(f"{where}: not a SentencePiece model ({e}); a Llama-3 "
                              "tokenizer.model is a tiktoken file: use llama3:PATH") from None
        self.vocab_size = int(self._sp.get_piece_size())
        self.bos_id = self._control(bos, int(self._sp.bos_id()), "bos_token")
        self.eos_id = self._control(eos, int(self._sp.eos_id()), "eos_token")
        self.bos, self.eos = self.piece(self.bos_id), self.piece(self.eos_id)
        self.added: list[AddedToken] = []
        unk = int(self._sp.unk_id())
        self.byte_fallback = self._sp.piece_to_id("<0x41>") != unk and self._sp.is_byte(
            self._sp.piece_to_id("<0x41>"))
        self.unk_id = unk
        # with the dummy prefix "word" alone encodes as "▁word", as it does mid-document
        self.word_prefix = "" if self._sp.encode("a", out_type=str)[:1] == [SPACE + "a"] else " "

    def _control(self, name: str, default: int, flag: str) -> int:
        if not name:
            if default < 0:
                raise ConfigError(f"{self.where}: the model has no {flag[:3].upper()} piece; name "
                                  f"one of its control pieces with tokenizer.{flag}")
            return default
        i = int(self._sp.piece_to_id(name))
        if not self._sp.is_control(i):
            raise ConfigError(f"tokenizer.{flag}: {name!r} is not a control piece of {self.where}")
        return i

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def encode_batch(self, texts: list[str], num_threads: int = 2) -> list[list[int]]:
        return [list(ids) for ids in self._sp.encode(texts, num_threads=num_threads)]

    def decode(self, ids: Iterable[int]) -> str:
        return str(self._sp.decode(list(ids)))

    def piece(self, i: int) -> str:
        """The piece of id ``i`` as the model spells it (``▁the``, ``<0x0A>``, ``<s>``)."""
        return str(self._sp.id_to_piece(i))

    def has_piece(self, piece: str) -> bool:
        i = int(self._sp.piece_to_id(piece))
        return i != self.unk_id or piece == self.piece(i)

    def piece_id(self, piece: str) -> int | None:
        """The id of ``piece``; None where the model has no such piece."""
        return int(self._sp.piece_to_id(piece)) if self.has_piece(piece) else None

    def is_special(self, i: int) -> bool:
        """Control, unknown and unused pieces: never a piece of document text."""
        return bool(self._sp.is_control(i) or self._sp.is_unknown(i) or self._sp.is_unused(i))

    def bytes_of(self, i: int) -> bytes:
        if self.is_special(i):
            return b""
        piece = self.piece(i)
        if self._sp.is_byte(i):
            return bytes([int(piece[3:5], 16)])   # "<0xAB>"
        return piece.replace(SPACE, " ").encode("utf-8")

    def doc_start_bytes(self) -> int:
        # with the dummy prefix "a" alone encodes as "▁a" (or "▁", "a"): one space, one byte
        return int(self._sp.encode("a", out_type=str)[0].startswith(SPACE))

    def ordinary_ids(self) -> list[int]:
        return [i for i in range(self.vocab_size) if not self.is_special(i)]

    @cached_property
    def _token_bytes(self) -> list[int]:
        return [len(self.bytes_of(i)) for i in range(self.vocab_size)]

    def token_bytes(self) -> list[int]:
        return list(self._token_bytes)

    def vocab_hash(self) -> str:
        h = hashlib.sha256(self.proto)
        h.update(f"{self.bos}\0{self.eos}".encode())
        return h.hexdigest()[:16]

    def model_proto(self) -> Any:
        """The parsed ``ModelProto`` (needs protobuf, which tensorboard already brings)."""
        from sentencepiece import sentencepiece_model_pb2
        m = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]
        m.ParseFromString(self.proto)
        return m

    def save(self, path: Path) -> None:
        obj = {"format": FORMAT, "model": base64.b64encode(self.proto).decode("ascii"),
               "bos": self.bos, "eos": self.eos, "vocab_size": self.vocab_size}
        path.write_text(json.dumps(obj), encoding="utf-8")

    @classmethod
    def from_dict(cls, obj: dict[str, Any], path: Path) -> SentencePieceTokenizer:
        if obj.get("format") != FORMAT or "model" not in obj:
            raise ConfigError(f"{path}: not a {FORMAT} file")
        return cls(base64.b64decode(obj["model"]), obj.get("bos", ""), obj.get("eos", ""), str(path))


def load_model(path: Path, bos: str = "", eos: str = "") -> SentencePieceTokenizer:
    """A SentencePiece ``.model`` file, e.g. LLaMA-2's ``tokenizer.model``."""
    try:
        proto = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"tokenizer.pretrained: cannot read {path}: {e}") from None
    tok = SentencePieceTokenizer(proto, bos, eos, str(path))
    if not tok.byte_fallback:
        log0(f"tokenizer: warning: {path} has no byte fallback: characters outside its "
             f"vocabulary become <unk> (id {tok.unk_id}) and are lost; report.json counts them")
    return tok


def _lines(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        for line in text.split("\n"):
            if line.strip():
                yield line


def train(texts: Iterable[str], cfg: TokenizerConfig) -> SentencePieceTokenizer:
    """A Unigram (``kind="unigram"``) or BPE (``"sp_bpe"``) model of ``cfg.vocab_size`` pieces:
    ``<unk>`` = 0, BOS = 1, EOS = 2, the other special tokens next, then 256 byte pieces."""
    spm = _sentencepiece()
    others = [t for t in cfg.special_tokens if t not in (BOS, EOS)]
    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_lines(texts), model_writer=out,
            model_type="unigram" if cfg.kind == "unigram" else "bpe",
            vocab_size=cfg.vocab_size, hard_vocab_limit=False, byte_fallback=True,
            character_coverage=0.9995, normalization_rule_name="identity",
            remove_extra_whitespaces=False, add_dummy_prefix=True, split_digits=True,
            allow_whitespace_only_pieces=True, max_sentence_length=4 * cfg.doc_cap_chars + 4,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, bos_piece=BOS, eos_piece=EOS,
            control_symbols=others, num_threads=THREADS, minloglevel=2)
    except RuntimeError as e:
        why = str(e).strip()
        too_small = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", why)
        if too_small:   # its own advice names options of its CLI, not ours
            raise ConfigError(
                f"tokenizer ({cfg.kind}): tokenizer.vocab_size = {too_small[1]} is smaller than "
                f"the {too_small[2]} pieces SentencePiece needs for the sample's characters "
                "(those covering 99.95% of it, the byte pieces and the special tokens): raise "
                "tokenizer.vocab_size") from None
        raise ConfigError(f"tokenizer ({cfg.kind}): SentencePiece training failed: {why} "
                          "(check tokenizer.vocab_size against the sample, tokenizer.max_chars)"
                          ) from None
    tok = SentencePieceTokenizer(out.getvalue(), BOS, EOS, f"trained {cfg.kind} model")
    if tok.vocab_size < cfg.vocab_size:
        log0(f"tokenizer: warning: the sample holds too few distinct pieces; vocabulary is "
             f"{tok.vocab_size}, not {cfg.vocab_size} (train on more text)")
    return tok
