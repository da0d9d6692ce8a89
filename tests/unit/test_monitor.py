"""Training metrics: per-domain val loss and bpb in the log, TensorBoard and W&B offline
files, memory, the plain log line, and the wall-clock budget (train/loop.py, monitor.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pretrain.model.config import ModelConfig
from pretrain.train import optim
from pretrain.train.config import TrainConfig
from pretrain.train.loop import RunPaths, train
from pretrain.train.monitor import log_line
from pretrain.train.optim import lr_at

from ..conftest import code_and_prose_shards

MODEL = ModelConfig(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, seq_len=16, vocab_size=258)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return code_and_prose_shards(tmp_path_factory.mktemp("tokens"))


def _train(tokens: Path, tmp_path: Path, **kw) -> tuple[dict, list[dict]]:
    cfg = TrainConfig(**{**dict(steps=6, batch_size=4, warmup_steps=2, eval_every=3,
                                eval_batches=2, log_every=2, checkpoint_every=0), **kw})
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    counts = train(cfg, MODEL, tokens, RunPaths(out, monitor=tmp_path / "tb"), seed=1)
    return counts, [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_val_loss_per_domain_and_bpb_are_logged(tokens: Path, tmp_path: Path, capsys):
    counts, log = _train(tokens, tmp_path, tensorboard=False)
    assert [r["step"] for r in log] == [2, 3, 4, 6]  # every log_every steps and at every eval
    evals = [r for r in log if "val_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    for r in evals:
        assert set(r["val"]) == {"code", "prose"}
        losses = [m["loss"] for m in r["val"].values()]
        assert min(losses) <= r["val_loss"] <= max(losses)   # the token-weighted mean
        # bytes from the tokenizer the shards carry: 1 byte per token, 0 for BOS/EOS
        # (so a little above loss / ln 2: the few BOS/EOS targets cost bits, add no bytes)
        per_token = r["val_loss"] / math.log(2)
        assert per_token - 1e-5 <= r["val_bpb"] <= per_token * 1.05
    assert all(r["mem_gb"] > 0.01 and 0 < r["mfu"] for r in log)
    assert counts["val_bpb_final"] == evals[-1]["val_bpb"] and counts["steps"] == 6
    # the end's MFU is over every timed step, as its tokens/s (the report put the median
    # of the records beside total FLOPs and time, 42.1% where they gave 13.8%)
    assert counts["mfu"] == pytest.approx(counts["tok_per_s"] * MODEL.flops_per_token()
                                          / (counts["peak_gflops"] * 1e9), rel=0.01)
    err = capsys.readouterr().err
    assert "train: step 6/6  loss " in err and " MFU " in err and " GB  val " in err
    assert "[code " in err and ", prose " in err


def test_an_mfu_above_100_percent_in_the_log_lines_is_explained_once(tokens: Path,
                                                                     tmp_path: Path, capsys):
    """Only the end line explained an MFU above 100%; on a busy machine the per-step lines
    read 127% with an end line of 27%, and nothing said why."""
    counts, log = _train(tokens, tmp_path, tensorboard=False, peak_tflops=1e-9)  # 1 kFLOP/s
    assert all(r["mfu"] > 1 for r in log if "mfu" in r)
    err = capsys.readouterr().err
    first = next(r["step"] for r in log if "mfu" in r)
    assert err.count("train: MFU ") == 1
    assert f"at step {first}: above 100%: the peak is too low; train.peak_tflops is per " \
           "device" in err


def test_log_line_without_optional_fields():
    line = log_line({"step": 5, "loss": 2.5, "lr": 1e-3, "grad_norm": 0.5, "tok_per_s": 1234.0,
                     "mem_gb": 1.5, "val_loss": 2.25}, 10)
    assert line == ("train: step 5/10  loss 2.5000  lr 1.00e-03  gnorm 0.500  1,234 tok/s  "
                    "mem 1.50 GB  val 2.2500")


def test_tensorboard_event_files_hold_the_scalars(tokens: Path, tmp_path: Path):
    pytest.importorskip("tensorboard", reason="tensorboard is a core dependency; not installed here")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _, log = _train(tokens, tmp_path)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "perf/mfu", "perf/mem_gb", "val/loss", "val/bpb",
            "val/loss/code", "val/bpb/prose"} <= tags
    got = acc.Scalars("train/loss")   # stored as float32
    assert [e.step for e in got] == [r["step"] for r in log]
    assert [e.value for e in got] == pytest.approx([r["loss"] for r in log], rel=1e-6)


def test_wandb_offline_needs_no_account(tokens: Path, tmp_path: Path, monkeypatch):
    pytest.importorskip("wandb", reason="W&B is optional: pip install wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    _train(tokens, tmp_path, tensorboard=False, wandb="offline", steps=3)
    runs = list((tmp_path / "tb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


@pytest.mark.parametrize("sync,log_every", [("step", 1), ("lagged", 3)])
def test_time_budget_stops_training_and_decays_the_schedule(tokens: Path, tmp_path: Path,
                                                            sync: str, log_every: int):
    """Also with the host reading steps late (lagged): the step that finds the budget spent
    is the last, evaluated."""
    # 2 s: at a load of 6 on 2 cores a 1 s budget held 2 steps
    counts, log = _train(tokens, tmp_path, steps=100_000, time_budget_s=2.0, tensorboard=False,
                         log_every=log_every, eval_every=100_000, warmup_steps=0,
                         min_lr_ratio=0.0, host_sync=sync)
    assert counts["train_time_s"] >= 2.0 and 2 < counts["steps"] < 100_000
    assert log[-1]["step"] == counts["steps"] and "val_loss" in log[-1]  # a final eval
    lrs = [r["lr"] for r in log]
    # decays with the time spent (how far depends on how long the last step took: a busy
    # machine's last step may start at 70% of the budget), from the peak (no warmup; the
    # first logged step's lr has decayed already, to 0.68 of it at a load of 6)
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.5 * TrainConfig().lr


@pytest.mark.parametrize("schedule", ["cosine", "linear", "wsd"])
def test_time_fraction_schedule_matches_the_step_schedule(schedule: str):
    """With a time budget, a run's time fraction plays the role of step / steps."""
    cfg = TrainConfig(steps=1000, warmup_steps=0, schedule=schedule, decay_frac=0.3, lr=1.0,
                      min_lr_ratio=0.1)
    for step in (0, 250, 600, 700, 850, 999):
        assert lr_at(step, cfg, step / 1000) == pytest.approx(lr_at(step, cfg), abs=2e-3)
    assert lr_at(5, cfg, 1.7) == pytest.approx(0.1)   # past the budget: the floor
    # the step cap reached before the budget: the schedule ends there all the same (it
    # stayed at the peak, and a budgeted run stopped by train.steps was never annealed)
    for step in (600, 850, 999):
        assert lr_at(step, cfg, 0.05) == pytest.approx(lr_at(step, cfg), abs=2e-3)


