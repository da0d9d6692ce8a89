"""Run by torchrun (or alone) in the memory test: build a model through
``parallelize.build`` (meta device, then each rank its shard), take one optimizer step,
and write what this rank holds: parameter, gradient and optimizer-state bytes, and the
process's peak resident memory. Usage: memory_worker.py OUT [parallel spec]."""

import json
import sys
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from pretrain import distributed
from pretrain.model.config import ModelConfig
from pretrain.train.config import ParallelConfig, TrainConfig
from pretrain.train.optim import make_optimizer
from pretrain.train.parallelize import build, make_layout


def local_bytes(tensors) -> int:
    return sum((t.to_local() if isinstance(t, DTensor) else t).nbytes for t in tensors)


def peak_rss_mb() -> float:
    return next(int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith("VmHWM")) / 1024


out = Path(sys.argv[1])
spec = dict(item.split("=") for item in sys.argv[2].split(",")) if len(sys.argv) > 2 else {}
d = distributed.init("cpu")
torch.set_num_threads(1)
before = peak_rss_mb()
cfg = TrainConfig(parallel=ParallelConfig(**{k: int(v) for k, v in spec.items()}))
model_cfg = ModelConfig(d_model=768, n_layers=8, n_heads=8, n_kv_heads=4, seq_len=64,
                        vocab_size=16384)   # 82 M parameters: 330 MB of fp32 weights
model, net = build(model_cfg, cfg, make_layout(cfg.parallel, d, torch.device("cpu")),
                   torch.device("cpu"))
after_build = peak_rss_mb()
opt = make_optimizer(model, cfg)
x = torch.randint(0, 16384, (2, 65))   # seq_len + 1: windows of 64 (TP splits them)
_, loss = net(x[:, :-1], x[:, 1:])
loss.backward()
opt.step()
state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.dim()]


def saved_bytes(batch: int) -> int:
    """What this rank's forward saves for backward (local shards, by storage; parameters
    aside) plus the logits it returns."""
    def plain(t: torch.Tensor) -> list[torch.Tensor]:
        """The plain tensors inside a DTensor (or a collective's async wrapper)."""
        if not isinstance(t, torch.Tensor):
            return []   # a wrapper's non-tensor attributes (a DTensor's mesh)
        if not is_traceable_wrapper_subclass(t):
            return [t]
        names, _ = t.__tensor_flatten__()
        return [x for n in names for x in plain(getattr(t, n))]
    own = {x.untyped_storage().data_ptr() for p in model.parameters() for x in plain(p)}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        for x in plain(t):
            if x.untyped_storage().data_ptr() not in own:
                seen[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
        return t
    y = torch.randint(0, 16384, (batch, 65))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits, _ = net(y[:, :-1], y[:, 1:])
    return sum(seen.values()) + sum(x.nbytes for x in plain(logits))

rec = {"params": local_bytes(model.parameters()),
       "grads": local_bytes(p.grad for p in model.parameters() if p.grad is not None),
       "optimizer": local_bytes(state), "rss_before_mb": before, "rss_peak_mb": peak_rss_mb(),
       "total_params": model_cfg.num_params(), "rss_after_build_mb": after_build}
# after the state's bytes: a forward without its backward leaves FSDP's root gathered
rec["saved_per_token"] = (saved_bytes(4) - saved_bytes(2)) / (2 * 64)
out.mkdir(parents=True, exist_ok=True)
(out / f"rank{d.rank}.json").write_text(json.dumps(rec))
distributed.shutdown()
