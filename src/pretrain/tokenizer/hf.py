"""Export our tokenizers as a Hugging Face ``tokenizer.json`` that gives identical ids.

Byte-level BPE:

tiktoken merges by the rank of the merged token; HF's BPE applies merges in list order.
The two agree when the merge list is ordered by rank and each token's merge is the pair
that BPE itself would produce for it using only lower ranks (recovered below, exact), and
when whole pieces found in the vocabulary are taken as is (HF's ``ignore_merges``, which
is what tiktoken does). Pre-tokenisation is the same regex (HF ``Split``, Oniguruma, which
understands the possessive quantifiers of the GPT-4 pattern) followed by the byte-level
alphabet without its own regex. BOS is added by the post-processor, as our documents
start with it; EOS is left to the caller.

SentencePiece (``spm.py``): the same model rebuilt with ``tokenizers``' own parts: a
``Unigram`` model with the pieces' scores, or for a SentencePiece BPE (LLaMA-2) a ``BPE``
whose merges are every split of a piece into two pieces, ordered by the merged piece's score
(SentencePiece merges the pair whose result scores highest); byte fallback either way. The
normalizer restates the model's: spaces become ``▁`` and, with the dummy prefix, one ``▁``
goes in front. Only the identity normalization without whitespace squeezing is exported
(what ``spm.train`` writes and LLaMA-2 uses); anything else is refused, not approximated.
Like HF's byte-level BPE, the HF tokenizer turns special-token text in its input into the
special id, and a Unigram export can read the literal text ``<0xAB>`` as that byte piece
when one of those characters is outside the vocabulary. And where two Unigram segmentations
score exactly the same, the two libraries may break the tie differently (measured: 1 of 400
C4 documents at 8,192 pieces, "▁p al e" vs "▁ pa le"); document text is otherwise identical.
"""

from __future__ import annotations

import heapq
import json
from pathlib import Path
from typing import Any

from .base import TextTokenizer
from .bpe import Tokenizer
from .bytelevel import byte_to_unicode
from .config import PAD
from .spm import SPACE, SentencePieceTokenizer


def _as_text(b: bytes) -> str:
    t = byte_to_unicode()
    return "".join(t[x] for x in b)


