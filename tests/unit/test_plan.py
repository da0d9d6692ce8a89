"""Planning: parameter counts against published ones, FLOPs against a hand count, the
activation counts against what autograd saves, the memory estimate against measured
peaks, and the `pretrain plan` command (the laws and their fit: test_laws.py)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from pretrain.cli import main
from pretrain.config import PretrainError
from pretrain.hardware import get
from pretrain.model.config import ModelConfig
from pretrain.model.transformer import Transformer
from pretrain.plan.laws import (
    chinchilla_rule,
)
from pretrain.plan.memory import (
    Split,
    dropout_bytes,
    estimate,
    largest_batch,
    layer_bytes,
    layer_elements,
    outside_elements,
)
from pretrain.plan.report import duration, time_and_cost
from pretrain.run_config import load_config
from pretrain.train.config import TrainConfig
from pretrain.train.fits import check_memory
from pretrain.train.loop import RunPaths, train

ROOT = Path(__file__).resolve().parents[2]


def test_parameter_counts_equal_the_published_ones():
    gpt2 = ModelConfig(arch="gpt2", d_model=768, n_layers=12, n_heads=12, seq_len=1024,
                       vocab_size=50257)
    assert gpt2.num_params() == 124_439_808
    llama7 = ModelConfig(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32,
                         ffn_hidden=11008, vocab_size=32000, seq_len=4096)
    assert llama7.num_params() == 6_738_415_616
    llama70 = ModelConfig(d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                          ffn_hidden=28672, vocab_size=32000, seq_len=4096)
    assert llama70.num_params() == 68_976_648_192
    small = ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, seq_len=32, vocab_size=100)
    padding = 2 * (128 - 100) * 64   # embedding and head rows up to a multiple of 64
    assert small.num_params() + padding == sum(p.numel() for p in Transformer(small).parameters())


def test_flops_per_token_equal_a_hand_count():
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, seq_len=32,
                      vocab_size=100)  # head 16, kv dim 32, hidden 192
    per_layer = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 192   # q, k and v, o, w1 w3 w2
    matmul = 2 * per_layer + 100 * 64                            # and the head
    # QK^T and AV: per layer, 32 keys x 4 heads x (16 + 16) multiply-adds, 2 FLOPs each,
    # forward once and backward twice
    attention = 2 * 3 * 2 * 32 * 4 * (16 + 16)
    assert cfg.flops_per_token() == 6 * matmul + attention


def _saved_bytes(model: Transformer, x: torch.Tensor, fused: bool = True
                 ) -> tuple[int, torch.Tensor]:
    """Bytes of every tensor the forward saves for backward, counted by storage
    (parameters and buffers aside), and the logits."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in own:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits, _ = model(x, x, fused_loss=fused)
    return sum(seen.values()), logits


@pytest.mark.parametrize("kw", [dict(arch="llama", n_kv_heads=2), dict(arch="llama", n_kv_heads=4),
                                dict(arch="llama", d_model=96, n_heads=6, n_kv_heads=1),
                                dict(arch="gpt2"), dict(arch="mla"), dict(arch="mla", q_lora_rank=24)])
@pytest.mark.parametrize("fused", [False, True])
def test_activation_counts_are_what_autograd_saves(kw, fused):
    """Every tensor the forward saves for backward (parameters and buffers aside) plus the
    logits, counted by storage, equals the estimate's elements; with the fused chunked
    loss (no logits kept), plus the head's gradient that its forward keeps."""
    cfg = ModelConfig(**{**dict(d_model=64, n_layers=2, n_heads=4, seq_len=32, vocab_size=120), **kw})
    saved, logits = _saved_bytes(Transformer(cfg), torch.randint(0, 120, (3, 32)), fused)
    measured = saved + logits.nbytes - (0 if fused else 4)  # the scalar loss aside
    if cfg.arch == "gpt2":
        measured -= 8 * 32  # the (1, T) positions, per sequence length, not per token
    if fused:
        measured -= 4 * cfg.padded_vocab * cfg.d_model   # the head's gradient: not per token
    assert measured == 4 * 3 * 32 * (cfg.n_layers * layer_elements(cfg)
                                     + outside_elements(cfg, fused_loss=fused))


@pytest.mark.parametrize("kw", [dict(arch="llama", n_kv_heads=2), dict(arch="gpt2"),
                                dict(arch="mla"), dict(arch="mla", q_lora_rank=24)])
