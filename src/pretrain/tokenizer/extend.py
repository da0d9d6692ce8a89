"""Add domain tokens to a trained (or loaded) tokenizer without changing any existing id,
and record what a checkpoint's new embedding rows are made of.

A BPE encodes by merges, so a new token must be reachable by merges: a word that the
tokenizer splits into pieces ``p1 .. pk`` gets the chain ``p1p2``, ``p1p2p3``, ..., the whole
word, each a merge of two tokens that already exist, with ids (= merge priorities) after
every existing id. Existing merges all apply first, so text without the new words encodes
as before except where a chain token also matches (that is the point of adding it).
Each word is added in the forms documents contain: alone and after a space (the split
regex attaches one). A form the split regex cuts into several chunks cannot become one
token and is reported as skipped, as is a form whose chain would not produce it.

Each added token records the ids it was made of (``AddedToken.parts``): a checkpoint's new
embedding rows start as the mean of those rows (``model.transformer.grow_vocab``), so a
continued run starts from what the model knew.
"""

from __future__ import annotations

from collections.abc import Iterable

import regex

from ..log import log0
from .bpe import AddedToken, Tokenizer


def extend(tok: Tokenizer, words: Iterable[str]) -> tuple[Tokenizer, dict[str, list[str]]]:
    """(new tokenizer, {"added": forms, "skipped": "form: reason" lines, "already_one_token":
    forms that needed nothing, "ignored": empty or repeated words})."""
    split = regex.compile(tok.pattern)
    vocab = tok.mergeable_ranks()
    added = list(tok.added)
    result: dict[str, list[str]] = {"added": [], "skipped": [], "already_one_token": [],
                                    "ignored": []}
    current = tok
    unique: dict[str, None] = {}
    for w in words:
        if not w or w in unique:
            result["ignored"].append(f"{w!r}: " + ("empty" if not w else "given again"))
        unique[w] = None
    for word in filter(None, unique):
        for form in (word, " " + word):
            inside = [name for name in tok.special if name in form]
            if inside:  # HF tokenizers match special tokens inside text: the export would differ
                result["skipped"].append(f"{form!r}: holds the special token {inside[0]!r}")
                continue
            cut = [m.group() for m in split.finditer(form)]   # whole matches, as the
            if cut != [form]:                                   # encoders cut (not groups)
                result["skipped"].append(f"{form!r}: the split regex cuts it into {cut}")
                continue
            ids = current.encode(form)
            if len(ids) == 1:
                result["already_one_token"].append(form)
                continue
            pieces = [current.bytes_of(i) for i in ids]
            # each link made of the pieces it joins: its embedding row starts as their mean
            chain, acc = [], pieces[0]
            for k, piece in enumerate(pieces[1:], 2):
                acc += piece
                if acc not in vocab:
                    chain.append((acc, ids[:k]))
            new = [AddedToken(current.vocab_size + j, b, list(made_of))
                   for j, (b, made_of) in enumerate(chain)]
            trial = Tokenizer(tok.ranks, tok.pattern, tok.special, tok.bos, tok.eos, added + new)
            if len(trial.encode(form)) != 1:
                result["skipped"].append(f"{form!r}: earlier added tokens take its pieces first")
                continue
            added += new
            vocab.update((a.bytes, a.id) for a in new)
            current = trial
            result["added"].append(form)
    log0(f"tokenizer: extended by {len(added) - len(tok.added)} tokens for "
         f"{len(result['added'])} word forms; {len(result['skipped'])} skipped, "
         f"{len(result['already_one_token'])} already one token, {len(result['ignored'])} "
         "empty or repeated (extension.json lists them)")
    return current, result
