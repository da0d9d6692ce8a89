"""The sample stage: generate from the trained model for the configured prompts.

Prompts are encoded after a BOS token (how every training document starts) and decoded
until EOS or ``max_new_tokens``, all prompts in one batch through the KV cache.
"""

from __future__ import annotations

import hashlib
import json

import torch

from ..config import PretrainError
from ..log import log0
from ..model.generate import generate
from ..model.transformer import Transformer
from ..rundir import StageRun
from ..tokenizer.base import TextTokenizer
from .config import SampleConfig
from .trained import autocast, load_trained


def prompt_seed(seed: int, prompt: str, copy: int = 0) -> int:
    """The seed of the generator of ``prompt``'s ``copy``-th occurrence in the list under
    ``sample.seed``: stable across runs and machines (a digest, not Python's salted
    ``hash``); a prompt listed twice gets two samples."""
    digest = hashlib.sha256(f"{seed}\0{copy}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def samples(model: Transformer, tok: TextTokenizer, cfg: SampleConfig) -> list[dict[str, str]]:
    # a generator per prompt, seeded by the seed, the prompt's text and its copy number: a
    # prompt's random draws stay the same when others are added, removed or reordered
    gens = [torch.Generator().manual_seed(prompt_seed(cfg.seed, p, cfg.prompts[:i].count(p)))
            for i, p in enumerate(cfg.prompts)]
    prompts = [[tok.bos_id, *tok.encode(p)] for p in cfg.prompts]
    seq_len = model.cfg.seq_len
    for i, ids in enumerate(prompts):
        if len(ids) > seq_len:
            text = cfg.prompts[i]
            raise PretrainError(f"sample.prompts[{i}] ({text[:40]!r}{'...' if len(text) > 40 else ''})"
                                f" is {len(ids)} tokens with BOS, more than the model reads "
                                f"(model.seq_len = {seq_len}): shorten it")
    # the model reads the prompt and every new token but the last
    cut = [i for i, ids in enumerate(prompts) if len(ids) + cfg.max_new_tokens - 1 > seq_len]
    if cut:   # generate() cuts each row to fit the model's context
        log0(f"sample: prompt(s) {cut} get fewer than sample.max_new_tokens = "
             f"{cfg.max_new_tokens} new tokens: the model reads at most model.seq_len = "
             f"{seq_len} tokens, the prompt's and all new ones but the last")
    outs = generate(model, prompts, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p,
                    stop_ids=(tok.eos_id,), generator=gens)
    return [{"prompt": p, "completion": tok.decode_after(ids, o)}
            for p, ids, o in zip(cfg.prompts, prompts, outs, strict=True)]


def run(run: StageRun, cfg: SampleConfig, device: str) -> None:
    model, tok = load_trained(run.inputs["train"], run.inputs["tokenizer"], device)
    with autocast(model.embed.weight.device):
        out = samples(model, tok, cfg)
    (run.out / "samples.json").write_text(json.dumps(out, indent=2, ensure_ascii=False),
                                          encoding="utf-8")
    run.counts["samples"] = out
