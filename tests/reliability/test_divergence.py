"""The issue's case through the real CLI: `pretrain train --train.lr=3` used to take the
loss far above uniform guessing and exit 0. Now the divergence is caught within a few steps
and, with nothing to roll back to, is a one-line error with the remedy (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pretrain.pipeline import run_stages
from pretrain.report import write_report
from pretrain.run_config import load_config

from ..conftest import tiny_overrides


@pytest.mark.parametrize("mode", ["rollback", pytest.param("stop", marks=pytest.mark.slow)])
def test_lr_3_is_caught_and_reported_in_one_line(tmp_path, mode):
    overrides = tiny_overrides(tmp_path, train__lr="3", train__steps="60", device="cpu",
                               train__on_divergence=mode, train__threads="1",
                               train__log_every="100")   # stopped before its first record
    run_stages(load_config(None, overrides), ("data", "tokenizer", "tokenize"), force=set())
    res = subprocess.run([sys.executable, "-m", "pretrain", "train", "--plain",
                          *(f"--{k}={v}" for k, v in overrides)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training diverged at step ") and "Traceback" not in res.stderr
    assert "x the starting loss" in last and "lower train.lr (to 1.5?)" in last
    # none was written yet: a smaller checkpoint_every is what keeps one ("no checkpoint
    # is left" read as if one had been removed)
    assert ("train.on_divergence = 'stop'" if mode == "stop" else
            "no checkpoint was written before it (the first comes at step ") in last
    step = int(last.split("at step ")[1].split()[0])
    assert step < 20   # caught early, not after the 60 steps
    root = tmp_path / "runs" / "tiny"
    assert not (root / "train").exists()
    # the report says so, with its events (it said "not run": nothing was logged yet)
    report = write_report(root).read_text()
    assert f"| train | stopped at step {step}: divergence: " in report
    training = report.split("## Training")[1].split("\n## ")[0]
    assert training.lstrip().startswith(f"**Stopped** at step {step:,} (divergence: ")
    assert "nothing logged (no checkpoint)" in training and "Stability events:" in training
