"""Training options on the small runs of ``training_runs``: compiled vs eager, Muon, the
embedding's learning-rate multiplier, the full or chunked loss, bf16/fp16/fp8 and the fp16
scaler's overflow handling (train/loop.py, optim.py, recovery.py)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pretrain.config import ConfigError, PretrainError
from pretrain.model import transformer
from pretrain.model.config import ModelConfig
from pretrain.train import loop, optim
from pretrain.train.loop import RunPaths, Trainer, train
from pretrain.train.parallelize import Layout, resolve_loss

from ..conftest import bad_steps
from .training_runs import MODEL, make_tokens
from .training_runs import cfg as _cfg
from .training_runs import killed_then_resumed as _killed_then_resumed
from .training_runs import losses as _losses
from .training_runs import run as _run


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return make_tokens(tmp_path_factory)


def test_compiled_training_matches_eager(tokens, tmp_path):
    """torch.compile applied from outside: same losses as eager (within fp tolerance)."""
    model = ModelConfig(**{**MODEL.__dict__, "dropout": 0.0})
    outs = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        out = tmp_path / name
        out.mkdir()
        train(_cfg(steps=3, compile=compiled, checkpoint_every=0), model, tokens, RunPaths(out),
              seed=3)
        outs[name] = [loss for _, loss in _losses(out)]
    assert outs["compiled"] == pytest.approx(outs["eager"], abs=1e-4)


def test_muon_trains_and_resumes_bit_identically(tokens, tmp_path, monkeypatch):
    """Muon (hidden matrices) + AdamW (the rest): loss falls, and the two optimizers'
    state goes through the checkpoint so that kill + resume is exact."""
    from pretrain.train.optim import make_optimizer
    opt = make_optimizer(loop.Transformer(MODEL), _cfg(optimizer="muon"))
    muon, adamw = opt.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    assert all(p.dim() == 2 for g in muon.param_groups for p in g["params"])
    assert len(muon.param_groups[0]["params"]) == MODEL.n_layers * 4  # qkv o w13 w2
    a = _run(tokens, tmp_path / "a", tmp_path / "ckpt-a", optimizer="muon")
    _run(tokens, tmp_path / "adam", tmp_path / "ckpt-adam")
    assert a["val_loss_final"] < a["val_loss_initial"]
    assert _losses(tmp_path / "a") != _losses(tmp_path / "adam")
    _killed_then_resumed(tokens, tmp_path / "b", tmp_path / "ckpt-b", monkeypatch, optimizer="muon")
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")


def test_embed_lr_mult_on_a_tied_head_is_said(capsys):
    """Under tying, the table is the output head: embed_lr_mult = 0 froze the head too,
    without a word."""
    for arch, tie, said in (("gpt2", False, True), ("llama", True, True), ("llama", False, False)):
        model = loop.Transformer(replace(MODEL, arch=arch, tie_embeddings=tie))
        optim.make_optimizer(model, _cfg(embed_lr_mult=0.0))
        err = capsys.readouterr().err
        assert ("train.embed_lr_mult = 0 applies to head.weight too" in err) == said, arch
        optim.make_optimizer(model, _cfg())   # 1: nothing to say
        assert capsys.readouterr().err == ""


@pytest.mark.parametrize("optimizer", ["adamw", pytest.param("muon", marks=pytest.mark.slow)])
def test_embed_lr_mult_scales_the_embedding_tables_steps_only(tokens, tmp_path, monkeypatch,
                                                               optimizer):
    """``embed_lr_mult = 0``: the loop's learning rate reaches the embedding table times 0 (it
    stays as initialised) and everything else as before; a multiplier survives kill + resume."""
    first: dict[str, torch.Tensor] = {}
    real = Trainer.forward_backward

    def snapshot(self, data_pos):
        if data_pos == 0:
            first.update({k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()})
        return real(self, data_pos)

    monkeypatch.setattr(Trainer, "forward_backward", snapshot)
    _run(tokens, tmp_path / "frozen", tmp_path / "ckpt-f", steps=6, optimizer=optimizer,
         embed_lr_mult=0.0)
    monkeypatch.setattr(Trainer, "forward_backward", real)
    w = load_file(tmp_path / "frozen" / "model.safetensors")
    assert torch.equal(w["embed.weight"], first["embed.weight"])
    assert not torch.equal(w["head.weight"], first["head.weight"])
    assert not torch.equal(w["norm.weight"], first["norm.weight"])
    _run(tokens, tmp_path / "a", tmp_path / "ckpt-a", optimizer=optimizer, embed_lr_mult=4.0)
    _run(tokens, tmp_path / "one", tmp_path / "ckpt-one", optimizer=optimizer)
    assert _losses(tmp_path / "a") != _losses(tmp_path / "one")
    _killed_then_resumed(tokens, tmp_path / "b", tmp_path / "ckpt-b", monkeypatch,
                         optimizer=optimizer, embed_lr_mult=4.0)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")


def test_train_loss_full_or_chunked_trains_alike_and_picks_the_path(tokens, tmp_path,
                                                                    monkeypatch):
    """train.loss: "full" makes the whole logits, "chunked" (and "auto" on one process) the
    fused chunks; the same losses within fp32 tolerance."""
    calls = {"n": 0, "eval": 0}
    fused = transformer.linear_cross_entropy

    def counting(*a, **kw):  # the real function, counted: training steps, validation
        calls["n" if torch.is_grad_enabled() else "eval"] += 1
        return fused(*a, **kw)

    monkeypatch.setattr(transformer, "linear_cross_entropy", counting)
    model = ModelConfig(**{**MODEL.__dict__, "dropout": 0.0})
    outs, used = {}, {}
    for mode in ("full", "chunked", "auto"):
        out = tmp_path / mode
        out.mkdir()
        calls.update(n=0, eval=0)
        train(_cfg(steps=3, loss=mode, checkpoint_every=0), model, tokens, RunPaths(out), seed=3)
        outs[mode], used[mode] = [loss for _, loss in _losses(out)], dict(calls)
    # one call per training step; validation takes the same path (without gradients)
    assert {m: u["n"] for m, u in used.items()} == {"full": 0, "chunked": 3, "auto": 3}
    assert used["full"]["eval"] == 0 < used["chunked"]["eval"] == used["auto"]["eval"]
    assert outs["chunked"] == outs["auto"]
    assert outs["full"] == pytest.approx(outs["chunked"], abs=1e-4)


def test_chunked_loss_under_tensor_parallelism_is_a_config_error():
    """TP splits the head that the chunked loss needs whole: "auto" falls back to "full"."""
    tp2 = Layout({"pp": 1, "dp_replicate": 1, "dp_shard": 1, "tp": 2})
    one = Layout({"pp": 1, "dp_replicate": 1, "dp_shard": 1, "tp": 1})
    assert resolve_loss(_cfg(loss="auto"), tp2) == "full"
    assert resolve_loss(_cfg(loss="auto"), one) == "chunked"
    assert resolve_loss(_cfg(loss="full"), one) == "full"
    with pytest.raises(ConfigError, match="tp > 1"):
        resolve_loss(_cfg(loss="chunked"), tp2)


def test_bf16_autocast_trains_close_to_fp32(tokens, tmp_path):
    """train.precision = bf16 (autocast; CPU has it too): the same run to bf16 tolerance."""
    fp32 = _run(tokens, tmp_path / "fp32", tmp_path / "c1", steps=8, precision="fp32")
    bf16 = _run(tokens, tmp_path / "bf16", tmp_path / "c2", steps=8, precision="bf16")
    a, b = _losses(tmp_path / "fp32"), _losses(tmp_path / "bf16")
    assert [s for s, _ in a] == [s for s, _ in b]
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) < 0.05
    assert a != b                                  # it did run in bf16
    assert bf16["val_loss_final"] == pytest.approx(fp32["val_loss_final"], abs=0.05)
    # MFU on CPU against a matmul measured in the dtype the matmuls run in, or the other
    # precision's where that runs faster (a CPU without bf16 instructions)
    assert fp32["peak_source"] in ("the measured fp32 matmul",
                                   "the measured bf16 matmul (faster here than fp32's)")
    assert bf16["peak_source"] in ("the measured bf16 matmul",
                                   "the measured fp32 matmul (faster here than bf16's)")
    for c in (fp32, bf16):   # the peak is the faster of the two matmuls measured
        assert c["peak_gflops"] >= c["matmul_gflops"]


def test_the_start_line_suggests_the_other_precision_only_where_it_runs_faster():
    p = optim.peaks(torch.device("cpu"))
    assert p.measured and p.other and p.other[0] == "bf16" and p.other[1] > 0
    # the faster of the two, whichever it is on this CPU (one with AVX512-BF16 or AMX runs
    # bf16 faster; one without, slower): the test had assumed fp32's
    assert p.mfu == pytest.approx(max(p.matmul, p.matmul * p.other[1]))
    assert p.source == ("the measured fp32 matmul" if p.other[1] <= 1 else
                        "the measured bf16 matmul (faster here than fp32's)")
    fast = replace(p, other=("bf16", 4.4))
    slow = replace(p, mfu=p.matmul, source="the measured fp32 matmul", other=("bf16", 0.3))
    assert "train.precision = 'bf16' may train faster" in fast.describe()
    assert "bf16" not in slow.describe() and "GFLOP/s" in slow.describe()
    # fp16 here has no fast path (1/80 of fp32): measured on a small matmul, fp32 suggested
    half = optim.peaks(torch.device("cpu"), dtype=torch.float16)
    assert half.other and half.other[0] == "fp32"
    assert "fp32" in replace(half, other=("fp32", 80.0)).describe()
    # MFU's peak is the faster of the two: fp16's matmul, slower here, is not it (against
    # it, a compiled run's MFU read above 100%); the training's own stays in ``matmul``
    assert half.mfu == pytest.approx(max(half.matmul, half.matmul * half.other[1]))
    assert half.source == ("the measured fp16 matmul" if half.other[1] <= 1 else
                           "the measured fp32 matmul (faster here than fp16's)")
    # the end line keeps a small peak's digits ("of 0 GFLOP/s" for 0.4 before)
    assert optim.Peaks(4e8, 4e8, "x", "cpu", other=("fp32", 1.0)).summary(0.3) == \
        ", MFU 30.0% of 0.4 GFLOP/s"


def test_measuring_the_peak_leaves_the_training_random_numbers_alone(tokens, tmp_path):
    """The start-up probes (the peak matmul, the attention kernel) draw their inputs
    elsewhere than the global generator the dropout masks come from: a run given
    train.peak_tflops, which measures nothing, trains exactly as one that measures (it had
    other losses, and the tests of slow divergence had passed on those draws)."""
    _run(tokens, tmp_path / "a", tmp_path / "ca", steps=6)
    _run(tokens, tmp_path / "b", tmp_path / "cb", steps=6, peak_tflops=1.0)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")


def test_fp16_scales_the_loss_skips_overflow_and_resumes_exactly(tokens, tmp_path, monkeypatch):
    """fp16: a gradient scaler; an overflowed step is skipped with an event (not a bad step:
    no rollback), the scale halves; the scale goes through checkpoints (exact resume)."""
    real = Trainer.forward_backward
    monkeypatch.setattr(Trainer, "forward_backward", bad_steps(real, overflow_at=(3,)))
    counts = _run(tokens, tmp_path / "a", tmp_path / "ckpt-a", precision="fp16")
    events = [json.loads(x) for x in (tmp_path / "a" / "events.jsonl").open()]
    assert [(e["data_pos"], e["reason"]) for e in events] == [(3, "fp16 gradient overflow")]
    assert events[0]["action"] == "skipped update, loss scale now 32768"
    assert counts["rollbacks"] == 0 and len(_losses(tmp_path / "a")) == 24
    monkeypatch.setattr(Trainer, "forward_backward", real)
    full = _run(tokens, tmp_path / "full", tmp_path / "ckpt-full", precision="fp16")
    left = _killed_then_resumed(tokens, tmp_path / "b", tmp_path / "ckpt-b", monkeypatch,
                                precision="fp16")
    assert left == ["step-0000008"]
    assert _losses(tmp_path / "b") == _losses(tmp_path / "full")
    assert math.isfinite(full["val_loss_final"])


def test_fp16_overflowing_for_good_ends_in_rollbacks_then_an_error(tokens, tmp_path,
                                                                    monkeypatch):
    """Gradients that overflow whatever the scale: the scale halved to 0 (then 0 x inf =
    NaN: every step overflowed) and the run never ended. The scale stops at 1; an overflow
    there is a bad step, toward a rollback, then the one-line error."""
    monkeypatch.setattr(Trainer, "forward_backward",
                        bad_steps(Trainer.forward_backward, overflow_at=range(10, 10**6)))
    with pytest.raises(PretrainError, match="rollback budget is spent"):
        _run(tokens, tmp_path / "a", tmp_path / "ckpt", precision="fp16", max_rollbacks=1)
    # a failed run leaves its events (they were on stderr only) in its checkpoint folder
    # (the stage's own is removed), in strict JSON (a bad step's NaN or inf is null)
    lines = (tmp_path / "ckpt" / "events.jsonl").read_text().splitlines()
    events = [json.loads(x, parse_constant=lambda c: pytest.fail(f"{c} in events.jsonl"))
              for x in lines]
    scales = [float(e["action"].rsplit(" ", 1)[1]) for e in events if "scale" in e["action"]]
    # 65536 halved to 1, then bad steps and a rollback to step 8 (its scale: 65536 again)
    assert scales[:17] == [2.0 ** k for k in range(15, -1, -1)] + [32768] and min(scales) == 1
    bad = [e for e in events if e["reason"] == "non-finite loss or gradient"]
    assert len(bad) >= 3 and all(e["grad_norm"] is None for e in bad)
    # the log as kept: steps 1-8 (9 and 10 were rolled back)
    assert (tmp_path / "ckpt" / "log.jsonl").read_text().count("\n") == 8


def test_fp8_without_a_hopper_gpu_is_a_clear_error(tokens, tmp_path):
    """On the CPU of any machine (a GPU machine's too: there "auto" is its GPU)."""
    with pytest.raises(ConfigError, match="'fp8' needs a Hopper GPU or newer"):
        _run(tokens, tmp_path / "a", tmp_path / "ckpt", device="cpu", precision="fp8")


def test_compile_on_cpu_without_a_cxx_compiler_is_a_clear_error(tokens, tmp_path):
    """inductor's compiler list, as torch reads it ($CXX or g++), names none on PATH: the
    run stops before its first step with the fix, not inside the first compilation. (Set
    through inductor's own patch: monkeypatch's undo left the setting hidden, and every
    later compile in the process failed on it.)"""
    import torch._inductor.config as inductor
    with inductor.patch({"cpp.cxx": (None, "no-such-cxx")}), \
            pytest.raises(ConfigError, match="train.compile on CPU needs a C\\+\\+ compiler: "
                                             "no-such-cxx is not on PATH"):
        _run(tokens, tmp_path / "a", tmp_path / "ckpt", device="cpu", compile=True)
    assert not (tmp_path / "a" / "log.jsonl").exists()


@pytest.mark.slow
def test_a_compiled_run_generates_its_probes_without_compiling_them(tokens, tmp_path):
    """The probe generations went through the compiled model: a graph break at the padding's
    int() and a recompile for each cache length, and dynamo's warning block in every
    compiled run's output (the shipped speedrun's)."""
    from torch._dynamo.utils import counters
    counters.clear()
    _run(tokens, tmp_path / "a", tmp_path / "ckpt", device="cpu", compile=True, steps=8,
         eval_every=4, checkpoint_every=0)
    gens = [json.loads(x) for x in (tmp_path / "a" / "generations.jsonl").open()]
    assert {g["step"] for g in gens} == {0, 4, 8}
    assert not counters["graph_break"], dict(counters["graph_break"])
