"""Memorization probe: does the model continue training documents word for word?

For a fixed set of documents from each split, the model gets the first ``prompt_tokens``
tokens of the document (after BOS, as in training) and continues greedily for
``continuation_tokens``; a document counts as memorized when the continuation equals the
document's next tokens exactly. Measured teacher-forced (``scoring.score_tails``): the
greedy choice after each true prefix, which is what greedy generation produces for as
long as it matches. Reported per group:

- ``train``: training documents; ``val``: held-out documents (the baseline: what the
  model predicts exactly without having seen the text, e.g. licence boilerplate);
- ``train_duplicated``: training documents whose probed span (prompt + continuation)
  also opens another training document: exact duplicates and documents that start alike
  (boilerplate headers), which is what models memorise first and what deduplication is
  for. A span repeated inside other documents is not found: that takes a scan of every
  training token (a suffix array, as Carlini et al. 2022 built), not done here.

Also the mean length of the exactly reproduced prefix, in tokens. Documents are chosen
by a fixed stride over the split, so every evaluation probes the same ones.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..tokenizer.shards import TokenShards
from .config import EvalConfig
from .scoring import device_of, score_tails, seq_len_of


def _probe_docs(shards: TokenShards, need: int) -> list[np.ndarray]:
    """Documents of the split with at least ``need`` tokens after BOS."""
    return [np.asarray(toks) for toks, _ in shards.documents() if len(toks) >= need + 1]


def _spread(docs: list[Any], n: int) -> list[Any]:
    if len(docs) <= n:
        return docs
    step = len(docs) / n
    return [docs[int(i * step)] for i in range(n)]


def _rates(model: torch.nn.Module, docs: list[np.ndarray], k: int, m: int,
           batch_size: int) -> dict[str, float]:
    if not docs:
        return {"docs": 0}
    # teacher-forced: the greedy choice at each of the m positions after the true prefix.
    # Free greedy generation follows the document exactly as long as these match, so the
    # matched prefix (and exact reproduction) is the same, in one forward pass per batch.
    tails = score_tails(model, [(d[:k + 1 + m], m) for d in docs], seq_len_of(model),
                        device_of(model), batch_size)
    exact = sum(t.greedy for t in tails)
    prefix = sum(t.greedy_prefix for t in tails)
    return {"docs": len(docs), "exact_rate": round(exact / len(docs), 4),
            "mean_prefix_tokens": round(prefix / len(docs), 3)}


def probe(model: torch.nn.Module, tokens_dir: Path, cfg: EvalConfig) -> dict[str, Any]:
    """The probe over ``cfg.memorization_docs`` documents per group (see the module
    docstring); prompt and continuation shortened to fit a short model."""
    seq_len = seq_len_of(model)
    m = min(cfg.memorization_tokens, seq_len // 2)
    k = max(1, min(cfg.memorization_prompt_tokens, seq_len - m - 1))
    n_docs, batch_size = cfg.memorization_docs, cfg.batch_size
    train = _probe_docs(TokenShards(tokens_dir, "train"), k + m)
    val = _probe_docs(TokenShards(tokens_dir, "val"), k + m)
    keys = [d[1:k + 1 + m].tobytes() for d in train]  # the probed span of each document
    spans = Counter(keys)
    first: dict[bytes, np.ndarray] = {}  # one copy per duplicated span: rates over distinct texts
    for key, d in zip(keys, train, strict=True):
        if spans[key] > 1:
            first.setdefault(key, d)
    distinct_dups = list(first.values())
    return {"prompt_tokens": k, "continuation_tokens": m,
            "train": _rates(model, _spread(train, n_docs), k, m, batch_size),
            "val": _rates(model, _spread(val, n_docs), k, m, batch_size),
            "train_duplicated": _rates(model, _spread(distinct_dups, n_docs), k, m, batch_size)}


def table(rep: dict[str, Any]) -> str:
    lines = [f"memorization: {rep['prompt_tokens']} prompt tokens, greedy "
             f"{rep['continuation_tokens']} tokens must match exactly",
             f"{'documents':<18}{'probed':>8}{'exact':>8}{'mean prefix':>13}"]
    for group in ("train", "val", "train_duplicated"):
        r = rep[group]
        if r["docs"]:
            lines.append(f"{group:<18}{r['docs']:>8}{r['exact_rate']:>8.3f}"
                         f"{r['mean_prefix_tokens']:>13.2f}")
        elif group == "train_duplicated":   # what dedup leaves: no opening span twice
            lines.append(f"{group:<18}{0:>8}  (no two documents open with the same span)")
        else:
            lines.append(f"{group:<18}{0:>8}  (none long enough)")
    return "\n".join(lines)
