"""Add domain tokens to a trained (or loaded) tokenizer without changing any existing id,
and grow a checkpoint's embeddings to match.

A BPE encodes by merges, so a new token must be reachable by merges: a word that the
tokenizer splits into pieces ``p1 .. pk`` gets the chain ``p1p2``, ``p1p2p3``, ..., the whole
word, each a merge of two tokens that already exist, with ids (= merge priorities) after
every existing id. Existing merges all apply first, so text without the new words encodes
as before except where a chain token also matches (that is the point of adding it).
Each word is added in the forms documents contain: alone and after a space (the split
regex attaches one). A form the split regex cuts into several chunks cannot become one
token and is reported as skipped, as is a form whose chain would not produce it.

New embedding rows start as the mean of the rows of the pieces the word was made of
(``resize_embeddings``), so a continued run starts from what the model knew.
"""

from __future__ import annotations

from collections.abc import Iterable

import regex
import torch

from ..log import log0
from ..model.transformer import Transformer
from .bpe import AddedToken, Tokenizer


def extend(tok: Tokenizer, words: Iterable[str]) -> tuple[Tokenizer, dict[str, list[str]]]:
    """(new tokenizer, {"added": forms, "skipped": "form: reason" lines})."""
    split = regex.compile(tok.pattern)
    vocab = tok.mergeable_ranks()
    added = list(tok.added)
    result: dict[str, list[str]] = {"added": [], "skipped": []}
    current = tok
    for word in dict.fromkeys(w for w in words if w):
        for form in (word, " " + word):
            if split.findall(form) != [form]:
                result["skipped"].append(f"{form!r}: the split regex cuts it into "
                                         f"{split.findall(form)}")
                continue
            ids = current.encode(form)
            if len(ids) == 1:
                continue  # already one token
            pieces = [current.bytes_of(i) for i in ids]
            chain, acc = [], pieces[0]
            for piece in pieces[1:]:
                acc += piece
                if acc not in vocab:
                    chain.append(acc)
            new = [AddedToken(current.vocab_size + j, b, list(ids)) for j, b in enumerate(chain)]
            trial = Tokenizer(tok.ranks, tok.pattern, tok.special, tok.bos, tok.eos, added + new)
            if len(trial.encode(form)) != 1:
                result["skipped"].append(f"{form!r}: earlier added tokens take its pieces first")
                continue
            added += new
            vocab.update((a.bytes, a.id) for a in new)
            current = trial
            result["added"].append(form)
    log0(f"tokenizer: extended by {len(added) - len(tok.added)} tokens for "
         f"{len(result['added'])} word forms; {len(result['skipped'])} skipped")
    return current, result


@torch.no_grad()
def resize_embeddings(model: Transformer, tok: Tokenizer) -> None:
    """Grow ``model``'s embedding (and untied output head) to ``tok.vocab_size`` rows; each
    added token's row is the mean of its pieces' rows. Existing rows are untouched."""
    cfg = model.cfg
    old = cfg.vocab_size
    if tok.vocab_size < old:
        raise ValueError(f"the tokenizer has {tok.vocab_size} ids, fewer than the model's {old}")
    if tok.vocab_size == old:
        return
    parts = {a.id: a.parts for a in tok.added}
    missing = [i for i in range(old, tok.vocab_size) if i not in parts]
    if missing:
        raise ValueError(f"ids {missing[:5]}... are neither in the checkpoint nor added tokens")

    def grown(weight: torch.Tensor) -> torch.nn.Parameter:
        rows = [weight[parts[i]].mean(dim=0) for i in range(old, tok.vocab_size)]
        return torch.nn.Parameter(torch.cat([weight, torch.stack(rows)]))

    model.embed.weight = grown(model.embed.weight)
    model.embed.num_embeddings = tok.vocab_size
    if cfg.tied:
        model.head.weight = model.embed.weight
    else:
        model.head.weight = grown(model.head.weight)
    model.head.out_features = tok.vocab_size
    cfg.vocab_size = tok.vocab_size
