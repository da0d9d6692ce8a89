"""Parallelism, applied from outside the model, in one place and one order.

The processes torchrun starts form a device mesh ``pp x dp_replicate x dp_shard x tp``
(``train.parallel``, resolved by ``ParallelConfig.degrees``). ``build`` makes the model a
rank trains:

1. the model is built on the meta device (no memory, no random numbers);
2. a pipeline rank keeps its stage: the embedding, a contiguous run of layers, or the
   final norm and head (``pipelining.py``);
3. ``parallelize``: tensor (+ sequence) parallel, activation checkpointing, compile (per
   block when the model is split, whole otherwise), then FSDP2 (HSDP on a 2-D data mesh)
   -- torchtitan's order;
4. ``materialize``: ``to_empty`` on the device, then every parameter's initial value
   drawn by the model's own rule (``Transformer.init_value``) in the order of the whole
   model, and each rank keeps its shard. So every layout starts from the same weights as
   one process with the same seed (the random numbers are drawn in one sequence on every
   rank, one parameter at a time: no rank ever holds more than one whole parameter);
5. DDP, when the data dimension is replicated without sharding, wraps the materialised
   model (with a pipeline, whose microbatches run several forwards before their backwards,
   the loop averages the gradients over the replicas after the step instead).

Tensor parallel plan (llama and gpt2): the fused ``wqkv`` and ``w13`` (or gpt2's ``fc``)
column-wise -- their stored row order gives each rank whole kv-head groups and whole
gate/up block pairs (``model/attention.py``, ``model/layers.py``) --, ``wo`` and ``w2``
(``proj``) row-wise, the embeddings and the head vocabulary-parallel, and with
``sequence_parallel`` the norms and the residual stream split by position between the
blocks. MLA is refused: its latent down-projections are shared by every head.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import (
    DTensor,
    Replicate,
    Shard,
    distribute_module,
    distribute_tensor,
)
from torch.distributed.tensor.parallel import ParallelStyle

from .. import distributed
from ..config import ConfigError
from ..hardware import FP8_CC_MAJOR
from ..model.config import ModelConfig
from ..model.transformer import Transformer
from .config import ParallelConfig, TrainConfig, check_layout
from .pipelining import keep_stage

DIMS = ("pp", "dp_replicate", "dp_shard", "tp")


@dataclass
class Layout:
    """Where this process sits in the device mesh (``mesh`` is None for one process)."""

    degrees: dict[str, int]
    mesh: DeviceMesh | None = None
    coords: tuple[int, ...] = (0, 0, 0, 0)      # this rank's index along DIMS

    def __getitem__(self, dim: str) -> int:
        return self.degrees[dim]

    def index(self, dim: str) -> int:
        return self.coords[DIMS.index(dim)]

    @property
    def dp(self) -> int:
        """Data-parallel ranks: each reads its own rows of every global batch."""
        return self["dp_replicate"] * self["dp_shard"]

    @property
    def dp_rank(self) -> int:
        return self.index("dp_replicate") * self["dp_shard"] + self.index("dp_shard")

    @property
    def first_stage(self) -> bool:
        return self.index("pp") == 0

    @property
    def last_stage(self) -> bool:
        return self.index("pp") == self["pp"] - 1

    @property
    def ddp(self) -> bool:
        return self["dp_replicate"] > 1 and self["dp_shard"] == 1

    @property
    def sharded(self) -> bool:
        """Some rank holds only part of the model (its parameters are not all local)."""
        return self["dp_shard"] > 1 or self["tp"] > 1 or self["pp"] > 1

    def describe(self) -> str:
        parts = []
        if self["dp_replicate"] > 1:
            parts.append(f"{'DDP' if self['dp_shard'] == 1 else 'replicate'} {self['dp_replicate']}")
        if self["dp_shard"] > 1:
            parts.append(f"FSDP {self['dp_shard']}")
        if self["tp"] > 1:
            parts.append(f"TP {self['tp']}")
        if self["pp"] > 1:
            parts.append(f"PP {self['pp']}")
        return " x ".join(parts) or "one process"

    def group(self, *dims: str) -> Any:
        """The process group of ``dims`` (a sub-mesh), None for one process."""
        if self.mesh is None:
            return None
        sub = self.mesh[dims] if len(dims) > 1 else self.mesh[dims[0]]
        return sub._flatten().get_group() if len(dims) > 1 else sub.get_group()


def make_layout(cfg: ParallelConfig, d: distributed.Dist, device: torch.device) -> Layout:
    degrees = cfg.degrees(d.world)
    if not d.enabled:
        return Layout(degrees)
    mesh = init_device_mesh(device.type, tuple(degrees[n] for n in DIMS), mesh_dim_names=DIMS)
    coords = tuple(int(c) for c in mesh.get_coordinate() or (0, 0, 0, 0))
    return Layout(degrees, mesh, coords)


def check_cpu_compiler() -> None:
    """``train.compile`` on CPU: inductor builds its kernels with the C++ compiler named in
    ``torch._inductor.config.cpp.cxx`` (``$CXX``, else ``g++``; ``clang++`` on macOS).
    Without one, torch fails inside the first step's compilation; this says so before the
    command's first stage (``stage.preflight``) and before building the model."""
    import torch._inductor.config as inductor  # noqa: PLC0415 -- torch's own, loaded only here
    wanted = [c for c in inductor.cpp.cxx if c] if isinstance(inductor.cpp.cxx, (list, tuple)) \
        else [inductor.cpp.cxx]
    # no name at all (only None: torch may install g++ itself) or Windows: torch decides
    if wanted and sys.platform != "win32" and not any(shutil.which(c) for c in wanted):
        raise ConfigError(f"train.compile on CPU needs a C++ compiler: {' or '.join(wanted)} is "
                          "not on PATH (install one, e.g. `apt install g++`, or name it in "
                          "$CXX), or set train.compile = false")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``train.precision`` for this device: "auto" is bf16 on a GPU that has it, else fp32."""
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return "bf16" if cuda_bf16 else "fp32"
    if precision == "fp8":
        major = torch.cuda.get_device_capability(device)[0] if device.type == "cuda" else 0
        if major < FP8_CC_MAJOR:
            raise ConfigError("train.precision = 'fp8' needs a Hopper GPU or newer (an H100, "
                              f"H200, B200); this is {device}")
    return precision


def resolve_loss(cfg: TrainConfig, layout: Layout) -> str:
    """``train.loss`` for this run's layout: "chunked" or "full" (``TrainConfig.loss_path``)."""
    return cfg.loss_path(layout["tp"])