def recover_merges(ranks: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The pair each multi-byte token was merged from, in rank order. A token that no merge
    of lower-ranked tokens makes (Llama-3 has some) is made by tiktoken only from a whole
    piece (which HF's ``ignore_merges`` looks up too) or from any two tokens it splits
    into: it gets a merge from each such pair, none if there is none."""
    rank = {b: i for i, b in enumerate(ranks)}
    merges = []
    for r, token in enumerate(ranks):
        if len(token) == 1:
            continue
        parts = _merged_below(token, rank, r)
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
        else:
            merges += _splits(token, rank.keys())
    return merges


def _splits(token: bytes, known: Any) -> list[tuple[bytes, bytes]]:
    """Every pair of ``known`` tokens ``token`` splits into, left piece shortest first:
    what tiktoken may merge into it (any adjacent pair whose bytes are a token)."""
    return [(token[:k], token[k:]) for k in range(1, len(token))
            if token[:k] in known and token[k:] in known]


def _merged_below(token: bytes, rank: dict[bytes, int], limit: int) -> list[bytes]:
    """``token``'s bytes merged as tiktoken merges them (the adjacent pair whose joined bytes
    rank lowest first, the leftmost of equals) with the tokens ranked below ``limit``, until
    none applies: a heap of candidate pairs over a linked list, n log n in the token's
    length (a rescan per merge took 1.9 s for a token of 4,097 bytes)."""
    parts = [token[i:i + 1] for i in range(len(token))]
    n = len(parts)
    nxt, prv, alive = list(range(1, n + 1)), list(range(-1, n - 1)), [True] * n
    heap: list[tuple[int, int, bytes, bytes]] = []

    def push(i: int) -> None:
        j = nxt[i]
        if j < n:
            r = rank.get(parts[i] + parts[j])
            if r is not None and r < limit:
                heapq.heappush(heap, (r, i, parts[i], parts[j]))

    for i in range(n - 1):
        push(i)
    while heap:
        _, i, a, b = heapq.heappop(heap)
        j = nxt[i] if alive[i] else n
        if j >= n or parts[i] != a or parts[j] != b:
            continue   # stale: one side has merged since
        parts[i], alive[j], nxt[i] = a + b, False, nxt[j]
        if nxt[i] < n:
            prv[nxt[i]] = i
        if prv[i] >= 0:
            push(prv[i])
        push(i)
    return [p for p, keep in zip(parts, alive, strict=True) if keep]


def to_hf(tok: Tokenizer) -> Any:
    """A ``tokenizers.Tokenizer`` equivalent to ``tok``."""
    from tokenizers import Regex, decoders, models, pre_tokenizers, processors
    from tokenizers import Tokenizer as HFTokenizer
    if [len(b) for b in tok.ranks[:256]] != [1] * 256:
        raise ValueError("export needs the 256 single bytes as the first 256 ranks")
    vocab = {_as_text(b): i for i, b in enumerate(tok.ranks)}
    merges = [(_as_text(a), _as_text(b)) for a, b in recover_merges(tok.ranks)]
    # special tokens (and placeholders for unused ids, as cl100k's 100256) go into the BPE
    # vocab with their ids: HF then keeps those ids when it marks them special, whatever
    # comes after them (the added domain tokens)
    names = {i: t for t, i in tok.special.items()}
    first_added = tok.vocab_size - len(tok.added)
    specials = [names.get(i, f"<|unused_{i}|>") for i in range(len(tok.ranks), first_added)]
    clash = [t for t in specials if t in vocab]
    if clash:   # its id would replace the learned token's, and text lose those bytes
        raise ValueError(f"special token {clash[0]!r} is also a learned token of the "
                         f"vocabulary (id {vocab[clash[0]]}): the Hugging Face format cannot "
                         "hold both; rename the special token")
    vocab.update({t: len(tok.ranks) + k for k, t in enumerate(specials)})
    # an added token merges from any two tokens it is made of, as tiktoken merges any
    # adjacent pair whose bytes are a token ("ha" + "ha" -> "haha" as well as "hah" + "a")
    known = set(tok.ranks) | {a.bytes for a in tok.added}
    for a in tok.added:
        _chain_merge(tok, a)   # made of its pieces: checked
        vocab[_as_text(a.bytes)] = a.id
        merges += [(_as_text(x), _as_text(y)) for x, y in _splits(a.bytes, known)]
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(tok.pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    hf.decoder = decoders.ByteLevel()
    from tokenizers import AddedToken
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    hf.post_processor = processors.TemplateProcessing(
        single=f"{tok.bos} $A", pair=f"{tok.bos} $A {tok.bos} $B",
        special_tokens=[(tok.bos, tok.bos_id)])
    return hf


def _chain_merge(tok: Tokenizer, a: Any) -> tuple[bytes, bytes]:
    """The two tokens an added token merges: its bytes are a prefix of its word's old pieces
    joined, one piece longer than the previous link of the chain."""
    acc = b""
    for i in a.parts:
        piece = tok.bytes_of(i)
        if acc + piece == a.bytes:
            return acc, piece
        acc += piece
    raise ValueError(f"added token {a.bytes!r} is not a prefix of its pieces {a.parts}")


def sp_to_hf(tok: SentencePieceTokenizer) -> Any:
    """A ``tokenizers.Tokenizer`` equivalent to the SentencePiece model of ``tok``."""
    from tokenizers import AddedToken, decoders, models, normalizers, processors
    from tokenizers import Tokenizer as HFTokenizer
    m = tok.model_proto()
    norm, spec = m.normalizer_spec, m.trainer_spec
    if norm.name != "identity" or norm.remove_extra_whitespaces or norm.precompiled_charsmap:
        raise ValueError(f"{tok.where}: normalization {norm.name!r} (remove_extra_whitespaces="
                         f"{norm.remove_extra_whitespaces}) has no exact HF equivalent here; only "
                         "'identity' without whitespace squeezing is exported")
    if spec.treat_whitespace_as_suffix:
        raise ValueError(f"{tok.where}: treat_whitespace_as_suffix is not supported by the export")
    piece_type = type(m.pieces[0]).Type
    if any(p.type == piece_type.USER_DEFINED for p in m.pieces):
        raise ValueError(f"{tok.where}: user-defined pieces are not supported by the export")
    special = [p.piece for p in m.pieces if p.type in (piece_type.CONTROL, piece_type.UNKNOWN)]
    unk = tok.unk_id if tok.unk_id is not None and tok.unk_id >= 0 else None
    model: Any
    if spec.model_type == type(spec).ModelType.UNIGRAM:
        # SentencePiece never matches a byte piece's name ("<0x41>") in text; HF's lattice
        # would, so each gets a score below any spelling of those 6 characters in pieces.
        # (Where one of them is outside the vocabulary HF's <unk> penalty still loses to it.)
        floor = 6 * min((p.score for p in m.pieces if p.type == piece_type.NORMAL), default=0.0) - 1
        vocab_scores = [(p.piece, floor if p.type == piece_type.BYTE else p.score) for p in m.pieces]
        model = models.Unigram(vocab_scores, unk_id=unk, byte_fallback=tok.byte_fallback)
    elif spec.model_type == type(spec).ModelType.BPE:
        vocab = {p.piece: i for i, p in enumerate(m.pieces)}
        model = models.BPE(vocab=vocab, merges=_sp_merges(m.pieces, vocab, piece_type.NORMAL),
                           unk_token=m.pieces[unk].piece if unk is not None else None,
                           byte_fallback=tok.byte_fallback, fuse_unk=True)
    else:
        raise ValueError(f"{tok.where}: model type {spec.model_type} is not exported "
                         "(Unigram and BPE are)")
    hf = HFTokenizer(model)
    prefix = [normalizers.Prepend(SPACE)] if norm.add_dummy_prefix else []
    hf.normalizer = normalizers.Sequence([*prefix, normalizers.Replace(" ", SPACE)])
    strip = [decoders.Strip(" ", 1, 0)] if norm.add_dummy_prefix else []
    hf.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(),
                                    decoders.Fuse(), *strip])
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    hf.post_processor = processors.TemplateProcessing(
        single=f"{tok.bos} $A", pair=f"{tok.bos} $A {tok.bos} $B",
        special_tokens=[(tok.bos, tok.bos_id)])
    return hf


def _sp_merges(pieces: Any, vocab: dict[str, int], normal: int) -> list[tuple[str, str]]:
    """Every (left, right) split of a normal piece into two pieces, highest score first."""
    found = []
    for i, p in enumerate(pieces):
        if p.type != normal:
            continue
        s = p.piece
        for k in range(1, len(s)):
            if s[:k] in vocab and s[k:] in vocab:
                found.append((-p.score, i, k, s[:k], s[k:]))
    found.sort()
    return [(left, right) for *_, left, right in found]


def pad_id(tok: TextTokenizer) -> int | None:
    """The id of the padding token the exported tokenizer names (``pad_token``), if any."""
    if isinstance(tok, SentencePieceTokenizer):
        return tok.piece_id(PAD)
    return tok.special.get(PAD) if isinstance(tok, Tokenizer) else None


def save_pretrained(tok: TextTokenizer, out: Path, model_max_length: int) -> None:
    """``tokenizer.json`` + ``tokenizer_config.json`` loadable by transformers 4.x and 5.x."""
    if isinstance(tok, SentencePieceTokenizer):
        hf = sp_to_hf(tok)
    elif isinstance(tok, Tokenizer):
        hf = to_hf(tok)
    else:
        raise TypeError(f"no Hugging Face export for {type(tok).__name__}")
    out.mkdir(parents=True, exist_ok=True)
    hf.save(str(out / "tokenizer.json"))
    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # 5.x writes TokenizersBackend: 4.x fails
        "bos_token": tok.bos, "eos_token": tok.eos, "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        # without it 4.x returns token_type_ids, which generate() rejects for causal LMs
        "model_input_names": ["input_ids", "attention_mask"],
    }
    if isinstance(tok, SentencePieceTokenizer):
        if tok.unk_id is not None and tok.unk_id >= 0:
            cfg["unk_token"] = tok.piece(tok.unk_id)
        if tok.has_piece(PAD):
            cfg["pad_token"] = PAD
    elif PAD in tok.special:
        cfg["pad_token"] = PAD
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
