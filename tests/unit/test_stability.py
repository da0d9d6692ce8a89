"""The slow-divergence monitor on loss curves whose answer is known (train/stability.py);
the trainer's use of it is in test_resume.py and tests/reliability/test_divergence.py."""

import math
import random

import pytest

from pretrain.config import ConfigError
from pretrain.train.config import TrainConfig
from pretrain.train.stability import DivergenceMonitor, SpikeGuard


def _healthy(n: int, seed: int) -> list[float]:
    """A power-law loss curve from ln(50k) towards 2.5, with noise and the odd bump."""
    rng = random.Random(seed)
    return [2.5 + 8.3 / (1 + s / 40) ** 0.6 + rng.gauss(0, 0.08) + (0.4 if s % 97 == 0 else 0)
            for s in range(1, n + 1)]


def _first_alarm(mon: DivergenceMonitor, losses: list[float]) -> tuple[int, str, int] | None:
    for step, loss in enumerate(losses, start=1):
        found = mon.observe(step, loss)
        if found:
            return step, *found
    return None


@pytest.mark.parametrize("seed", range(5))
def test_a_healthy_curve_never_alarms(seed):
    assert _first_alarm(DivergenceMonitor(1.5, 200, 0.1), _healthy(3000, seed)) is None


def test_a_loss_climbing_far_above_its_start_is_caught_and_dated():
    # down from 8 to 4 over 100 steps, then climbing 1% a step (the lr = 3 run of the issue)
    losses = [8 - 4 * s / 100 for s in range(100)] + [4 * 1.01 ** s for s in range(1, 400)]
    step, why, began = _first_alarm(DivergenceMonitor(1.5, 0, 0.1), losses)
    assert "x the starting loss 8" in why
    assert 4 * 1.01 ** (step - 100) > 8 * 1.5 * 0.9   # caught near 12, not long after
    assert abs(began - 101) <= 3                      # where it was lowest


def test_a_rising_loss_is_caught_below_the_start_too():
    losses = _healthy(1000, 0)
    rising = losses + [losses[-1] * (1 + 0.004 * s) for s in range(1, 300)]
    step, why, began = _first_alarm(DivergenceMonitor(1.5, 200, 0.1), rising)
    assert "rising" in why and step > 1000 and max(rising[:step]) < 1.5 * rising[0]
    assert abs(began - 1000) <= 20                    # where it turned
    # the same curve with the window rule off goes unnoticed (it never passes 1.5x the start)
    assert _first_alarm(DivergenceMonitor(1.5, 0, 0.1), rising) is None


def test_the_state_round_trips_so_a_resume_sees_the_same_alarms():
    losses = [8 - 4 * s / 100 for s in range(100)] + [4 * 1.01 ** s for s in range(1, 400)]
    whole = _first_alarm(DivergenceMonitor(1.5, 50, 0.1), losses)
    first = DivergenceMonitor(1.5, 50, 0.1)
    assert _first_alarm(first, losses[:120]) is None
    second = DivergenceMonitor(1.5, 50, 0.1)
    second.load(first.state())
    found = next((s + 120, *f) for s, loss in enumerate(losses[120:], start=1)
                 if (f := second.observe(s + 120, loss)))
    assert found == whole



def test_after_a_rollback_the_trend_is_judged_on_new_losses_only():
    """Restored from a checkpoint taken while the loss rose, the monitor alarmed at the next
    step: rolled back to the same checkpoint again and again, the lr lowered each time."""
    rising = [4 * 1.01 ** s for s in range(60)]
    mon = DivergenceMonitor(0, 20, 0.05)
    assert _first_alarm(mon, rising) is not None
    saved = mon.state()
    mon.load(saved)          # what a rollback to that checkpoint restores
    assert mon.observe(61, rising[-1]) is not None       # at once, as before the fix
    mon.load(saved)
    mon.restart_trend()
    flat = [rising[-1] * (1 + 0.001 * ((-1) ** s)) for s in range(100)]
    assert _first_alarm(mon, flat) is None               # a flat curve after the rollback
    mon.restart_trend()
    assert _first_alarm(mon, rising)[0] >= 20            # a rise is still caught, once seen

def test_divergence_settings_are_checked():
    for bad in ({"divergence_factor": 0.9}, {"divergence_window": 1},
                {"divergence_lr_factor": 0.0}, {"divergence_rise": -1.0}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)
    assert math.isclose(TrainConfig(divergence_factor=0).divergence_factor, 0)


@pytest.mark.parametrize("window", [2, 5, 9, 10, 50])
def test_a_spike_is_caught_over_any_window_the_config_allows(window):
    """A window under 10 (min_history) never filled enough: no spike was ever caught."""
    guard = SpikeGuard(window=window, zscore=3, max_bad=3)
    rng = random.Random(0)
    for _ in range(window):
        assert guard.threshold() == math.inf or guard.check(1.0, 1.0) is None
        guard.losses.append(1.0 + 0.01 * rng.random())
    assert guard.threshold() < 2
    assert "loss spike" in (guard.check(1000.0, 1.0) or "")

