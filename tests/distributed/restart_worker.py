"""Run by torchrun --max-restarts in the restart test: join the group through
``distributed.init``, and in the first attempts have rank 1 die (SIGKILL) mid-way through
a few all-reduces, as a worker lost to a fault; the last attempt finishes. Usage:
restart_worker.py OUT DYING_ATTEMPTS."""

import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from pretrain import distributed

out, dying = Path(sys.argv[1]), int(sys.argv[2])
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
d = distributed.init("cpu")
for i in range(10):
    t = torch.ones(1)
    dist.all_reduce(t)
    if d.rank == 1 and attempt < dying and i == 4:
        os.kill(os.getpid(), signal.SIGKILL)
out.mkdir(parents=True, exist_ok=True)
(out / f"rank{d.rank}.txt").write_text(f"{attempt} {t.item():g}")
distributed.shutdown()
