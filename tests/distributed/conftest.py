"""What the multi-process tests share: byte-level token shards, a torchrun launcher, and
one-process reference runs with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pretrain.tokenizer import shards
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import BOS, EOS, TokenizeConfig
from pretrain.train.loop import RunPaths, train

from .common import model_config, train_config

WORKER = Path(__file__).with_name("worker.py")


def torchrun(args: list[str], n: int = 2, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={n}", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def worker(tokens: Path, out: Path, n: int = 2, **kw: object) -> subprocess.CompletedProcess:
    """The worker under torchrun; keyword arguments are its options (kill_at -> --kill-at)."""
    args = [str(WORKER), str(tokens), str(out)]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    res = torchrun(args, n)
    return res


def losses(out: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (out / "log.jsonl").open()]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model.safetensors")


def single(tokens: Path, out: Path, batch: int, accum: int = 2, steps: int = 6,
           arch: str = "llama", ckpt: Path | None = None) -> dict:
    """One process with ``batch`` rows per micro-batch: the global batch of the layouts."""
    out.mkdir(parents=True, exist_ok=True)
    return train(train_config(steps, batch, accum), model_config(arch), tokens,
                 RunPaths(out, checkpoints=ckpt), seed=5, device="cpu")


@pytest.fixture(scope="session")
def tokens(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokens")
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    text = Path(json.__file__).read_text() * 3
    docs = [{"id": str(i), "domain": "code", "text": text[i * 400:(i + 1) * 400]} for i in range(60)]
    shards.run(TokenizeConfig(val_fraction=0.1), tok, iter(docs), ["code"], out, {})
    return out


@pytest.fixture(scope="session")
def reference(tokens, tmp_path_factory):
    """One-process runs, computed once each: reference(batch, accum, arch, steps) -> out
    folder (with counts.json)."""
    done: dict[tuple, Path] = {}

    def get(batch: int, accum: int = 2, arch: str = "llama", steps: int = 6) -> Path:
        key = (batch, accum, arch, steps)
        if key not in done:
            out = tmp_path_factory.mktemp(f"single-{batch}-{accum}-{arch}-{steps}")
            counts = single(tokens, out, batch, accum, steps, arch=arch)
            (out / "counts.json").write_text(json.dumps(counts))
            done[key] = out
        return done[key]
    return get
