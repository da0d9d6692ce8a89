"""Memorization probe: does the model continue training documents word for word?

For a fixed set of documents from each split, the model gets the first ``prompt_tokens``
tokens of the document (after BOS, as in training) and continues greedily for
``continuation_tokens``; a document counts as memorized when the continuation equals the
document's next tokens exactly. Reported per group:

- ``train``: training documents; ``val``: held-out documents (the baseline: what the
  model predicts exactly without having seen the text, e.g. licence boilerplate);
- ``train_duplicated``: training documents whose probed span (prompt + continuation)
  occurs in more than one training document: duplicated data is what models memorise
  first, and what deduplication is for.

Also the mean length of the exactly reproduced prefix, in tokens. Documents are chosen
by a fixed stride over the split, so every evaluation probes the same ones.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch

from ..model.generate import generate
from ..model.transformer import Transformer
from ..tokenizer.shards import TokenShards


def _probe_docs(shards: TokenShards, need: int) -> list[np.ndarray]:
    """Documents of the split with at least ``need`` tokens after BOS."""
    return [np.asarray(toks) for toks, _ in shards.documents() if len(toks) >= need + 1]


def _spread(docs: list[Any], n: int) -> list[Any]:
    if len(docs) <= n:
        return docs
    step = len(docs) / n
    return [docs[int(i * step)] for i in range(n)]


@torch.no_grad()
def _rates(model: Transformer, docs: list[np.ndarray], k: int, m: int,
           batch_size: int) -> dict[str, float]:
    if not docs:
        return {"docs": 0}
    exact, prefix = 0, 0
    for i in range(0, len(docs), batch_size):
        chunk = docs[i:i + batch_size]
        prompts = [d[:k + 1].tolist() for d in chunk]     # BOS + k tokens
        outs = generate(model, prompts, m, temperature=0.0)
        for d, out in zip(chunk, outs, strict=True):
            truth = d[k + 1:k + 1 + m].tolist()
            same = 0
            while same < min(len(out), len(truth)) and out[same] == truth[same]:
                same += 1
            exact += same == m
            prefix += same
    return {"docs": len(docs), "exact_rate": round(exact / len(docs), 4),
            "mean_prefix_tokens": round(prefix / len(docs), 3)}


def probe(model: Transformer, tokens_dir: Any, n_docs: int, k: int, m: int,
          batch_size: int = 16) -> dict[str, Any]:
    m = min(m, model.cfg.seq_len // 2)              # a short model: shorter probes
    k = max(1, min(k, model.cfg.seq_len - m - 1))
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
        else:
            lines.append(f"{group:<18}{0:>8}  (none long enough)")
    return "\n".join(lines)
