"""The train stage: the token shards -> a trained model, resumable checkpoints and logs.

Checkpoints live beside the stage output, in ``checkpoints/train-<key>/`` (keyed by the
stage key, so a changed config never resumes from another run's checkpoints) and
TensorBoard files in ``tensorboard/train-<key>/``. ``--force train`` removes both first
and continues from no other config's checkpoint: it means train again from the start.

A config that differs from an earlier one of the same run only in its learning-rate
schedule (``steps``, ``schedule``, ``lr``, ``warmup_steps``, ``decay_frac``,
``min_lr_ratio``) continues from the earlier one's newest checkpoint before which both
schedules give every step the same learning rate: raising ``steps`` of a WSD run continues
from its stable phase, exactly as if it had been started with the new value. Otherwise
the log says why it starts over. Each checkpoint folder carries ``lineage.json`` (the key
without the schedule, and the train config) for this.
"""

from __future__ import annotations

import json
import os
import shutil
import tomllib
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..config import ConfigError, PretrainError, SaidOnRankZero, build, fingerprint
from ..log import log0
from ..model import io
from ..model.config import ModelConfig
from ..model.transformer import Transformer, grow_vocab
from ..rundir import RunDir, StageRun, other_train_checkpoints, verify_folder
from ..tokenizer.files import first_difference, id_bytes, model_tokens
from ..tokenizer.shards import TokenShards
from . import state
from .config import TrainConfig
from .loop import RunPaths, train
from .monitor import LOGS
from .optim import lr_at
from .parallelize import Layout, check_cpu_compiler, resolve_precision

SCHEDULE = ("steps", "schedule", "lr", "warmup_steps", "decay_frac", "min_lr_ratio")
# the per-rank batch: what the data and the model see is its product with the data-parallel
# ranks (a checkpoint's "batch_rows", checked on resume), which a lineage shares
PER_RANK = ("batch_size",)
LINEAGE = "lineage.json"


def run(run: StageRun, model_cfg: ModelConfig, cfg: TrainConfig, seed: int, device: str) -> None:
    shards = TokenShards(run.inputs["tokenize"], "train")
    vocab = shards.meta["vocab_size"]
    if model_cfg.vocab_size and model_cfg.vocab_size != vocab:
        # larger, its extra ids are never trained yet sampled, and no tokenizer decodes them
        raise PretrainError(
            f"model.vocab_size={model_cfg.vocab_size} is not the tokenizer's {vocab}: leave "
            "it 0 (the tokenizer's); model.pad_vocab_multiple pads the matrices for speed, "
            "with the padding never sampled or scored")
    model_cfg = replace(model_cfg, vocab_size=model_cfg.vocab_size or vocab)
    init = _init_everywhere(cfg, shards, vocab) if cfg.init_from else None
    if init is not None:
        _ignored_model_settings(model_cfg, init.cfg)
        _same_seed(Path(cfg.init_from), seed)
    paths = RunPaths(out=run.out, checkpoints=RunDir(run.root).checkpoints(run.key),
                     monitor=run.root / "tensorboard" / f"train-{run.key}", name=run.root.name)
    d = distributed.from_env()
    # on every rank: a bad layout stops them all
    rows = cfg.batch_size * Layout(cfg.parallel.degrees(d.world)).dp
    if d.rank == 0:
        assert paths.checkpoints is not None
        if note := warmup_note(cfg):
            log0(note)
        # --force train, or train.resume = false: train again from the start. The earlier
        # checkpoints of this config go (kept, they outnumbered the new run's, which the
        # rotation then removed as they were written, and a rollback could restore them)
        if run.forced or not cfg.resume:
            if not run.forced and state.complete(paths.checkpoints):
                log0(f"train: train.resume = false: removing the earlier checkpoints of this "
                     f"config in {paths.checkpoints}")
            for folder in (paths.checkpoints, paths.monitor):
                shutil.rmtree(folder, ignore_errors=True)  # type: ignore[arg-type]
        _checkpoint_lineage(run, cfg, paths.checkpoints, rows, continue_earlier=not run.forced)
    distributed.barrier(d)
    run.logs.update(f"{name}.jsonl" for name in LOGS)   # times and throughput: no later input
    run.counts.update(train(cfg, model_cfg, run.inputs["tokenize"], paths, seed, device, init, d))


def preflight(model_cfg: ModelConfig, cfg: TrainConfig, seed: int, device: str) -> None:
    """What stops training on this machine (no such device, a precision it lacks, no C++
    compiler for ``train.compile`` on CPU), said when the command starts: a `pretrain run`
    had cleaned and tokenized the corpus first."""
    here = distributed.resolve_device(device)
    if cfg.precision == "fp8":   # "auto" asks the GPU for bf16, which on one before Ampere
        resolve_precision(cfg.precision, here)   # makes a tensor on GPU 0 (every rank's)
    if cfg.compile and here.type == "cpu":
        check_cpu_compiler()


