"""The sample stage: generate from the trained model for the configured prompts.

Prompts are encoded after a BOS token (how every training document starts) and decoded
until EOS or ``max_new_tokens``, all prompts in one batch through the KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import ConfigError
from ..model.generate import generate
from ..model.transformer import Transformer
from ..tokenizer.bpe import Tokenizer


@dataclass
class SampleConfig:
    prompts: list[str] = field(default_factory=lambda: ["def", "The"])
    max_new_tokens: int = 64
    temperature: float = 0.8          # 0 = greedy
    top_k: int = 50                   # 0 = no top-k filter
    top_p: float = 1.0                # nucleus sampling; 1 = off
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            raise ConfigError("max_new_tokens must be positive")
        if self.temperature < 0 or self.top_k < 0:
            raise ConfigError("temperature and top_k must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError("top_p must be within (0, 1]")


def run(model: Transformer, tok: Tokenizer, cfg: SampleConfig) -> list[dict[str, str]]:
    gen = torch.Generator().manual_seed(cfg.seed)
    prompts = [[tok.bos_id, *tok.encode(p)] for p in cfg.prompts]
    outs = generate(model, prompts, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p,
                    stop_ids=(tok.eos_id,), generator=gen)
    return [{"prompt": p, "completion": tok.decode(o)} for p, o in zip(cfg.prompts, outs, strict=True)]