def test_logs_that_cannot_be_written_are_one_line_naming_the_file(tmp_path: Path):
    """A full disk (or anything in the way) at the end of training: a one-line error naming
    log.jsonl, not a bare OSError. Their values are strict JSON: NaN is null."""
    from pretrain.config import PretrainError
    from pretrain.train.monitor import write_logs
    blocked = tmp_path / "train"
    blocked.write_text("")   # a file where the folder should be
    with pytest.raises(PretrainError, match=f"could not write {blocked}/log.jsonl"):
        write_logs(blocked, [{"step": 1, "loss": 2.0}], [], [])
    write_logs(tmp_path, [{"step": 1, "loss": 2.0}], [{"loss": math.nan, "norm": -math.inf}], [])
    assert (tmp_path / "events.jsonl").read_text() == '{"loss": null, "norm": null}\n'


@pytest.mark.parametrize("every", [0, 4])
def test_final_weights_that_cannot_be_written_say_where_the_rerun_starts(
        tokens: Path, tmp_path: Path, every: int):
    """It said 'make room and rerun to write the weights' where the rerun retrained from
    step 0, and the logs of the failed run were lost: they are kept with the checkpoints."""
    from pretrain.config import PretrainError
    out, ckpts = tmp_path / "out", tmp_path / "ckpt"
    (out / "model.safetensors").mkdir(parents=True)   # in the way of the final weights
    cfg = TrainConfig(steps=6, batch_size=4, warmup_steps=2, eval_every=3, eval_batches=2,
                      log_every=2, checkpoint_every=every, tensorboard=False)
    with pytest.raises(PretrainError) as e:
        train(cfg, MODEL, tokens, RunPaths(out, checkpoints=ckpts), seed=1)
    if every:   # the last step is a checkpoint: the rerun only writes the weights
        assert "step-0000006, is intact and the same command resumes from it" in str(e.value)
        assert (ckpts / "log.jsonl").read_text().count("\n") == 4   # steps 2, 3, 4, 6
    else:
        assert "no checkpoint was kept: the same command trains again from step 0" in str(e.value)


