"""MHA vs GQA vs MLA at (nearly) equal parameter count: KV-cache size, decode speed, training speed.

Run:  python bench/attention_variants.py [--repeats 5] [--d-model 512] [--layers 8] [--device cuda]

Every variant is a LLaMA-style model with the same d_model, layers and heads; the SwiGLU
width is adjusted so that all three have about the same parameter count, which makes the
comparison about attention alone. Prints, per variant and as a ratio to MHA measured in the
same run: KV-cache bytes per token (bf16), measured cache bytes, decode tokens/s with the
KV cache (batch 1 and 8), and forward+backward training tokens/s. Medians over --repeats.
The machine load (1-minute load average) is printed before and after: on a 2-core box a
busy second core slows 2-thread PyTorch 5-20x, so compare only rows from one quiet run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import torch
from _common import announce, at_least

from pretrain.model.config import ModelConfig
from pretrain.model.generate import generate
from pretrain.model.transformer import Transformer


def variants(d: int, layers: int, heads: int, seq_len: int, vocab: int) -> dict[str, ModelConfig]:
    base = dict(d_model=d, n_layers=layers, n_heads=heads, seq_len=seq_len, vocab_size=vocab)
    hd = d // heads
    mha = ModelConfig(arch="llama", n_kv_heads=heads, **base)
    target = mha.num_params()
    cfgs = {"MHA": mha,
            f"GQA (kv={max(1, heads // 4)})": ModelConfig(arch="llama", n_kv_heads=max(1, heads // 4), **base),
            "MLA": ModelConfig(arch="mla", n_kv_heads=heads, kv_lora_rank=2 * hd,
                               qk_nope_head_dim=hd, qk_rope_head_dim=hd // 2, v_head_dim=hd, **base)}
    for name, cfg in list(cfgs.items())[1:]:  # widen the MLP until the counts match
        per_layer_gap = (target - cfg.num_params()) / layers
        cfgs[name] = ModelConfig(**{**cfg.__dict__, "ffn_hidden": cfg.hidden + round(per_layer_gap / (3 * d))})
    return cfgs


def median_time(fn, repeats: int, device: torch.device) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of ``fn()``; on a GPU each call is bracketed by synchronisations, so
    the time is the kernels' and not only their launch."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sdpa_backends(device: torch.device, repeats: int) -> None:
    """Each SDPA kernel alone (forward + backward, bf16, causal) at the attention shapes of
    the GPU training benchmarks, against the kernel PyTorch picks by itself."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from pretrain.model.attention import sdpa_backend
    kinds = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION}
    print("\nSDPA kernels, forward + backward, bf16, causal (ms; ratio to PyTorch's own pick)")
    for B, H, Hkv, T, hd in ((32, 12, 12, 1024, 64), (16, 12, 4, 2048, 64), (8, 12, 4, 2048, 128)):
        q = torch.randn(B, H, T, hd, device=device, dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(B, Hkv, T, hd, device=device, dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(B, Hkv, T, hd, device=device, dtype=torch.bfloat16, requires_grad=True)

        def step(q: torch.Tensor = q, k: torch.Tensor = k, v: torch.Tensor = v,
                 gqa: bool = Hkv != H) -> None:
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                 enable_gqa=gqa)
            y.sum().backward()
        cfg = ModelConfig(d_model=H * hd, n_layers=1, n_heads=H, n_kv_heads=Hkv, seq_len=T,
                          vocab_size=258)
        picked = sdpa_backend(cfg, device, torch.bfloat16)
        base = median_time(step, repeats, device)
        cells = [f"auto={picked} {base * 1e3:.2f}"]
        for name, kind in kinds.items():
            try:
                with sdpa_kernel(kind):
                    t = median_time(step, repeats, device)
                cells.append(f"{name} {t * 1e3:.2f} ({base / t:.2f}x)")
            except RuntimeError as e:   # this kernel does not take these arguments
                cells.append(f"{name} n/a ({str(e).splitlines()[0][:40]})")
        print(f"  B{B} H{H} kv{Hkv} T{T} hd{hd}: " + "; ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=at_least(1), default=5)
    ap.add_argument("--d-model", type=at_least(1), default=512)
    ap.add_argument("--layers", type=at_least(1), default=8)
    ap.add_argument("--heads", type=at_least(1), default=8)
    ap.add_argument("--prompt", type=at_least(1), default=64)
    ap.add_argument("--new", type=at_least(1), default=128)
    ap.add_argument("--train-batch", type=at_least(1), default=8)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: bf16 autocast for the training step, synchronised timings")
    args = ap.parse_args()
    announce()
    dev = torch.device(args.device)
    autocast = torch.autocast("cuda", torch.bfloat16) if dev.type == "cuda" \
        else contextlib.nullcontext()
    seq_len, vocab = args.prompt + args.new, 8192
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load avg before {os.getloadavg()[0]:.2f}")
    rows = []
    for name, cfg in variants(args.d_model, args.layers, args.heads, seq_len, vocab).items():
        torch.manual_seed(0)
        model = Transformer(cfg).to(dev).eval()
        prompt = torch.randint(0, vocab, (args.prompt,)).tolist()
        row: dict[str, float | str] = {"variant": name, "params_M": cfg.num_params() / 1e6,
                                       "kv_bytes_per_token": cfg.kv_cache_bytes_per_token(2)}
        cache = model.new_cache(1, seq_len)
        with torch.no_grad():
            model(torch.tensor([prompt], device=dev), cache=cache)
        row["measured_cache_bytes_per_token"] = cache.bytes() / cache.max_len / 2  # fp32 -> bf16
        for batch in (1, 8):
            t = median_time(lambda b=batch, m=model, p=prompt: generate(m, [p] * b, args.new,
                                                                         temperature=0.0),
                            args.repeats, dev)
            row[f"decode_tok_s_b{batch}"] = batch * args.new / t
        model.train()
        x = torch.randint(0, vocab, (args.train_batch, seq_len), device=dev)

        def step(m: Transformer = model, x: torch.Tensor = x) -> None:
            with autocast:
                _, loss = m(x[:, :-1], x[:, 1:], fused_loss=True)
            loss.backward()
            m.zero_grad(set_to_none=True)
        row["train_tok_s"] = args.train_batch * (seq_len - 1) / median_time(step, args.repeats,
                                                                             dev)
        rows.append(row)
    ref = rows[0]
    cols = ["params_M", "kv_bytes_per_token", "measured_cache_bytes_per_token", "decode_tok_s_b1",
            "decode_tok_s_b8", "train_tok_s"]
    print(f"{'variant':18}" + "".join(f"{c:>32}" for c in cols))
    for row in rows:
        cells = [f"{row[c]:,.1f} ({float(row[c]) / float(ref[c]):.2f}x)" for c in cols]
        print(f"{row['variant']:18}" + "".join(f"{c:>32}" for c in cells))
    print("ratios are against MHA in this run")
    if dev.type == "cuda":
        sdpa_backends(dev, args.repeats)


if __name__ == "__main__":
    main()