def test_activation_bytes_under_cpu_autocast_are_what_autograd_saves(kw):
    """Under bf16 autocast the residual stream, the norms and (on CPU) MLA's attention stay
    fp32: counted at 2 bytes an element, llama saved 1.22x the estimate, gpt2 1.15x, MLA
    1.45x. Per token (two batch sizes: autocast's weight copies are not per token)."""
    cfg = ModelConfig(**{**dict(d_model=64, n_layers=2, n_heads=4, seq_len=32, vocab_size=120), **kw})
    with torch.autocast("cpu", torch.bfloat16):
        small, big = (_saved_bytes(Transformer(cfg), torch.randint(0, 120, (b, 32)))[0]
                      for b in (3, 6))
    per_token = (big - small) / (3 * 32)
    assert per_token == cfg.n_layers * layer_bytes(cfg, True, cpu=True) \
        + 4 * outside_elements(cfg, fused_loss=True)
    want = estimate(cfg, 6, precision="bf16", cpu=True).activations \
        - estimate(cfg, 3, precision="bf16", cpu=True).activations
    assert big - small == want


def test_a_compiled_share_of_the_activations_moves_the_peak_only_where_they_make_it():
    """A compiled model keeps fewer activations; where the peak is the end of backward (the
    gradients), fewer activations do not lower it: taking 0.3x of them off the total had
    let through compiled runs that do not fit."""
    big = ModelConfig(d_model=2048, n_layers=24, n_heads=16, seq_len=512, vocab_size=32000)
    eager, compiled = (estimate(big, 2, precision="bf16", cpu=False, activation_share=s)
                       for s in (1.0, 0.7))
    assert compiled.activations == pytest.approx(0.7 * eager.activations)
    assert compiled.total == eager.total   # the gradients' end is the peak
    long = ModelConfig(d_model=256, n_layers=4, n_heads=4, seq_len=4096, vocab_size=32000)
    eager, compiled = (estimate(long, 8, precision="bf16", cpu=False, activation_share=s)
                       for s in (1.0, 0.7))
    assert compiled.total == pytest.approx(eager.total - 0.3 * eager.activations)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "mla"])
def test_dropout_adds_what_autograd_saves_for_it(arch):
    """With model.dropout its masks and, on CPU, the math attention kernel's scores and
    probabilities are saved too: uncounted, a run measured 1.55x the estimate at T 512 and
    2.28x at T 1024 (and the pre-flight memory check passed runs that could not fit)."""
    def saved(dropout: float) -> tuple[ModelConfig, int]:
        cfg = ModelConfig(arch=arch, d_model=64, n_layers=2, n_heads=4, seq_len=128,
                          vocab_size=120, dropout=dropout)
        return cfg, _saved_bytes(Transformer(cfg).train(), torch.randint(0, 120, (2, 128)))[0]
    cfg, with_dropout = saved(0.1)
    per_token = (with_dropout - saved(0.0)[1]) / (2 * 128)
    want = cfg.n_layers * dropout_bytes(cfg, math_attention=True) + cfg.d_model
    assert per_token == pytest.approx(want, rel=0.06)


def test_dropout_under_cpu_bf16_autocast_is_counted_as_the_cpu_runs_it():
    """CPU autocast keeps the math attention kernel in fp32: taken for a GPU run by its
    precision, bf16 with dropout on CPU was estimated at 0.6x what it saves."""
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=4, seq_len=512, vocab_size=256,
                      dropout=0.1)
    with torch.autocast("cpu", torch.bfloat16):
        saved, _ = _saved_bytes(Transformer(cfg).train(), torch.randint(0, 256, (2, 512)))
    assert 0.9 < saved / estimate(cfg, 2, precision="bf16", cpu=True).activations < 1.1


@pytest.mark.slow
def test_the_memory_estimate_is_within_10_percent_of_measured_peaks():
    """Peak resident memory of 2 real training steps in a fresh process, for nine configs
    (three architectures, batch, sequence length, activation checkpointing, two micro-batches
    a step, whose gradients outlive the first one's activations), against the
    estimate: ``bench/memory_vs_estimate.py`` measures, this asserts. The same with torch
    2.11 and 2.13 (what torch loads on its first run is resident before measuring); summing
    gradients and activations as if alive together read 0.86 with checkpointing."""
    spec = importlib.util.spec_from_file_location("memory_bench", ROOT / "bench" / "memory_vs_estimate.py")
    bench = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    ratios = {name: r["measured"] / r["estimate"] for name, r in bench.measure_all()}
    assert len(ratios) >= 9 and "llama 12.6M b8 AC x2" in ratios
    assert all(0.90 <= v <= 1.10 for v in ratios.values()), ratios


