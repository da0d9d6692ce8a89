"""The model and training configs the distributed tests share between the test process
(one-process references) and the torchrun workers."""

from pretrain.model.config import ModelConfig
from pretrain.train.config import ParallelConfig, TrainConfig


def model_config(arch: str = "llama") -> ModelConfig:
    # 4 heads in 2 kv groups, hidden 96 in 4 gate/up block pairs: tp = 2 splits both
    return ModelConfig(arch=arch, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                       ffn_hidden=96, seq_len=32, vocab_size=258)


def train_config(steps: int, batch: int, accum: int, parallel: str = "",
                 **more: object) -> TrainConfig:
    """``parallel``: "dp_shard=2,tp=2" (the keys of ParallelConfig); ``more``: other
    TrainConfig fields."""
    kw = {k: (v if k == "pp_schedule" else int(v))
          for k, v in (item.split("=") for item in parallel.split(",") if item)}
    base: dict[str, object] = dict(steps=steps, batch_size=batch, grad_accum=accum,
                                   warmup_steps=2, eval_every=3, eval_batches=2, log_every=1,
                                   checkpoint_every=3, lr=3e-3)
    return TrainConfig(**{**base, **more}, parallel=ParallelConfig(**kw))  # type: ignore[arg-type]
