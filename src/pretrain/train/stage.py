"""The train stage: the token shards -> a trained model, resumable checkpoints and logs.

Checkpoints live beside the stage output, in ``checkpoints/train-<key>/`` (keyed by the
stage key, so a changed config never resumes from another run's checkpoints) and
TensorBoard files in ``tensorboard/train-<key>/``. ``--force train`` removes both first:
it means train again from the start.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from .. import distributed
from ..config import PretrainError
from ..log import log0
from ..model import io
from ..model.config import ModelConfig
from ..model.transformer import Transformer, grow_vocab
from ..rundir import StageRun
from ..tokenizer.shards import TokenShards
from .config import TrainConfig
from .loop import RunPaths, train


def run(run: StageRun, model_cfg: ModelConfig, cfg: TrainConfig, seed: int, device: str) -> None:
    shards = TokenShards(run.inputs["tokenize"], "train")
    vocab = shards.meta["vocab_size"]
    if model_cfg.vocab_size and model_cfg.vocab_size < vocab:
        raise PretrainError(f"model.vocab_size={model_cfg.vocab_size} is smaller than the "
                            f"tokenizer's {vocab}")
    model_cfg = replace(model_cfg, vocab_size=model_cfg.vocab_size or vocab)
    init = _init(cfg, shards, vocab) if cfg.init_from else None
    paths = RunPaths(out=run.out, checkpoints=run.root / "checkpoints" / f"train-{run.key}",
                     monitor=run.root / "tensorboard" / f"train-{run.key}", name=run.root.name)
    d = distributed.from_env()
    if run.forced and d.rank == 0:  # --force train means train again from the start
        for folder in (paths.checkpoints, paths.monitor):
            shutil.rmtree(folder, ignore_errors=True)  # type: ignore[arg-type]
    run.counts.update(train(cfg, model_cfg, run.inputs["tokenize"], paths, seed, device, init, d))


def _init(cfg: TrainConfig, shards: TokenShards, vocab: int) -> Transformer:
    """The model ``train.init_from`` names, its vocabulary grown to this run's tokenizer
    when that tokenizer is the checkpoint's extended with domain tokens."""
    init = io.load_any(Path(cfg.init_from))
    added = {a.id: a.parts for a in shards.tokenizer().added}
    if init.cfg.vocab_size < vocab and added:
        new_ids = range(init.cfg.vocab_size, vocab)
        missing = [i for i in new_ids if i not in added]
        if missing:
            raise PretrainError(f"train.init_from: cannot grow the checkpoint's vocabulary to "
                                f"this run's tokenizer: ids {missing[:5]} are neither in the "
                                "checkpoint nor added tokens")
        try:
            grow_vocab(init, [added[i] for i in new_ids])
        except ValueError as e:
            raise PretrainError(f"train.init_from: cannot grow the checkpoint's vocabulary to "
                                f"this run's tokenizer: {e}") from None
        log0(f"train: embeddings grown to {vocab} ids (new rows: mean of their pieces)")
    if init.cfg.vocab_size != vocab:
        raise PretrainError(f"train.init_from: the checkpoint has {init.cfg.vocab_size} token "
                            f"ids, the tokenizer of this run {vocab}; continue with the "
                            "checkpoint's tokenizer")
    log0(f"train: continuing from {cfg.init_from} ({init.cfg.arch}, "
         f"{init.cfg.num_params() / 1e6:.2f} M params); [model] settings are taken from it")
    return init.train()
