"""Held-out loss, perplexity and bits-per-byte, overall and per data domain.

Each domain's validation documents are concatenated (they already carry BOS/EOS) and cut
into windows of ``seq_len + 1`` tokens with stride ``seq_len``, so every token after the
first is predicted exactly once, with between 0 and seq_len - 1 tokens of context.

Bits per byte = summed NLL (nats) / ln 2 / UTF-8 bytes of the predicted tokens. Special
tokens count zero bytes, so BOS/EOS predictions cost bits without adding bytes; that is
the convention of nanochat's ``evaluate_bpb`` and makes bpb comparable across tokenizers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..log import Progress, log0
from ..model.transformer import Transformer
from ..tokenizer.shards import TokenShards


@dataclass
class EvalConfig:
    max_tokens_per_domain: int = 100_000   # 0 = the whole val split
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.max_tokens_per_domain < 0 or self.batch_size <= 0:
            raise ConfigError("max_tokens_per_domain must be >= 0 and batch_size positive")


def _domain_streams(shards: TokenShards, cap: int) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    sizes: dict[str, int] = {}
    for toks, domain in shards.documents():
        if cap and sizes.get(domain, 0) >= cap + 1:
            continue
        parts.setdefault(domain, []).append(np.asarray(toks, dtype=np.int64))
        sizes[domain] = sizes.get(domain, 0) + len(toks)
    return {d: np.concatenate(p)[: cap + 1 if cap else None] for d, p in parts.items()}


@torch.no_grad()
def domain_losses(model: Transformer, shards: TokenShards, token_bytes: list[int],
                  cfg: EvalConfig, device: torch.device) -> dict[str, dict[str, float]]:
    model.eval()
    T = model.cfg.seq_len
    nbytes = torch.tensor(token_bytes, dtype=torch.int64)
    results: dict[str, dict[str, float]] = {}
    totals = {"nll": 0.0, "tokens": 0, "bytes": 0}
    streams = _domain_streams(shards, cfg.max_tokens_per_domain)
    with Progress("eval", total=len(streams), unit="domains") as bar:
        for domain, stream in sorted(streams.items()):
            windows = [stream[s:s + T + 1] for s in range(0, len(stream) - 1, T)]
            nll, n_tok, n_bytes = 0.0, 0, 0
            for i in range(0, len(windows), cfg.batch_size):
                chunk = windows[i:i + cfg.batch_size]
                width = max(len(w) for w in chunk)
                xy = torch.full((len(chunk), width), -1, dtype=torch.int64)
                for r, w in enumerate(chunk):
                    xy[r, :len(w)] = torch.from_numpy(w)
                x, y = xy[:, :-1].clamp(min=0), xy[:, 1:]
                _, loss = model(x.to(device), y.to(device), reduction="sum")
                nll += float(loss)
                valid = y[y >= 0]
                n_tok += int(valid.numel())
                n_bytes += int(nbytes[valid].sum())
            results[domain] = _metrics(nll, n_tok, n_bytes)
            totals["nll"] += nll
            totals["tokens"] += n_tok
            totals["bytes"] += n_bytes
            bar.update(1)
    results["all"] = _metrics(totals["nll"], int(totals["tokens"]), int(totals["bytes"]))
    return results


def _metrics(nll: float, tokens: int, nbytes: int) -> dict[str, float]:
    if tokens == 0:
        return {"loss": float("nan"), "ppl": float("nan"), "bpb": float("nan"), "tokens": 0}
    loss = nll / tokens
    return {"loss": round(loss, 5), "ppl": round(math.exp(min(loss, 50.0)), 3),
            "bpb": round(nll / math.log(2) / nbytes, 5) if nbytes else float("nan"),
            "tokens": tokens, "bytes": nbytes}


def run(model: Transformer, tokens_dir: Path, token_bytes: list[int], cfg: EvalConfig,
        device: torch.device) -> dict[str, dict[str, float]]:
    res = domain_losses(model, TokenShards(tokens_dir, "val"), token_bytes, cfg, device)
    for name, m in res.items():
        log0(f"eval: {name:>8}  loss {m['loss']:.4f}  ppl {m['ppl']:.2f}  bpb {m['bpb']:.4f}  "
             f"({m['tokens']:,} tokens)")
    return res
