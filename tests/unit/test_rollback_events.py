"""Rollbacks that follow one another, and the one a run cannot take: the learning rate a
divergence lowered, and the event that stops the run, are kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pretrain.config import PretrainError
from pretrain.train import loop
from pretrain.train.loop import Trainer
from pretrain.train.stability import DivergenceMonitor

from ..conftest import bad_steps
from .training_runs import make_tokens
from .training_runs import run as _run


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return make_tokens(tmp_path_factory)


def _lrs(out: Path) -> list[float]:
    return [r["lr"] for r in map(json.loads, (out / "log.jsonl").open())]


def test_a_rollback_after_a_divergence_keeps_its_lower_learning_rate(tokens, tmp_path,
                                                                     monkeypatch):
    """A divergence at step 20 rolls back to step 16 at half the learning rate; three NaN
    steps after it roll back to the same checkpoint, saved before the lowering: its
    stored scale (1) had brought the full learning rate back."""
    real = DivergenceMonitor.observe
    fired: list[int] = []

    def observe(self, step, loss):
        found = real(self, step, loss)
        if step == 20 and not fired:
            fired.append(step)
            return "divergence: forced", 16
        return found
    monkeypatch.setattr(DivergenceMonitor, "observe", observe)
    monkeypatch.setattr(Trainer, "forward_backward",
                        bad_steps(Trainer.forward_backward, nan_at=(21, 22, 23)))
    counts = _run(tokens, tmp_path / "a", tmp_path / "ckpt")
    events = [json.loads(x) for x in (tmp_path / "a" / "events.jsonl").open()]
    assert [e["action"].split(",")[0] for e in events if "rollback" in e["action"]] == [
        "rollback to step 16"] * 2 and counts["rollbacks"] == 2
    monkeypatch.undo()
    _run(tokens, tmp_path / "ref", tmp_path / "ckpt-ref")
    assert _lrs(tmp_path / "a") == pytest.approx(
        [lr * (0.5 if s > 16 else 1) for s, lr in enumerate(_lrs(tmp_path / "ref"), 1)])


def test_the_bad_step_that_stops_the_run_is_in_its_events(tokens, tmp_path, monkeypatch):
    """The rollback budget spent: the streak's last bad step, which stops the run, was
    missing from events.jsonl (the divergence stop recorded its own)."""
    monkeypatch.setattr(Trainer, "forward_backward",
                        bad_steps(Trainer.forward_backward, nan_at=range(10, 1000)))
    with pytest.raises(PretrainError, match="the rollback budget is spent"):
        _run(tokens, tmp_path / "a", tmp_path / "ckpt", max_rollbacks=1)
    events = [json.loads(x) for x in next((tmp_path / "ckpt").rglob("events.jsonl")).open()]
    assert [e["action"].split(",")[0] for e in events] == [
        "skipped update", "skipped update", "rollback to step 8",
        "skipped update", "skipped update", "stopped"]
    assert [e["data_pos"] for e in events] == [10, 11, 12, 13, 14, 15]


def test_the_progress_bar_goes_back_with_a_rollback(tokens, tmp_path, monkeypatch):
    """The bar counted the rolled-back steps again: "27/24 steps" at the end of 24."""
    bars: list[loop.Progress] = []

    class Kept(loop.Progress):
        def __enter__(self):
            bars.append(self)
            return super().__enter__()
    monkeypatch.setattr(loop, "Progress", Kept)
    monkeypatch.setattr(Trainer, "forward_backward",
                        bad_steps(Trainer.forward_backward, nan_at=(18, 19, 20)))
    counts = _run(tokens, tmp_path / "a", tmp_path / "ckpt")
    assert counts["rollbacks"] == 1 and [b.n for b in bars] == [24]


def test_a_streak_before_the_first_checkpoint_says_what_would_have_kept_one(tokens, tmp_path,
                                                                            monkeypatch):
    """It said "no checkpoint is left to roll back to", as if one had been removed."""
    monkeypatch.setattr(Trainer, "forward_backward",
                        bad_steps(Trainer.forward_backward, nan_at=range(3, 1000)))
    with pytest.raises(PretrainError, match=r"no checkpoint was written before it \(the first "
                                            r"comes at step 8; a smaller train.checkpoint_every"):
        _run(tokens, tmp_path / "a", tmp_path / "ckpt")


def test_a_divergence_found_at_the_first_checkpoints_step_says_none_was_written(
        tokens, tmp_path, monkeypatch):
    """Found at step 8 = checkpoint_every, before that step's checkpoint is written, it
    said "no checkpoint is left", as if one had been removed."""
    real = DivergenceMonitor.observe

    def observe(self, step, loss):
        return ("divergence: forced", 0) if step == 8 else real(self, step, loss)
    monkeypatch.setattr(DivergenceMonitor, "observe", observe)
    with pytest.raises(PretrainError, match=r"training diverged at step 8 .* no checkpoint was "
                                            r"written before it \(the first comes at step 8;"):
        _run(tokens, tmp_path / "a", tmp_path / "ckpt")