def warmup_note(cfg: TrainConfig) -> str | None:
    """What a warmup as long as the run does to it (the default 50 steps, with a short
    ``--train.steps``), said at the start; None otherwise."""
    if cfg.warmup_steps < cfg.steps:
        return None
    return (f"train: warmup_steps = {cfg.warmup_steps} >= steps = {cfg.steps}: the learning "
            f"rate rises to {lr_at(cfg.steps - 1, cfg):.3g} (train.lr {cfg.lr:.3g}) and never "
            "decays; lower train.warmup_steps")


def _checkpoint_lineage(run: StageRun, cfg: TrainConfig, folder: Path, rows: int,
                        continue_earlier: bool) -> None:
    """Rank 0, before training: mark ``folder`` with its lineage; continue from an earlier
    config's checkpoint where the schedules agree and the batch has the same ``rows`` (a
    micro-step's over the data-parallel ranks), unless not ``continue_earlier`` (--force
    train); list (or remove) the other folders."""
    lineage = lineage_of(run.key_parts)
    # the lineage but for grad_accum, which picks the data too: a config of another one
    # starts over, and the listing below says how to continue instead
    any_accum = lineage_of(run.key_parts, ("grad_accum",))
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / LINEAGE).exists():
        (folder / LINEAGE).write_text(json.dumps({"lineage": lineage, "any_accum": any_accum,
                                                  "train": asdict(cfg)}), encoding="utf-8")
    others = other_train_checkpoints(folder)
    if cfg.resume and continue_earlier and not state.complete(folder):
        found = continuation(cfg, lineage, others, rows)
        if found is not None:
            _link_copy(found, folder / found.name)
            log0(f"train: continuing from {found} (an earlier config of this run, of the "
                 "same model, data and rows a micro-step, whose learning rate is the same at "
                 "every step before it)")
    from_zero = not state.complete(folder)   # else it resumes: no hint to start elsewhere
    for other in others:
        if cfg.remove_other_checkpoints:
            shutil.rmtree(other)
            log0(f"train: removed {other} (train.remove_other_checkpoints)")
            continue
        if {f.name for f in other.iterdir()} <= {LINEAGE}:
            continue   # a run refused before its first checkpoint: nothing to keep or say
        ckpts = state.complete(other)
        size = sum(f.stat().st_size for f in other.rglob("*") if f.is_file())
        held = (f"{len(ckpts)} checkpoint{'s' * (len(ckpts) != 1)}, latest step "
                f"{state.step_of(ckpts[-1])}" if ckpts
                else "no complete checkpoint: a run stopped before its first")
        log0(f"train: checkpoints of another config of this run: {other} ({held}, "
             f"{size / 1e6:.1f} MB{_differs(other, cfg)}); "
             "--train.remove_other_checkpoints=true removes them"
             + (_accum_hint(other, lineage, any_accum, ckpts) if ckpts and from_zero else ""))


def _differs(other: Path, cfg: TrainConfig) -> str:
    """Which train settings ``other``'s checkpoints were made under differ from ``cfg``'s
    (', trained with another train.optimizer'), so that a run that starts over says why;
    where none do, the model, the data or the seed did."""
    try:
        old = json.loads((other / LINEAGE).read_text(encoding="utf-8"))["train"]
        skip = {*TrainConfig.UNKEYED, *TrainConfig.KEYED_AS_DEFAULT}   # not in the key
        keys = [k for k, v in asdict(cfg).items() if k in old and k not in skip
                and json.dumps(old[k], default=str) != json.dumps(v, default=str)]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    if not keys:
        return ", of another model, data or seed"
    shown = ", ".join(f"train.{k}" for k in keys[:4]) + (" ..." if len(keys) > 4 else "")
    return f", trained with another {shown}"