def test_memory_divides_as_the_layout_says():
    cfg = ModelConfig(d_model=1024, n_layers=16, n_heads=16, n_kv_heads=8, seq_len=2048,
                      vocab_size=32000)
    one = estimate(cfg, 4, precision="bf16")
    fsdp = estimate(cfg, 4, layout=Split(dp_shard=8), precision="bf16")
    assert fsdp.weights == pytest.approx(one.weights / 8) and fsdp.optimizer == pytest.approx(one.optimizer / 8)
    assert fsdp.activations == one.activations              # data parallel: the same per rank
    # tensor parallelism splits the layers' activations, not the plain loss's logits (the
    # head's output is gathered whole on every rank; 1.37-1.68x measured when split), nor
    # the inputs of the column-parallel matmuls (2 a layer, bf16 copies) and of the head
    tp = estimate(cfg, 4, layout=Split(tp=4), precision="bf16")
    plain = estimate(cfg, 4, precision="bf16", fused_loss=False)
    tokens = 4 * 2048
    logits = 4 * tokens * 2 * 32000
    whole = tokens * (16 * 2 * 1024 * 2 + 4 * 1024) * (1 - 1 / 4)
    assert tp.activations - logits - whole == pytest.approx((plain.activations - logits) / 4)
    ac = estimate(cfg, 4, checkpointing=True, precision="bf16")
    assert ac.activations < one.activations / 3  # the logits stay whole
    assert estimate(cfg, 8).activations == pytest.approx(2 * estimate(cfg, 4).activations)
    best = largest_batch(cfg, 80e9, precision="bf16")
    assert estimate(cfg, best, precision="bf16").total <= 80e9 < estimate(cfg, best + 1, precision="bf16").total


@pytest.mark.parametrize("argv, message", [
    (["plan", "--budget", "lots"], "error: --budget: expected a number, got 'lots'"),
    (["plan", "--gpu", "tpu-v9"], "error: unknown accelerator 'tpu-v9'; known: h100"),
    (["plan", "--budget", "1e20", "--dollars", "5"], "error: give one budget"),
    (["plan", "--gpus", "0"], "error: --gpus: expected a whole number above 0, got '0'"),
    (["plan", "--gpus", "1.5"], "error: --gpus: expected a whole number above 0"),
    # zero, negative or not finite: never taken as "not given" or left to divide by
    (["plan", "--budget", "0"], "error: --budget: expected a number above 0, got '0'"),
    (["plan", "--dollars", "0"], "error: --dollars: expected a number above 0"),
    (["plan", "--gpu-hours", "-5"], "error: --gpu-hours: expected a number above 0"),
    (["plan", "--budget", "nan"], "error: --budget: expected a number above 0, got 'nan'"),
    (["plan", "--budget", "inf"], "error: --budget: expected a number above 0, got 'inf'"),
    (["plan", "--dollars", "100", "--price", "0"], "error: --price: expected a number above 0"),
    (["plan", "--mfu", "1.5"], "error: --mfu: expected a number above 0 and at most 1"),
    (["sweep", "--budgets", "0,1e3"], "error: --budgets takes numbers above 0"),
    # the one at fault named (it named both; 1.5 is a number)
    (["sweep", "--budgets", "1e12,3e12", "--sizes", "1.5"],
     "error: --sizes takes a whole number, got '1.5'"),
])
def test_plan_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1


