"""Loss-spike and NaN/Inf guard.

Each step's loss is compared with the mean and standard deviation of the last ``window``
accepted losses (a z-score, as seed 002 describes). A step whose loss or gradient norm is
not finite, or whose z-score exceeds ``zscore``, is *bad*: its update is skipped. After
``max_bad`` bad steps in a row the trainer rolls back to the last checkpoint and moves the
data position past the batches that caused it. Every event is returned to the trainer,
which logs it with the step, the loss and the action.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any


class SpikeGuard:
    def __init__(self, window: int, zscore: float, max_bad: int, min_history: int = 10):
        self.losses: deque[float] = deque(maxlen=window)
        self.zscore, self.max_bad, self.min_history = zscore, max_bad, min_history
        self.bad_in_a_row = 0

    def check(self, loss: float, grad_norm: float) -> str | None:
        """None if the step is fine, else the reason it is bad."""
        if not math.isfinite(loss) or not math.isfinite(grad_norm):
            return "non-finite loss or gradient"
        if len(self.losses) >= self.min_history and self.zscore > 0:
            mean = sum(self.losses) / len(self.losses)
            std = math.sqrt(sum((x - mean) ** 2 for x in self.losses) / len(self.losses))
            z = (loss - mean) / max(std, 1e-8)
            if z > self.zscore:
                return f"loss spike (z = {z:.1f} over the last {len(self.losses)} steps)"
        return None

    def accept(self, loss: float) -> None:
        self.losses.append(loss)
        self.bad_in_a_row = 0

    def reject(self) -> bool:
        """Count a bad step; True when it is time to roll back."""
        self.bad_in_a_row += 1
        return self.bad_in_a_row >= self.max_bad

    def state(self) -> dict[str, Any]:
        return {"losses": list(self.losses), "bad_in_a_row": self.bad_in_a_row}

    def load(self, state: dict[str, Any]) -> None:
        self.losses.clear()
        self.losses.extend(state["losses"])
        self.bad_in_a_row = state["bad_in_a_row"]
