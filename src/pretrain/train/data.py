"""Training and validation batches over memory-mapped token shards.

Batches are drawn deterministically from (seed, data position, micro-step): random windows
of ``seq_len + 1`` tokens over the train shards, each shard weighted by its size. Documents
are packed (a window may cross a BOS/EOS boundary), as in nanoGPT. The loader's whole state
is the data position, an integer saved in every checkpoint. The mixture-aware loader with
per-source weights and epochs is issue 4's next step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..config import ConfigError


class RandomWindows:
    """Deterministic random training windows over memory-mapped shards."""

    def __init__(self, shards: Any, seq_len: int, seed: int):
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


def fixed_val_batches(shards: Any, seq_len: int, batch_size: int,
                      n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Contiguous windows from the start of the val split: the same ones at every eval."""
    rows = []
    for arr in shards.shards:
        for start in range(0, len(arr) - seq_len, seq_len):
            rows.append(np.asarray(arr[start:start + seq_len + 1], dtype=np.int64))
            if len(rows) == batch_size * n_batches:
                break
        if len(rows) == batch_size * n_batches:
            break
    if not rows:
        raise ConfigError(f"the val split holds fewer than seq_len + 1 = {seq_len + 1} tokens")
    xy = torch.from_numpy(np.stack(rows))
    return [(xy[i:i + batch_size, :-1], xy[i:i + batch_size, 1:])
            for i in range(0, len(rows), batch_size)]