def test_a_tensorboard_folder_that_cannot_be_made_leaves_the_run_to_log_jsonl(
        tmp_path: Path, capsys):
    """It stopped the run at its start (a 70-line traceback); a failure later in the run
    already stopped TensorBoard alone."""
    pytest.importorskip("torch.utils.tensorboard")
    from pretrain.train.monitor import Monitor
    (tmp_path / "tb").write_text("")   # a file where the folder should be
    mon = Monitor(tmp_path / "tb" / "train-key", True, "off", "p", "r", {}, 0)
    assert mon.tb is None
    mon.log({"step": 1, "loss": 2.0})   # goes on without it
    assert "train: no TensorBoard: could not write" in capsys.readouterr().err


def test_a_busy_cpu_does_not_measure_the_fp32_peak_on_a_tiny_matmul(monkeypatch):
    """A machine busy for long made every matmul slow, and the side stopped growing at 256,
    whose peak (0.8 GFLOP/s for a usual 215) later logged an MFU of 121% and a bf16 hint of
    23.9x: fp32 is measured at side 1024 at least, and an MFU above 100% is explained."""
    sides: list[int] = []
    real_randn = torch.randn
    clock = iter(range(10**6))

    def randn(*size, **kw):
        sides.append(size[0])
        return real_randn(*size, **kw)
    monkeypatch.setattr(optim.torch, "randn", randn)
    monkeypatch.setattr(optim.time, "perf_counter", lambda: next(clock) * 0.1)  # all slow
    optim.matmul_flops(torch.device("cpu"))
    assert min(sides) >= 1024
    sides.clear()
    optim.matmul_flops(torch.device("cpu"), dtype=torch.float16)   # no fast path: stays small
    assert sides[0] == 256 and max(sides) == 256
    measured = optim.Peaks(1e9, 1e9, "the measured fp32 matmul", "cpu", other=("bf16", 1.0))
    assert "above 100%" in measured.summary(1.21) and "above" not in measured.summary(0.5)
    assert optim.Peaks(None, None, "", "cpu").summary(0.5) == ""


def test_the_loss_plot_draws_every_series_even_of_one_point(tmp_path, monkeypatch):
    """A run evaluated only at its end (and step 0, from the manifest) had each domain's val
    curve in the legend and nothing drawn: a dashed line of one point is not drawn. Each
    series is drawn with markers where it may have one point; the step axis is in whole
    steps."""
    matplotlib = pytest.importorskip("matplotlib", reason="the report's plot needs it")
    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    from pretrain.report import _plot
    drawn = []
    real = Axes.plot

    def plot(self, *args, **kwargs):   # matplotlib's own, the lines it made kept
        lines = real(self, *args, **kwargs)
        drawn.extend(lines)
        return lines

    monkeypatch.setattr(Axes, "plot", plot)
    val = {"code": {"loss": 5.0}, "prose": {"loss": 6.0}}
    log = [{"step": 0, "val_loss": 5.5, "val": val},
           {"step": 1, "loss": 5.4, "val_loss": 5.3, "val": {"code": {"loss": 4.9}}}]
    assert "loss.png" in _plot(log, tmp_path / "loss.png")
    by_label = {line.get_label(): line for line in drawn}
    assert set(by_label) == {"train loss", "val loss", "val loss, code", "val loss, prose"}
    for label, line in by_label.items():
        points = len(line.get_xdata())
        assert points >= 2 or line.get_marker() not in (None, "None", "", " "), label
    assert len(by_label["val loss, prose"].get_xdata()) == 1   # step 0's, from the manifest
