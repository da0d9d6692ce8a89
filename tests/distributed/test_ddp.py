"""Data parallel training (DDP and FSDP2) with 2 gloo processes on CPU, launched by torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pretrain.model.config import ModelConfig
from pretrain.tokenizer import shards
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import BOS, EOS, TokenizeConfig
from pretrain.train.config import TrainConfig
from pretrain.train.loop import RunPaths, train

from ..conftest import tiny_overrides

WORKER = Path(__file__).with_name("ddp_worker.py")


def _torchrun(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokens")
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    text = Path(json.__file__).read_text() * 3
    docs = [{"id": str(i), "domain": "code", "text": text[i * 400:(i + 1) * 400]} for i in range(60)]
    shards.run(TokenizeConfig(val_fraction=0.1), tok, iter(docs), ["code"], out, {})
    return out


def _losses(out: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (out / "log.jsonl").open()]


def _single(tokens: Path, out: Path, ckpt: Path | None = None) -> dict:
    """One process, the global batch of two processes x 4 rows."""
    out.mkdir(parents=True, exist_ok=True)

    cfg = TrainConfig(steps=6, batch_size=8, grad_accum=2, warmup_steps=2, eval_every=3,
                      eval_batches=2, log_every=1, checkpoint_every=3, lr=3e-3)
    model = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, seq_len=32, vocab_size=258)
    counts = train(cfg, model, tokens, RunPaths(out, checkpoints=ckpt), seed=5)
    return counts


@pytest.fixture(scope="module")
def single(tokens, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("single")
    return out, _single(tokens, out)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(tokens, single, tmp_path, mode):
    res = _torchrun([str(WORKER), str(tokens), str(tmp_path / mode), "4", mode])
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"x 2 processes ({mode.upper()})" in res.stderr
    counts = json.loads((tmp_path / mode / "counts.json").read_text())
    assert counts["processes"] == 2
    got, ref = _losses(tmp_path / mode), _losses(single[0])
    assert len(got) == len(ref) == 6
    assert got == pytest.approx(ref, abs=2e-4)      # same data, same updates, fp reduction order
    assert ref[-1] < ref[0]
    assert counts["val_loss_final"] == pytest.approx(single[1]["val_loss_final"], abs=2e-4)
    # the final weights are whole (gathered from the shards under FSDP), loadable anywhere
    a = load_file(tmp_path / mode / "model.safetensors")
    b = load_file(single[0] / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_fsdp_kill_and_resume_continues_exactly(tokens, tmp_path):
    """Killed after the step-3 checkpoint, resumed under FSDP: the same run as uninterrupted.
    The checkpoint is unsharded, so one process can resume it too."""
    full = tmp_path / "full"
    assert _torchrun([str(WORKER), str(tokens), str(full), "4", "fsdp"]).returncode == 0
    run = tmp_path / "killed"
    killed = _torchrun([str(WORKER), str(tokens), str(run), "4", "fsdp", "4"])
    assert killed.returncode != 0 and not (run / "log.jsonl").exists()
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == ["step-0000003"]
    resumed = _torchrun([str(WORKER), str(tokens), str(run), "4", "fsdp"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "(step 3)" in resumed.stderr
    assert _losses(run) == _losses(full)
    a, b = load_file(full / "model.safetensors"), load_file(run / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the same checkpoint resumed by one process with the same global batch
    shutil.copytree(run / "ckpt", tmp_path / "ckpt1")
    for p in (tmp_path / "ckpt1").iterdir():
        if p.name != "step-0000003":
            shutil.rmtree(p)
    _single(tokens, tmp_path / "one", tmp_path / "ckpt1")
    assert _losses(tmp_path / "one") == pytest.approx(_losses(full), abs=2e-4)


def test_pretrain_train_under_torchrun(tmp_path):
    from pretrain.pipeline import run_stages
    from pretrain.run_config import load_config
    overrides = tiny_overrides(tmp_path, train__steps="8", train__checkpoint_every="4")
    run_stages(load_config(None, overrides), ("data", "tokenizer", "tokenize"), force=set())
    args = ["-m", "pretrain", "train", *(f"--{k}={v}" for k, v in overrides)]
    res = _torchrun(args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((tmp_path / "runs" / "tiny" / "train" / "manifest.json").read_text())
    assert manifest["counts"]["processes"] == 2
    assert manifest["counts"]["val_loss_final"] < manifest["counts"]["val_loss_initial"]
    again = _torchrun(args, cwd=tmp_path)   # up to date: both ranks skip
    assert again.returncode == 0 and "up to date" in again.stderr
    bad = _torchrun(["-m", "pretrain", "eval", *args[3:]], cwd=tmp_path)
    assert bad.returncode != 0 and "only `pretrain train`" in bad.stderr
