"""Small training runs the resume and training-option tests share: a two-layer model with
dropout (the RNG state must be restored too), byte-level shards, the run, its losses and a
run killed midway then rerun."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from pretrain.model.config import ModelConfig
from pretrain.tokenizer import shards
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import BOS, EOS, TokenizeConfig
from pretrain.train import state
from pretrain.train.config import TrainConfig
from pretrain.train.loop import RunPaths, Trainer, train

MODEL = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, seq_len=32, vocab_size=258,
                    dropout=0.1)  # dropout: the RNG state must be restored too


def make_tokens(tmp_path_factory) -> Path:
    """Byte-level shards of one domain (the sources of json and math's docstring)."""
    out = tmp_path_factory.mktemp("tokens")
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    text = Path(json.__file__).read_text() + Path(math.__doc__ or "x").as_posix()
    docs = [{"id": str(i), "domain": "code", "text": text[i * 500:(i + 1) * 500]} for i in range(40)]
    shards.run(TokenizeConfig(val_fraction=0.1), tok, iter(docs), ["code"], out, {})
    return out


def cfg(**kw) -> TrainConfig:
    base = dict(steps=24, batch_size=4, warmup_steps=3, eval_every=8, eval_batches=2, log_every=1,
                checkpoint_every=8, lr=3e-3)
    return TrainConfig(**{**base, **kw})


def run(tokens: Path, out: Path, ckpt: Path, device: str = "auto", tb: Path | None = None,
         **kw) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return train(cfg(**kw), MODEL, tokens, RunPaths(out, checkpoints=ckpt, monitor=tb), seed=3,
                 device=device)


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "log.jsonl").open())]


def kill_at(monkeypatch, data_pos: int) -> Callable[[], None]:
    """Training is killed (KeyboardInterrupt) when it reaches ``data_pos``; returns what
    lets the next run go on."""
    real = Trainer.forward_backward

    def killed(self, pos):
        if pos == data_pos:
            raise KeyboardInterrupt("killed")
        return real(self, pos)

    monkeypatch.setattr(Trainer, "forward_backward", killed)
    return lambda: monkeypatch.setattr(Trainer, "forward_backward", real)


def killed_then_resumed(tokens: Path, out: Path, ckpt: Path, monkeypatch, **kw) -> list[str]:
    """A run killed at data position 13, then rerun (it resumes); returns the checkpoints
    that were on disk after the kill."""
    revive = kill_at(monkeypatch, 13)
    with pytest.raises(KeyboardInterrupt):
        run(tokens, out, ckpt, **kw)
    left = [p.name for p in state.complete(ckpt)]
    revive()
    run(tokens, out, ckpt, **kw)
    return left


def scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    """What TensorBoard shows of ``tag``: (step, value) after its purges of resumed runs."""
    pytest.importorskip("tensorboard", reason="tensorboard is a core dependency; not installed here")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]