def resolve_host_sync(cfg: TrainConfig, layout: Layout, device: torch.device) -> str:
    """``train.host_sync`` for this run: "step" or "lagged". Lagged needs the skip decided on
    the device: fused AdamW (its found_inf), no fp16 scaler (which reads its own), and
    local parameters (sharded ones read their norm back for the clip factor). "auto" is
    lagged on a GPU wherever it applies (an H100, GPT-2 124M compiled: 69.1 vs 71.3 ms a
    step) and "step" on CPU, where a read costs nothing."""
    why = ("train.optimizer = 'muon'" if cfg.optimizer != "adamw" else
           "train.precision = 'fp16' (its scaler)" if cfg.precision == "fp16" else
           "sharded parameters (dp_shard, tp or pp > 1)" if layout.sharded else "")
    if cfg.host_sync == "lagged" and why:
        raise ConfigError(f"train.host_sync = 'lagged' does not apply with {why}: use 'auto'")
    if cfg.host_sync == "auto":
        return "lagged" if device.type == "cuda" and not why else "step"
    return cfg.host_sync


# ---- 3. parallelize ----------------------------------------------------------------------

def parallelize(model: Transformer, cfg: TrainConfig, layout: Layout) -> None:
    """float8 linears, tensor parallel, activation checkpointing, compile, FSDP2: in this
    order (TP first so that FSDP shards the TP shards; compile inside FSDP's units)."""
    if cfg.precision == "fp8":
        apply_fp8(model)
    if layout["tp"] > 1:
        assert layout.mesh is not None
        apply_tp(model, layout.mesh["tp"], cfg.parallel.sequence_parallel)
    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    if cfg.compile and layout.sharded:  # per block: FSDP's units, TP's DTensor regions
        for block in model.layers.values():
            block.compile()  # in place: parameter names (and checkpoints) unchanged
    elif cfg.compile:  # whole: one graph also takes the head and the loss. On CPU at the
        model.compile()  # bench's tiny shape per-block was 4% slower than eager, whole 9% faster
    if layout["dp_shard"] > 1:
        assert layout.mesh is not None
        dims = ("dp_replicate", "dp_shard") if layout["dp_replicate"] > 1 else ("dp_shard",)
        apply_fsdp(model, layout.mesh[dims] if len(dims) > 1 else layout.mesh[dims[0]])


