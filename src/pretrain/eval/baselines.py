"""N-gram baselines: what counting alone achieves on the held-out tokens the model is scored on.

Three models are counted from the run's training shards (all domains together, as the model
was trained) and scored on exactly the windows of ``loss.domain_windows``, each target with
the context the model had inside its window (a window's first target has one token of
context, so the trigram falls back to the bigram there):

- ``unigram``: token frequencies, add-one smoothed;
- ``bigram`` and ``trigram``: interpolated Kneser-Ney (Chen & Goodman 1998), one discount per
  order estimated as D = n1 / (n1 + 2 n2) from the counts of counts; the lower orders use
  continuation counts and the lowest is interpolated with the uniform distribution, so every
  token has a probability.

Counting is numpy only: each n-gram packed into one int64 (``(a*V + b)*V + c``), sorted and
counted by ``np.unique``; lookups by ``np.searchsorted``. A few seconds for 20 M tokens.
Above ``max_train_tokens`` an evenly spread sample of the training tokens is counted (said in
the results). Written by hand because the field's n-gram tools (KenLM, SRILM) are C++ builds
over text files, and this is ~100 lines over the token arrays we already have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .loss import NO_PREFIX, Windows, metrics, prefix_bytes

ORDERS = ("unigram", "bigram", "trigram")


def _discount(counts: np.ndarray) -> float:
    n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
    # no singletons (a text seen twice over) gave D = 0: no mass left for the lower order,
    # an unseen token probability 0; counted as one singleton, D stays above 0
    return max(n1, 1) / (max(n1, 1) + 2 * n2) if n1 + n2 else 0.5


def _lookup(keys: np.ndarray, table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """values[i] where table[i] == key (table sorted), else 0."""
    if len(table) == 0:
        return np.zeros(len(keys), dtype=values.dtype)
    at = np.searchsorted(table, keys).clip(max=len(table) - 1)
    return np.where(table[at] == keys, values[at], 0)


def _grouped(keys: np.ndarray, counts: np.ndarray, div: int) -> tuple[np.ndarray, ...]:
    """Sorted n-gram keys grouped by their prefix ``key // div``: (prefixes, summed counts,
    number of distinct continuations)."""
    prefix = keys // div
    starts = np.flatnonzero(np.r_[True, prefix[1:] != prefix[:-1]])
    return prefix[starts], np.add.reduceat(counts, starts), np.diff(np.r_[starts, len(prefix)])


class NGrams:
    """Kneser-Ney bigram and trigram (and an add-one unigram) counted from ``tokens``."""

    def __init__(self, tokens: np.ndarray, vocab: int):
        t = np.asarray(tokens, dtype=np.int64)
        if len(t) < 3:
            raise ValueError("n-gram baselines need at least 3 training tokens")
        V = self.V = int(max(vocab, int(t.max()) + 1))
        self.n = len(t)
        self.uni = np.bincount(t, minlength=V).astype(np.float64)
        self.k2, self.c2 = np.unique(t[:-1] * V + t[1:], return_counts=True)
        self.k3, self.c3 = np.unique((t[:-2] * V + t[1:-1]) * V + t[2:], return_counts=True)
        # lowest order: continuation counts N1+(. w), interpolated with uniform
        cont_w = np.bincount(self.k2 % V, minlength=V).astype(np.float64)
        self.d1 = _discount(cont_w[cont_w > 0])
        total = cont_w.sum()
        self.p1 = (np.maximum(cont_w - self.d1, 0) + self.d1 * (cont_w > 0).sum() / V) / total
        # bigram as the top order: raw counts c(v w), context totals c(v .), types N1+(v .)
        self.d2 = _discount(self.c2)
        self.v2, self.cv, self.tv = _grouped(self.k2, self.c2, V)
        # bigram as the trigram's middle order: continuation counts N1+(. v w)
        self.k2c, self.c2c = np.unique(self.k3 % (V * V), return_counts=True)
        self.d2c = _discount(self.c2c)
        self.v2c, self.cvc, self.tvc = _grouped(self.k2c, self.c2c, V)
        # trigram: c(u v w), c(u v .), N1+(u v .)
        self.d3 = _discount(self.c3)
        self.uv, self.cuv, self.tuv = _grouped(self.k3, self.c3, V)

    def unigram(self, w: np.ndarray) -> np.ndarray:
        return (self.uni[w] + 1.0) / (self.n + self.V)

    def _bigram(self, v: np.ndarray, w: np.ndarray, keys: np.ndarray, counts: np.ndarray,
                ctx: np.ndarray, ctx_total: np.ndarray, ctx_types: np.ndarray,
                d: float) -> np.ndarray:
        c = _lookup(v * self.V + w, keys, counts).astype(np.float64)
        tot = _lookup(v, ctx, ctx_total).astype(np.float64)
        types = _lookup(v, ctx, ctx_types).astype(np.float64)
        lower = self.p1[w]
        safe = np.maximum(tot, 1.0)
        return np.where(tot > 0, np.maximum(c - d, 0) / safe + d * types / safe * lower, lower)

    def bigram(self, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        return self._bigram(v, w, self.k2, self.c2, self.v2, self.cv, self.tv, self.d2)

    def trigram(self, u: np.ndarray, v: np.ndarray, w: np.ndarray,
                bigram: np.ndarray | None = None) -> np.ndarray:
        """``u < 0`` marks a target with one token of context: the bigram's probability
        (``bigram``, when the caller has it already)."""
        middle = self._bigram(v, w, self.k2c, self.c2c, self.v2c, self.cvc, self.tvc, self.d2c)
        uv = np.maximum(u, 0) * self.V + v
        c = _lookup(uv * self.V + w, self.k3, self.c3).astype(np.float64)
        tot = _lookup(uv, self.uv, self.cuv).astype(np.float64)
        types = _lookup(uv, self.uv, self.tuv).astype(np.float64)
        safe = np.maximum(tot, 1.0)
        p = np.where(tot > 0, np.maximum(c - self.d3, 0) / safe + self.d3 * types / safe * middle,
                     middle)
        return np.where(u >= 0, p, self.bigram(v, w) if bigram is None else bigram)


def sample_tokens(shards: Sequence[np.ndarray], cap: int, pieces: int = 64) -> tuple[np.ndarray, bool]:
    """All training tokens, or ``pieces`` evenly spread runs totalling ``cap`` of them."""
    total = sum(len(s) for s in shards)
    if not cap or total <= cap:
        return np.concatenate([np.asarray(s, dtype=np.int64) for s in shards]), False
    flat_starts = np.linspace(0, total - cap // pieces, pieces).astype(np.int64)
    offsets = np.cumsum([0] + [len(s) for s in shards])
    out = []
    for start in flat_starts:
        i = int(np.searchsorted(offsets, start, side="right") - 1)
        lo = int(start - offsets[i])
        out.append(np.asarray(shards[i][lo:lo + cap // pieces], dtype=np.int64))
    return np.concatenate(out), True


def _targets(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, w) for every target of every window; u = -1 where the window gives one token."""
    us, vs, ws = [], [], []
    for r in rows:
        r = np.asarray(r, dtype=np.int64)
        ws.append(r[1:])
        vs.append(r[:-1])
        us.append(np.r_[-1, r[:-2]])
    return np.concatenate(us), np.concatenate(vs), np.concatenate(ws)


