"""The one place that turns token rows into the model's log-likelihoods.

Every evaluation that reads log-probabilities comes here: held-out loss and bits per byte
(``loss.py``), WikiText-style perplexity and the benchmark tasks (``tasks.py``), CORE
(``core.py``), lm-evaluation-harness (``harness.py``) and the memorization probe
(``memorization.py``). What is decided once, here:

- a token stream is cut into windows of ``seq_len + 1`` tokens at stride ``seq_len``
  (``windows``), so every token after the first is predicted exactly once, with between 1
  and ``seq_len`` tokens of context (a window's first token is context only);
- rows longer than the model's context are cut from the left, keeping the scored tail;
- rows are right-padded in batches (causal attention never looks right, so padding changes
  nothing before it), targets that are padding or context are ignored (-1);
- the model runs in eval mode without gradients, and is put back in the mode it was in.

Two reductions: ``nll_total`` (the summed loss of every target of every row, batches in
the order given: held-out loss) and ``score_tails`` (per row, the log-likelihood of its
last ``n`` tokens, and how many of them, counted from the first, are the model's greedy
choice: tasks, CORE, harness, memorization).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

Row = Sequence[int] | np.ndarray


def windows(ids: np.ndarray, seq_len: int) -> list[np.ndarray]:
    """``ids`` cut into windows of ``seq_len + 1`` tokens at stride ``seq_len`` (the last one
    may be shorter; none has fewer than 2 tokens)."""
    return [ids[s:s + seq_len + 1] for s in range(0, len(ids) - 1, seq_len)]


def seq_len_of(model: torch.nn.Module) -> int:
    """The model's context length (``model.cfg.seq_len``: ours, or a test's stand-in)."""
    return int(cast(Any, model).cfg.seq_len)


def device_of(model: torch.nn.Module) -> torch.device:
    """Where the model's weights are (inputs go there); CPU for a model without any."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside; the model's previous mode after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _padded(rows: Sequence[Row], width: int = 0) -> torch.Tensor:
    """Rows right-padded with -1 into one (len(rows), longest or ``width``) tensor."""
    width = max(width, *(len(r) for r in rows))
    xy = torch.full((len(rows), width), -1, dtype=torch.int64)
    for i, r in enumerate(rows):
        xy[i, :len(r)] = torch.as_tensor(np.asarray(r, dtype=np.int64))
    return xy


def nll_total(model: torch.nn.Module, rows: Sequence[Row], batch_size: int,
              device: torch.device, width: int = 0, fused: bool = True
              ) -> tuple[float, torch.Tensor]:
    """(summed negative log-likelihood in nats, the targets scored, padding removed) of
    every token after the first of every row; each row at most ``seq_len + 1`` tokens.
    ``width``: pad every batch to that many tokens (a model whose sequence is split over
    ranks needs whole ``seq_len + 1`` rows). ``fused``: the head and the loss in chunks, as
    training's (the batch's fp32 logits made whole cost 2.5x training's memory at a GPT-2
    vocabulary); not where the head is split over ranks (tensor parallel)."""
    nll = 0.0
    targets = []
    with evaluating(model):
        for i in range(0, len(rows), batch_size):
            xy = _padded(rows[i:i + batch_size], width)
            x, y = xy[:, :-1].clamp(min=0), xy[:, 1:]
            _, loss = model(x.to(device), y.to(device), reduction="sum", fused_loss=fused)
            nll += float(loss)
            targets.append(y[y >= 0])
    return nll, torch.cat(targets) if targets else torch.zeros(0, dtype=torch.int64)


@dataclass(frozen=True)
class Tail:
    """The scored tail of one row."""

    logprob: float       # summed log-probability of its tokens (nats, <= 0)
    tokens: int          # how many tokens were scored
    greedy_prefix: int   # how many of them, from the first, are the model's argmax

    @property
    def greedy(self) -> bool:
        """Every scored token is the greedy choice (LAMBADA-style correctness)."""
        return self.greedy_prefix == self.tokens


def score_tails(model: torch.nn.Module, rows: Sequence[tuple[Row, int]], seq_len: int,
                device: torch.device, batch_size: int = 16,
                progress: Callable[[int, int], None] | None = None) -> list[Tail]:
    """For each (token ids, n): the log-likelihood of its last ``n`` tokens given those
    before them. Rows are cut from the left to fit ``seq_len`` (the scored tail kept whole
    if it fits) and batched longest first (less padding). ``progress(rows scored, rows)``
    after each batch (a task of 40,000 rows takes minutes on a CPU)."""
    cut = []
    for ids, n in rows:
        ids = np.asarray(ids, dtype=np.int64)[-(seq_len + 1):].tolist()
        cut.append((ids, min(n, len(ids) - 1)))
    order = sorted(range(len(cut)), key=lambda i: -len(cut[i][0]))
    out: dict[int, Tail] = {}
    with evaluating(model):
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            x = _padded([cut[i][0][:-1] for i in idx]).clamp(min=0)
            h, _ = model(x.to(device), hidden=True)
            # the head on the scored positions only: the whole batch's logits (and their
            # fp32 log-softmax, and its copy to the host) cost 2.5x a training step's memory
            tails = torch.cat([h[r, len(cut[i][0]) - 1 - cut[i][1]:len(cut[i][0]) - 1]
                               for r, i in enumerate(idx)])
            logp = F.log_softmax(cast(Any, model).logits_of(tails).float(), dim=-1).cpu()
            at = 0
            for i in idx:
                ids, n = cut[i]
                target = torch.tensor(ids[-n:])
                tail = logp[at:at + n]
                at += n
                hits = (tail.argmax(-1) == target).tolist()
                prefix = hits.index(False) if False in hits else n
                out[i] = Tail(float(tail.gather(1, target[:, None]).sum()), n, prefix)
            if progress is not None:
                progress(len(out), len(cut))
    return [out[i] for i in range(len(cut))]


def common_prefix(rows: list[list[int]]) -> int:
    """How many leading ids all ``rows`` share."""
    n = min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != rows[0][i] for r in rows[1:]):
            return i
    return n
