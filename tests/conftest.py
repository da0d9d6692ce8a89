"""Shared fixtures: a tiny run config that goes through every stage in seconds; byte-level
token shards of two domains; a model that was told the answers of a benchmark."""

from __future__ import annotations

import json
import math
from collections.abc import Container
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pretrain.data import executor
from pretrain.run_config import RunConfig, load_config
from pretrain.tokenizer import shards
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import BOS, EOS, TokenizeConfig

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

TINY = [
    ("data.sources.0.max_bytes", "500000"),
    ("data.sources.1.max_bytes", "300000"),
    ("tokenizer.vocab_size", "512"),
    ("tokenizer.max_chars", "400000"),
    ("tokenize.val_fraction", "0.1"),
    ("model.d_model", "64"),
    ("model.n_layers", "2"),
    ("model.n_heads", "4"),
    ("model.n_kv_heads", "2"),
    ("model.seq_len", "64"),
    ("eval.task_limit", "40"),
    ("eval.core_limit", "12"),
    ("train.steps", "40"),
    ("train.time_budget_s", "0"),   # the quickstart's clock would make the runs differ
    ("train.batch_size", "8"),
    ("train.warmup_steps", "5"),
    ("train.eval_every", "20"),
    ("train.eval_batches", "4"),
    ("train.lr", "5e-3"),
    ("eval.max_tokens_per_domain", "5000"),
    ("sample.max_new_tokens", "8"),
    # indexing the quickstart's 20 benchmark files for decontamination takes ~7 s a data
    # stage; tests/unit/test_decontam.py runs from_eval on its own
    ("data.decontam.from_eval", "false"),
]


def tiny_overrides(tmp_path: Path, **extra: str) -> list[tuple[str, str]]:
    return [("runs_dir", str(tmp_path / "runs")), ("name", "tiny"), *TINY,
            *((k.replace("__", "."), v) for k, v in extra.items())]


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> RunConfig:
    return load_config(None, tiny_overrides(tmp_path))


def code_and_prose_shards(out: Path, docs: int = 20, code_chars: int = 300,
                          prose_chars: int = 200, cats: int = 200) -> Path:
    """Byte-level token shards in ``out``: ``docs`` documents of code (json's source, in
    pieces of ``code_chars``) and ``docs`` of prose (math's docstring and ``cats`` times a
    plain sentence, in pieces of ``prose_chars``); a fifth of them held out."""
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    code = Path(json.__file__).read_text()
    prose = (math.__doc__ or "") + " ".join(["the cat sat on the mat"] * cats)
    texts = [{"id": f"c{i}", "domain": "code", "text": code[i * code_chars:(i + 1) * code_chars]}
             for i in range(docs)]
    texts += [{"id": f"p{i}", "domain": "prose",
               "text": prose[i * prose_chars:(i + 1) * prose_chars]} for i in range(docs)]
    shards.run(TokenizeConfig(val_fraction=0.2, min_val_docs=2), tok, iter(texts),
               ["code", "prose"], out, {})
    return out


def bad_steps(real, nan_at: Container[int] = (), spikes: Container[int] = (),
              overflow_at: Container[int] = ()):
    """``Trainer.forward_backward`` (``real``) with a NaN gradient (and norm) at the data
    positions ``nan_at``, the loss 50x (a spike) at ``spikes``, and at ``overflow_at`` a
    gradient that overflows in backward, the loss itself finite (what fp16 meets)."""
    def forward_backward(self, data_pos):
        if data_pos in overflow_at:
            hook = next(self.model.parameters()).register_hook(lambda g: g * math.inf)
            try:
                return real(self, data_pos)
            finally:
                hook.remove()
        loss, norm = real(self, data_pos)
        if data_pos in nan_at:
            next(self.model.parameters()).grad.fill_(float("nan"))
            return loss, torch.full_like(norm, float("nan"))
        return (loss * 50, norm) if data_pos in spikes else (loss, norm)
    return forward_backward


def shared_data(rel: str) -> Path:
    p = SHARED_DATA / rel
    if not p.exists():
        pytest.skip(f"shared test data {rel} not found at {SHARED_DATA} (the folder "
                    "../shared/data next to the repository)")
    return p


class Oracle(torch.nn.Module):
    """A model told the answers: after any prefix of one of ``rows`` (token ids) it puts
    all its probability on that row's next token; elsewhere it knows nothing."""

    def __init__(self, rows: list[list[int]], vocab: int, seq_len: int = 1024):
        super().__init__()
        self.next = {tuple(r[:i]): r[i] for r in rows for i in range(1, len(r))}
        self.vocab = vocab
        self.cfg = SimpleNamespace(seq_len=seq_len)  # the context length the scorers read

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None,
                hidden: bool = False) -> tuple[torch.Tensor, None]:
        """The logits; ``hidden``: the same, which ``logits_of`` then passes on (the
        scorers apply the head to the positions they score only)."""
        out = torch.zeros(*x.shape, self.vocab)
        for r in range(x.shape[0]):
            row = x[r].tolist()
            for t in range(len(row)):
                nxt = self.next.get(tuple(row[:t + 1]))
                if nxt is not None:
                    out[r, t, nxt] = 50.0
        return out, None

    def logits_of(self, h: torch.Tensor) -> torch.Tensor:
        return h


class KilledTasks:
    """The data stage's tasks (``executor.run_task``, in this process: ``workers = 1``),
    their indexes recorded in ``ran`` as they finish; once ``after`` have finished, the next
    is killed (KeyboardInterrupt), first leaving a half-written file when ``half_written``.
    ``revive()`` clears ``ran`` and kills no more."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, after: int, half_written: bool = False):
        self.real, self.ran = executor.run_task, []
        self.after: int | None = after
        self.half_written = half_written
        monkeypatch.setattr(executor, "run_task", self)

    def __call__(self, cfg, task, work: Path, ngrams: str) -> None:
        if self.after is not None and len(self.ran) == self.after:
            if self.half_written:   # files without the .done marker
                (work / f"{task.stem}.jsonl").write_text("garbage\n")
            raise KeyboardInterrupt("killed")
        self.real(cfg, task, work, ngrams)
        self.ran.append(task.index)

    def revive(self) -> None:
        self.after = None
        self.ran.clear()
