"""Loss-spike and NaN/Inf guard; slow-divergence monitor.

Each step's loss is compared with the mean and standard deviation of the last ``window``
accepted losses (a z-score, as seed 002 describes). A step whose loss or gradient norm is
not finite, or whose z-score exceeds ``zscore``, is *bad*: its update is skipped. After
``max_bad`` bad steps in a row the trainer rolls back to the last checkpoint and moves the
data position past the batches that caused it. Every event is returned to the trainer,
which logs it with the step, the loss and the action.

A run can also go bad slowly, each step unremarkable against the last few (a learning rate
too high: the loss climbs from 8 to 160 over hundreds of steps). ``DivergenceMonitor``
watches the accepted losses for two signs: the loss well above where the run started
(the mean of the last few steps above ``factor`` times the first step's loss), or rising
(over the last ``window`` steps, the newer half's mean ``rise`` above the older half's).
It names the step the trouble began (where the smoothed loss was lowest: over the whole
run for the first rule, over the window for the second), so the trainer can roll back to a
checkpoint from before it (with a lower learning rate) or stop.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any


class SpikeGuard:
    def __init__(self, window: int, zscore: float, max_bad: int, min_history: int = 10):
        self.losses: deque[float] = deque(maxlen=window)
        # a window shorter than min_history must still fill: it never could, and no spike
        # was ever caught under spike_window < 10
        self.zscore, self.max_bad = zscore, max_bad
        self.min_history = min(min_history, window)
        self.bad_in_a_row = 0

    def check(self, loss: float, grad_norm: float) -> str | None:
        """None if the step is fine, else the reason it is bad."""
        if not math.isfinite(loss) or not math.isfinite(grad_norm):
            return "non-finite loss or gradient"
        if loss > self.threshold():
            mean, std = self._stats()
            z = (loss - mean) / max(std, 1e-8)
            return f"loss spike (z = {z:.1f} over the last {len(self.losses)} steps)"
        return None

    def threshold(self) -> float:
        """The loss above which a step is a spike (inf until ``min_history`` losses are in):
        one number, so that the device can make the same decision (``host_sync = lagged``)."""
        if len(self.losses) < self.min_history or self.zscore <= 0:
            return math.inf
        mean, std = self._stats()
        return mean + self.zscore * max(std, 1e-8)

    def _stats(self) -> tuple[float, float]:
        mean = sum(self.losses) / len(self.losses)
        return mean, math.sqrt(sum((x - mean) ** 2 for x in self.losses) / len(self.losses))

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


SMOOTH = 5   # steps averaged for the "above the start" rule


class DivergenceMonitor:
    def __init__(self, factor: float, window: int, rise: float):
        self.factor, self.window, self.rise = factor, window, rise
        self.start: float | None = None   # the loss of the run's first accepted step
        self.recent: deque[float] = deque(maxlen=max(window, SMOOTH))
        self.smoothed: deque[tuple[int, float]] = deque(maxlen=max(window, 1))
        self.best: tuple[int, float] | None = None  # the lowest smoothed loss: (step, loss)

    def observe(self, step: int, loss: float) -> tuple[str, int] | None:
        """Record step ``step``'s accepted loss. None while the run looks healthy, else
        (why, the step the divergence began: where the smoothed loss was lowest)."""
        if self.start is None:
            self.start = loss
        self.recent.append(loss)
        last = list(self.recent)[-SMOOTH:]
        smoothed = sum(last) / len(last)
        self.smoothed.append((step, smoothed))
        if self.best is None or smoothed <= self.best[1]:
            self.best = (step, smoothed)
        if self.factor > 0 and smoothed > self.factor * self.start:
            return (f"divergence: loss {smoothed:.4g} (mean of the last {len(last)} steps) is "
                    f"{smoothed / self.start:.1f}x the starting loss {self.start:.4g}",
                    self.best[0])
        if self.window and len(self.recent) >= self.window:
            half = self.window // 2
            losses = list(self.recent)[-2 * half:]
            older, newer = sum(losses[:half]) / half, sum(losses[half:]) / half
            if newer > older * (1 + self.rise):
                began = min(self.smoothed, key=lambda s: s[1])[0]
                return (f"divergence: loss rising, mean {newer:.4g} over the last {half} "
                        f"steps vs {older:.4g} over the {half} before "
                        f"(+{100 * (newer / older - 1):.0f}%)", began)
        return None

    def restart_trend(self) -> None:
        """After a rollback: the rising-loss test waits for ``window`` new losses. The
        checkpoint's own window may already be rising (the oldest one kept, when none from
        before the divergence is left), and judging it again at once rolled back to the same
        checkpoint step after step, the learning rate lowered each time."""
        self.recent.clear()

    def state(self) -> dict[str, Any]:
        return {"start": self.start, "recent": list(self.recent),
                "smoothed": [list(x) for x in self.smoothed],
                "best": list(self.best) if self.best else None}

    def load(self, state: dict[str, Any] | None) -> None:
        state = state or {"start": None, "recent": [], "smoothed": [], "best": None}
        self.start = state["start"]
        self.best = tuple(state["best"]) if state["best"] else None  # type: ignore[assignment]
        self.recent.clear()
        self.recent.extend(state["recent"])
        self.smoothed.clear()
        self.smoothed.extend((int(a), float(b)) for a, b in state["smoothed"])
