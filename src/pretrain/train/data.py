"""Training and validation batches over memory-mapped token shards.

Batches are drawn deterministically from (seed, data position, micro-step), so the loader's
whole state is the data position, an integer saved in every checkpoint:

- ``RandomWindows``: random windows of ``seq_len + 1`` tokens over the train shards, each
  shard weighted by its size. Documents are packed (a window may cross a BOS/EOS boundary).
- ``MixtureWindows`` (``[[train.mixture]]`` set): each row first picks a data domain by
  weight, then a window made of that domain's documents only. Weights may change linearly
  over the run (a curriculum) or by phases (``train.mixture_phases``: a pretraining mix,
  mid-training, an annealing mix), and a domain stops being drawn once its *expected*
  draws reach ``max_epochs`` passes over its tokens (computed from the schedule with the
  earlier stops applied, not counted, so no extra state is needed and resume stays exact).
  ``max_epochs > 1`` upsamples. ``epochs`` gives the passes over each domain a run of n
  steps makes, for the manifest and the report.

Also what the loop reads of the held-out shards: one prompt per domain for the probe
generations (``probe_prompts``).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from ..config import ConfigError
from ..log import log0
from ..tokenizer.shards import TokenShards
from .config import MixtureEntry


class RandomWindows:
    """Deterministic random training windows over memory-mapped shards."""

    def __init__(self, shards: Any, seq_len: int, seed: int):
        self.shards = shards
        # a window is seq_len + 1 tokens (inputs and shifted targets): a shard of n tokens
        # has n - seq_len possible starts
        self.arrays = [a for a in shards.shards if len(a) >= seq_len + 1]
        if not self.arrays:
            raise ConfigError(f"no train shard holds seq_len + 1 = {seq_len + 1} tokens; "
                              "use more data or a shorter model.seq_len")
        sizes = np.array([len(a) - seq_len for a in self.arrays], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.seq_len, self.seed = seq_len, seed

    def batch(self, step: int, micro: int, batch_size: int, rank: int = 0,
              world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``rank * batch_size ...`` of the global batch of ``batch_size * world`` windows
        drawn for (step, micro): ranks never overlap, and one process with ``world`` times
        the batch size sees exactly the union of what ``world`` processes see."""
        rng = np.random.default_rng([self.seed, step, micro])
        n = batch_size * world
        which = rng.choice(len(self.arrays), size=n, p=self.weights)
        frac = rng.random(n)
        rows = []
        for i in range(rank * batch_size, (rank + 1) * batch_size):
            arr = self.arrays[which[i]]
            start = int(frac[i] * (len(arr) - self.seq_len))
            rows.append(np.asarray(arr[start:start + self.seq_len + 1], dtype=np.int64))
        xy = torch.from_numpy(np.stack(rows))
        return xy[:, :-1], xy[:, 1:]

    def epochs(self, steps: int, rows_per_step: int) -> dict[str, float]:
        """Passes over each domain's train tokens in ``steps`` steps: the same for every
        domain, since windows are drawn in proportion to size."""
        tokens = _domain_tokens(self.shards)
        e = steps * rows_per_step * self.seq_len / max(1, sum(tokens.values()))
        return {d: round(e, 6) for d in tokens}


def _domain_tokens(shards: Any) -> dict[str, int]:
    n = len(shards.domains)
    total = sum((np.bincount(idx[:, 2], weights=idx[:, 1], minlength=n) for idx in shards.index),
                np.zeros(n))
    return {d: int(t) for d, t in zip(shards.domains, total, strict=True)}


