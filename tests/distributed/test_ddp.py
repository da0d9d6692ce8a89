"""Data parallel training with 2 gloo processes on CPU, launched by torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain.model.config import ModelConfig
from pretrain.tokenizer import shards
from pretrain.tokenizer.bpe import BOS, EOS, Tokenizer
from pretrain.train.loop import TrainConfig, train

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
    shards.run(shards.TokenizeConfig(val_fraction=0.1), tok, iter(docs), ["code"], out, {})
    return out


def _losses(out: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (out / "log.jsonl").open()]


def test_two_processes_match_one_with_the_same_global_batch(tokens, tmp_path):
    res = _torchrun([str(WORKER), str(tokens), str(tmp_path / "ddp"), "4"])
    assert res.returncode == 0, res.stderr[-3000:]
    counts = json.loads((tmp_path / "ddp" / "counts.json").read_text())
    assert counts["processes"] == 2
    one = tmp_path / "one"
    one.mkdir()
    single: dict = {}
    cfg = TrainConfig(steps=6, batch_size=8, grad_accum=2, warmup_steps=2, eval_every=3,
                      eval_batches=2, log_every=1, checkpoint_every=0, lr=3e-3)
    model = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, seq_len=32, vocab_size=258)
    train(cfg, model, tokens, one, seed=5, counts=single)
    ddp, ref = _losses(tmp_path / "ddp"), _losses(one)
    assert len(ddp) == len(ref) == 6
    assert ddp == pytest.approx(ref, abs=2e-4)      # same data, same updates, fp reduction order
    assert ref[-1] < ref[0]
    assert counts["val_loss_final"] == pytest.approx(single["val_loss_final"], abs=2e-4)


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
