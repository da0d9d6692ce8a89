"""The CUDA path (issue 14): run where a GPU is, skipped elsewhere. Everything else in the
suite runs on a GPU machine too (device "auto" then picks the GPU); these check what only
a GPU has: bf16 autocast by default, the fused loss in bf16 on the GPU, fp16's scaler, fp8,
the attention kernel, MFU against the accelerator table and the measured matmul."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from pretrain import hardware
from pretrain.model import loss as loss_module
from pretrain.model.attention import sdpa_backend
from pretrain.model.config import ModelConfig
from pretrain.model.generate import generate
from pretrain.model.transformer import Transformer
from pretrain.train.config import TrainConfig
from pretrain.train.loop import RunPaths, Trainer, train

from ..conftest import bad_steps, code_and_prose_shards

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")
MODEL = ModelConfig(d_model=128, n_layers=2, n_heads=4, n_kv_heads=2, seq_len=128, vocab_size=258)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return code_and_prose_shards(tmp_path_factory.mktemp("tokens"), docs=30, code_chars=600,
                                 prose_chars=300, cats=400)


def _train(tokens: Path, tmp_path: Path, model: ModelConfig = MODEL, **kw) -> tuple[dict, list]:
    cfg = TrainConfig(**{**dict(steps=30, batch_size=8, warmup_steps=3, eval_every=15,
                                eval_batches=2, log_every=5, checkpoint_every=0, lr=3e-3,
                                tensorboard=False), **kw})
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    counts = train(cfg, model, tokens, RunPaths(out), seed=0, device="cuda")
    return counts, [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def test_bf16_by_default_with_mfu_from_the_table_and_a_fused_attention_kernel(tokens, tmp_path):
    counts, log = _train(tokens, tmp_path)
    assert counts["device"].startswith("cuda") and counts["precision"] == "bf16"
    assert counts["sdpa_backend"] in ("flash", "cudnn", "efficient"), counts["sdpa_backend"]
    assert counts["host_sync"] == "lagged"   # "auto" on a GPU, with AdamW and bf16
    assert counts["val_loss_final"] < counts["val_loss_initial"] - 0.5
    assert counts["matmul_gflops"] > 1000    # a measured bf16 matmul, beside the table's peak
    acc = hardware.detect(torch.cuda.get_device_name(CUDA))
    if acc is not None:   # a GPU of the table: MFU in every record, against its bf16 peak
        assert counts["peak_gflops"] == acc.peak("bf16") / 1e9
        assert all(0 < r["mfu"] < 1 for r in log)
    assert counts["warmup_time_s"] > 0 and all(r["mem_gb"] > 0 for r in log)


def test_fp16_trains_with_a_gradient_scaler(tokens, tmp_path):
    counts, _ = _train(tokens, tmp_path, precision="fp16")
    assert counts["precision"] == "fp16"
    assert counts["val_loss_final"] < counts["val_loss_initial"] - 0.5


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="needs torchao ([fp8])")
def test_fp8_trains_on_hopper(tokens, tmp_path):
    if torch.cuda.get_device_capability(CUDA)[0] < 9:
        pytest.skip("fp8 training needs a Hopper GPU or newer")
    model = ModelConfig(d_model=256, n_layers=2, n_heads=4, n_kv_heads=2, seq_len=128,
                        vocab_size=258)
    counts, _ = _train(tokens, tmp_path, model=model, precision="fp8", compile=True)
    assert counts["precision"] == "fp8"
    assert counts["val_loss_final"] < counts["val_loss_initial"] - 0.5


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_fused_loss_on_the_gpu_equals_the_plain_loss(arch, monkeypatch):
    """The chunked head + cross-entropy against the plain full-logits loss on the GPU, in
    fp32 (tight) and under bf16 autocast (each in its own precision's tolerance)."""
    monkeypatch.setattr(loss_module, "CHUNK_TOKENS", 100)
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, d_model=128, n_layers=2, n_heads=4, seq_len=64,
                      n_kv_heads=2 if arch == "llama" else 4, vocab_size=1000)
    a, b = Transformer(cfg).to(CUDA), Transformer(cfg).to(CUDA)
    b.load_state_dict(a.state_dict())
    if cfg.tied:
        b.head.weight = b.embed.weight
    x = torch.randint(0, 1000, (4, 65), device=CUDA)
    _, plain = a(x[:, :-1], x[:, 1:])
    plain.backward()
    _, fused = b(x[:, :-1], x[:, 1:], fused_loss=True)
    fused.backward()
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-3, atol=1e-5, msg=name)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, plain = a(x[:, :-1], x[:, 1:])
        _, fused = b(x[:, :-1], x[:, 1:], fused_loss=True)
    assert abs(float(fused) - float(plain)) < 2e-2


def test_the_attention_kernel_is_found_and_follows_the_sdpa_settings():
    cfg = ModelConfig(d_model=512, n_layers=1, n_heads=8, n_kv_heads=8, seq_len=1024,
                      vocab_size=258)
    fused = sdpa_backend(cfg, CUDA, torch.bfloat16)
    assert fused in ("flash", "cudnn", "efficient")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.MATH):
        assert sdpa_backend(cfg, CUDA, torch.bfloat16) == "math"
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        assert sdpa_backend(cfg, CUDA, torch.bfloat16) == "flash"


def test_cached_generation_on_the_gpu_equals_recomputing_the_whole_prefix():
    torch.manual_seed(0)
    model = Transformer(MODEL).to(CUDA).eval()
    prompts = [[1, 5, 9, 33], [1, 7]]
    cached = generate(model, prompts, 12, temperature=0.0)
    assert cached == generate(model, prompts, 12, temperature=0.0, use_cache=False)
    assert all(len(c) == 12 for c in cached)


def test_lagged_host_sync_on_the_gpu_skips_like_reading_each_step(tokens, tmp_path,
                                                                 monkeypatch):
    """host_sync = "lagged" on CUDA (pinned copies behind events, fused AdamW's found_inf):
    a NaN gradient at data position 7 is skipped, as when the host reads each step, and the
    losses agree (bf16 on the GPU: not bit for bit, atomics in the embedding's backward)."""
    monkeypatch.setattr(Trainer, "forward_backward",
                        bad_steps(Trainer.forward_backward, nan_at=(7,)))
    runs = {}
    for sync in ("step", "lagged"):
        (tmp_path / sync).mkdir()
        counts, log = _train(tokens, tmp_path / sync, host_sync=sync)
        runs[sync] = (counts["skipped_steps"], [r["step"] for r in log], [r["loss"] for r in log])
    assert runs["lagged"][:2] == runs["step"][:2] and runs["step"][0] == 1
    assert runs["lagged"][2] == pytest.approx(runs["step"][2], abs=2e-2)