def apply_tp(model: Transformer, mesh: DeviceMesh, sequence_parallel: bool) -> None:
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )
    seq = Shard(1) if sequence_parallel else Replicate()
    top: dict[str, Any] = {}
    if model.embed is not None:
        top["embed"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=seq)
        if model.pos_embed is not None:
            top["pos_embed"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=seq)
    # the norms: split by position with the residual stream (sequence parallel), or whole on
    # every rank; either way their weights are DTensors like every other parameter
    norm_style = SequenceParallel if sequence_parallel else _Replicated
    if model.head is not None:
        top["norm"] = norm_style()
        top["head"] = ColwiseParallel(input_layouts=seq, output_layouts=Replicate())
    parallelize_module(model, mesh, top)
    # a later pipeline stage receives the previous stage's residual stream split by position
    if model.embed is None and sequence_parallel:
        model.input_split = mesh.size()
    mlp = ("ffn.fc", "ffn.proj") if model.cfg.arch == "gpt2" else ("ffn.w13", "ffn.w2")
    for block in model.layers.values():
        plan: dict[str, Any] = {
            "attn.wqkv": ColwiseParallel(), "attn.wo": RowwiseParallel(output_layouts=seq),
            mlp[0]: ColwiseParallel(), mlp[1]: RowwiseParallel(output_layouts=seq),
            "attn_norm": norm_style(), "ffn_norm": norm_style()}
        if sequence_parallel:  # gather the sequence before each sublayer, scatter after
            plan |= {"attn": PrepareModuleInput(input_layouts=(seq, None, None, None, None, None),
                                                desired_input_layouts=(Replicate(), None, None,
                                                                       None, None, None)),
                     "ffn": PrepareModuleInput(input_layouts=(seq,),
                                               desired_input_layouts=(Replicate(),))}
        parallelize_module(block, mesh, plan)
    if model.cfg.tied and model.embed is not None and model.head is not None:
        # each style distributed its own copy of the shared matrix: tie them again (both are
        # split by vocabulary row, the same placement)
        model.head.weight = model.embed.weight


class _Replicated(ParallelStyle):
    """A module whose parameters every tensor-parallel rank holds whole (a norm without
    sequence parallel): DTensors replicated over the mesh, so that the optimizer sees one
    kind of tensor; plain tensors in and out."""

    def _apply(self, module: nn.Module, mesh: DeviceMesh) -> nn.Module:
        def inputs(_: nn.Module, args: Any, m: DeviceMesh) -> Any:
            return tuple(DTensor.from_local(a, m, [Replicate()], run_check=False)
                         if isinstance(a, torch.Tensor) and not isinstance(a, DTensor) else a
                         for a in args)

        def output(_: nn.Module, out: Any, m: DeviceMesh) -> Any:
            return out.to_local() if isinstance(out, DTensor) else out
        return distribute_module(module, mesh, input_fn=inputs, output_fn=output)


