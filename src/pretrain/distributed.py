"""Process groups and data parallelism, applied from outside the model.

Launched with ``torchrun`` (single node: ``--standalone --nproc_per_node=N``; several nodes:
``--nnodes``, ``--node_rank``, ``--rdzv_endpoint``), each process reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment. gloo on CPU, NCCL on GPU.

Two ways to split the work (``train.data_parallel``), both taking disjoint rows of every
global batch on each rank:

- ``ddp``: ``DistributedDataParallel``; every rank holds the whole model and optimizer,
  gradients are all-reduced once per optimizer step.
- ``fsdp``: FSDP2 (``fully_shard`` on every block, then on the root); parameters, gradients
  and optimizer state are sharded over the ranks (each holds 1/N), parameters are gathered
  block by block for forward and backward and gradients reduce-scattered. Memory per rank
  falls with N, which is what lets a model larger than one device train at all.

Checkpoints are full (unsharded) state dicts in both cases (``full_state``), gathered to
CPU and written by rank 0, so a checkpoint resumes on any number of processes and under
either mode. Not here: tensor parallelism (``torch.distributed.tensor.parallel`` with a
column-wise plan over ``attn.wqkv`` and ``ffn.w13`` and row-wise over ``attn.wo`` and
``ffn.w2``; the two fused matrices must be sharded block by block (each rank a slice of q,
of k and of v; of gate and of up), not as one row range; on a 2-D device mesh whose other dimension FSDP uses, applied before
``fully_shard``) and pipeline parallelism (``torch.distributed.pipelining``, splitting
``layers`` into stages). Neither pays on CPU or on one GPU node at the model sizes this
project trains; FSDP2 is the one that changes what fits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .config import PretrainError


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


def resolve_device(name: str) -> torch.device:
    """``device = "auto" | "cpu" | "cuda"`` as a torch device (auto: the GPU if there is one)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise PretrainError("device = 'cuda' but no CUDA device is available")
    return torch.device(name)


def init(device_type: str) -> Dist:
    """Join the process group that torchrun set up (no-op for one process)."""
    d = from_env()
    if d.enabled and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(d.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return d


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device_for(d: Dist, device: torch.device) -> torch.device:
    return torch.device("cuda", d.local_rank) if device.type == "cuda" else device


def wrap(model: nn.Module, d: Dist, device: torch.device, mode: str = "ddp") -> nn.Module:
    """The module to run forward/backward through: the model itself (one process, or FSDP2,
    which changes the model in place) or a DDP wrapper around it."""
    if not d.enabled:
        return model
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for block in model.layers:  # type: ignore[union-attr]
            fully_shard(block)      # one all-gather per block; embeddings/head/norm with the root
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[d.local_rank] if device.type == "cuda" else None)


def full_state(model: nn.Module, opt: torch.optim.Optimizer | None = None
               ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Unsharded model and optimizer state dicts on CPU, keyed by parameter name.

    A collective under FSDP (every rank must call it); for one process and DDP it is a
    copy to CPU. Names rather than positions make the optimizer state independent of how
    the model was wrapped.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd = get_model_state_dict(model, options=opts)
    if opt is None:
        return model_sd, None
    # several optimizers stepped as one (train/optim.py: Optimizers): the list of them
    return model_sd, get_optimizer_state_dict(model, getattr(opt, "optimizers", opt), options=opts)


def load_full_state(model: nn.Module, opt: torch.optim.Optimizer | None, model_sd: dict[str, Any],
                    opt_sd: dict[str, Any] | None) -> None:
    """The inverse of ``full_state``: every rank passes the whole state; FSDP keeps its shard."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_sd, options=opts)
    if opt is not None and opt_sd is not None:
        set_optimizer_state_dict(model, getattr(opt, "optimizers", opt), opt_sd, options=opts)


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
