"""A full disk or a read-only run directory: one line that names the file and says what was
kept, never a traceback; the checkpoint before the failed one stays intact and the same
command resumes from it once there is room.

The disk is filled with the file size limit (``RLIMIT_FSIZE``, SIGXFSZ ignored so a write
fails with EFBIG as it would with ENOSPC), which any Linux process may lower for its child;
a real full tmpfs gives the same line (the closing note of issue 18 shows it)."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.api import CheckpointException

from pretrain import distributed
from pretrain.config import PretrainError
from pretrain.model.config import ModelConfig
from pretrain.model.transformer import Transformer
from pretrain.pipeline import run_stages
from pretrain.run_config import load_config
from pretrain.rundir import write_failure
from pretrain.train import state

from ..conftest import tiny_overrides

COMMON = {"train__steps": "30", "train__checkpoint_every": "5", "train__log_every": "1",
          "train__threads": "1", "device": "cpu"}


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _train(where: Path, limit: int | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "pretrain", "train",
            *(f"--{k}={v}" for k, v in tiny_overrides(where, **COMMON))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(args, cwd=where, env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_limit_file_size(limit) if limit else None)


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_keeps_the_one_before_and_the_rerun_resumes(tmp_path):
    run_stages(load_config(None, tiny_overrides(tmp_path, **COMMON)),
               ("data", "tokenizer", "tokenize"), force=set())
    first = _train(tmp_path)     # preempted after step 6: one intact checkpoint to keep
    assert first.stderr is not None
    for line in first.stderr:
        if line.startswith("train: step 6/"):
            first.send_signal(signal.SIGUSR1)
            break
    first.stderr.read()
    assert first.wait(timeout=300) == 75
    folder = next((tmp_path / "runs" / "tiny" / "checkpoints").iterdir())
    before = state.complete(folder)
    kept = before[-1]

    full = _train(tmp_path, limit=100_000)   # the next checkpoint (2 MB) cannot be written
    err = full.stderr.read() if full.stderr else ""
    assert full.wait(timeout=300) == 2, err[-2000:]
    assert "Traceback" not in err
    [line] = [x for x in err.splitlines() if x.startswith("error:")]
    assert "could not write" in line and "file size limit" in line
    assert f"{kept}, is intact" in line
    assert state.complete(folder) == before and state.verify(kept) is None
    assert not list(folder.glob("*.tmp")), "the failed checkpoint's partial files are left"

    again = _train(tmp_path)
    out = again.stderr.read() if again.stderr else ""
    assert again.wait(timeout=300) == 0, out[-2000:]
    assert f"resumed from {kept}" in out or f"resumed from {kept.name}" in out, out[-2000:]


def test_a_checkpoint_that_cannot_be_written_keeps_the_one_before(tmp_path):
    """The cheap half of the test above, in this process: a real write failure (the file
    size limit lowered around the save) inside DCP's save of the second checkpoint."""
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, seq_len=8, vocab_size=64)
    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randint(0, 64, (2, 8)), torch.randint(0, 64, (2, 8)))[1].backward()
    opt.step()
    folder, d = tmp_path / "checkpoints", distributed.Dist()
    kept = state.save(folder, 5, cfg, model, opt, {"tokens": 80}, keep_last=2, d=d)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    opt.step()   # the state the failed save would have held

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))   # a checkpoint is 0.7 MB
        with pytest.raises(PretrainError) as failed:
            state.save(folder, 10, cfg, model, opt, {"tokens": 160}, keep_last=2, d=d)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    line = str(failed.value)
    assert line.startswith(f"train: could not write {folder / 'step-0000010'}: the file size "
                           "limit"), line
    assert f"the checkpoint before it, {kept}, is intact; make room and rerun" in line
    assert state.complete(folder) == [kept] and state.verify(kept) is None
    assert not list(folder.glob("*.tmp")), "the failed checkpoint's partial files are left"

    again = Transformer(cfg)
    assert state.load(kept, again, torch.optim.AdamW(again.parameters()))["step"] == 5
    assert all(torch.equal(v, weights[k]) for k, v in again.state_dict().items())


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_a_read_only_run_directory_is_one_line(tmp_path):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    cmd = (f"mount -t tmpfs -o ro,size=1m tmpfs {mnt} && "
           f"{sys.executable} -m pretrain eval --runs_dir={mnt}/runs --name=x")
    p = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True)
    if "mount" in p.stderr and "pretrain" not in p.stderr and p.returncode != 2:
        pytest.skip(f"this machine allows no private mount: {p.stderr.strip()[:200]}")
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == (f"error: could not write {mnt}/runs/x: {mnt} is on a read-only "
                                "file system: a run directory must be writable (choose another "
                                "place with --runs_dir=...)")


def test_the_reason_is_found_however_the_library_wraps_it(tmp_path):
    target = tmp_path / "ckpt" / "step-1"
    enospc = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise enospc
        except OSError as inner:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from inner
    except RuntimeError as wrapped:
        assert "the disk is full" in write_failure(target, wrapped)
    dcp_style = CheckpointException("save", {0: OSError(errno.EROFS, "Read-only file system")})
    assert write_failure(target, dcp_style).endswith(f"{tmp_path} is on a read-only file system")
    assert "no permission to write in" in write_failure(target, PermissionError(errno.EACCES, "x"))
    other = write_failure(target, ValueError("bad header\nmore"))
    assert other == f"could not write {target}: ValueError: bad header"


STAGE_WRITER = """
import sys
from pathlib import Path
from pretrain.config import PretrainError
from pretrain.rundir import RunDir

def body(run):
    with open(run.out / "shard.bin", "wb") as f:   # a write names no file in its error
        f.write(b"x" * int(sys.argv[2]))

try:
    RunDir(Path(sys.argv[1])).execute("tokenize", "k", {}, {}, body)
except PretrainError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
"""


def test_a_stage_that_fills_the_disk_names_itself_and_leaves_nothing_half_written(tmp_path):
    """Outside training a full disk said only '[Errno 27] File too large' (or 28), naming
    neither the stage nor the file; a manifest that could not be written left its stage's
    temporary folder behind, which `pretrain verify` then failed on."""
    root = tmp_path / "runs" / "x"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-c", STAGE_WRITER, str(root), str(200_000)],
                       capture_output=True, text=True, env=env,
                       preexec_fn=_limit_file_size(100_000))
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == (
        f"error: stage tokenize: could not write {root}/tokenize: the file size limit "
        "(ulimit -f) of 100,000 bytes was reached; the stages before it are intact: raise "
        "the file size limit (ulimit -f) and rerun the same command")
    assert [q.name for q in root.iterdir()] == []   # no .tmp-tokenize-PID
    ok = subprocess.run([sys.executable, "-c", STAGE_WRITER, str(root), "1000"], env=env)
    assert ok.returncode == 0 and (root / "tokenize" / "shard.bin").stat().st_size == 1000
    # a manifest that cannot be written takes the stage's temporary folder with it
    from pretrain.rundir import RunDir

    def blocks_the_manifest(run) -> None:
        (run.out / "manifest.json").mkdir()
    with pytest.raises(IsADirectoryError):
        RunDir(root).execute("eval", "k", {}, {}, blocks_the_manifest)
    assert sorted(q.name for q in root.iterdir()) == ["tokenize"]
