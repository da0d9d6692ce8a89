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

from pretrain.config import EXIT_PREEMPTED
from pretrain.pipeline import run_stages
from pretrain.run_config import load_config
from pretrain.train import state

from ..conftest import tiny_overrides

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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
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
    a = reference
    b = load_file(run_dir / "runs" / "tiny" / "train" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