class MixtureWindows:
    """Domain-weighted windows; see the module docstring."""

    def __init__(self, shards: Any, seq_len: int, seed: int, mixture: list[MixtureEntry],
                 total_steps: int, rows_per_step: int, phases: list[float] | None = None):
        self.seq_len, self.seed, self.mixture = seq_len, seed, mixture
        self.phases = np.asarray(phases or [0.0])
        # expected_tokens' table: the cumulative domain shares per step, made on first use
        # (it read O(step) of the schedule on every micro-batch before)
        self._cum: np.ndarray | None = None
        self._last = np.zeros(0)
        self._past = False   # said once: drawing past the schedule with every domain capped
        self._capped_said: set[str] = set()   # the domains whose cap was said reached
        self.total_steps, self.rows_per_step = total_steps, rows_per_step
        # each entry's documents as (shard, start, length) rows, in stored order (vectorised:
        # a loop over 10M documents took 14 s and 1.7 GB)
        ids = {name: i for i, name in enumerate(shards.domains)}
        parts: dict[str, list[np.ndarray]] = {m.domain: [] for m in mixture}
        present = np.zeros(len(shards.domains), dtype=bool)
        for s_i, idx in enumerate(shards.index):
            present[idx[:, 2]] = True
            for name, part in parts.items():
                rows = idx[idx[:, 2] == ids.get(name, -1)]
                if len(rows):
                    part.append(np.column_stack([np.full(len(rows), s_i), rows[:, :2]]))
        unknown = [d for d, p in parts.items() if not p]
        if unknown:
            raise ConfigError(f"train.mixture: no training tokens for domain(s) {unknown}; "
                              f"the shards have {shards.domains}")
        self.arrays = shards.shards
        self.spans = {d: np.concatenate(p).astype(np.int64) for d, p in parts.items()}
        self.cum = {d: np.concatenate([[0], np.cumsum(sp[:, 2])]) for d, sp in self.spans.items()}
        self.tokens = {d: int(c[-1]) for d, c in self.cum.items()}
        for d, n in self.tokens.items():
            if n < seq_len + 1:
                raise ConfigError(f"train.mixture: domain {d!r} has {n} tokens, fewer than "
                                  f"seq_len + 1 = {seq_len + 1}")
        # the train domains no entry draws from: never trained on, said once
        self.left_out = [d for d, i in ids.items() if present[i] and d not in parts]
        trained = np.arange(total_steps)   # the optimizer steps 0 .. train.steps - 1
        raw = self.raw_weights(trained)
        never = [m.domain for i, m in enumerate(mixture) if not raw[:, i].any()]
        starts = np.unique(self.phase_of(trained))
        idle = [k for k in range(len(self.phases)) if k not in starts]
        if idle and total_steps > 0:
            log0("train: mixture phase(s) " + ", ".join(
                f"{k} (from {self.phases[k]:g} of the run)" for k in idle)
                + f" get no step of train.steps = {total_steps}: a phase starts at step "
                "ceil(start x train.steps), and the next one or the end comes first")
        if self.left_out or never:
            why = ([f"{', '.join(map(repr, self.left_out))} (no [[train.mixture]] entry)"]
                   * bool(self.left_out)
                   + [f"{', '.join(map(repr, never))} (weighted 0 throughout)"] * bool(never))
            log0(f"train: the mixture never draws from {' or '.join(why)}; their train "
                 "tokens are not trained on")

    def exhausted_at(self) -> int | None:
        """The first step before ``total_steps`` at which every domain is capped or weighted
        0 (``weights`` would stop the run there), or None."""
        if self.total_steps <= 0:
            return None
        w = self._capped(self.total_steps, self.rows_per_step)
        empty = np.flatnonzero(w.sum(axis=1) <= 0)
        return int(empty[0]) if len(empty) else None

    def check_end(self, budgeted: bool) -> int | None:
        """Refuse a mixture that runs out before ``total_steps`` (before the first step, not
        at the step); under a time budget (``total_steps`` only a cap) say where instead and
        return that data position: the run ends there."""
        end = self.exhausted_at()
        if end is None:
            return None
        why = (f"train.mixture: every domain is capped (max_epochs) or weighted 0 from step "
               f"{end} on")
        if not budgeted:
            raise ConfigError(f"{why}, before train.steps = {self.total_steps}; raise "
                              "max_epochs or a weight, or train fewer steps")
        log0(f"train: {why}: the run stops there if the time budget lasts that long")
        return end

    def say_repeats(self, above: float = 1.0) -> None:
        """Say which domains without a ``max_epochs`` the schedule draws more than
        ``above`` times over (a small domain under a large weight): repetition a capped
        domain has said, an uncapped one had not."""
        planned = self.epochs(self.total_steps)
        many = [f"{m.domain!r} {planned[m.domain]:.2f}" for m in self.mixture
                if not m.max_epochs and planned[m.domain] > above]
        if many:
            log0(f"train: the mixture draws {', '.join(many)} epochs of its train tokens "
                 f"over train.steps = {self.total_steps}, with no max_epochs to cap "
                 f"{'them' if len(many) > 1 else 'it'}")

    def _progress(self, steps: np.ndarray) -> np.ndarray:
        return np.minimum(1.0, np.asarray(steps, dtype=np.float64) / max(1, self.total_steps))

    def phase_of(self, steps: np.ndarray) -> np.ndarray:
        """The ``train.mixture_phases`` index each optimizer step is in."""
        return np.searchsorted(self.phases, self._progress(steps), side="right") - 1

    def raw_weights(self, steps: np.ndarray) -> np.ndarray:
        """(len(steps), domains): the configured weights at these optimizer steps, not
        normalised, before any epoch limit."""
        progress = self._progress(steps)
        phase = self.phase_of(steps)
        cols = []
        for m in self.mixture:
            if m.phase_weights:
                cols.append(np.asarray(m.phase_weights, dtype=np.float64)[phase])
            else:
                end = m.weight if m.weight_end == -1.0 else m.weight_end
                cols.append(m.weight + (end - m.weight) * progress)
        return np.stack(cols, axis=1)

    def weights(self, step: int) -> np.ndarray:
        """Normalised domain weights at optimizer step ``step``, exhausted domains at 0."""
        w = self.raw_weights(np.array([step]))[0]
        for i, m in enumerate(self.mixture):
            if m.max_epochs and self.expected_tokens(i, step) >= m.max_epochs * self.tokens[m.domain]:
                w[i] = 0.0
                if m.domain not in self._capped_said:
                    self._capped_said.add(m.domain)
                    log0(f"train: domain {m.domain!r} is at its max_epochs = {m.max_epochs:g} "
                         f"from data position {self._cap_step(i, step)} on; the other "
                         "domains share its weight")
        if w.sum() <= 0 and step >= self.total_steps:
            # past the schedule (skipped updates move the data position on; ``check_end``
            # looked up to train.steps): the end's weights, the caps overdrawn a little
            w = self.raw_weights(np.array([step]))[0]
            if not self._past:
                self._past = True
                log0(f"train: data position {step} is past train.steps with every domain at "
                     "its max_epochs: rows there follow the end's weights")
        if w.sum() <= 0:
            raise ConfigError(f"train.mixture: every domain is exhausted or weighted 0 at step {step}; "
                              "raise max_epochs or train fewer steps")
        return w / w.sum()

    def expected_tokens(self, i: int, step: int) -> float:
        """Tokens of domain ``i`` expected to be drawn before ``step`` by the configured
        weights with the epoch limits applied (stateless: what the limit is judged by)."""
        if step <= 0:
            return 0.0
        if self._cum is None:  # once: the shares of steps 0 .. total_steps, summed
            capped = self._capped(self.total_steps + 1, self.rows_per_step)
            share = capped / np.maximum(capped.sum(axis=1, keepdims=True), 1e-12)
            self._last = share[-1]   # past total_steps the weights stay at their end
            self._cum = np.concatenate([np.zeros((1, share.shape[1])), np.cumsum(share, axis=0)])
        n = min(step, self.total_steps + 1)
        drawn = self._cum[n, i] + (step - n) * self._last[i]
        return float(drawn) * self.rows_per_step * self.seq_len

    def _cap_step(self, i: int, step: int) -> int:
        """The first data position at which domain ``i`` is at its cap (``step``, where
        it is, or an earlier one: a resumed run first asks after the cap was reached)."""
        cap = self.mixture[i].max_epochs * self.tokens[self.mixture[i].domain]
        return bisect.bisect_left(range(step + 1), cap, key=lambda s: self.expected_tokens(i, s))

    def epochs(self, steps: int, rows_per_step: int = 0) -> dict[str, float]:
        """Passes over each domain's train tokens that ``steps`` steps draw, expected, with
        the epoch limits applied as ``weights`` applies them (a stopped domain's share goes
        to the others)."""
        rows = rows_per_step or self.rows_per_step
        out = {d: 0.0 for d in self.left_out}
        if steps <= 0:
            return {**{m.domain: 0.0 for m in self.mixture}, **out}
        w = self._capped(steps, rows)
        w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
        drawn = w.sum(axis=0) * rows * self.seq_len
        return {**{m.domain: round(float(drawn[i]) / self.tokens[m.domain], 6)
                   for i, m in enumerate(self.mixture)}, **out}

    def _capped(self, steps: int, rows: int) -> np.ndarray:
        """(steps, domains): the raw weights of steps 0 .. ``steps`` - 1 with each domain at
        0 from the step its expected draws reach its cap, as ``weights`` judges it. The draws
        are counted with the caps applied: a stopped domain's share goes to the others,
        which then reach their own caps sooner (counted at their uncapped shares, a second
        capped domain overdrew its cap by half in a three-domain mix). Domains are stopped
        in the order they reach their caps, each stop changing only the steps after it, so
        this ends after one pass per capped domain."""
        raw = self.raw_weights(np.arange(steps))
        caps = np.array([m.max_epochs * self.tokens[m.domain] if m.max_epochs else np.inf
                         for m in self.mixture])
        at = np.arange(steps)[:, None]
        stop = np.full(len(caps), steps)   # the step each domain is at 0 from
        while True:
            w = np.where(at < stop, raw, 0.0)
            share = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
            hit = (np.cumsum(share, axis=0) - share) * rows * self.seq_len >= caps
            first = np.where(hit.any(axis=0), hit.argmax(axis=0), steps)
            new = first < stop
            if not new.any():
                return w
            earliest = first[new].min()
            stop[new & (first == earliest)] = earliest

    def _window(self, domain: str, pos: int) -> np.ndarray:
        """``seq_len + 1`` tokens of the domain's concatenated documents, from ``pos`` on."""
        out, need = [], self.seq_len + 1
        cum, spans = self.cum[domain], self.spans[domain]
        k = int(np.searchsorted(cum, pos, side="right")) - 1
        offset = pos - int(cum[k])
        while need > 0:
            s_i, start, length = spans[k % len(spans)]
            piece = self.arrays[s_i][start + offset:start + min(length, offset + need)]
            out.append(np.asarray(piece, dtype=np.int64))
            need -= len(piece)
            k, offset = k + 1, 0
        return np.concatenate(out)

    def batch(self, step: int, micro: int, batch_size: int, rank: int = 0,
              world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step, micro])
        n = batch_size * world
        which = rng.choice(len(self.mixture), size=n, p=self.weights(step))
        frac = rng.random(n)
        rows = []
        for i in range(rank * batch_size, (rank + 1) * batch_size):
            domain = self.mixture[which[i]].domain
            pos = int(frac[i] * (self.tokens[domain] - self.seq_len))
            rows.append(self._window(domain, pos))
        xy = torch.from_numpy(np.stack(rows))
        return xy[:, :-1], xy[:, 1:]


