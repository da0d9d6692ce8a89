"""Held-out loss, perplexity and bits-per-byte, overall and per data domain.

Each domain's validation documents are concatenated (each starts with its BOS) and cut
into windows (``scoring.windows``), so every token after the first is predicted exactly
once, with between 1 and seq_len tokens of context. The same windows serve the
training loop's periodic evaluation and the eval stage. With ``eval.max_tokens_per_domain``
each domain is scored on its first that many tokens (stored order), and ``all`` sums what
was scored: once domains are capped, it weighs them equally, not as the split does.

Bits per byte = summed NLL (nats) / ln 2 / UTF-8 bytes of the predicted tokens. Special
tokens count zero bytes, so BOS/EOS predictions cost bits without adding bytes; that is
the convention of nanochat's ``evaluate_bpb`` and makes bpb comparable across tokenizers.
A SentencePiece tokenizer's dummy-prefix "▁" before each document is not the text's: its
byte is taken off once per document predicted (``doc_start``), so the bytes are the text's.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from ..log import Progress, log0
from ..tokenizer.shards import TokenShards
from .scoring import nll_total, seq_len_of, windows

Windows = dict[str, list[np.ndarray]]
NO_PREFIX = (0, -1)   # ``doc_start`` of a tokenizer that adds nothing before a document


def prefix_bytes(rows: list[np.ndarray], doc_start: tuple[int, int]) -> int:
    """The bytes ``doc_start`` = (bytes, BOS id) adds before the documents whose first
    token these windows predict (a BOS followed, in its window, by a predicted token)."""
    n, bos = doc_start
    return n * sum(int(np.count_nonzero(np.asarray(r[:-1]) == bos)) for r in rows) if n else 0


def domain_windows(shards: TokenShards, seq_len: int, cap: int) -> Windows:
    """Each domain's documents concatenated and cut into windows, at most ``cap``
    predicted tokens per domain (0 = all). The same shards always give the same windows."""
    parts: dict[str, list[np.ndarray]] = {}
    sizes: dict[str, int] = {}
    present = len(shards.domain_ids())
    full = 0   # domains that have their cap: once all have, the rest of the split is not read
    for toks, domain in shards.documents():
        if cap and sizes.get(domain, 0) >= cap + 1:
            continue
        parts.setdefault(domain, []).append(np.asarray(toks, dtype=np.int64))
        sizes[domain] = sizes.get(domain, 0) + len(toks)
        if cap and sizes[domain] >= cap + 1:
            full += 1
            if full == present:
                break
    return {domain: windows(np.concatenate(p)[: cap + 1 if cap else None], seq_len)
            for domain, p in sorted(parts.items())}


def score(model: torch.nn.Module, wins: Windows, token_bytes: np.ndarray | None,
          batch_size: int, device: torch.device, progress: bool = False,
          width: int = 0, doc_start: tuple[int, int] = NO_PREFIX,
          fused: bool = True) -> dict[str, dict[str, float]]:
    """Loss, perplexity and (with ``token_bytes``) bits per byte of each domain's windows
    and of all of them together ("all"); ``width`` and ``fused`` as ``nll_total``'s."""
    nbytes = torch.from_numpy(np.asarray(token_bytes, dtype=np.int64)) if token_bytes is not None else None
    results: dict[str, dict[str, float]] = {}
    totals = [0.0, 0, 0]
    with Progress("eval", total=len(wins), unit="domains") if progress \
            else contextlib.nullcontext() as bar:
        for domain, rows in wins.items():
            nll, targets = nll_total(model, rows, batch_size, device, width, fused)
            n_bytes = int(nbytes[targets].sum()) - prefix_bytes(rows, doc_start) \
                if nbytes is not None else 0
            results[domain] = metrics(nll, len(targets), n_bytes)
            totals[0] += nll
            totals[1] += len(targets)
            totals[2] += n_bytes
            if bar is not None:
                bar.update(1)
    results["all"] = metrics(totals[0], int(totals[1]), int(totals[2]))
    return results


def metrics(nll: float, tokens: int, nbytes: int) -> dict[str, float]:
    """Loss, perplexity and (with bytes) bits per byte of ``nll`` nats over ``tokens``."""
    if tokens == 0:
        return {"loss": float("nan"), "ppl": float("nan"), "tokens": 0}
    loss = nll / tokens
    out = {"loss": round(loss, 5), "ppl": round(math.exp(min(loss, 50.0)), 3), "tokens": tokens}
    if nbytes:
        out.update(bpb=round(nll / math.log(2) / nbytes, 5), bytes=nbytes)
    return out


def held_out(model: torch.nn.Module, shards: TokenShards, max_tokens_per_domain: int,
             batch_size: int, device: torch.device) -> dict[str, dict[str, float]]:
    """The eval stage's held-out metrics over ``shards`` (the val split), logged."""
    wins = domain_windows(shards, seq_len_of(model), max_tokens_per_domain)
    res = score(model, wins, shards.token_bytes(), batch_size, device, progress=True,
                doc_start=shards.doc_start())
    for name, m in res.items():
        log0(f"eval: {name:>8}  loss {m['loss']:.4f}  ppl {m['ppl']:.2f}  bpb {m.get('bpb', float('nan')):.4f}  "
             f"({m['tokens']:,} tokens)")
    return res