def test_plan_answers_for_every_shipped_config_and_for_a_budget(capsys):
    for name in ("quickstart", "fineweb-edu-124m", "fineweb-edu-debug", "speedrun-shakespeare",
                 "webtext"):
        assert main(["plan", "-c", name, "--gpus", "8"]) == 0, name
        out = capsys.readouterr().out
        for section in ("## size", "## memory per device", "## time and cost", "## compute-optimal"):
            assert section in out, (name, section)
    assert main(["plan", "--budget", "1e21", "--gpus", "64", "--gpu", "a100"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("training:"))
    assert "= 1e+21 FLOPs" in line                      # the suggested run spends the budget
    assert "--model.d_model=" in out and "--train.steps=" in out
    n = int(out.split("parameters ")[1].split(" ")[0].replace(",", ""))
    assert n == pytest.approx(chinchilla_rule(1e21)[0], rel=0.1)


def test_a_run_too_big_for_memory_is_refused_before_allocation(tmp_path):
    """LLaMA-2 70B on this machine: the estimate (1.1 TB of fp32 state) is refused with
    what would fit, before any parameter is allocated (the tokens are never read)."""
    huge = ModelConfig(d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8, ffn_hidden=28672,
                       vocab_size=32000, seq_len=512)
    with pytest.raises(PretrainError, match=r"this run needs about \d+\.\d GB per device .* "
                                            r"has \d+\.\d GB: not even one sequence fits"):
        train(TrainConfig(steps=1, batch_size=1), huge, tmp_path / "nothing", RunPaths(tmp_path),
              device="cpu")


def test_accelerators_are_found_by_the_names_torch_reports():
    from pretrain.hardware import detect
    names = {"NVIDIA H100 80GB HBM3": "h100", "NVIDIA H100 PCIe": "h100-pcie",
             "NVIDIA H200": "h200", "NVIDIA A100-SXM4-80GB": "a100",
             "NVIDIA A100-SXM4-40GB": "a100-40gb", "NVIDIA L40S": "l40s", "NVIDIA L4": "l4",
             "NVIDIA L40": "l40", "NVIDIA H100 NVL": "h100-nvl",   # not L4's, H100 SXM's
             "NVIDIA GeForce RTX 4090": "rtx4090", "AMD Instinct MI300X": "mi300x"}
    for reported, key in names.items():
        acc = detect(reported)
        assert acc is get(key), reported
    assert detect("NVIDIA GeForce GTX 1080") is None
    assert get("h100").peak("bf16") == 989e12 and get("a100").peak("bf16") == 312e12


def _row(argv: list[str], capsys) -> str:
    """The configured layout's row of the plan's memory table (and the time line)."""
    assert main(["plan", "-c", "fineweb-edu-124m", *argv]) == 0
    out = capsys.readouterr().out
    return next(x for x in out.splitlines() if x.startswith("*")) + "\n" + \
        next(x for x in out.splitlines() if " FLOPs on " in x)


def _total(row: str) -> float:
    return float(row.split()[8])   # weights grads optim activ. work overlap total, after
    #                                "*1 device"


def test_the_plan_follows_the_configured_loss_precision_and_checkpointing(capsys):
    """The memory table and the time are for the run as configured: the whole-logits loss
    costs memory, fp32 is planned as fp32 (memory and the fp32 peak), and a run that fits
    only with activation checkpointing is not called a fit."""
    auto, full = _row([], capsys), _row(["--train.loss=full"], capsys)
    assert _total(full) > 1.5 * _total(auto)
    fp32 = _row(["--train.precision=fp32"], capsys)
    assert _total(fp32) > 1.4 * _total(auto) and "TFLOP/s fp32" in fp32   # norms stay fp32
    assert "TFLOP/s bf16" in auto
    l4 = _row(["--gpu", "l4", "--train.batch_size=64"], capsys)
    assert "no (yes with AC)" in l4
    assert "  yes" in _row(["--gpu", "l4", "--train.batch_size=64",
                            "--train.activation_checkpointing=true"], capsys)
    # a model whose replicas do not fit at all: said so (it read "largest micro-batch 0")
    big = _row(["--gpu", "l4", "--model.d_model=3072", "--model.n_layers=24",
                "--model.n_heads=24"], capsys)
    assert "  no, not one sequence" in big and "micro-batch 0" not in big


def test_plan_layouts_use_every_device_and_budgets_out_of_reach_are_said(capsys):
    assert main(["plan", "-c", "fineweb-edu-124m", "--gpus", "20"]) == 0
    assert "PP 8" not in capsys.readouterr().out            # 2 x 8 would leave 4 idle
    assert main(["plan", "-c", "fineweb-edu-124m", "--gpus", "16"]) == 0
    out = capsys.readouterr().out
    # as training would take it: microbatches dividing the batch (32), no grad_accum
    assert "FSDP 2 x PP 8" in out and "pp_microbatches = 16 and train.grad_accum = 1" in out
    assert main(["plan", "-c", "fineweb-edu-124m", "--gpus", "16", "--train.batch_size=24"]) == 0
    assert "pp_microbatches = 12" in capsys.readouterr().out
    # no microbatch count from 8 to 16 divides 7: no pipeline row training would refuse
    assert main(["plan", "-c", "fineweb-edu-124m", "--gpus", "16", "--train.batch_size=7"]) == 0
    assert "PP 8" not in capsys.readouterr().out
    assert main(["plan", "--budget", "1"]) == 2
    assert "less than one step of" in capsys.readouterr().err
    assert main(["plan", "--budget", "1e30"]) == 0
    assert "note: the family's largest model" in capsys.readouterr().out


def test_a_dry_run_with_a_pretrained_tokenizer_says_what_it_cannot_size(tmp_path, capsys):
    assert main(["run", "--tokenizer.pretrained=gpt2", f"--runs_dir={tmp_path}", "--dry-run"]) == 0
    assert "size and memory not estimated: the vocabulary of a pretrained tokenizer" \
        in capsys.readouterr().out


def test_muon_state_under_pipeline_parallelism_is_the_stage_s():
    """Muon keeps one momentum for the hidden matrices of this stage's layers, AdamW's two
    moments for the rest of the stage (the embedding on the first)."""
    cfg = ModelConfig(d_model=1024, n_layers=32, n_heads=16, n_kv_heads=8, seq_len=1024,
                      vocab_size=32000)
    per_layer = (cfg.num_params(embeddings=False) - cfg.d_model) / cfg.n_layers
    for pp in (1, 4):
        lay = Split(pp=pp, microbatches=2 * pp)
        muon, adamw = (estimate(cfg, 4, layout=lay, optimizer=o, precision="bf16")
                       for o in ("muon", "adamw"))
        stage = adamw.optimizer / 8                   # the stage's parameters
        hidden = 32 // pp * per_layer
        assert muon.optimizer == pytest.approx(4 * hidden + 8 * (stage - hidden))
        assert muon.optimizer < adamw.optimizer


def test_a_measured_mfu_is_of_the_bf16_peak_whatever_the_planned_precision(tmp_path, capsys):
    """Training logs MFU against the bf16 peak: a run measured at 5% does the same FLOP/s
    planned in fp32 (it had been taken as 5% of the fp32 peak, 15x slower)."""
    (tmp_path / "runs" / "quickstart" / "train").mkdir(parents=True)
    (tmp_path / "runs" / "quickstart" / "train" / "manifest.json").write_text(json.dumps(
        {"counts": {"mfu_median": 0.05, "device": "cuda:0"}}))
    times = {}
    for prec in ("bf16", "fp32"):
        assert main(["plan", f"--runs_dir={tmp_path / 'runs'}", f"--train.precision={prec}",
                     "--train.time_budget_s=0"]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if " FLOPs on " in x)
        times[prec] = line.split(": ")[1].split(" (")[0]
    assert times["bf16"] == times["fp32"]


def test_a_converted_mfu_says_so_and_fp8_where_there_is_none_is_noted(capsys):
    """--mfu 0.4 planned in fp32 printed "MFU 100% given" (0.4 of the bf16 peak is 5.9x
    the fp32 one, capped without a word); fp8 on an A100 was planned without a note, and
    on an L40S (fp8 tensor cores, a rate in the table, but not Hopper) too."""
    assert main(["plan", "--mfu", "0.4", "--train.precision=fp32"]) == 0
    assert "MFU 100% given, 40% of the bf16 peak (capped at 100%)" in capsys.readouterr().out
    assert main(["plan", "--gpu", "a100", "--train.precision=fp8"]) == 0
    assert "refuses train.precision = 'fp8' on NVIDIA A100 SXM 80 GB (it needs Hopper or " \
        "newer); planned at bf16's speed" in capsys.readouterr().out
    for gpu in ("l40s", "l4", "rtx4090"):
        assert main(["plan", "--gpu", gpu, "--train.precision=fp8"]) == 0
        assert "needs Hopper or newer, though the card has fp8 tensor cores" \
            in capsys.readouterr().out
    for gpu in ("h100", "h200", "b200"):
        assert main(["plan", "--gpu", gpu, "--train.precision=fp8"]) == 0
        assert "refuses train.precision = 'fp8'" not in capsys.readouterr().out


def test_sizes_are_written_in_the_unit_they_round_to():
    from pretrain.plan.report import _n
    assert [_n(x) for x in (999.7, 999_999, 1_234_567, 999_950_000_000, 12)] == [
        "1 k", "1 M", "1.23 M", "1 T", "12"]
    # small costs were "0 GPU-hours, $0"; $3.16 was "$3"
    h100 = get("h100")
    two_minutes = 120 * 4 * h100.peak("bf16") * 0.4
    assert "(0.133 GPU-hours, $0.333 at $2.5/GPU-hour)" in time_and_cost(
        two_minutes, h100, 4, 0.4, "bf16", None)
    assert "(1.26 GPU-hours, $3.16 at" in time_and_cost(1.8e18, h100, 1, 0.4, "bf16", None)
    assert "(1,264 GPU-hours, $3,160 at" in time_and_cost(1.8e21, h100, 1, 0.4, "bf16", None)



def test_an_fp32_plan_with_dropout_is_sized_for_the_gpu_it_prices(capsys):
    """fp32 was taken for a CPU run, whose math attention kernel keeps the scores dropout
    needs: an H100 plan at 4 x 4096 read 23.6 GB where the GPU's fused kernel needs 2.7."""
    argv = ["plan", "--model.dropout=0.1", "--train.precision=fp32", "--model.seq_len=4096",
            "--train.batch_size=4"]
    assert main(argv) == 0
    row = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("*"))
    cfg = load_config(None, [tuple(a[2:].split("=", 1)) for a in argv[1:]])
    model = dataclasses.replace(cfg.model, vocab_size=cfg.tokenizer.vocab_size)
    gpu, cpu = (estimate(model, 4, precision="fp32", cpu=c).total / 1e9 for c in (False, True))
    assert float(row.split()[-6]) == pytest.approx(gpu, abs=0.01) and cpu > 3 * gpu


