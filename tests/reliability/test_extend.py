"""Resume across harmless changes, through the real CLI: raising `train.steps` of a WSD run
continues from its stable phase to the weights of a run started with the new value; a
cosine run says why it starts over; the checkpoints of other configs are listed and
removable with one option; --force train starts from step 0; a logging change retrains
nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pretrain.pipeline import run_stages
from pretrain.run_config import load_config

from ..conftest import tiny_overrides

WSD = {"train__schedule": "wsd", "train__decay_frac": "0.25", "train__checkpoint_every": "4",
       "train__eval_every": "8", "device": "cpu", "train__threads": "1"}


def _train(root: Path, *flags: str, **kw: str) -> str:
    overrides = tiny_overrides(root, **{**WSD, **kw})
    res = subprocess.run([sys.executable, "-m", "pretrain", "train", "--plain", *flags,
                          *(f"--{k}={v}" for k, v in overrides)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stderr


def _weights(root: Path) -> dict[str, torch.Tensor]:
    return load_file(root / "runs" / "tiny" / "train" / "model.safetensors")


@pytest.fixture
def prepared(tmp_path_factory):
    """A function giving a fresh run directory with the stages before train done."""
    def make() -> Path:
        root = tmp_path_factory.mktemp("extend")
        run_stages(load_config(None, tiny_overrides(root, **WSD)),
                   ("data", "tokenizer", "tokenize"), force=set())
        return root
    return make


@pytest.mark.slow
def test_raising_steps_of_a_wsd_run_continues_from_its_stable_phase(prepared):
    fresh, extended = prepared(), prepared()
    _train(fresh, train__steps="32")
    _train(extended, train__steps="16")    # decays from step 12: checkpoints 8 and 12 kept
    err = _train(extended, train__steps="32")
    assert "continuing from" in err and "step-0000012" in err.split("continuing from")[1]
    assert "resumed from" in err and "(step 12)" in err
    a, b = _weights(fresh), _weights(extended)
    assert all(torch.equal(a[k], b[k]) for k in a)   # as if started with steps = 32
    assert "checkpoints of another config of this run" in err
    # --force train trains again from step 0: no other config's checkpoint is taken
    err = _train(extended, "--force", "train", train__steps="32")
    assert "continuing from" not in err and "resumed from" not in err
    b = _weights(extended)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a change of logging and checkpoint cadence retrains nothing
    err = _train(extended, train__steps="32", train__log_every="5", train__checkpoint_every="8",
                 train__threads="2")
    assert "[train] up to date" in err or "skipped" in err


@pytest.mark.slow
def test_raising_steps_of_a_cosine_run_says_why_it_starts_over_and_prunes_on_request(prepared):
    root = prepared()
    _train(root, train__schedule="cosine", train__steps="16")
    err = _train(root, train__schedule="cosine", train__steps="20")
    line = next(x for x in err.splitlines() if "not continuing from" in x)
    assert "the learning rate differs from step" in line and "schedule = 'wsd'" in line
    assert "training starts from step 0" in line and "resumed from" not in err
    folders = sorted((root / "runs" / "tiny" / "checkpoints").glob("train-*"))
    assert len(folders) == 2
    err = _train(root, train__schedule="cosine", train__steps="24",
                 train__remove_other_checkpoints="true")
    assert err.count("(train.remove_other_checkpoints)") == 2
    assert len(list((root / "runs" / "tiny" / "checkpoints").glob("train-*"))) == 1
    # the same global batch in two micro-steps (what fits on fewer or smaller devices):
    # grad_accum picks the data, so it starts over, and says how to continue instead
    err = _train(root, train__schedule="cosine", train__steps="24", train__batch_size="4",
                 train__grad_accum="2")
    assert "differ from this config in train.grad_accum (1)" in err
    assert "keep train.grad_accum = 1 with 8 rows a micro-step" in err
    # followed once the stage completed, the hint removes them too (the stage was skipped,
    # and the flag with it)
    err = _train(root, train__schedule="cosine", train__steps="24", train__batch_size="4",
                 train__grad_accum="2", train__remove_other_checkpoints="true")
    assert "[train] up to date" in err and err.count("(train.remove_other_checkpoints)") == 1
    assert len(list((root / "runs" / "tiny" / "checkpoints").glob("train-*"))) == 1
