"""Divergence: a loss that climbs is rolled back to a checkpoint from before it began, with a
lower learning rate, or stops the run, or is let be (train/recovery.py)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from pretrain.config import PretrainError

from .training_runs import make_tokens, scalars
from .training_runs import run as _run


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return make_tokens(tmp_path_factory)


def _events(out: Path) -> list[dict]:
    path = out / "events.jsonl"
    return [json.loads(x) for x in path.open()] if path.exists() else []


# lr = 4 reached over a 60-step warmup: the loss falls to ~3.7, then climbs past 8 as the lr
# grows (spike guard off: only the slow rise is left to catch); caught at steps 40-49 with
# seeds 0-5, once each
# every checkpoint kept (none is evaluated, so none is kept as the best): the one from
# before the divergence began is there to roll back to
_TOO_HIGH = dict(lr=4.0, warmup_steps=60, steps=60, checkpoint_every=4, spike_zscore=0,
                 eval_every=60, keep_last=15)


def test_slow_divergence_rolls_back_before_it_began_with_a_lower_lr(tokens, tmp_path):
    out = tmp_path / "run"
    _run(tokens, out, tmp_path / "ckpt", tb=tmp_path / "tb", **_TOO_HIGH)
    div = [e for e in _events(out) if e["reason"].startswith("divergence")]
    assert div, "the climbing loss went unnoticed"
    first = div[0]
    back_to = int(first["action"].split("rollback to step ")[1].split(",")[0])
    assert back_to <= first["began_at_step"] < first["step"]
    assert "learning rate x0.5" in first["action"]
    # the log is the trajectory kept: from the rollback on, half the warmup's lr
    log = [json.loads(x) for x in (out / "log.jsonl").open()]
    assert [r["step"] for r in log] == list(range(1, 61))
    for r in log:
        peak, warmup = _TOO_HIGH["lr"], _TOO_HIGH["warmup_steps"]
        want = peak * r["step"] / warmup * (0.5 ** len(div) if r["step"] > back_to else 1.0)
        assert r["lr"] == pytest.approx(want), r["step"]
    # the kept run ends under the level the monitor catches (divergence_factor 1.5 x the
    # first loss), which the rolled-back one had climbed past
    assert log[-1]["val_loss"] < 1.5 * log[0]["loss"]
    # TensorBoard too drops the rolled-back steps (it showed both trajectories there)
    assert scalars(tmp_path / "tb", "train/loss") == [
        (r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in log]


def test_divergence_without_a_checkpoint_from_before_it_takes_the_oldest_kept(tokens, tmp_path):
    out = tmp_path / "run"
    _run(tokens, out, tmp_path / "ckpt", **{**_TOO_HIGH, "keep_last": 2})
    first = next(e for e in _events(out) if e["reason"].startswith("divergence"))
    assert f"none is left from step {first['began_at_step']} or earlier" in first["action"]
    assert "raise train.keep_last" in first["action"]



def test_after_a_rollback_the_rising_trend_is_judged_on_new_steps(tokens, tmp_path):
    """Rolled back to a checkpoint taken while the loss already rose (the oldest kept), the
    monitor saw the same rise at the next step: back to the same checkpoint, again and
    again, the learning rate halved each time."""
    out = tmp_path / "run"
    window = 6
    with contextlib.suppress(PretrainError):   # the budget may still be spent: not the point
        _run(tokens, out, tmp_path / "ckpt", **{**_TOO_HIGH, "keep_last": 2, "max_rollbacks": 6,
                                               "divergence_factor": 0, "divergence_window": window,
                                               "divergence_rise": 0.01})
    # the events of a run that ends spent are beside its checkpoints
    events = _events(out) if (out / "events.jsonl").exists() else _events(tmp_path / "ckpt")
    rollbacks = [e for e in events if e["action"].startswith("rollback")]
    assert len(rollbacks) >= 2
    for before, after in zip(rollbacks, rollbacks[1:], strict=False):
        back_to = int(before["action"].split("rollback to step ")[1].split(",")[0])
        assert after["step"] - back_to >= window, (before, after)

def test_divergence_with_on_divergence_stop_is_a_one_line_error(tokens, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(PretrainError, match=r"training diverged at step \d+ \(divergence: .*"
                       r"train.on_divergence = 'stop'.*lower train.lr"):
        _run(tokens, out, tmp_path / "ckpt", on_divergence="stop", **_TOO_HIGH)


def test_divergence_off_lets_the_loss_climb(tokens, tmp_path):
    out = tmp_path / "run"
    _run(tokens, out, tmp_path / "ckpt", on_divergence="off", **_TOO_HIGH)
    assert not _events(out)
    losses = [r["loss"] for r in map(json.loads, (out / "log.jsonl").open())]
    assert max(losses) > 1.5 * losses[0]   # what the monitor would have caught
