"""`pretrain verify RUN` through the real CLI: a run as written verifies; then each kind of
damage (same-size change, truncation, deletion, a file slipped in, a damaged checkpoint
shard, an unreadable manifest) is named, file by file, and the exit status is 1."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain.pipeline import run_stages
from pretrain.run_config import load_config

from ..conftest import tiny_overrides


def _verify(run: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pretrain", "verify", str(run)],
                          capture_output=True, text=True, timeout=120)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("verify")
    cfg = load_config(None, tiny_overrides(root, train__steps="12", train__checkpoint_every="4",
                                           device="cpu"))
    run_stages(cfg, ("data", "tokenizer", "tokenize", "train"), force=set())
    return root / "runs" / "tiny"


def test_an_untouched_run_verifies(run):
    res = _verify(run)
    assert res.returncode == 0, res.stdout + res.stderr
    checked = int(res.stdout.split("verify: ")[1].split()[0])
    assert checked > 10 and "all match their records" in res.stdout


def test_every_damaged_file_is_named(run, tmp_path):
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    ckpt = sorted((copy / "checkpoints").glob("*/step-*"))[-1]
    docs = sorted((copy / "data").glob("docs-*.jsonl"))[0]
    damaged = {
        copy / "train" / "model.safetensors": "sha256 differs",  # same size
        docs: "sha256 differs",
        copy / "tokenizer" / "tokenizer.json": "bytes,",          # truncated
        next(ckpt.glob("*.distcp")): "sha256 differs",
    }
    _flip(copy / "train" / "model.safetensors")
    _flip(docs)
    tok = copy / "tokenizer" / "tokenizer.json"
    tok.write_bytes(tok.read_bytes()[:-10])
    _flip(next(ckpt.glob("*.distcp")))
    gone = sorted((copy / "tokenize").rglob("*.bin"))[0]
    gone.unlink()
    (copy / "data" / "stray.txt").write_text("not written by the stage")
    res = _verify(copy)
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    for path, what in damaged.items():
        assert any(line.startswith(f"{path}:") and what in line for line in lines), path
    assert f"{gone}: missing" in lines
    assert f"{copy / 'data' / 'stray.txt'}: not in the manifest" in lines
    assert lines[-1].endswith("6 problems")


def test_an_unreadable_manifest_or_a_folder_that_is_no_run(run, tmp_path):
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    (copy / "eval").mkdir(exist_ok=True)
    (copy / "eval" / "manifest.json").write_text("{")
    res = _verify(copy)
    assert res.returncode == 1 and f"{copy / 'eval' / 'manifest.json'}: unreadable" in res.stdout
    res = _verify(tmp_path / "nothing")
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "not a run" in res.stderr
