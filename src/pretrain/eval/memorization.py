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
  occurs again anywhere in the training split (later in the same document too): exact
  duplicates, documents that start alike (boilerplate headers) and openings quoted inside
  other documents, which is what
  models memorise first (Carlini et al. 2022) and what deduplication is for. Looked for
  among at most ``_POOL`` training documents (all of a smaller split) and found by one
  scan of every training token: a rolling hash of each window of the span's length
  (``count_spans``, on several threads), every hit compared token by token, so the
  counts are exact.

Also the mean length of the exactly reproduced prefix, in tokens. Documents are chosen
by a fixed stride over the split, so every evaluation probes the same ones; they are
found in the shards' document index, so neither the time nor the memory of choosing
them grows with the number of documents in the split.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..log import log0
from ..tokenizer.shards import TokenShards
from .config import EvalConfig
from .scoring import device_of, score_tails, seq_len_of

_POOL = 1 << 16   # training documents checked for copies elsewhere, at most


def _stride(total: int, n: int) -> np.ndarray:
    """``n`` of ``range(total)`` at a fixed stride (all of them where fewer)."""
    if total <= n:
        return np.arange(total, dtype=np.int64)
    return (np.arange(n) * (total / n)).astype(np.int64)


def _pick(shards: TokenShards, need: int, n: int) -> tuple[np.ndarray, int]:
    """``n`` documents of the split with at least ``need`` tokens after BOS, at a fixed
    stride over those in stored order, each cut to its first ``need + 1`` tokens (a row),
    and how many there are. Read from the document index a shard at a time: memory
    follows ``n``, not the split."""
    longs = [int((np.asarray(idx[:, 1]) >= need + 1).sum()) for idx in shards.index]
    ranks = _stride(sum(longs), n)
    rows, offset = [], 0
    for arr, idx, count in zip(shards.shards, shards.index, longs, strict=True):
        mine = ranks[(ranks >= offset) & (ranks < offset + count)] - offset
        offset += count
        if len(mine):
            long = np.flatnonzero(np.asarray(idx[:, 1]) >= need + 1)
            starts = np.asarray(idx[long[mine], 0])
            rows.append(np.asarray(arr[starts[:, None] + np.arange(need + 1)]))
    dtype = shards.shards[0].dtype if shards.shards else np.int64
    return (np.concatenate(rows) if rows else np.zeros((0, need + 1), dtype=dtype)), sum(longs)


# the rolling hash: sum of (token + 1) * B**(L-1-j) over a window, modulo 2**64 (numpy's
# uint64 arithmetic wraps); B is odd, so it has an inverse and every window's hash comes
# from one prefix sum: (S[i+L] - S[i]) * B**(i+L-1) with S the cumulative (t + 1) B**-j
_B = 0x9E3779B97F4A7C15
_B_INV = pow(_B, -1, 1 << 64)
_CHUNK = 1 << 20   # tokens hashed at once by a thread: ~50 MB of uint64 work arrays


def _powers(base: int, n: int) -> np.ndarray:
    out = np.full(n, base, dtype=np.uint64)
    out[0] = 1
    return np.cumprod(out, dtype=np.uint64)


def _window_hashes(tokens: np.ndarray, length: int, up: np.ndarray,
                   down: np.ndarray) -> np.ndarray:
    """The hash of each window of ``length`` tokens (``len(tokens) - length + 1`` of them);
    ``up`` and ``down``: the powers of B and of its inverse, at least as long as tokens."""
    n = len(tokens)
    prefix = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum((tokens.astype(np.uint64) + np.uint64(1)) * down[:n], out=prefix[1:])
    return (prefix[length:] - prefix[:-length]) * up[length - 1:n]


def _row_hashes(spans: np.ndarray) -> np.ndarray:
    """The hash of each row (Horner's rule over its columns)."""
    h = np.zeros(len(spans), dtype=np.uint64)
    for j in range(spans.shape[1]):
        h = h * np.uint64(_B) + spans[:, j].astype(np.uint64) + np.uint64(1)
    return h


