"""Data parallel training (DDP and FSDP2) with 2 gloo processes on CPU, launched by torchrun:
the same steps as one process with the same global batch, sharded checkpoints that resume
exactly, and ``pretrain train`` itself under torchrun."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from pretrain.cli import main
from pretrain.model import io
from pretrain.model.config import ModelConfig
from pretrain.model.transformer import Transformer
from pretrain.pipeline import run_stages
from pretrain.run_config import load_config
from pretrain.train import state

from ..conftest import tiny_overrides
from .conftest import losses, single, torchrun, weights, worker


@pytest.mark.parametrize("layout, name", [("", "DDP 2"), ("dp_shard=-1", "FSDP 2")])
def test_two_processes_match_one_with_the_same_global_batch(tokens, reference, tmp_path,
                                                             layout, name):
    res = worker(tokens, tmp_path / "run", batch=4, parallel=layout or "dp_replicate=-1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"x 2 processes ({name})" in res.stderr
    counts = json.loads((tmp_path / "run" / "counts.json").read_text())
    ref = reference(8)
    got, want = losses(tmp_path / "run"), losses(ref)
    assert counts["processes"] == 2 and len(got) == len(want) == 6
    assert got == pytest.approx(want, abs=2e-4)      # same data, same updates, fp reduction order
    assert want[-1] < want[0]
    # the final weights are whole (consolidated from the shards under FSDP), loadable anywhere
    a, b = weights(tmp_path / "run"), weights(ref)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    # each FSDP rank holds half the parameters and AdamW's two moments of them; DDP all
    whole = sum(t.numel() for t in b.values())
    for rank in (0, 1):
        held = json.loads((tmp_path / "run" / f"held_rank{rank}.json").read_text())
        share = 0.5 if name == "FSDP 2" else 1.0
        assert held["params"] / whole == pytest.approx(share, abs=0.01), held
        assert held["optimizer"] == 2 * held["params"]


@pytest.mark.slow
def test_ddp_with_the_host_reading_steps_late_makes_the_same_run(tokens, tmp_path):
    """host_sync = "lagged" under DDP (2 processes): the skip decided on the device (a NaN
    gradient norm at data position 6, read late), the host reading a step late between the
    steps that log or evaluate: the same skip, losses and weights, bit for bit, as
    reading every step."""
    runs = {}
    for sync in ("step", "lagged"):
        res = worker(tokens, tmp_path / sync, batch=4, steps=10, parallel="dp_replicate=-1",
                     host_sync=sync, log_every=4, eval_every=5, nan_at=6)
        assert res.returncode == 0, res.stderr[-3000:]
        counts = json.loads((tmp_path / sync / "counts.json").read_text())
        runs[sync] = (counts["skipped_steps"], losses(tmp_path / sync), weights(tmp_path / sync))
    assert runs["step"][0] == runs["lagged"][0] == 1
    assert runs["lagged"][1] == runs["step"][1] and len(runs["step"][1]) == 4  # 4 5 8 10
    a, b = runs["lagged"][2], runs["step"][2]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("sync", ["step", "lagged"])
def test_a_time_budget_under_ddp_gives_every_rank_one_clock(tokens, tmp_path, sync):
    """time_budget_s and the schedule that follows it, under DDP with the ranks' own clocks
    apart: rank 1's runs 1.5 times as fast as rank 0's. Every rank must still step with the
    same learning rates (else the replicas drift apart) and stop at the same step (else one
    waits forever in an all-reduce)."""
    out = tmp_path / sync
    res = worker(tokens, out, batch=4, steps=100_000, parallel="dp_replicate=-1",
                 host_sync=sync, log_every=4, eval_every=100_000, budget=2.5, clock_rank1=1.5)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = (json.loads((out / f"lrs_rank{r}.json").read_text()) for r in (0, 1))
    assert len(a) >= 8, a        # the budget, not a crash, ended it
    assert a == b
    assert max(a) > 2 * a[-1]    # the schedule followed the clock: warmup, then the decay
    counts = json.loads((out / "counts.json").read_text())
    assert counts["steps"] == len(a)
    # the last checkpoint keeps the agreed clock (rank 1's, 1.5x), not rank 0's own time:
    # else a resume would rewind the clock and train past the budget
    last = state.latest_intact(out / "ckpt")
    assert last is not None
    saved = json.loads((last / state.STATE).read_text())["t_train"]
    assert saved > 1.3 * counts["train_time_s"], (saved, counts["train_time_s"])


@pytest.mark.slow
def test_a_time_budget_under_ddp_resumed_runs_to_its_end(tokens, tmp_path):
    """Killed at step 102 of an 8 s budget, resumed from the step-100 checkpoint with lagged
    host reads (the ranks agree on the clock only at some steps, carrying it on between
    them with the mean step time they agreed on): the run ends when the budget is spent,
    not a step or two after the resume (as the restored time divided by this process's
    steps alone, taken as the mean step time, would make it), nor early when the first
    timed step after the resume is slow (0.4 s: CI once ended at 4.85 s of 6 on a slow first
    step), nor far past the budget when the steps after a fast first one are slower."""
    out = tmp_path / "run"
    kw = dict(batch=4, steps=100_000, parallel="dp_replicate=-1", host_sync="lagged",
              log_every=1000, eval_every=100_000, checkpoint_every=100, budget=8)
    killed = worker(tokens, out, kill_at=102, **kw)
    assert killed.returncode != 0 and (out / "ckpt" / "step-0000100").is_dir()
    # data position 100 is the resumed process's warm-up step, 101 its first timed one
    for name, sleep in (("slow first", "101:0.4"), ("slower later", "103-:0.1")):
        run = tmp_path / name
        shutil.copytree(out, run)
        resumed = worker(tokens, run, sleep=sleep, **kw)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "(step 100)" in resumed.stderr
        counts = json.loads((run / "counts.json").read_text())
        assert 8 * 0.9 <= counts["train_time_s"] <= 8 * 1.2 and counts["steps"] > 105, \
            (name, counts)


def test_fsdp_kill_and_resume_continues_exactly(tokens, tmp_path):
    """Killed after the step-3 checkpoint, resumed under FSDP: the same run as uninterrupted.
    The checkpoint is sharded (each rank wrote its shards), and one process resumes it too."""
    full = tmp_path / "full"
    assert worker(tokens, full, batch=4, parallel="dp_shard=-1").returncode == 0
    run = tmp_path / "killed"
    killed = worker(tokens, run, batch=4, parallel="dp_shard=-1", kill_at=4)
    # killed at the fifth step (data position 4): the log of steps 1-4 is left in the
    # checkpoint folder (the run's own is written at its end)
    assert killed.returncode != 0 and not (run / "log.jsonl").exists()
    assert len(losses(run / "ckpt")) == 4
    ckpt = run / "ckpt" / "step-0000003"
    assert sorted(p.name for p in (run / "ckpt").iterdir() if p.is_dir()) == [ckpt.name]
    assert {p.name for p in ckpt.glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}
    resumed = worker(tokens, run, batch=4, parallel="dp_shard=-1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "(step 3)" in resumed.stderr
    assert losses(run) == losses(full)
    a, b = weights(full), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the same checkpoint resumed by one process with the same global batch
    shutil.copytree(run / "ckpt", tmp_path / "ckpt1")
    for p in (tmp_path / "ckpt1").iterdir():
        if p.name != ckpt.name:
            shutil.rmtree(p)
    single(tokens, tmp_path / "one", 8, ckpt=tmp_path / "ckpt1")
    assert losses(tmp_path / "one") == pytest.approx(losses(full), abs=2e-4)


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tokens, reference, tmp_path):
    """SIGUSR1 reaching rank 1 only: both ranks finish the step, write one checkpoint at the
    same step and exit 75; the rerun resumes from it to one uninterrupted process's losses
    and weights (that a resume under FSDP is bit for bit is the kill test's above)."""
    run = tmp_path / "run"
    stopped = worker(tokens, run, batch=4, parallel="dp_shard=-1", steps=8, signal_at=4)
    assert stopped.returncode != 0   # torchrun reports the workers' exit code 75 as a failure
    said = re.findall(r"rank (\d): preempted: stopped by a signal at step (\d+),", stopped.stderr)
    # the signal comes during step 5 (data position 4): both ranks stop after it
    assert sorted(said) == [("0", "5"), ("1", "5")]
    assert [p.name for p in state.complete(run / "ckpt")] == ["step-0000003", "step-0000005"]
    resumed = worker(tokens, run, batch=4, parallel="dp_shard=-1", steps=8)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "(step 5)" in resumed.stderr
    full = reference(8, steps=8)
    assert losses(run) == pytest.approx(losses(full), abs=2e-4)
    a, b = weights(full), weights(run)
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_pretrain_train_under_torchrun(tmp_path, capsys):
    overrides = tiny_overrides(tmp_path, train__steps="8", train__checkpoint_every="4",
                               train__batch_size="4", device="cpu")  # gloo, whatever GPUs
    run_stages(load_config(None, overrides), ("data", "tokenizer", "tokenize"), force=set())
    args = ["-m", "pretrain", "train", *(f"--{k}={v}" for k, v in overrides)]
    res = torchrun(args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((tmp_path / "runs" / "tiny" / "train" / "manifest.json").read_text())
    assert manifest["counts"]["processes"] == 2
    assert manifest["counts"]["val_loss_final"] < manifest["counts"]["val_loss_initial"]
    again = torchrun(args, cwd=tmp_path)   # up to date: both ranks skip
    assert again.returncode == 0 and "up to date" in again.stderr
    # its config rerun in one process: a layout of 2 (not in the key) does not refuse the
    # train stage it skips, and refuses it when it is to run (the first was refused)
    one = [f"--{k}={v}" for k, v in overrides]
    assert main(["train", *one, "--train.parallel.tp=2"]) == 0
    assert "up to date" in capsys.readouterr().err
    assert main(["train", *one, "--train.parallel.tp=2", "--force", "train"]) == 2
    assert "= 2 processes, but there are 1" in capsys.readouterr().err

    # resumed from its last checkpoint (step 8, the end) by one process: at the same
    # per-rank batch it would train on half the rows (other data, another global batch)
    # and is refused; at twice the batch it continues from the two ranks' checkpoint and
    # ends where they ended
    run = tmp_path / "runs" / "tiny"
    shutil.rmtree(run / "train")
    rc = main(["train", *one])
    err = capsys.readouterr().err
    assert rc == 2, err[-3000:]
    assert "was trained on 8 rows a micro-step" in err and "4 x 1 = 4" in err, err[-2000:]
    assert "resume with 2 data-parallel ranks or train.batch_size = 8" in err
    assert main(["train", *one, "--train.batch_size=8"]) == 0
    err = capsys.readouterr().err
    assert "continuing from" in err and "(step 8)" in err
    again = json.loads((run / "train" / "manifest.json").read_text())["counts"]
    assert again["processes"] == 1 and again["steps"] == 8
    assert again["val_loss_final"] == pytest.approx(manifest["counts"]["val_loss_final"],
                                                    abs=2e-4)


@pytest.mark.slow
def test_pretrain_train_under_torchrun_says_each_error_once(tmp_path):
    """Errors every rank meets alike are printed once, by rank 0 (they were once a rank)."""
    overrides = tiny_overrides(tmp_path, train__steps="8", train__checkpoint_every="4",
                               train__batch_size="4", device="cpu")
    run_stages(load_config(None, overrides), ("data", "tokenizer", "tokenize"), force=set())
    args = ["-m", "pretrain", "train", *(f"--{k}={v}" for k, v in overrides)]
    bad = torchrun(["-m", "pretrain", "eval", *args[3:]], cwd=tmp_path)
    assert bad.returncode != 0 and bad.stderr.count("error: under torchrun only") == 1
    bad = torchrun([*args, "--train.parallel.tp=3", "--force", "train"], cwd=tmp_path)
    assert bad.returncode != 0, bad.stderr[-3000:]
    assert bad.stderr.count("= 3 processes, but there are 2") == 1, bad.stderr[-3000:]
    # a layout the model or batch cannot take, training again: in the first checks, said
    # once (each rank failed in its model build, and said it)
    bad = torchrun([*args, "--train.parallel.pp=2", "--train.parallel.pp_microbatches=3",
                    "--force", "train"], cwd=tmp_path)
    assert bad.returncode != 0, bad.stderr[-3000:]
    assert bad.stderr.count("must be a multiple of the pipeline's microbatches (3)") == 1, \
        bad.stderr[-3000:]
    # rank 0's OSError while it opens the run (a folder where config.toml goes): the others
    # stop with it, silently (rank 1 waited on rank 0, and printed gloo's traceback when
    # rank 0 went)
    # a checkpoint every rank reads alike, refused (another vocabulary): said once (each
    # rank printed it)
    other = ModelConfig(d_model=16, n_layers=1, n_heads=2, seq_len=16, vocab_size=300)
    (tmp_path / "other").mkdir()
    io.save(tmp_path / "other", other, Transformer(other).state_dict(), {})
    bad = torchrun([*args, f"--train.init_from={tmp_path / 'other'}"], cwd=tmp_path)
    assert bad.returncode != 0, bad.stderr[-3000:]
    assert bad.stderr.count("error: train.init_from: the checkpoint has 300 token ids") == 1, \
        bad.stderr[-3000:]
    conf = tmp_path / "runs" / "tiny" / "config.toml"
    conf.unlink()
    conf.mkdir()
    bad = torchrun(args, cwd=tmp_path)
    assert bad.returncode != 0 and bad.stderr.count("error:") == 1, bad.stderr[-3000:]
    assert "Is a directory" in bad.stderr and "[rank1]" not in bad.stderr, bad.stderr[-3000:]


@pytest.mark.slow
def test_ctrl_c_under_torchrun_is_said_once(tmp_path):
    """Ctrl-C (SIGINT to the terminal's process group: the agent and every rank): each rank
    printed "interrupted; ..."; rank 0 says it."""
    overrides = tiny_overrides(tmp_path, train__steps="400", train__checkpoint_every="2",
                               train__log_every="1", train__batch_size="4", device="cpu")
    run_stages(load_config(None, overrides), ("data", "tokenizer", "tokenize"), force=set())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", "-m", "pretrain", "train",
                             *(f"--{k}={v}" for k, v in overrides)], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("train: step 4/"):
            os.killpg(proc.pid, signal.SIGINT)
            break
    rest = "".join(seen) + proc.stderr.read()
    proc.wait(timeout=120)
    assert rest.count("interrupted; completed stages are kept") == 1, rest[-3000:]


@pytest.mark.slow
def test_nodes_given_other_settings_or_run_directories_are_refused(tmp_path, monkeypatch):
    """A node (here: rank 1) given another train.lr trained its replica with it, silently,
    and one given a run directory of its own kept its shards of every checkpoint there
    (rank 0's then read as damaged): both refused at the start, said once."""
    overrides = tiny_overrides(tmp_path, train__steps="4", train__batch_size="4", device="cpu")
    run_stages(load_config(None, overrides), ("data", "tokenizer", "tokenize"), force=set())
    script = tmp_path / "by_rank.py"   # the CLI, with one more option on rank 1
    script.write_text("import os, sys\nfrom pretrain.cli import main\n"
                      "extra = [os.environ['RANK1_EXTRA']] if os.environ['RANK'] == '1' else []\n"
                      "sys.exit(main(sys.argv[1:] + extra))\n")
    args = [str(script), "train", *(f"--{k}={v}" for k, v in overrides)]
    monkeypatch.setenv("RANK1_EXTRA", "--train.lr=0.03")
    bad = torchrun(args, cwd=tmp_path)
    assert bad.returncode != 0
    assert bad.stderr.count("error: rank 1 was given other settings than rank 0: "
                            "train.lr; give every node") == 1, bad.stderr[-3000:]
    shutil.copytree(tmp_path / "runs", tmp_path / "elsewhere")
    monkeypatch.setenv("RANK1_EXTRA", f"--runs_dir={tmp_path / 'elsewhere'}")
    bad = torchrun(args, cwd=tmp_path)
    assert bad.returncode != 0
    assert bad.stderr.count("error: rank 1 of 2 does not see the run directory rank 0 opened") \
        == 1, bad.stderr[-3000:]
    assert not (tmp_path / "runs" / "tiny" / "train").exists()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dp_shard=-1", "pp=2"])
def test_pretrain_train_sharded_without_checkpoints_writes_its_model(tmp_path, layout):
    """``checkpoint_every = 0`` under a sharded layout: the final weights go through a
    temporary checkpoint every rank writes its shards into and rank 0 reads whole. Each
    rank but 0 had its own temporary stage folder, wrote there, and rank 0 failed reading
    (FileNotFoundError) after the last step: no model."""
    overrides = tiny_overrides(tmp_path, train__steps="3", train__checkpoint_every="0",
                               train__batch_size="4", device="cpu")
    run_stages(load_config(None, overrides), ("data", "tokenizer", "tokenize"), force=set())
    key, value = layout.split("=")
    args = ["-m", "pretrain", "train", *(f"--{k}={v}" for k, v in overrides),
            f"--train.parallel.{key}={value}"]
    res = torchrun(args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs" / "tiny"
    assert (run / "train" / "model.safetensors").is_file()
    assert not [p for p in run.rglob("*") if p.name == ".final" or p.name.startswith("step-")]


@pytest.mark.slow
def test_fp16_overflow_in_one_ranks_shard_halves_every_ranks_scale(tokens, tmp_path):
    """Under FSDP a rank's gradients are its own shards: an overflow in one rank's part must
    halve every rank's scale (else the ranks scale their gradients differently and the
    reduce-scatter sums them). torch's DTensor reduces the scaler's found_inf over the
    mesh; this guards that the loop keeps the ranks' scales equal on that path."""
    res = worker(tokens, tmp_path, batch=4, parallel="dp_shard=-1", precision="fp16",
                 overflow_at=2, steps=5)
    assert res.returncode == 0, res.stderr[-3000:]
    scales = [json.loads((tmp_path / f"scales_rank{r}.json").read_text()) for r in (0, 1)]
    assert scales[0] == scales[1] and 32768.0 in scales[0], scales
