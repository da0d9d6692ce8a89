"""Exact resume, NaN/spike guard and rollback, checkpoint rotation (train/loop.py, state.py)."""

from __future__ import annotations

import json
import math
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pretrain import distributed
from pretrain.config import ConfigError, Preempted, PretrainError
from pretrain.export import export_run
from pretrain.model import hf, io
from pretrain.model.transformer import Transformer
from pretrain.train import state
from pretrain.train.loop import RunPaths, Trainer
from pretrain.train.parallelize import Layout, resolve_host_sync

from ..conftest import bad_steps
from .training_runs import MODEL, kill_at, make_tokens, scalars
from .training_runs import cfg as _cfg
from .training_runs import killed_then_resumed as _killed_then_resumed
from .training_runs import losses as _losses
from .training_runs import run as _run


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return make_tokens(tmp_path_factory)


def test_kill_and_resume_is_bit_identical(tokens, tmp_path, monkeypatch):
    _run(tokens, tmp_path / "a", tmp_path / "ckpt-a")
    left = _killed_then_resumed(tokens, tmp_path / "b", tmp_path / "ckpt-b", monkeypatch)
    assert left == ["step-0000008"]   # the rerun resumed from step 8
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    assert len(_losses(tmp_path / "b")) == 24
    # the probe generations of every eval, before and after the kill, are there and equal
    gens = (tmp_path / "a" / "generations.jsonl").read_text()
    assert gens and gens == (tmp_path / "b" / "generations.jsonl").read_text()