def _hits(part: np.ndarray, length: int, up: np.ndarray, down: np.ndarray, keys: np.ndarray,
          order: np.ndarray, table: np.ndarray, distinct: np.ndarray) -> np.ndarray:
    """The row of ``distinct`` at each window of ``part`` that holds one of them (``table``:
    2**bits slots, one for each value of a hash's top bits)."""
    shift = np.uint64(64 - (table.size.bit_length() - 1))
    hashes = _window_hashes(part, length, up, down)
    at = np.flatnonzero(table[hashes >> shift])
    first = np.searchsorted(keys, hashes[at])
    last = np.searchsorted(keys, hashes[at], side="right")
    found = [np.zeros(0, dtype=np.int64)]
    for k in range(int((last - first).max(initial=0))):   # rows sharing a hash: rare
        live = first + k < last
        rows, where = order[first[live] + k], at[live]
        same = np.ones(len(rows), dtype=bool)
        for j in range(length):   # column by column: memory of the hits, not x L
            same &= part[where + j] == distinct[rows, j]
        found.append(rows[same])
    return np.concatenate(found)


def count_spans(streams: Iterable[np.ndarray], spans: np.ndarray,
                threads: int | None = None) -> np.ndarray:
    """How often each row of ``spans`` (spans of one length) occurs in ``streams`` (token
    arrays: the shards of a split), overlapping occurrences included: one pass of a
    rolling hash over every token, each hash hit then compared token by token. Chunks of
    the streams are hashed on ``threads`` threads (numpy lets go of the GIL; default: the
    cores this process may use, at most 8)."""
    length = spans.shape[1]
    if not len(spans):
        return np.zeros(0, dtype=np.int64)
    distinct, row_of = np.unique(spans, axis=0, return_inverse=True)
    wanted = _row_hashes(distinct)
    order = np.argsort(wanted, kind="stable")
    keys = wanted[order]
    # a table of the wanted hashes' top bits, 64 slots a span or more: a window whose slot
    # is empty (about 98% of the unwanted) skips the binary searches, which took 16 times
    # as long as the hashing
    bits = int(min(max(math.ceil(math.log2(len(keys))) + 6, 16), 27))
    table = np.zeros(1 << bits, dtype=bool)
    table[keys >> np.uint64(64 - bits)] = True
    n = _CHUNK + length - 1
    up, down = _powers(_B, n), _powers(_B_INV, n)
    chunks = [(stream, start) for stream in streams
              for start in range(0, max(len(stream) - length + 1, 0), _CHUNK)]

    def scan(chunk: tuple[np.ndarray, int]) -> np.ndarray:
        stream, start = chunk
        return _hits(np.asarray(stream[start:start + n]), length, up, down, keys, order,
                     table, distinct)

    counts = np.zeros(len(distinct), dtype=np.int64)
    if not threads:   # the cores this process may use (macOS has no affinity: all)
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        threads = min(len(cores) if cores else os.cpu_count() or 1, 8)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for rows in pool.map(scan, chunks):
            counts += np.bincount(rows, minlength=len(distinct))
    return counts[row_of.reshape(-1)]


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
    if (k, m) != (cfg.memorization_prompt_tokens, cfg.memorization_tokens):
        log0(f"eval: memorization: {k} prompt and {m} continuation tokens, not the "
             f"config's {cfg.memorization_prompt_tokens} and {cfg.memorization_tokens}: "
             f"the model's seq_len is {seq_len} (a continuation at most half of it)")
    n_docs, batch_size = cfg.memorization_docs, cfg.batch_size
    train_shards = TokenShards(tokens_dir, "train")
    pool, n_long = _pick(train_shards, k + m, _POOL)
    val, _ = _pick(TokenShards(tokens_dir, "val"), k + m, n_docs)
    train = list(pool)
    t0 = time.perf_counter()
    found = count_spans(train_shards.shards, pool[:, 1:])   # the probed span of each
    log0(f"eval: memorization: {len(pool):,} of {n_long:,} training documents checked for "
         f"their span elsewhere in {train_shards.n_tokens:,} tokens "
         f"({time.perf_counter() - t0:.1f} s)")
    first: dict[bytes, np.ndarray] = {}  # one copy per duplicated span: rates over distinct texts
    for copies, d in zip(found, train, strict=True):
        if copies > 1:
            first.setdefault(d[1:].tobytes(), d)
    distinct_dups = list(first.values())
    return {"prompt_tokens": k, "continuation_tokens": m,
            "train": _rates(model, _spread(train, n_docs), k, m, batch_size),
            "val": _rates(model, list(val), k, m, batch_size),
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
        elif group == "train_duplicated":   # what dedup leaves: no probed span twice
            lines.append(f"{group:<18}{0:>8}  (no document's opening span occurs twice)")
        else:
            lines.append(f"{group:<18}{0:>8}  (none long enough)")
    return "\n".join(lines)
