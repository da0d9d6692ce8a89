"""Preemption: the real `pretrain train` in a subprocess, sent SIGTERM (what Slurm and spot
instances send before the end) or SIGUSR1 mid-training, writes a checkpoint at the next step
boundary and exits with 75; the same command resumes to the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.distributed.checkpoint import FileSystemWriter

from pretrain.config import EXIT_PREEMPTED, Preempted
from pretrain.model.config import ModelConfig
from pretrain.pipeline import run_stages
from pretrain.run_config import load_config
from pretrain.train import state
from pretrain.train.config import TrainConfig
from pretrain.train.loop import RunPaths, Trainer, train

from ..conftest import code_and_prose_shards, tiny_overrides

STEPS = "60"


def _train(overrides: list[tuple[str, str]], cwd: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "pretrain", "train", *(f"--{k}={v}" for k, v in overrides)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(args, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)


COMMON = {"train__steps": STEPS, "train__checkpoint_every": "1000", "train__log_every": "1",
          "train__threads": "1", "device": "cpu"}


def _prepared(where: Path) -> Path:
    run_stages(load_config(None, tiny_overrides(where, **COMMON)),
               ("data", "tokenizer", "tokenize"), force=set())
    return where


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The weights of the run trained without a signal (one for both signals)."""
    ref_dir = _prepared(tmp_path_factory.mktemp("ref"))
    ref = _train(tiny_overrides(ref_dir, **COMMON), ref_dir)
    assert ref.wait(timeout=300) == 0, ref.stderr.read()[-2000:] if ref.stderr else ""
    return load_file(ref_dir / "runs" / "tiny" / "train" / "model.safetensors")


@pytest.mark.parametrize("sig", [signal.SIGTERM,
                                 pytest.param(signal.SIGUSR1, marks=pytest.mark.slow)])
def test_a_signal_checkpoints_and_the_rerun_resumes_exactly(tmp_path, sig, reference):
    common = COMMON
    run_dir = _prepared(tmp_path / "run")
    proc = _train(tiny_overrides(run_dir, **common), tmp_path)
    assert proc.stderr is not None
    for line in proc.stderr:  # signal once training is under way
        if line.startswith("train: step 5/"):
            proc.send_signal(sig)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == EXIT_PREEMPTED, rest[-2000:]
    assert "preempted: stopped by a signal at step" in rest
    ckpts = state.complete(next((run_dir / "runs" / "tiny" / "checkpoints").iterdir()))
    assert len(ckpts) == 1 and 5 <= int(ckpts[0].name.split("-")[1]) < int(STEPS)
    assert not (run_dir / "runs" / "tiny" / "train").exists()   # the stage did not complete
    start = time.time()
    again = _train(tiny_overrides(run_dir, **common), tmp_path)
    out = again.stderr.read() if again.stderr else ""
    assert again.wait(timeout=300) == 0, out[-2000:]
    assert "resumed from" in out and time.time() - start < 300
    # announced as what it is (it said "[train] running (not run yet)")
    assert "[train] running (not complete: an earlier attempt's checkpoints are there to " \
        "resume from)" in out
    a = reference
    b = load_file(run_dir / "runs" / "tiny" / "train" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_preempted_forced_retrain_resumes_without_force(tmp_path, reference):
    """``--force train`` of a complete run, preempted: the rerun the message asks for
    (without --force) found the stage up to date and kept the earlier model, the forced
    attempt's checkpoint unused. It resumes it now, to the uninterrupted run's weights."""
    run_dir = _prepared(tmp_path / "run")
    first = _train(tiny_overrides(run_dir, **COMMON), tmp_path)   # complete: up to date
    assert first.wait(timeout=300) == 0
    forced = _train([*tiny_overrides(run_dir, **COMMON), ("force", "train")], tmp_path)
    assert forced.stderr is not None
    for line in forced.stderr:
        if line.startswith("train: step 5/"):
            forced.send_signal(signal.SIGTERM)
            break
    rest = forced.stderr.read()
    assert forced.wait(timeout=300) == EXIT_PREEMPTED, rest[-2000:]
    assert "rerun the command to resume (without --force" in rest
    again = _train(tiny_overrides(run_dir, **COMMON), tmp_path)
    out = again.stderr.read() if again.stderr else ""
    assert again.wait(timeout=300) == 0, out[-2000:]
    assert "up to date" not in out and "resumed from" in out, out[-2000:]
    b = load_file(run_dir / "runs" / "tiny" / "train" / "model.safetensors")
    assert all(torch.equal(reference[k], b[k]) for k in reference)


# ---- in one process: the signal or Ctrl-C at the moments outside the step loop ----------

TINY = ModelConfig(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, seq_len=16, vocab_size=258)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return code_and_prose_shards(tmp_path_factory.mktemp("tokens"))


def _run(shards: Path, where: Path) -> dict:
    cfg = TrainConfig(steps=6, batch_size=4, warmup_steps=2, eval_every=3, eval_batches=2,
                      log_every=1, checkpoint_every=3, tensorboard=False)
    (where / "out").mkdir(parents=True, exist_ok=True)
    return train(cfg, TINY, shards, RunPaths(where / "out", checkpoints=where / "ckpt"), seed=1)


def test_a_signal_after_the_last_step_stops_once_the_end_is_written(shards, tmp_path,
                                                                   monkeypatch, capsys):
    """The handlers covered the step loop alone: a SIGTERM while the final weights were
    written killed the process (143, no word), the last step's checkpoint unwritten."""
    real = state.write_final

    def write_final(*args, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kw)
    monkeypatch.setattr(state, "write_final", write_final)
    with pytest.raises(Preempted, match=r"stopped by a signal after the last step \(6\), its "
                                        r"checkpoint .*step-0000006 and weights are written"):
        _run(shards, tmp_path)
    assert (tmp_path / "out" / "model.safetensors").is_file()
    monkeypatch.setattr(state, "write_final", real)
    capsys.readouterr()
    assert _run(shards, tmp_path)["steps"] == 6   # the rerun trains nothing and completes
    err = capsys.readouterr().err
    assert "resumed from " in err and "(step 6)" in err and "train: step 4/6" not in err


def test_a_signal_during_the_first_evaluation_stops_at_the_first_step(shards, tmp_path,
                                                                      monkeypatch):
    real = Trainer._generate

    def generate(self, step):
        os.kill(os.getpid(), signal.SIGUSR1)
        return real(self, step)
    monkeypatch.setattr(Trainer, "_generate", generate)
    with pytest.raises(Preempted, match=r"stopped by a signal at step 1, checkpoint "):
        _run(shards, tmp_path)
    assert [c.name for c in state.complete(tmp_path / "ckpt")] == ["step-0000001"]


def test_ctrl_c_during_a_checkpoint_is_an_interruption_not_a_failed_write(shards, tmp_path,
                                                                         monkeypatch):
    """DCP wraps every exception of a save, KeyboardInterrupt too, into a CheckpointException,
    which was reported as "could not write ... step-N" (status 2, not 130)."""
    real = FileSystemWriter.write_data
    calls = []

    def write_data(self, *args, **kw):
        calls.append(1)
        if len(calls) == 2:   # the step-6 checkpoint
            raise KeyboardInterrupt
        return real(self, *args, **kw)
    monkeypatch.setattr(FileSystemWriter, "write_data", write_data)
    with pytest.raises(KeyboardInterrupt):
        _run(shards, tmp_path)
    assert [c.name for c in state.complete(tmp_path / "ckpt")] == ["step-0000003"]
    assert not list((tmp_path / "ckpt").glob("*.tmp"))
