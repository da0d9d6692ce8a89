"""Text generation from a trained model: temperature and top-k sampling, BOS-prefixed prompts.

This foundation version recomputes the whole (cropped) context at every token; KV-cache
generation, top-p, stop tokens and batched prompts come with issue 3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import ConfigError
from ..model.llama import Transformer
from ..tokenizer.bpe import Tokenizer


@dataclass
class SampleConfig:
    prompts: list[str] = field(default_factory=lambda: ["def", "The"])
    max_new_tokens: int = 64
    temperature: float = 0.8          # 0 = greedy
    top_k: int = 50                   # 0 = no top-k filter
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            raise ConfigError("max_new_tokens must be positive")
        if self.temperature < 0 or self.top_k < 0:
            raise ConfigError("temperature and top_k must be >= 0")


@torch.no_grad()
def generate(model: Transformer, ids: list[int], max_new_tokens: int, temperature: float,
             top_k: int, generator: torch.Generator, stop_id: int | None = None) -> list[int]:
    model.eval()
    device = next(model.parameters()).device
    x = torch.tensor([ids], dtype=torch.long, device=device)
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits, _ = model(x[:, -model.cfg.seq_len:])
        logits = logits[0, -1].float()
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1).cpu()
            nxt = int(torch.multinomial(probs, 1, generator=generator))
        if stop_id is not None and nxt == stop_id:
            break
        out.append(nxt)
        x = torch.cat([x, torch.tensor([[nxt]], device=device)], dim=1)
    return out


def run(model: Transformer, tok: Tokenizer, cfg: SampleConfig) -> list[dict[str, str]]:
    gen = torch.Generator().manual_seed(cfg.seed)
    samples = []
    for prompt in cfg.prompts:
        ids = [tok.bos_id, *tok.encode(prompt)]
        new = generate(model, ids, cfg.max_new_tokens, cfg.temperature, cfg.top_k, gen,
                       stop_id=tok.eos_id)
        samples.append({"prompt": prompt, "completion": tok.decode(new)})
    return samples
