"""Autoregressive generation: KV cache, greedy / temperature / top-k / top-p, stop tokens,
and batched prompts of different lengths (left-padded, masked, positions shifted per row).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .transformer import Transformer

Generators = torch.Generator | list[torch.Generator] | None


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                generator: Generators) -> torch.Tensor:
    """logits (B, V) -> next ids (B,). temperature 0 is greedy. ``generator``: one for the
    batch, or a list of one per row (each row's draws then its own)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if not bool(torch.isfinite(scaled.max(dim=-1).values).all()):
        return logits.argmax(dim=-1)   # so small a temperature overflows: greedy is its limit
    logits = scaled
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum - sorted_logits.softmax(dim=-1) >= top_p   # keep the smallest set >= top_p
        drop[:, 0] = False                                     # and always the most likely token
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1).cpu()
    if isinstance(generator, list):
        drawn = torch.cat([torch.multinomial(row, 1, generator=g)
                           for row, g in zip(probs, generator, strict=True)])
    else:
        drawn = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return drawn.to(logits.device)


@torch.no_grad()
def generate(model: Transformer, prompts: list[list[int]], max_new_tokens: int,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             stop_ids: tuple[int, ...] = (), generator: Generators = None,
             use_cache: bool = True, pad_id: int = 0,
             stop: Callable[[int, list[int]], bool] | None = None) -> list[list[int]]:
    """Continue each prompt; returns the new tokens of each (without the stop token).
    ``stop(row, its new tokens)``: whether that row is done after its latest token (kept),
    e.g. when its text holds a stop string.

    Each row gets up to ``max_new_tokens``, cut so that the model reads at most ``seq_len``
    tokens: its prompt and every new token but the last (which is never read), so a
    prompt of ``seq_len`` tokens still gets one; a row's greedy output does not depend on the other rows. Sampled output
    does when one generator draws for the whole batch (reproducible for the same batch);
    with a list of one generator per row, each row's draws are its own.
    """
    if not prompts or any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token (e.g. BOS)")
    if max_new_tokens < 1 or temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
        raise ValueError(f"max_new_tokens >= 1, temperature >= 0, top_k >= 0 and top_p in "
                         f"(0, 1], not {max_new_tokens}, {temperature}, {top_k}, {top_p}")
    if isinstance(generator, list) and len(generator) != len(prompts):
        raise ValueError(f"generator: one per prompt, got {len(generator)} for {len(prompts)}")
    vocab = model.cfg.vocab_size   # the padding rows above it are no tokens
    bad = next((i for p in prompts for i in p if not 0 <= i < vocab), None)
    if bad is not None:
        raise ValueError(f"prompt id {bad} is not a token id of this model (0..{vocab - 1})")
    model.eval()
    device = model.embed.weight.device
    longest = max(len(p) for p in prompts)
    budget = [min(max_new_tokens, model.cfg.seq_len - len(p) + 1) for p in prompts]
    if min(budget) <= 0:
        raise ValueError(f"a prompt of {longest} tokens is longer than the model's context "
                         f"(seq_len={model.cfg.seq_len})")
    max_new_tokens = max(budget)
    B = len(prompts)
    pad = torch.tensor([longest - len(p) for p in prompts], device=device)
    seq = torch.tensor([[pad_id] * (longest - len(p)) + p for p in prompts], device=device)
    cache = model.new_cache(B, longest + max_new_tokens, pad) if use_cache else None
    out: list[list[int]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    stops = torch.tensor(stop_ids or [-1], device=device)
    step_input = seq
    for _ in range(max_new_tokens):
        if cache is not None:
            logits, _ = model(step_input, cache=cache)
        else:
            logits, _ = model(seq, pad=pad)
        nxt = sample_next(logits[:, -1], temperature, top_k, top_p, generator)
        hit = torch.isin(nxt, stops)
        for b in (~done & ~hit).nonzero().flatten().tolist():
            out[b].append(int(nxt[b]))
            hit[b] = len(out[b]) >= budget[b] or (stop is not None and stop(b, out[b]))
        done |= hit
        if bool(done.all()):
            break
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        step_input = nxt[:, None]
    return out
