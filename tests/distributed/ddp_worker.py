"""Run by torchrun in the distributed tests: train() on the token shards given, under DDP."""

import json
import sys
from pathlib import Path

from pretrain import distributed
from pretrain.model.config import ModelConfig
from pretrain.train.loop import TrainConfig, train

tokens, out, batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
d = distributed.init("cpu")
cfg = TrainConfig(steps=6, batch_size=batch, grad_accum=2, warmup_steps=2, eval_every=3,
                  eval_batches=2, log_every=1, checkpoint_every=0, lr=3e-3)
model = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, seq_len=32, vocab_size=258)
out.mkdir(parents=True, exist_ok=True)
counts: dict = {}
train(cfg, model, tokens, out, seed=5, counts=counts, d=d)
if d.rank == 0:
    (out / "counts.json").write_text(json.dumps(counts))
distributed.barrier(d)
sys.exit(0)