def _accum_hint(other: Path, lineage: str, any_accum: str, ckpts: list[Path]) -> str:
    """How to continue ``other``'s checkpoints where only train.grad_accum keeps them from
    this run (kept global batch on fewer processes, the usual change); "" otherwise."""
    try:
        meta = json.loads((other / LINEAGE).read_text(encoding="utf-8"))
        accum = int(meta["train"]["grad_accum"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    if meta.get("any_accum") != any_accum or meta.get("lineage") == lineage:
        return ""
    rows = state.batch_rows(ckpts[-1])
    return (f"; they differ from this config in train.grad_accum ({accum}), which picks the "
            "data as the batch does, so this run starts over: to continue them instead, keep "
            f"train.grad_accum = {accum} with {rows or 'the same'} rows a micro-step "
            "(train.batch_size x data-parallel ranks)")


def lineage_of(key_parts: dict[str, Any], also: tuple[str, ...] = ()) -> str:
    """The train key without the schedule and the per-rank batch (and the train keys
    ``also``): two configs of one lineage train the same model on the same data in the same
    order, and may differ only in their learning rates (and in how a batch is split over
    the ranks)."""
    parts = json.loads(json.dumps(key_parts))
    for k in SCHEDULE + PER_RANK + also:
        parts.get("config", {}).get("train", {}).pop(k, None)
    return fingerprint(parts)


def continuation(cfg: TrainConfig, lineage: str, folders: list[Path],
                 rows: int) -> Path | None:
    """The newest intact checkpoint, in ``folders`` of the same lineage, that training with
    ``cfg`` on ``rows`` rows a micro-step would also have written; each refusal is logged
    with its reason."""
    best: tuple[int, Path] | None = None
    refusals: list[str] = []
    for other in folders:
        try:
            meta = json.loads((other / LINEAGE).read_text(encoding="utf-8"))
            old = build(TrainConfig, meta["train"]) if meta["lineage"] == lineage else None
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as e:
            if state.complete(other):   # its checkpoints cannot be placed: said, not dropped
                log0(f"train: {other / LINEAGE} is unreadable ({type(e).__name__}: "
                     f"{str(e)[:200]}); not continuing from the checkpoints in {other}")
            continue
        if old is None:
            continue
        refusal = ""
        for ckpt in reversed(state.complete(other)):
            step = state.step_of(ckpt)
            why = _schedules_differ(old, cfg, step) or _rows_differ(ckpt, rows)
            damaged = state.verify(ckpt) if why is None else None
            if why is None and damaged is None:
                if best is None or step > best[0]:
                    best = (step, ckpt)
                break
            if damaged:   # said whether or not an older one serves
                log0(f"train: not continuing from {ckpt}: damaged ({damaged})")
            refusal = refusal or f"not continuing from {ckpt}: {why or 'damaged'}"
        else:
            if refusal:   # none of this folder's checkpoints would do: why not the newest
                refusals.append(refusal)
    if best is None:
        for line in refusals:
            log0(f"train: {line}; training starts from step 0")
    return best[1] if best else None


def _schedules_differ(old: TrainConfig, new: TrainConfig, step: int) -> str | None:
    """None when both configs give steps 0 .. ``step`` - 1 the same learning rate (and so
    a checkpoint at ``step`` is what ``new`` would have written); else why not."""
    if step > new.steps:
        return f"it is past train.steps = {new.steps}"
    if old.time_budget_s or new.time_budget_s:
        return "with train.time_budget_s the learning rate depends on the time taken"
    if any(m.weight_end != -1.0 or m.phase_weights for m in new.mixture):
        return "a mixture curriculum (weight_end, phase_weights) spreads over train.steps"
    for t in range(step):
        if lr_at(t, old) != lr_at(t, new):
            hint = ("; schedule = 'wsd' lets a run be extended (its stable phase lengthens)"
                    if new.schedule != "wsd" else "")
            # update t is the log's step t + 1 (a step is numbered by the updates done)
            return (f"the learning rate differs from step {t + 1} on (schedule {old.schedule!r}, "
                    f"steps {old.steps} -> {new.schedule!r}, {new.steps}), before this "
                    f"checkpoint's step {step}{hint}")
    return None


def _rows_differ(ckpt: Path, rows: int) -> str | None:
    """Why ``ckpt`` was not trained on ``rows`` rows a micro-step, or None."""
    had = state.batch_rows(ckpt)
    if had == rows:
        return None
    return (f"it was trained on {had} rows a micro-step (train.batch_size x data-parallel "
            f"ranks), this launch makes {rows}")


def _link_copy(src: Path, dst: Path) -> None:
    """``src`` as ``dst``, its files hard-linked where the filesystem allows (no copy)."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, tmp, copy_function=link)
    os.replace(tmp, dst)


def _init_everywhere(cfg: TrainConfig, shards: TokenShards, vocab: int) -> Transformer | None:
    """:func:`_init` on every rank, its refusals said once under torchrun: each message by
    the lowest rank that met it (with the ranks, where not all did: a machine's own copy),
    and every rank stops when one does (they had each printed the same line)."""
    d = distributed.from_env()
    error: Exception | None = None
    try:
        init = _init(cfg, shards, vocab)
    except Exception as e:  # noqa: BLE001 -- any: a rank that raised alone left the others
        init, error = None, e   # waiting in the gather below
    if not d.enabled:
        if error is not None:
            raise error
        return init
    said = distributed.gather(None if error is None else str(error)
                              if isinstance(error, PretrainError)
                              else f"{type(error).__name__}: {error}", d)
    failed = [r for r, m in enumerate(said) if m is not None]
    if not failed:
        return init
    mine = said[d.rank]
    if error is None or said.index(mine) != d.rank:
        raise SaidOnRankZero(said[failed[0]])   # said by another rank
    ranks = [r for r, m in enumerate(said) if m == mine]
    if len(ranks) == d.world or not isinstance(error, PretrainError):
        raise error
    raise type(error)(f"{error} (on rank{'s' if len(ranks) > 1 else ''} "
                      f"{', '.join(map(str, ranks))} of {d.world})")


def _init(cfg: TrainConfig, shards: TokenShards, vocab: int) -> Transformer:
    """The model ``train.init_from`` names, its vocabulary grown to this run's tokenizer
    when that tokenizer is the checkpoint's extended with domain tokens."""
    folder = io.model_folder(Path(cfg.init_from))
    damaged = verify_folder(folder) if folder is not None else []
    if damaged:
        raise PretrainError(f"train.init_from: {folder} does not match what was recorded when "
                            f"it was written: {'; '.join(damaged[:3])}")
    try:
        init = io.load_any(Path(cfg.init_from))
    except PretrainError as e:   # named as the other init_from errors are
        raise (ConfigError if isinstance(e, ConfigError) else PretrainError)(
            f"train.init_from: {e}") from None
    # a folder without checksums (a Hugging Face one) damaged in place: NaN weights gave a
    # NaN loss at step 0, then "training diverged: lower train.lr"
    bad = next((n for n, t in init.state_dict().items()
                if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:
        raise PretrainError(f"train.init_from: {cfg.init_from}: its weight {bad} holds NaN or "
                            "inf values (a damaged file?); export or copy it again")
    trained_vocab = init.cfg.vocab_size   # the ids the checkpoint was trained with
    tok = shards.tokenizer()
    added = {a.id: a.parts for a in tok.added}
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
    _same_tokens(Path(cfg.init_from), id_bytes(tok), trained_vocab)
    log0(f"train: continuing from {cfg.init_from} ({init.cfg.arch}, "
         f"{init.cfg.num_params() / 1e6:.2f} M params); [model] settings are taken from it")
    return init.train()


def _same_seed(init: Path, seed: int) -> None:
    """Say when ``init`` is (a checkpoint of) a run trained with this ``seed``: batches
    are drawn by seed and step, and a continued run starts at step 0, so on the same data
    it sees the source's batches again, in their order."""
    for folder in (init, *list(init.resolve().parents)[:3]):
        try:
            with open(folder / "config.toml", "rb") as f:
                theirs = tomllib.load(f).get("seed")
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if theirs == seed:
            log0(f"train: {folder} was trained with seed = {seed} too: batches are drawn by "
                 "seed and step, so on its data this run sees its batches again, in their "
                 "order; set seed to another value to draw others")
        return


def _ignored_model_settings(given: ModelConfig, taken: ModelConfig) -> None:
    """Say the [model] settings of a run continued from a checkpoint that differ from the
    checkpoint's, which it does not get: a longer seq_len or another width trained silently
    at the checkpoint's. Every one that differs, a default too: ``--model.seq_len=128``
    typed beside ``init_from`` is a default (and went unsaid when only values other than
    the defaults were named)."""
    mine, theirs = given.in_use(), taken.in_use()
    ignored = [f"{k} = {v!r} (it has {theirs[k]!r})" for k, v in mine.items()
               if k in theirs and k != "vocab_size" and v != theirs[k]]
    if ignored:
        log0("train: warning: init_from's model is trained as it is; this config's "
             "settings that differ from it are not used: model." + ", model.".join(ignored))


def _same_tokens(source: Path, ours: dict[int, bytes], below: int) -> None:
    """The ids the checkpoint was trained with stand for the same bytes (``ours``, this
    run's tokenizer's) as in the tokenizer it was trained with (two tokenizers of one size
    are not the same tokenizer)."""
    folder = io.model_folder(source)
    theirs = model_tokens(folder or source, ours=folder is not None)
    if theirs is None:
        log0(f"train: init_from: no tokenizer found with {source} (a run's tokenizer/ or an "
             "HF byte-level tokenizer.json): its ids are taken to mean this run's")
        return
    i = first_difference(theirs, ours, below)
    if i is not None:
        raise PretrainError(
            f"train.init_from: {source} was trained with another tokenizer: id {i} is "
            f"{theirs.get(i, b'(not a token of text)')!r} there and "
            f"{ours.get(i, b'(not a token of text)')!r} here; continue with the checkpoint's "
            "tokenizer (tokenizer.pretrained)")