def test_tensorboard_after_a_kill_and_resume_has_every_step_once(tokens, tmp_path, monkeypatch):
    """The step of the checkpoint resumed from was logged (and evaluated) before the kill;
    the resumed writer purged it (purge_step = the step resumed from), losing an eval point
    at every resume. Step 0's evaluation is there too."""
    _killed_then_resumed(tokens, tmp_path / "b", tmp_path / "ckpt", monkeypatch, tb=tmp_path / "tb")
    log = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").open()]
    assert scalars(tmp_path / "tb", "train/loss") == [
        (r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in log]
    assert [s for s, _ in scalars(tmp_path / "tb", "val/loss")] == [0, 8, 16, 24]


@pytest.mark.parametrize("host_sync", ["step", "lagged"])
def test_logged_throughput_covers_every_timed_step_once(tokens, tmp_path, host_sync):
    """A record's tokens/s is over the timed steps since the record before, so the records'
    times add up to the run's training time. It was the logged step's own time: the steps
    between records went uncounted, and a lagged step read late on CPU had run its forward
    and backward before the step before it was read (70x the real rate)."""
    counts = _run(tokens, tmp_path / "a", tmp_path / "ckpt", steps=12, log_every=3,
                  eval_every=6, checkpoint_every=0, host_sync=host_sync)
    log = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").open()]
    assert [r["step"] for r in log] == [3, 6, 9, 12]
    steps = [2, 3, 3, 3]   # step 1, this process's first, is timed apart
    assert sum(n / r["tok_per_s"] for n, r in zip(steps, log, strict=True)) == \
        pytest.approx(sum(steps) / counts["tok_per_s"], rel=1e-3)
    assert counts["mfu_median"] == pytest.approx(sum(sorted(r["mfu"] for r in log)[1:3]) / 2)
    # a record after the warm-up step alone has no rate (it timed the compile or warm-up)
    _run(tokens, tmp_path / "b", tmp_path / "ckpt-b", steps=2, checkpoint_every=0,
         host_sync=host_sync)
    first = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").open()]
    assert "tok_per_s" not in first[0] and "mfu" not in first[0] and "tok_per_s" in first[1]


def test_tokens_per_second_covers_the_steps_of_every_process(tokens, tmp_path, monkeypatch):
    """The throughput divides the timed steps of every process by their time: after a resume
    it took the whole run's time (saved in the checkpoint) over this process's steps only,
    half the rate. Each process's first step is timed apart; a run of one step has none."""
    revive = kill_at(monkeypatch, 13)
    with pytest.raises(KeyboardInterrupt):
        _run(tokens, tmp_path / "b", tmp_path / "ckpt")
    revive()
    counts = _run(tokens, tmp_path / "b", tmp_path / "ckpt")
    # timed: steps 2..8 of the first process (its checkpoint at 8), then 10..16 of the second
    st = json.loads((tmp_path / "ckpt" / "step-0000016" / state.STATE).read_text())
    assert st["timed_steps"] == 7 + 7
    # and the rate covers 2..8 and 10..24 (loosely: the manifest rounds a fraction of a
    # second to 10 ms; the old rate read 15 of them)
    per_step = counts["tokens_seen"] / counts["steps"]
    timed = counts["tok_per_s"] * counts["train_time_s"] / per_step
    assert timed == pytest.approx(7 + 15, rel=0.2)
    assert _run(tokens, tmp_path / "one", tmp_path / "ckpt-one", steps=1)["tok_per_s"] is None



def test_after_a_resume_the_records_times_still_add_up(tokens, tmp_path, monkeypatch):
    """A resumed run's next record took the checkpoint's clock as the last record's: the
    steps between the last record (9) and the checkpoint (10) were in no record's rate."""
    revive = kill_at(monkeypatch, 13)
    with pytest.raises(KeyboardInterrupt):
        _run(tokens, tmp_path / "r", tmp_path / "ckpt", log_every=3, checkpoint_every=5)
    revive()
    counts = _run(tokens, tmp_path / "r", tmp_path / "ckpt", log_every=3, checkpoint_every=5)
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").open()]
    steps = [r["step"] for r in log]   # every 3rd, and the evaluations' every 8th
    assert steps == sorted({*range(3, 25, 3), *range(8, 25, 8)})
    # timed: 2..10 by the first process, 12..24 by the second (11, its first, apart)
    timed = [sum(1 for s in range(a + 1, b + 1) if s not in (1, 11))
             for a, b in zip([0, *steps], steps, strict=False)]
    assert sum(timed) == 9 + 13 and all(timed)
    assert sum(n / r["tok_per_s"] for n, r in zip(timed, log, strict=True)) == \
        pytest.approx(sum(timed) / counts["tok_per_s"], rel=1e-3)

def test_without_resume_it_starts_over(tokens, tmp_path, monkeypatch):
    _run(tokens, tmp_path / "a", tmp_path / "ckpt", steps=16)
    calls = []
    real = Trainer.forward_backward
    monkeypatch.setattr(Trainer, "forward_backward", lambda s, p: calls.append(p) or real(s, p))
    _run(tokens, tmp_path / "b", tmp_path / "ckpt", steps=16, resume=False)
    assert calls[0] == 0 and len(calls) == 16


def test_resumed_at_its_last_step_it_evaluates_there_and_ends(tokens, tmp_path):
    """A checkpoint at exactly train.steps (a longer run's, which `pretrain train` continues
    from when the schedules agree up to it) that no eval saw: nothing left to train, so the
    run evaluates that step and ends with its weights, as the longer run had them there."""
    flat = dict(schedule="cosine", min_lr_ratio=1.0, eval_every=5, log_every=4)  # lr flat after warmup
    _run(tokens, tmp_path / "long", tmp_path / "ckpt-long", steps=16, **flat)
    ckpt = tmp_path / "ckpt" / "step-0000008"
    ckpt.parent.mkdir()
    shutil.copytree(tmp_path / "ckpt-long" / ckpt.name, ckpt)
    counts = _run(tokens, tmp_path / "short", ckpt.parent, steps=8, **flat)
    assert counts["steps"] == 8 and math.isfinite(counts["val_loss_final"])
    log = [json.loads(x) for x in (tmp_path / "short" / "log.jsonl").open()]
    assert [r["step"] for r in log if "val_loss" in r] == [5, 8]   # the restored eval, then 8
    assert counts["val_loss_final"] == log[-1]["val_loss"]
    want = io.load_any(ckpt).state_dict()
    got = load_file(tmp_path / "short" / "model.safetensors")
    assert all(torch.equal(got[k], want[k]) for k in want)
    # the longer run, evaluated at step 10 and 15 only, was at the same loss at step 8
    again = Trainer(_cfg(steps=8, **flat), io.load_any(ckpt), tokens, RunPaths(tmp_path / "x"),
                    3, torch.device("cpu"))
    assert again.evaluate()["all"]["loss"] == pytest.approx(counts["val_loss_final"], abs=1e-6)


def test_nan_gradient_skips_the_update_and_logs_it(tokens, tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "forward_backward",
                        bad_steps(Trainer.forward_backward, nan_at=(5,)))
    counts = _run(tokens, tmp_path / "a", tmp_path / "ckpt")
    events = [json.loads(x) for x in (tmp_path / "a" / "events.jsonl").open()]
    # the 6th step's (data positions 0-4 made steps 1-5): it was labelled step 5
    assert [(e["step"], e["data_pos"], e["action"]) for e in events] == [(6, 5, "skipped update")]
    assert counts["skipped_steps"] == 1 and counts["rollbacks"] == 0
    weights = load_file(tmp_path / "a" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert len(_losses(tmp_path / "a")) == 24   # still 24 optimizer steps


def test_lagged_host_sync_makes_the_same_run_as_reading_each_step(tokens, tmp_path,
                                                                  monkeypatch):
    """host_sync = "lagged" (the device skips bad updates, the host reads a step late except
    at steps that log, evaluate or checkpoint): the same skips, rollback, losses and
    weights, bit for bit, as reading every step; and it did read late."""
    monkeypatch.setattr(Trainer, "forward_backward",
                        bad_steps(Trainer.forward_backward, nan_at=(5,), spikes=(18, 19, 20)))
    reads: list[bool] = []   # late or not, per read
    read = Trainer._read
    monkeypatch.setattr(Trainer, "_read",
                        lambda self, p, late: reads.append(late) or read(self, p, late=late))
    runs = {}
    for sync in ("step", "lagged"):
        reads.clear()
        # checkpoints every 6 steps, off the log (5) and eval (8) steps: read at once too
        counts = _run(tokens, tmp_path / sync, tmp_path / f"ckpt-{sync}", host_sync=sync,
                      log_every=5, checkpoint_every=6, keep_last=10)
        events = [json.loads(x) for x in (tmp_path / sync / "events.jsonl").open()]
        log = [{k: r[k] for k in ("step", "loss", "grad_norm", "lr", "val_loss") if k in r}
               for r in map(json.loads, (tmp_path / sync / "log.jsonl").open())]
        kept = [c.name for c in state.complete(tmp_path / f"ckpt-{sync}")]
        assert counts["host_sync"] == sync   # the manifest says which mode ran
        runs[sync] = (counts["skipped_steps"], counts["rollbacks"], events, log, kept,
                      load_file(tmp_path / sync / "model.safetensors"), sum(reads), len(reads))
    step, lagged = runs["step"], runs["lagged"]
    assert step[0] == 3 and step[1] == 1   # NaN at 5 and spikes at 18, 19 skipped; 20 rolls back
    assert "step-0000018" in step[4]
    assert lagged[:5] == step[:5]
    assert all(torch.equal(lagged[5][k], step[5][k]) for k in step[5])
    assert step[6:] == (0, 0) and lagged[6] >= 10          # read late on most steps


def test_lagged_host_sync_kill_and_resume_is_bit_identical(tokens, tmp_path, monkeypatch):
    _run(tokens, tmp_path / "a", tmp_path / "ckpt-a", host_sync="lagged", log_every=5)
    _killed_then_resumed(tokens, tmp_path / "b", tmp_path / "ckpt-b", monkeypatch,
                         host_sync="lagged", log_every=5)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")


def test_lagged_host_sync_stops_on_a_signal_at_a_boundary_and_resumes_exactly(
        tokens, tmp_path, monkeypatch, capsys):
    """A stop asked mid-step (SIGUSR1's handler) with the host reading late: the step is read
    at once, a checkpoint written, Preempted raised; the rerun ends as an uninterrupted one."""
    kw = dict(host_sync="lagged", log_every=5)
    _run(tokens, tmp_path / "a", tmp_path / "ckpt-a", **kw)
    real = Trainer.forward_backward

    def stop_at_10(self, data_pos):
        if data_pos == 10:
            self._request_stop(signal.SIGUSR1, None)
        return real(self, data_pos)

    monkeypatch.setattr(Trainer, "forward_backward", stop_at_10)
    # the same command resumes unless it forced the stage, which would start it over
    with pytest.raises(Preempted, match="at step 11.*rerun the command to resume "
                       r"\(without --force, which would start it over\)"):
        _run(tokens, tmp_path / "b", tmp_path / "ckpt-b", **kw)
    assert "the stopped run's log, events and generations are in" in capsys.readouterr().err
    monkeypatch.setattr(Trainer, "forward_backward", real)
    # a relaunch refused at its resume (nothing recorded) keeps the stopped run's logs
    logs = {p.name: p.read_bytes() for p in (tmp_path / "ckpt-b").glob("*.jsonl")}
    with pytest.raises(PretrainError, match="rows a micro-step"):
        _run(tokens, tmp_path / "b", tmp_path / "ckpt-b", **kw, batch_size=2)
    assert logs["log.jsonl"] and logs == {p.name: p.read_bytes()
                                          for p in (tmp_path / "ckpt-b").glob("*.jsonl")}
    _run(tokens, tmp_path / "b", tmp_path / "ckpt-b", **kw)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lagged_host_sync_needs_the_skip_on_the_device():
    one = Layout({"pp": 1, "dp_replicate": 1, "dp_shard": 1, "tp": 1})
    fsdp = Layout({"pp": 1, "dp_replicate": 1, "dp_shard": 2, "tp": 1})
    cpu, gpu = torch.device("cpu"), torch.device("cuda")   # only its type is read
    assert resolve_host_sync(_cfg(), one, cpu) == "step"          # auto: a read is free on CPU
    assert resolve_host_sync(_cfg(), one, gpu) == "lagged"        # auto: lagged on a GPU...
    assert resolve_host_sync(_cfg(precision="fp16"), one, gpu) == "step"   # ...where it applies
    assert resolve_host_sync(_cfg(optimizer="muon"), one, gpu) == "step"
    assert resolve_host_sync(_cfg(), fsdp, gpu) == "step"
    assert resolve_host_sync(_cfg(host_sync="step"), one, gpu) == "step"
    assert resolve_host_sync(_cfg(host_sync="lagged"), one, cpu) == "lagged"
    for cfg, layout, why in ((_cfg(host_sync="lagged", optimizer="muon"), one, "muon"),
                             (_cfg(host_sync="lagged", precision="fp16"), one, "fp16"),
                             (_cfg(host_sync="lagged"), fsdp, "sharded")):
        with pytest.raises(ConfigError, match=why):
            resolve_host_sync(cfg, layout, gpu)


def test_repeated_spikes_roll_back_and_skip_the_data(tokens, tmp_path, monkeypatch):
    real = Trainer.forward_backward
    bad = {18, 19, 20}
    seen: list[int] = []

    def spikes(self, data_pos):
        seen.append(data_pos)
        loss, norm = real(self, data_pos)
        return (loss * 50, norm) if data_pos in bad else (loss, norm)

    monkeypatch.setattr(Trainer, "forward_backward", spikes)
    counts = _run(tokens, tmp_path / "a", tmp_path / "ckpt")
    events = [json.loads(x) for x in (tmp_path / "a" / "events.jsonl").open()]
    assert [e["data_pos"] for e in events] == [18, 19, 20]
    assert all("loss spike" in e["reason"] for e in events)
    assert events[-1]["action"] == "rollback to step 16, data position 21"
    assert counts["rollbacks"] == 1
    # after the rollback, training continued from step 16 with data position 21 onwards
    assert seen[seen.index(20) + 1] == 21
    assert len(_losses(tmp_path / "a")) == 24 and not (set(seen[-8:]) & bad)


def test_a_second_rollback_to_the_same_checkpoint_lowers_the_learning_rate(tokens, tmp_path,
                                                                         monkeypatch):
    """Three rollbacks to one checkpoint had each met the same spike again (the trouble in
    its state, not in the data skipped): the second on lowers the lr, as for divergence."""
    monkeypatch.setattr(Trainer, "forward_backward",
                        bad_steps(Trainer.forward_backward, spikes=(18, 19, 20, 21, 22, 23)))
    counts = _run(tokens, tmp_path / "a", tmp_path / "ckpt")
    events = [json.loads(x) for x in (tmp_path / "a" / "events.jsonl").open()]
    actions = [e["action"] for e in events if e["action"].startswith("rollback")]
    assert actions == ["rollback to step 16, data position 21",
                       "rollback to step 16, data position 24, learning rate x0.5 from now on "
                       "(rollback 2 to this checkpoint)"]
    assert counts["rollbacks"] == 2
    monkeypatch.undo()
    _run(tokens, tmp_path / "ref", tmp_path / "ckpt-ref")
    lrs = [[r["lr"] for r in map(json.loads, (tmp_path / run / "log.jsonl").open())]
           for run in ("a", "ref")]
    assert lrs[0] == pytest.approx([lr * (0.5 if s > 16 else 1) for s, lr in
                                    enumerate(lrs[1], 1)])


def test_divergence_without_a_checkpoint_is_a_clear_error(tokens, tmp_path, monkeypatch):
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    monkeypatch.setattr(Trainer, "forward_backward", lambda s, p: (nan, nan))
    with pytest.raises(PretrainError, match="diverged at step 1 .* no checkpoint was written"):
        _run(tokens, tmp_path / "a", tmp_path / "ckpt")


def test_a_rollback_past_newer_checkpoints_discards_them(tmp_path):
    """After a divergence rollback to step 8, the checkpoints of steps 12 and 16 belong to
    the abandoned stretch: a later resume must not pick them."""
    for step in (4, 8, 12, 16):
        (tmp_path / f"step-{step:07d}").mkdir()
        (tmp_path / f"step-{step:07d}" / state.STATE).write_text("{}")
    assert state.discard_after(tmp_path, 8) == ["step-0000012", "step-0000016"]
    assert [p.name for p in state.complete(tmp_path)] == ["step-0000004", "step-0000008"]


def test_rotation_keeps_last_k_and_the_best(tmp_path):
    model = Transformer(MODEL)
    opt = torch.optim.AdamW(model.parameters())
    for step, val in [(10, 2.0), (20, 1.0), (30, 3.0), (40, 4.0), (50, 5.0)]:
        state.save(tmp_path, step, MODEL, model, opt, {"val_loss": val}, 2, distributed.Dist())
    assert [p.name for p in state.complete(tmp_path)] == ["step-0000020", "step-0000040", "step-0000050"]
    (tmp_path / "step-0000060.tmp").mkdir()  # a torn write is never a checkpoint
    assert state.complete(tmp_path)[-1].name == "step-0000050"
    # checkpoints no eval saw (val_loss inf) are none of them the best: the oldest of them
    # was kept forever (checkpoint_every not a multiple of eval_every)
    other = tmp_path / "unevaluated"
    for step in (5, 10, 15, 20):
        state.save(other, step, MODEL, model, opt, {"val_loss": math.inf}, 1, distributed.Dist())
    assert [p.name for p in state.complete(other)] == ["step-0000020"]



def test_a_one_process_checkpoint_saves_and_loads_without_warnings(tmp_path, recwarn):
    """DCP warned at every save and load of a one-process run that it assumed one process
    (in the quickstart's output)."""
    model = Transformer(MODEL)
    opt = torch.optim.AdamW(model.parameters())
    ckpt = state.save(tmp_path, 1, MODEL, model, opt, {}, 1, distributed.Dist())
    state.load(ckpt, model, opt)
    io.consolidated(ckpt)
    assert [str(w.message) for w in recwarn] == []


@pytest.mark.parametrize("flat", [True, False])
def test_checkpoints_of_either_optimizer_layout_load(tmp_path, monkeypatch, flat):
    """The optimizer state is saved by parameter name, param groups too (a pipeline's stages
    had overwritten each other's groups); checkpoints written by group index still load."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    torch.manual_seed(0)
    model = Transformer(MODEL)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.9))
    model(torch.randint(0, MODEL.vocab_size, (2, 8)))[0].sum().backward()
    opt.step()
    if not flat:   # as written before
        monkeypatch.setattr(state, "FLAT", StateDictOptions())
    ckpt = state.save(tmp_path, 1, MODEL, model, opt, {}, 1, distributed.Dist())
    monkeypatch.undo()
    assert state._flat(ckpt) is flat
    again = Transformer(MODEL)
    opt2 = torch.optim.AdamW(again.parameters(), lr=5.0)
    state.load(ckpt, again, opt2)
    assert opt2.param_groups[0]["betas"] == (0.8, 0.9) and opt2.param_groups[0]["lr"] == 1e-3
    for p1, p2 in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(opt.state[p1]["exp_avg"], opt2.state[p2]["exp_avg"])


def test_a_save_that_fails_for_another_reason_than_space_does_not_ask_for_room(tmp_path,
                                                                             monkeypatch):
    """A peer lost during a collective save (gloo's "Connection reset by peer") was told to
    make room on the disk."""
    model = Transformer(MODEL)
    opt = torch.optim.AdamW(model.parameters())

    def lost(*a, **k):
        raise RuntimeError("[gloo] Connection reset by peer")
    monkeypatch.setattr(state.dcp, "save", lost)
    with pytest.raises(PretrainError) as e:
        state.save(tmp_path, 1, MODEL, model, opt, {}, 1, distributed.Dist())
    assert "Connection reset by peer" in str(e.value) and "make room" not in str(e.value)
    assert str(e.value).endswith("it was the first of this attempt; rerun the same command "
                                 "to start again")   # not "nothing written before was touched"

def test_rotation_survives_a_damaged_state_file_and_a_half_removed_checkpoint(tmp_path,
                                                                               capsys,
                                                                               monkeypatch):
    """A kept checkpoint whose state.json cannot be read made every later save fail ("could
    not write", though it had been written) and rotation stop; a kill while a checkpoint's
    files were removed left a half checkpoint forever (and ``pretrain verify`` failing)."""
    model = Transformer(MODEL)
    opt = torch.optim.AdamW(model.parameters())
    dist = distributed.Dist()
    for step in (10, 20):
        state.save(tmp_path, step, MODEL, model, opt, {"val_loss": 1.0 * step}, 2, dist)
    (tmp_path / "step-0000010" / state.STATE).write_text('{"val_lo')   # truncated
    half = tmp_path / "step-0000005.deleting"   # a removal killed midway
    half.mkdir()
    (half / "rng.pt").write_bytes(b"x")
    for step in (30, 40):
        state.save(tmp_path, step, MODEL, model, opt, {"val_loss": 1.0 * step}, 2, dist)
    assert [p.name for p in state.complete(tmp_path)] == ["step-0000020", "step-0000030",
                                                          "step-0000040"]   # 20: the best
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000020", "step-0000030",
                                                           "step-0000040"]
    assert "step-0000010/state.json: unreadable (JSONDecodeError)" in capsys.readouterr().err
    # a removal goes through the rename: what a kill leaves is never taken as a checkpoint
    assert state.discard_after(tmp_path, 30) == ["step-0000040"]
    assert not list(tmp_path.glob("*.deleting"))
    # a checkpoint rotation cannot remove (a busy network file system) is left, said: the
    # save that rotated was written and does not fail for it
    real_replace = state.os.replace
    monkeypatch.setattr(state.os, "replace", lambda a, b: (_ for _ in ()).throw(
        OSError(16, "Device or resource busy")) if str(b).endswith(".deleting") else real_replace(a, b))
    state.save(tmp_path, 50, MODEL, model, opt, {"val_loss": 50.0}, 1, dist)
    assert [p.name for p in state.complete(tmp_path)][-2:] == ["step-0000030", "step-0000050"]
    assert "could not remove" in capsys.readouterr().err
    monkeypatch.undo()
    # the checkpoint's folder cannot be made (here a file is in the way; a read-only disk
    # or one out of inodes fails the same mkdir): the one-line message, not a bare OSError
    (tmp_path / "blocked").write_text("")
    with pytest.raises(PretrainError, match="could not write .*blocked/step-0000001.*it was "
                                            "the first of this attempt"):
        state.save(tmp_path / "blocked", 1, MODEL, model, opt, {}, 2, dist)


def test_a_checkpoint_is_a_model_folder_for_export_and_init_from(tokens, tmp_path, capsys):
    """A resumable checkpoint (DCP shards + model_config.json) loads as a model: its
    weights consolidated in one process, as `pretrain export` and `train.init_from` do."""
    t = Trainer(_cfg(steps=4, checkpoint_every=0), Transformer(MODEL), tokens,
                RunPaths(tmp_path), 3, torch.device("cpu"))
    t.run()
    ckpt = t.save(tmp_path / "ckpts")
    assert ckpt is not None and (ckpt / ".metadata").is_file()
    loaded = io.load_any(ckpt)
    for name, value in t.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    out = export_run(ckpt, tmp_path / "hf")
    again = hf.import_hf(out)
    for name, value in loaded.state_dict().items():
        assert torch.equal(again.state_dict()[name], value), name
    # without its checksums: exported, said unverified (it said nothing)
    (ckpt / "checksums.json").unlink()
    export_run(ckpt, tmp_path / "hf2")
    assert f"{ckpt} has no checksums.json: its files are exported unverified" in \
        capsys.readouterr().err


def test_a_stop_signal_is_taken_at_a_skipped_step_and_resumes_exactly(tokens, tmp_path,
                                                                      monkeypatch):
    """A stop asked while no step is accepted (bad steps, fp16 overflows) was only taken at
    the next accepted step: a run stuck on them ignored SIGTERM. Now at the skip itself,
    without a checkpoint there (it would hold the streak half counted and be what the
    rollback restores): the rerun resumes from step 8 and makes the uninterrupted run."""
    bad = bad_steps(Trainer.forward_backward, nan_at=(11, 12, 13))
    monkeypatch.setattr(Trainer, "forward_backward", bad)
    _run(tokens, tmp_path / "full", tmp_path / "ckpt-full")

    def asked_at_11(self, data_pos):
        if data_pos == 11:
            self.stop_requested = True   # what the SIGTERM handler sets
        return bad(self, data_pos)

    monkeypatch.setattr(Trainer, "forward_backward", asked_at_11)
    with pytest.raises(Preempted, match=r"at step 11, no checkpoint at a skipped update "
                                        r"\(the last is .*step-0000008\)"):
        _run(tokens, tmp_path / "b", tmp_path / "ckpt")
    assert [p.name for p in state.complete(tmp_path / "ckpt")] == ["step-0000008"]
    monkeypatch.setattr(Trainer, "forward_backward", bad)
    _run(tokens, tmp_path / "b", tmp_path / "ckpt")
    assert _losses(tmp_path / "b") == _losses(tmp_path / "full")
    events = (tmp_path / "b" / "events.jsonl").read_text()
    assert events == (tmp_path / "full" / "events.jsonl").read_text()
    assert "rollback to step 8" in events


@pytest.mark.parametrize("damage", ["flip", "truncate", "no_checksums"])
def test_damaged_latest_checkpoint_falls_back_to_the_one_before(tokens, tmp_path, monkeypatch,
                                                               capsys, damage):
    """A checkpoint whose bytes changed after it was written (bad disk, partial copy) is
    detected by its checksums; the resume warns and takes the previous one, and the run still
    ends bit-identical to an uninterrupted one."""
    _run(tokens, tmp_path / "a", tmp_path / "ckpt-a")
    revive = kill_at(monkeypatch, 20)
    with pytest.raises(KeyboardInterrupt):
        _run(tokens, tmp_path / "b", tmp_path / "ckpt-b")
    revive()
    latest = tmp_path / "ckpt-b" / "step-0000016"
    assert [p.name for p in state.complete(tmp_path / "ckpt-b")] == ["step-0000008", latest.name]
    assert state.verify(latest) is None
    victim = max((p for p in latest.iterdir() if p.suffix == ".distcp"), key=lambda p: p.stat().st_size)
    if damage == "flip":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:-100])
    else:
        (latest / state.CHECKSUMS).unlink()
    problem = state.verify(latest)
    assert problem is not None and (latest.name in problem)
    capsys.readouterr()
    _run(tokens, tmp_path / "b", tmp_path / "ckpt-b")
    err = capsys.readouterr()
    assert "step-0000016 is damaged" in err.out + err.err
    assert "resum" in (err.out + err.err) and "step-0000008" in (err.out + err.err)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")[-len(_losses(tmp_path / "a")):]


def test_every_damaged_checkpoint_is_warned_and_none_is_taken(tokens, tmp_path, capsys):
    _run(tokens, tmp_path / "a", tmp_path / "ckpt", steps=8)
    for ckpt in (damaged := state.complete(tmp_path / "ckpt")):
        (ckpt / state.CHECKSUMS).write_text("{")
    _run(tokens, tmp_path / "a", tmp_path / "ckpt", steps=8)   # trained again, and said
    err = capsys.readouterr().err
    assert all(f"{c.name} is damaged" in err for c in damaged) and "resumed from" not in err
    assert "no checkpoint of this config is intact: training starts from step 0" in err
    # each is written again, the last step's too (it had stayed damaged, the run's last)
    assert [c.name for c in state.complete(tmp_path / "ckpt")] == [c.name for c in damaged]
    assert all(state.verify(c) is None for c in damaged)
