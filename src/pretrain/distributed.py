"""Process groups and data parallelism, applied from outside the model.

Launched with ``torchrun`` (single node: ``--standalone --nproc_per_node=N``; several nodes:
``--nnodes``, ``--node_rank``, ``--rdzv_endpoint``), each process reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment. gloo on CPU, NCCL on GPU.

Data parallelism wraps the model in ``DistributedDataParallel``: each rank takes its own rows
of every global batch, gradients are averaged, every rank holds the full model and
optimizer (so checkpoints are written by rank 0 alone). Not yet here: FSDP2 (``fully_shard``
per block then the root, applied in ``wrap``; checkpoints then need
``torch.distributed.checkpoint.state_dict``'s full state dicts), tensor parallelism
(``torch.distributed.tensor.parallel`` with a plan over ``attn.w{q,k,v,o}`` and
``ffn.w{1,2,3}``, applied before FSDP) and pipeline parallelism
(``torch.distributed.pipelining``, splitting ``layers`` into stages).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def from_env() -> Dist:
    return Dist(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                int(os.environ.get("LOCAL_RANK", "0")))


def init(device_type: str) -> Dist:
    """Join the process group that torchrun set up (no-op for one process)."""
    d = from_env()
    if d.enabled and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(d.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return d


def device_for(d: Dist, device: torch.device) -> torch.device:
    return torch.device("cuda", d.local_rank) if device.type == "cuda" else device


def wrap(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[d.local_rank] if device.type == "cuda" else None)


def mean(value: float, d: Dist, device: torch.device) -> float:
    """The mean of a per-rank number over all ranks (every rank gets the same result)."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / d.world


def broadcast(obj: Any, d: Dist) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
