"""Export our BPE as a Hugging Face ``tokenizer.json`` that gives identical ids.

tiktoken merges by the rank of the merged token; HF's BPE applies merges in list order.
The two agree when the merge list is ordered by rank and each token's merge is the pair
that BPE itself would produce for it using only lower ranks (recovered below, exact), and
when whole pieces found in the vocabulary are taken as is (HF's ``ignore_merges``, which
is what tiktoken does). Pre-tokenisation is the same regex (HF ``Split``, Oniguruma, which
understands the possessive quantifiers of the GPT-4 pattern) followed by the byte-level
alphabet without its own regex. BOS is added by the post-processor, as our documents
start with it; EOS is left to the caller.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from .bpe import Tokenizer
from .config import PAD


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (the alphabet of byte-level tokenizer.json)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _as_text(b: bytes) -> str:
    t = byte_to_unicode()
    return "".join(t[x] for x in b)


def recover_merges(ranks: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The pair each multi-byte token was merged from, in rank order."""
    rank = {b: i for i, b in enumerate(ranks)}
    merges = []
    for r, token in enumerate(ranks):
        if len(token) == 1:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best = min(range(len(parts) - 1),
                       key=lambda i: rank.get(parts[i] + parts[i + 1], 1 << 62))
            merged = parts[best] + parts[best + 1]
            if rank.get(merged, 1 << 62) >= r:
                break
            parts[best:best + 2] = [merged]
        if len(parts) != 2:
            raise ValueError(f"token {r} ({token!r}) is not a merge of two lower-ranked tokens")
        merges.append((parts[0], parts[1]))
    return merges


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
    vocab.update({t: len(tok.ranks) + k for k, t in enumerate(specials)})
    for a in tok.added:  # each chain token is one merge: (the chain so far, the next piece)
        left, right = _chain_merge(tok, a)
        vocab[_as_text(a.bytes)] = a.id
        merges.append((_as_text(left), _as_text(right)))
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


def save_pretrained(tok: Tokenizer, out: Path, model_max_length: int) -> None:
    """``tokenizer.json`` + ``tokenizer_config.json`` loadable by transformers 4.x and 5.x."""
    to_hf(tok).save(str(out / "tokenizer.json"))
    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # 5.x writes TokenizersBackend: 4.x fails
        "bos_token": tok.bos, "eos_token": tok.eos, "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        # without it 4.x returns token_type_ids, which generate() rejects for causal LMs
        "model_input_names": ["input_ids", "attention_mask"],
    }
    if PAD in tok.special:
        cfg["pad_token"] = PAD
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
