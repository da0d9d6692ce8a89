"""Run by torchrun in the distributed tests: train() on the token shards given, under DDP or
FSDP2. Usage: ddp_worker.py TOKENS OUT BATCH [ddp|fsdp] [KILL_AT_DATA_POS]; with the last
argument every rank stops there (a simulated kill) and a rerun resumes from OUT/ckpt."""

import json
import sys
from pathlib import Path

from pretrain import distributed
from pretrain.model.config import ModelConfig
from pretrain.train.config import TrainConfig
from pretrain.train.loop import RunPaths, Trainer, train

tokens, out, batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
mode = sys.argv[4] if len(sys.argv) > 4 else "ddp"
kill_at = int(sys.argv[5]) if len(sys.argv) > 5 else -1
d = distributed.init("cpu")
cfg = TrainConfig(steps=6, batch_size=batch, grad_accum=2, warmup_steps=2, eval_every=3,
                  eval_batches=2, log_every=1, checkpoint_every=3, lr=3e-3, data_parallel=mode)
model = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, seq_len=32, vocab_size=258)
out.mkdir(parents=True, exist_ok=True)
real = Trainer.forward_backward


def killed(self, data_pos):
    if data_pos == kill_at:
        sys.exit(3)
    return real(self, data_pos)


Trainer.forward_backward = killed

counts = train(cfg, model, tokens, RunPaths(out, checkpoints=out / "ckpt"), seed=5, d=d)
if d.rank == 0:
    (out / "counts.json").write_text(json.dumps(counts))
distributed.barrier(d)
sys.exit(0)