def test_muon_is_planned_without_sharded_layouts_and_a_cpu_dry_run_as_the_cpu_runs(capsys):
    """Training refuses Muon with FSDP or TP: the plan listed them as fits. A CPU run's
    dry run is sized as the run's own check sizes it (the math attention kernel that
    dropout falls back to on CPU, kept fp32 under autocast: it printed a fifth)."""
    assert main(["plan", "-c", "quickstart", "--train.optimizer=muon", "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    assert "DDP 8" in out and "FSDP" not in out.split("(muon")[0] and "no FSDP or TP" in out
    argv = ["train", "--device=cpu", "--train.precision=bf16", "--model.dropout=0.1",
            "--model.seq_len=1024", "--dry-run"]
    assert main(argv) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "memory per device" in x)
    cfg = load_config(None, [tuple(a[2:].split("=", 1)) for a in argv[1:-1]])
    model = dataclasses.replace(cfg.model, vocab_size=cfg.tokenizer.vocab_size)
    want = estimate(model, cfg.train.batch_size, precision="bf16", cpu=True).as_gb()
    assert f"activations {want['activations']:.3g} GB" in line and want["activations"] > 1
    # an overlap that rounds to nothing reads 0, not "-0" (a tiny model's dry run)
    tiny = dataclasses.replace(estimate(model, 1, precision="bf16", cpu=True), overlap=1.0)
    assert f"{tiny.as_gb()['overlap']:.3g}" == "0"


@pytest.mark.parametrize("argv", [["-c", "fineweb-edu-124m", "--gpus", "8", "--train.grad_accum=2"],
                                  ["-c", "quickstart", "--budget", "2e11"]])
def test_no_run_is_predicted_below_the_optimum_for_its_compute(argv, capsys):
    """The optimum was taken at the run's FLOPs (attention in, embeddings out) and the run's
    loss at its whole parameter count: a 124M run read 3.364 against 3.375 'at the
    optimum' for the same compute."""
    assert main(["plan", *argv]) == 0
    out = capsys.readouterr().out
    pairs = [(float(a), float(b)) for a, b in
             re.findall(r"predicted loss ([\d.]+) for this run, ([\d.]+) at the", out)]
    assert len(pairs) >= 2 and all(own >= best for own, best in pairs), out


def test_an_mla_family_whose_heads_do_not_divide_the_width(capsys):
    """MLA's heads need not divide d_model: its family stepped widths by d_model // n_heads,
    0 for 128 heads at d_model 64 (a traceback), 10 for 6 heads."""
    for heads in (6, 128):
        argv = ["plan", "-c", "quickstart", "--model.arch=mla", "--model.d_model=64",
                f"--model.n_heads={heads}", "--budget", "1e17"]
        assert main(argv) == 0
        d, h = map(int, re.search(r"suggested: d_model (\d+), n_layers \d+, n_heads (\d+)",
                                  capsys.readouterr().out).groups())
        assert d % 64 == 0 and h == round(d * heads / 64)


def test_a_budget_model_far_above_the_optimum_says_so(capsys):
    """A head size of 100 leaves the family widths 100, 3200, 6400...: 1e18 FLOPs was
    planned as 3.03 B parameters on 0.018 tokens each (33x the optimum), without a word."""
    argv = ["plan", "-c", "fineweb-edu-124m", "--model.d_model=400", "--model.n_heads=4",
            "--model.n_kv_heads=2"]
    assert main([*argv, "--budget", "1e18"]) == 0
    out = capsys.readouterr().out
    ratio = float(re.search(r"nearest model \(\S+ parameters\) is (\S+)x the compute-optimal",
                            out)[1])
    assert ratio > 10
    assert main(["plan", "-c", "fineweb-edu-124m", "--budget", "1e21"]) == 0
    assert "compute-optimal N for this budget" not in capsys.readouterr().out


def test_the_plan_shows_only_layouts_training_runs_and_marks_a_refused_configured_one(
        capsys):
    """DDP x TP, TP 8 with 4 kv heads, TP for mla, a pipeline of a tied model were all
    planned 'yes' and refused by training; a proposed TP 8 over 1,004 positions too."""
    base = ["plan", "-c", "fineweb-edu-124m", "--gpus", "8"]
    for extra, why in ((["--train.parallel.tp=2"], "DDP with tensor parallelism"),
                       (["--train.parallel.tp=8"], "must divide the kv heads (4)"),
                       (["--train.parallel.tp=2", "--train.parallel.dp_shard=4",
                         "--train.parallel.dp_replicate=1", "--model.arch=mla"],
                        "not implemented for mla"),
                       (["--train.parallel.pp=2", "--train.parallel.dp_shard=4",
                         "--train.parallel.dp_replicate=1", "--model.arch=gpt2"],
                        "pipeline parallelism needs untied embeddings"),
                       # the configured pipeline keeps its grad_accum (proposed ones have none)
                       (["--train.parallel.pp=2", "--train.grad_accum=2",
                         "--model.tie_embeddings=false"], "set train.grad_accum = 1"),
                       (["--train.parallel.tp=2", "--train.parallel.dp_shard=4",
                         "--train.parallel.dp_replicate=1", "--train.loss=chunked"],
                        "needs the whole output head")):
        assert main([*base, *extra]) == 0
        out = capsys.readouterr().out
        row = next(line for line in out.splitlines() if line.startswith("*"))
        assert row.endswith("no: training refuses this layout (below)"), row
        assert "(* training refuses the configured layout: " in out and why in out
    # a pipeline over sequence-parallel TP stages runs (tests/distributed/test_parallel.py)
    assert main([*base, "--train.parallel.tp=2", "--train.parallel.pp=2",
                 "--train.parallel.dp_shard=2", "--train.parallel.dp_replicate=1",
                 "--train.grad_accum=1", "--model.tie_embeddings=false"]) == 0
    assert "refuses" not in capsys.readouterr().out
    wide = [*base, "--model.d_model=1024", "--model.n_heads=16", "--model.n_kv_heads=8"]
    assert main(wide) == 0
    assert "\n TP 8 " in capsys.readouterr().out
    assert main([*wide, "--model.seq_len=1004"]) == 0   # sequence parallel: tp | seq_len
    out = capsys.readouterr().out
    assert "\n TP 8 " not in out and "\n FSDP 8 " in out and "refuses" not in out


@pytest.mark.parametrize("compiled", [False, True])
def test_the_plan_calls_a_fit_what_training_runs_without_a_warning(capsys, compiled):
    """The plan's "fits?" and largest micro-batch are training's own pre-flight verdict on
    the table's memory: the plan filled the device to the last byte and counted a compiled
    model's eager activations, so it called "no" a run training accepts without a word
    (124M compiled at 200 sequences on an H100) and "yes" one training warns of."""
    have = get("h100").memory_gb * 1e9
    verdicts = {}
    for batch in (8, 148, 160, 200, 228, 260, 400):   # each verdict, eager and compiled
        argv = [f"--train.compile={str(compiled).lower()}", f"--train.batch_size={batch}",
                "--train.grad_accum=1", "--train.precision=bf16"]
        row = _row(["--gpu", "h100", *argv], capsys).splitlines()[0]
        said = row
        cfg = load_config("fineweb-edu-124m", [tuple(a[2:].split("=")) for a in argv])
        one = {"dp_replicate": 1, "dp_shard": 1, "tp": 1, "pp": 1}
        try:
            model = dataclasses.replace(cfg.model, vocab_size=cfg.tokenizer.vocab_size)
            check_memory(model, cfg.train, one, torch.device("cuda"), have=have)
            err = capsys.readouterr().err
            training = "warns" if "warning" in err else "runs"
        except PretrainError as e:
            training, err = "refuses", str(e)
        plan = "warns" if "without the 10% margin" in said else \
            "runs" if "  yes" in said else "refuses"
        verdicts[batch] = (plan, training)
        advised = re.search(r"train.batch_size = (\d+) leaves", err)
        if advised:   # training's advice is the plan's largest micro-batch
            assert f"largest micro-batch {advised[1]}" in said, (said, err)
    assert all(p == t for p, t in verdicts.values()), verdicts
    assert {t for _, t in verdicts.values()} == {"runs", "warns", "refuses"}, verdicts


def test_the_dry_run_counts_a_compiled_models_activations_as_training_does():
    """`--dry-run` counted a compiled model's eager activations (the plan and training's
    check count 0.7x of them)."""
    from pretrain.planning import dry_run_summary

    def activations(compiled: bool) -> float:
        cfg = load_config("fineweb-edu-124m", [("train.compile", str(compiled).lower()),
                                               ("device", "cuda")])
        line = next(x for x in dry_run_summary(cfg).splitlines() if "on a GPU" in x)
        return float(re.search(r"activations ([\d.]+) GB", line)[1])

    assert activations(True) == pytest.approx(0.7 * activations(False), rel=0.02)


def test_durations_read_in_their_unit():
    assert [duration(s) for s in (30, 600, 7200, 5 * 86400, 3 * 365 * 86400)] == [
        "30.0 s", "10.0 min", "2.0 h", "5.0 days", "3.0 years"]
    assert duration(8e17 * 365 * 86400) == "8.00e+17 years"   # it was 18 digits and a point


def test_a_cpu_is_planned_at_the_speed_its_own_run_measured(tmp_path, capsys):
    """`pretrain plan` of a CPU config priced an H100 (the quickstart's 120 s "fit" its
    1,000,000-step cap, 2 B tokens); `--gpu cpu` was an unknown accelerator. It plans at the
    matmul peak and the MFU a CPU run of the config measured (a CPU has no table peak), and
    a config set to train on a CPU says so under the GPU's plan."""
    runs = f"--runs_dir={tmp_path / 'runs'}"
    assert main(["plan", runs, "--gpu", "cpu"]) == 2
    assert "has no completed one (train it briefly first" in capsys.readouterr().err
    (tmp_path / "runs" / "quickstart" / "train").mkdir(parents=True)
    (tmp_path / "runs" / "quickstart" / "train" / "manifest.json").write_text(json.dumps(
        {"counts": {"device": "cpu", "peak_gflops": 200.0, "mfu": 0.1}}))
    assert main(["plan", runs, "--gpu", "cpu", "--train.time_budget_s=0",
                 "--train.steps=3000"]) == 0
    out = capsys.readouterr().out
    assert "(this CPU (200 GFLOP/s) x 1, MFU 10% measured in" in out
    flops = float(next(x for x in out.splitlines() if x.startswith("training: "))
                  .split(" = ")[1].split()[0])
    line = next(x for x in out.splitlines() if " FLOPs on " in x)
    assert f"at MFU 10%: {duration(flops / (200e9 * 0.1))} (" in line   # 200 GFLOP/s x 10%
    hours = float(line.split(" (")[-1].split()[0])
    assert hours == pytest.approx(flops / 20e9 / 3600, rel=0.01) and "$" not in line
    assert main(["plan", runs, "--device=cpu"]) == 0
    assert "note: this config trains on a CPU (device = 'cpu'); `--gpu cpu` plans" \
        in capsys.readouterr().out
    assert main(["plan", runs, "--gpu", "cpu", "--dollars", "5"]) == 2
    assert "--dollars needs a price per hour" in capsys.readouterr().err
    other = f"--runs_dir={tmp_path / 'none'}"   # no run: a peak and an MFU given serve
    assert main(["plan", other, "--gpu", "cpu", "--mfu", "0.2", "--train.peak_tflops=0.5"]) == 0
    assert "(this CPU (500 GFLOP/s) x 1, MFU 20% given)" in capsys.readouterr().out
    assert main(["plan", other, "--gpu", "cpu", "--mfu", "0.003", "--train.peak_tflops=0.5"]) == 0
    out = capsys.readouterr().out   # a small MFU keeps its digit in every line ("0%")
    assert "MFU 0.3% given" in out and "at MFU 0.3% about" in out and "MFU 0%" not in out
