"""Process groups, devices and the few collectives the pipeline and the loop use.

Launched with ``torchrun`` (single node: ``--standalone --nproc_per_node=N``; several nodes:
``--nnodes``, ``--node_rank``, ``--rdzv_endpoint``), each process reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment. gloo on CPU, NCCL on GPU. How the
processes split the model and the data (the device mesh, FSDP, TP, PP) is
``train/parallelize.py``; sharded checkpoints are ``train/state.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

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
            n = torch.cuda.device_count()
            if d.local_rank >= n:
                raise PretrainError(f"LOCAL_RANK {d.local_rank} but this machine has {n} GPU(s): "
                                    f"start at most {n} processes per node "
                                    "(--nproc_per_node), or set device = 'cpu'")
            torch.cuda.set_device(d.local_rank)
        backend = "nccl" if device_type == "cuda" else "gloo"
        store = _attempt_store()
        if store is None:
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, store=store, rank=d.rank, world_size=d.world)
    return d


def _attempt_store() -> dist.Store | None:
    """Under torchrun's agent, its store seen under a prefix of this attempt's: a restarted
    group (``--max-restarts``, after a worker died) otherwise read the earlier attempt's
    addresses from it and failed to connect to the dead worker (gloo's 'connectFullMesh
    failed ... Connection refused'), each failure costing a restart, or hung; pytorch
    issue 167288. One agent only (one node): each node's agent counts its own restarts (a
    node whose workers lived restarts without counting one), so on several nodes the
    counts differ and the ranks would wait under different prefixes. None there, and
    outside an elastic agent: the default init."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or attempt is None \
            or os.environ.get("GROUP_WORLD_SIZE", "1") != "1":
        return None
    from torch.distributed.constants import default_pg_timeout
    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          is_master=False, timeout=default_pg_timeout)
    return dist.PrefixStore(f"pretrain/attempt_{attempt}", agent)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device_for(d: Dist, device: torch.device) -> torch.device:
    return torch.device("cuda", d.local_rank) if device.type == "cuda" else device


def mean(values: list[float], d: Dist, device: torch.device, weight: float = 1.0) -> list[float]:
    """The weighted mean over all ranks of each of ``values`` (every rank gets the result);
    a rank with ``weight = 0`` contributes nothing (a pipeline stage without the loss)."""
    if not d.enabled:
        return list(values)
    t = torch.tensor([*(v * weight for v in values), weight], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [float(v) / float(t[-1]) for v in t[:-1]]


def mean_tensor(value: torch.Tensor, d: Dist, weight: float = 1.0) -> torch.Tensor:
    """``mean`` of one scalar tensor, on its device, without reading it back."""
    if not d.enabled:
        return value
    # torch.full, not torch.tensor: a fill on the device, where a copy from host memory
    # would wait for the stream (a host synchronisation every step on a GPU)
    t = torch.stack([value.double() * weight, torch.full((), weight, dtype=torch.float64,
                                                          device=value.device)])
    dist.all_reduce(t)
    return t[0] / t[1]


def max_all(values: list[float], d: Dist, device: torch.device) -> list[float]:
    """The largest of each of ``values`` over all ranks, on every rank (a collective under
    torchrun: one all-reduce however many values)."""
    if not d.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [float(v) for v in t.tolist()]


def all_reduce_sum(t: torch.Tensor, group: Any) -> torch.Tensor:
    """``t`` summed over the ranks of ``group`` (a new tensor)."""
    out = t.clone()
    dist.all_reduce(out, group=group)
    return out


def average_grads(params: Any, group: Any) -> None:
    """Each parameter's gradient averaged over the ranks of ``group``, in place."""
    n = dist.get_world_size(group)
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, group=group)
            p.grad.div_(n)


def broadcast(obj: Any, d: Dist) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, d: Dist) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in one process)."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
