"""What the rest of the pipeline asks of a tokenizer, whichever algorithm is behind it.

Two families implement it: the byte-level BPE of ``bpe.py`` (ranks + split regex, encoded by
tiktoken) and the SentencePiece models of ``spm.py`` (Unigram or SentencePiece-BPE, LLaMA-2's
``tokenizer.model`` among them, encoded by the ``sentencepiece`` library). Shards, evaluation,
sampling and export only use what is declared here, so they do not care which one wrote the
``tokenizer.json`` they read (``io.load_tokenizer`` picks the class from its ``format``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AddedToken:
    """A domain token added after training: its id, its bytes, and the ids it was made of
    before (what a checkpoint's new embedding row is initialised from)."""

    id: int
    bytes: bytes
    parts: list[int]

    @property
    def text(self) -> str:
        return self.bytes.decode("utf-8", "replace")


class TextTokenizer(ABC):
    """Text <-> ids, the BOS/EOS that frame every document, and each id's byte length."""

    bos: str
    eos: str
    bos_id: int
    eos_id: int
    vocab_size: int
    added: list[AddedToken]
    # the id text outside the vocabulary becomes (lost text); None when that cannot happen
    unk_id: int | None = None
    # what goes before a word encoded alone so that it gets the pieces it gets mid-document:
    # a space for a split regex that attaches one, "" for SentencePiece's dummy prefix
    word_prefix: str = " "

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ordinary text: special-token strings inside ``text`` are encoded as plain text."""

    @abstractmethod
    def encode_batch(self, texts: list[str], num_threads: int = 2) -> list[list[int]]: ...

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str: ...

    def decode_after(self, prompt: list[int], new: list[int]) -> str:
        """The text ``new`` adds after ``prompt``: decoded together, the prompt's text taken
        off (alone, a SentencePiece continuation's first "▁" would decode to no space). A
        character split between the two is the continuation's (the prompt alone decodes
        its first bytes to U+FFFD)."""
        head = self.decode(prompt).rstrip("\ufffd")
        whole = self.decode([*prompt, *new])
        return whole[len(head):] if whole.startswith(head) else self.decode(new)

    @abstractmethod
    def bytes_of(self, i: int) -> bytes:
        """The UTF-8 bytes token ``i`` stands for (b"" for special tokens)."""

    @abstractmethod
    def ordinary_ids(self) -> list[int]:
        """The ids text can encode to (not special tokens, not later-added domain tokens)."""

    @abstractmethod
    def token_bytes(self) -> list[int]:
        """UTF-8 byte length of every id (0 for specials and unused ids): the bits-per-byte
        denominator."""

    def doc_start_bytes(self) -> int:
        """Bytes the encoder puts before each document's text that are not in it, counted in
        its first token's ``token_bytes`` (SentencePiece's dummy-prefix "▁"): bits per
        byte takes them off again, once per document. None for byte-level BPE."""
        return 0

    @abstractmethod
    def vocab_hash(self) -> str:
        """A short hash that changes whenever any id would encode or decode differently."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the canonical ``tokenizer.json`` (read back by ``io.load_tokenizer``)."""