class Prefetcher:
    """On a GPU, batches made one ahead in a background thread while the step computes, in
    pinned memory (so the copy to the GPU is asynchronous). ``get(key)`` returns the batch
    of ``key`` = (data position, micro-step) and starts making ``next_key``; a key other
    than the one made ahead (after a rollback or a resume) is made on the spot, so the
    batches are exactly the loader's whatever the order of requests.

    On CPU the batch is made when asked: the step's own threads use every core, and a
    prefetch thread beside them slowed the tiny LLaMA shape of
    ``bench/train_vs_reference.py`` from 0.87x to 0.75x the reference."""

    def __init__(self, make: Callable[[tuple[int, int]], tuple[torch.Tensor, torch.Tensor]],
                 device: torch.device, background: bool | None = None):
        """``background``: make batches ahead in a thread (default: on a GPU only)."""
        self.make, self.device = make, device
        self.pin = device.type == "cuda"
        ahead = self.pin if background is None else background
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="batches") if ahead else None
        self.ahead: tuple[tuple[int, int], Future[Any]] | None = None

    def _made(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.make(key)
        return (x.pin_memory(), y.pin_memory()) if self.pin else (x, y)

    def get(self, key: tuple[int, int], next_key: tuple[int, int]
            ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pool is None:
            x, y = self.make(key)
            return x.to(self.device), y.to(self.device)
        if self.ahead is not None and self.ahead[0] == key:
            x, y = self.ahead[1].result()
        else:
            x, y = self._made(key)
        self.ahead = (next_key, self.pool.submit(self._made, next_key))
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def probe_prompts(val: TokenShards, k: int) -> dict[str, list[int]]:
    """BOS + the first ``k`` tokens of each domain's first held-out document long enough;
    the scan stops once every domain has one."""
    out: dict[str, list[int]] = {}
    n_domains = len(val.domain_ids())
    for toks, domain in val.documents():
        if domain not in out and len(toks) > k + 1:
            out[domain] = [int(t) for t in toks[:k + 1]]
            if len(out) == n_domains:
                break
    return dict(sorted(out.items()))
