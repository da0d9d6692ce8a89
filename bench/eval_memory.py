"""Peak memory of the evaluation scorers against a training step at the same batch and
context, each in a process of its own (peak RSS over the process's RSS with the model
built), in the same run:

- ``train``: one training step (the chunked head + loss, forward and backward): the
  reference, what the run already needed;
- ``held-out``: ``scoring.nll_total`` (the eval stage's and training's validation loss);
- ``tasks``: ``scoring.score_tails`` scoring the last ``--tail`` tokens of each row (task
  choices, memorization);
- ``whole-logits``: the path both took before, the batch's logits made whole, in fp32, their
  log-softmax copied to the host.

The model is one small layer with a large vocabulary: the head's output is what scales.

    python bench/eval_memory.py --vocab 50304 --seq 1024 --batch 16
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import announce, at_least  # noqa: E402

from pretrain.eval.scoring import nll_total, score_tails  # noqa: E402
from pretrain.model.transformer import ModelConfig, Transformer  # noqa: E402

PATHS = ("train", "held-out", "tasks", "whole-logits")


def measure(path: str, vocab: int, seq: int, batch: int, tail: int) -> float:
    """GB of peak RSS ``path`` adds over the built model (in this process)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = Transformer(ModelConfig(d_model=64, n_layers=1, n_heads=4, n_kv_heads=2,
                                    seq_len=seq, vocab_size=vocab))
    rows = [np.random.default_rng(i).integers(0, vocab, seq + 1) for i in range(batch)]
    x = torch.as_tensor(np.stack(rows))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu = torch.device("cpu")
    if path == "train":
        _, loss = model(x[:, :-1], x[:, 1:], fused_loss=True)
        assert loss is not None
        loss.backward()
    elif path == "held-out":
        nll_total(model.eval(), rows, batch, cpu)
    elif path == "tasks":
        score_tails(model.eval(), [(r, tail) for r in rows], seq, cpu, batch)
    else:
        with torch.no_grad():
            logits, _ = model.eval()(x[:, :-1])
            F.log_softmax(logits.float(), dim=-1).cpu()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1e6   # kB -> GB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=at_least(2), default=50304)
    ap.add_argument("--seq", type=at_least(2), default=1024)
    ap.add_argument("--batch", type=at_least(1), default=16)
    ap.add_argument("--tail", type=at_least(1), default=5, help="tokens scored per row (tasks)")
    ap.add_argument("--one", choices=PATHS, help=argparse.SUPPRESS)   # a child's measurement
    args = ap.parse_args()
    shape = (args.vocab, args.seq, args.batch, args.tail)
    if args.one:
        print(measure(args.one, *shape))
        return
    announce()
    print(f"vocab {args.vocab:,}, context {args.seq}, batch {args.batch} (the whole logits: "
          f"{args.batch * args.seq * args.vocab * 4 / 1e9:.2f} GB in fp32)")
    gb = {}
    for path in PATHS:
        out = subprocess.run([sys.executable, __file__, "--one", path, "--vocab", str(args.vocab),
                              "--seq", str(args.seq), "--batch", str(args.batch),
                              "--tail", str(args.tail)],
                             capture_output=True, text=True, check=True).stdout
        gb[path] = float(out.strip().splitlines()[-1])
    for path in PATHS:
        ratio = gb[path] / gb["train"] if gb["train"] > 0 else float("nan")
        print(f"{path:>13}: +{gb[path]:.3f} GB peak RSS, {ratio:.2f}x the training step's")


if __name__ == "__main__":
    main()