def score(model: NGrams, wins: Windows, token_bytes: np.ndarray | None,
          doc_start: tuple[int, int] = NO_PREFIX) -> dict[str, Any]:
    """{order: {domain | "all": loss, ppl, tokens, bpb, bytes}} over the same windows."""
    nbytes = np.asarray(token_bytes, dtype=np.int64) if token_bytes is not None else None
    out: dict[str, Any] = {o: {} for o in ORDERS}
    totals = {o: [0.0, 0.0, 0.0] for o in ORDERS}
    for domain, rows in wins.items():
        if not rows:
            continue
        u, v, w = _targets(rows)
        b = int(nbytes[w].sum()) - prefix_bytes(rows, doc_start) if nbytes is not None else 0
        bigram = model.bigram(v, w)
        probs = {"unigram": model.unigram(w), "bigram": bigram,
                 "trigram": model.trigram(u, v, w, bigram)}
        for order, p in probs.items():
            nll = float(-np.log(np.maximum(p, 1e-300)).sum())
            out[order][domain] = metrics(nll, len(w), b)
            totals[order][0] += nll
            totals[order][1] += len(w)
            totals[order][2] += b
    for order in ORDERS:
        t_nll, t_n, t_b = totals[order]
        out[order]["all"] = metrics(t_nll, int(t_n), int(t_b))
    return out


def best(baselines: dict[str, Any], domain: str, metric: str = "bpb") -> tuple[str, float]:
    """The n-gram order with the lowest ``metric`` on ``domain``, and that value."""
    found = [(o, baselines[o][domain][metric]) for o in ORDERS
             if metric in baselines.get(o, {}).get(domain, {})]
    return min(found, key=lambda x: x[1]) if found else ("", math.nan)


def table(model_res: dict[str, Any], baselines: dict[str, Any]) -> str:
    """Bits per byte of the model beside each baseline, per domain, and the model's margin
    over the best baseline (negative = the model is better)."""
    metric = "bpb" if "bpb" in baselines["unigram"].get("all", {}) else "loss"
    lines = [f"{'domain':>10}{'model':>9}{'unigram':>9}{'bigram':>9}{'trigram':>9}"
             f"   model vs best n-gram ({metric})"]
    for domain in baselines["unigram"]:
        m = model_res.get(domain, {}).get(metric, math.nan)
        order, b = best(baselines, domain, metric)
        cells = "".join(f"{baselines[o][domain].get(metric, math.nan):>9.4f}" for o in ORDERS)
        lines.append(f"{domain:>10}{m:>9.4f}{cells}   {m / b - 1:+.1%} vs {order}")
    return "\n".join(lines)


def run(train_shards: Sequence[np.ndarray], wins: Windows, token_bytes: np.ndarray | None,
        max_train_tokens: int, doc_start: tuple[int, int] = NO_PREFIX) -> dict[str, Any]:
    """Count the baselines from ``train_shards`` and score them on ``wins``."""
    tokens, sampled = sample_tokens(train_shards, max_train_tokens)
    top = max((int(r.max()) for rows in wins.values() for r in rows if len(r)), default=0)
    vocab = max(len(token_bytes) if token_bytes is not None else 0, top + 1)
    res = score(NGrams(tokens, vocab), wins, token_bytes, doc_start)
    res["train_tokens"] = len(tokens)
    res["sampled"] = sampled
    return res
