"""Held-out loss, perplexity and bits-per-byte, overall and per data domain.

Each domain's validation documents are concatenated (they already carry BOS/EOS) and cut
into windows of ``seq_len + 1`` tokens with stride ``seq_len``, so every token after the
first is predicted exactly once, with between 0 and seq_len - 1 tokens of context.

Bits per byte = summed NLL (nats) / ln 2 / UTF-8 bytes of the predicted tokens. Special
tokens count zero bytes, so BOS/EOS predictions cost bits without adding bytes; that is
the convention of nanochat's ``evaluate_bpb`` and makes bpb comparable across tokenizers.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
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
    # benchmark tasks (eval/tasks.py): built-in names (hellaswag, arc_easy, arc_challenge,
    # piqa, openbook_qa, copa, boolq, commonsense_qa, winogrande, winograd_wsc,
    # lambada_openai, wikitext2) found under tasks_dir, or paths of jsonl files in one of their schemas
    tasks: list[str] = field(default_factory=list)
    tasks_dir: str = "../shared/data/eval"
    task_limit: int = 0                    # items per task (the first ones); 0 = all
    num_fewshot: int = 0                   # answered examples of the task before each item
    harness_include: str = ""              # folder of lm-eval task YAMLs for --harness
    # DCLM's CORE score (eval/core.py) over the CORE task files found under tasks_dir
    core: bool = False
    core_limit: int = 500                  # items per CORE task after DCLM's shuffle; 0 = all
    contamination: bool = True             # 13-gram overlap of the training data with the tasks
    # memorization probe (eval/memorization.py): greedy continuation of training and
    # held-out documents from their first prompt tokens
    memorization_docs: int = 64            # per group; 0 = off
    memorization_prompt_tokens: int = 32
    memorization_tokens: int = 16
    # thresholds checked by `pretrain eval --gate`, e.g. "all.bpb <= 1.9",
    # "tasks.hellaswag.acc_norm >= 0.3" (eval/gates.py)
    gates: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from .gates import parse
        for g in self.gates:
            parse(g)
        if 0 < self.core_limit <= 10:
            raise ConfigError(f"eval.core_limit = {self.core_limit}: CORE's 10-shot prompts draw "
                              "their examples from the task's other items; use 0 (all) or > 10")
        if self.memorization_docs < 0 or self.memorization_prompt_tokens <= 0 \
                or self.memorization_tokens <= 0:
            raise ConfigError("memorization_docs must be >= 0, the token counts positive")
        if self.max_tokens_per_domain < 0 or self.batch_size <= 0 or self.task_limit < 0 \
                or self.num_fewshot < 0 or self.core_limit < 0:
            raise ConfigError("max_tokens_per_domain, task_limit, num_fewshot and core_limit "
                              "must be >= 0 and batch_size positive")


def domain_windows(shards: TokenShards, seq_len: int, cap: int) -> dict[str, list[np.ndarray]]:
    """Each domain's documents concatenated and cut into windows of ``seq_len + 1`` tokens
    at stride ``seq_len`` (the last one may be shorter), at most ``cap`` predicted tokens
    per domain (0 = all). The same shards always give the same windows."""
    parts: dict[str, list[np.ndarray]] = {}
    sizes: dict[str, int] = {}
    for toks, domain in shards.documents():
        if cap and sizes.get(domain, 0) >= cap + 1:
            continue
        parts.setdefault(domain, []).append(np.asarray(toks, dtype=np.int64))
        sizes[domain] = sizes.get(domain, 0) + len(toks)
    out = {}
    for domain, p in sorted(parts.items()):
        stream = np.concatenate(p)[: cap + 1 if cap else None]
        out[domain] = [stream[s:s + seq_len + 1] for s in range(0, len(stream) - 1, seq_len)]
    return out


@torch.no_grad()
def score(model: torch.nn.Module, windows: dict[str, list[np.ndarray]],
          token_bytes: np.ndarray | None, batch_size: int, device: torch.device,
          progress: bool = False) -> dict[str, dict[str, float]]:
    """Loss, perplexity and (with ``token_bytes``) bits per byte of each domain's windows
    and of all of them together ("all")."""
    was_training = model.training
    model.eval()
    nbytes = torch.from_numpy(np.asarray(token_bytes, dtype=np.int64)) if token_bytes is not None else None
    results: dict[str, dict[str, float]] = {}
    totals = [0.0, 0, 0]
    with Progress("eval", total=len(windows), unit="domains") if progress \
            else contextlib.nullcontext() as bar:
        for domain, wins in windows.items():
            nll, n_tok, n_bytes = 0.0, 0, 0
            for i in range(0, len(wins), batch_size):
                chunk = wins[i:i + batch_size]
                width = max(len(w) for w in chunk)
                xy = torch.full((len(chunk), width), -1, dtype=torch.int64)
                for r, w in enumerate(chunk):
                    xy[r, :len(w)] = torch.from_numpy(w)
                x, y = xy[:, :-1].clamp(min=0), xy[:, 1:]
                _, loss = model(x.to(device), y.to(device), reduction="sum")
                nll += float(loss)
                valid = y[y >= 0]
                n_tok += int(valid.numel())
                if nbytes is not None:
                    n_bytes += int(nbytes[valid].sum())
            results[domain] = _metrics(nll, n_tok, n_bytes)
            totals[0] += nll
            totals[1] += n_tok
            totals[2] += n_bytes
            if bar is not None:
                bar.update(1)
    results["all"] = _metrics(totals[0], int(totals[1]), int(totals[2]))
    model.train(was_training)
    return results


def domain_losses(model: Transformer, shards: TokenShards, token_bytes: list[int],
                  cfg: EvalConfig, device: torch.device) -> dict[str, dict[str, float]]:
    windows = domain_windows(shards, model.cfg.seq_len, cfg.max_tokens_per_domain)
    return score(model, windows, np.asarray(token_bytes), cfg.batch_size, device, progress=True)


def _metrics(nll: float, tokens: int, nbytes: int) -> dict[str, float]:
    if tokens == 0:
        return {"loss": float("nan"), "ppl": float("nan"), "tokens": 0}
    loss = nll / tokens
    out = {"loss": round(loss, 5), "ppl": round(math.exp(min(loss, 50.0)), 3), "tokens": tokens}
    if nbytes:
        out.update(bpb=round(nll / math.log(2) / nbytes, 5), bytes=nbytes)
    return out


def run(model: Transformer, tokens_dir: Path, token_bytes: list[int], cfg: EvalConfig,
        device: torch.device) -> dict[str, dict[str, float]]:
    res = domain_losses(model, TokenShards(tokens_dir, "val"), token_bytes, cfg, device)
    for name, m in res.items():
        log0(f"eval: {name:>8}  loss {m['loss']:.4f}  ppl {m['ppl']:.2f}  bpb {m.get('bpb', float('nan')):.4f}  "
             f"({m['tokens']:,} tokens)")
    return res