def apply_fp8(model: Transformer) -> None:
    """torchao's float8 training: every linear of the blocks computes in float8 with
    dynamic scaling (the head, whose vocabulary size is rarely a multiple of 16, stays
    bf16). Needs the [fp8] extra and a Hopper GPU (checked by ``resolve_precision``)."""
    try:
        from torchao.float8 import convert_to_float8_training
    except ImportError:
        raise ConfigError("train.precision = 'fp8' needs torchao: pip install 'pretrain[fp8]'"
                          ) from None

    def eligible(module: nn.Module, fqn: str) -> bool:
        return isinstance(module, nn.Linear) and fqn.startswith("layers.") \
            and module.in_features % 16 == 0 and module.out_features % 16 == 0
    convert_to_float8_training(model, module_filter_fn=eligible)


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in the backward pass instead of storing them.
    Each block's ``forward`` is wrapped in place, so parameter names are unchanged."""
    from torch.utils.checkpoint import checkpoint
    for block in model.layers.values():  # type: ignore[union-attr,operator]
        inner = block.forward

        def forward(*args: Any, _inner: Any = inner) -> Any:
            return checkpoint(_inner, *args, use_reentrant=False)

        block.forward = forward


def apply_fsdp(model: Transformer, mesh: DeviceMesh) -> None:
    """FSDP2: one unit per block (one all-gather each), the embeddings, final norm and head
    with the root. A 2-D data mesh (replicate, shard) is HSDP."""
    from torch.distributed.fsdp import fully_shard
    for block in model.layers.values():
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


# ---- 4. materialize ----------------------------------------------------------------------

def materialize(model: Transformer, device: torch.device, order: list[tuple[str, tuple[int, ...]]],
                value: Callable[[str, tuple[int, ...]], torch.Tensor]) -> None:
    """Allocate the model's (sharded) parameters on ``device`` and fill them: for every
    parameter of the whole model in ``order``, ``value(name, shape)`` (the whole tensor,
    computed on every rank: a random draw must happen on every rank, whether it keeps the
    parameter or not), of which this rank keeps its shard."""
    model.to_empty(device=device)
    if model.cfg.tied and model.embed is not None and model.head is not None \
            and model.head.weight is not model.embed.weight:
        model.head.weight = model.embed.weight  # to_empty of a plain module unties them
    model.init_buffers()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, shape in order:
            full = value(name, shape)
            p = params.get(name)
            if p is None:
                continue  # another pipeline stage's
            full = full.to(device=device, dtype=p.dtype)
            if isinstance(p, DTensor):
                p.copy_(distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None))
            else:
                p.copy_(full)


def build(model_cfg: ModelConfig, cfg: TrainConfig, layout: Layout, device: torch.device,
          init: Transformer | None = None) -> tuple[Transformer, nn.Module]:
    """(the model this rank holds, parallelized and initialised; the module to run forward
    and backward through: a DDP wrapper, or the model itself). ``init``: a whole model on
    CPU to start from instead of the seeded initialisation."""
    check_layout(model_cfg, cfg, layout.degrees)
    resolve_precision(cfg.precision, device)  # fp8 where the device cannot: an error now
    if cfg.compile and device.type == "cpu":
        check_cpu_compiler()
    with torch.device("meta"):
        whole = Transformer(model_cfg)  # the parameter order and init rule of the whole model
        model = Transformer(model_cfg)
    order = [(n, tuple(p.shape)) for n, p in whole.named_parameters()]
    if layout["pp"] > 1:
        keep_stage(model, layout.index("pp"), layout["pp"])
    parallelize(model, cfg, layout)
    if init is not None:
        start = init.state_dict()
        materialize(model, device, order, lambda name, _: start[name])
    else:
        materialize(model, device, order, whole.init_value)
    model.train()
    if layout.ddp and layout["pp"] == 1:  # under a pipeline the loop averages the gradients
        from torch.nn.parallel import DistributedDataParallel
        group = layout.group("dp_replicate")
        return model, DistributedDataParallel(
            model, process_group=group, device_ids=[device.index] if device.type == "cuda" else None)
    return model, model
