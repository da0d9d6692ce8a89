"""The training stage's configuration: ``[train]`` and its ``[[train.mixture]]`` entries.

Light on purpose (no torch): ``pretrain config show`` and ``--dry-run`` import it. What
uses these values: ``loop.py`` (the loop, checkpoints, evaluation), ``optim.py`` (optimizer
and schedule), ``data.py`` (batches and mixtures), ``stability.py`` and ``monitor.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from ..config import PATH, ConfigError
from ..model.config import ModelConfig


@dataclass
class MixtureEntry:
    """A data domain's sampling weight over the run: constant (``weight``), linear from
    ``weight`` to ``weight_end``, or one weight per phase of ``train.mixture_phases``
    (``phase_weights``: a pretraining mix, then mid-training, then an annealing mix)."""

    domain: str = ""
    weight: float = 1.0
    weight_end: float = -1.0          # weight at the end of the run; -1 = constant
    phase_weights: list[float] = field(default_factory=list)  # one per train.mixture_phases
    max_epochs: float = 0.0           # passes over the domain's tokens; 0 = no limit

    def __post_init__(self) -> None:
        if not self.domain:
            raise ConfigError("domain: each [[train.mixture]] entry names a data domain")
        if self.weight < 0 or (self.weight_end < 0 and self.weight_end != -1.0) or self.max_epochs < 0:
            raise ConfigError("weight, weight_end (or -1) and max_epochs must be >= 0")
        if any(w < 0 for w in self.phase_weights):
            # the loader puts the entry's place (train.mixture.N.) before the field's name
            raise ConfigError(f"phase_weights must be >= 0 (domain {self.domain!r})")
        if self.phase_weights and self.weight_end != -1.0:
            raise ConfigError(f"phase_weights or weight_end, not both (domain {self.domain!r})")



@dataclass
class ParallelConfig:
    """How the processes torchrun starts share the work: a device mesh of
    ``pp x dp_replicate x dp_shard x tp`` processes (``train/parallelize.py``).

    - ``dp_replicate``: data-parallel replicas (DDP; with ``dp_shard > 1``, HSDP's
      replicated dimension). -1 = what the other degrees leave of the world.
    - ``dp_shard``: FSDP2 shards of parameters, gradients and optimizer state. -1 = what
      the other degrees leave (then ``dp_replicate`` defaults to 1).
    - ``tp``: tensor parallel degree (column-wise q/k/v and gate/up, row-wise output and
      down projections, vocabulary-parallel embedding and head), with sequence parallel
      norms; divides n_kv_heads. Combined with data parallel through ``dp_shard``.
    - ``pp``: pipeline stages, the layers split evenly; ``pp_microbatches`` per batch.

    One process: every degree resolves to 1. ``torchrun --nproc_per_node=N``: the default
    is DDP over N; ``--train.parallel.dp_shard=-1`` is FSDP over N.
    """

    dp_replicate: int = -1
    dp_shard: int = 1
    tp: int = 1
    pp: int = 1
    pp_schedule: Literal["1F1B", "GPipe"] = "1F1B"
    pp_microbatches: int = 0          # 0 = 2 x pp (each a slice of the per-rank batch)
    sequence_parallel: bool = True    # with tp > 1: norms and residuals split by position

    def __post_init__(self) -> None:
        for name in ("dp_replicate", "dp_shard"):
            if getattr(self, name) == 0 or getattr(self, name) < -1:
                raise ConfigError(f"{name} must be -1 (the rest of the world) or >= 1")
        if self.tp < 1 or self.pp < 1 or self.pp_microbatches < 0:
            raise ConfigError("tp and pp must be >= 1, pp_microbatches >= 0")

    def degrees(self, world: int) -> dict[str, int]:
        """``{"pp", "dp_replicate", "dp_shard", "tp"}`` for ``world`` processes; a product
        that does not match is a one-line error naming both."""
        rep, shard, fixed = self.dp_replicate, self.dp_shard, self.tp * self.pp
        if shard == -1:
            rep = 1 if rep == -1 else rep
            shard = max(1, world // (fixed * rep))
        elif rep == -1:
            rep = max(1, world // (fixed * shard))
        out = {"pp": self.pp, "dp_replicate": rep, "dp_shard": shard, "tp": self.tp}
        total = rep * shard * fixed
        if total != world:
            raise ConfigError(f"train.parallel: pp {self.pp} x dp_replicate {rep} x dp_shard "
                              f"{shard} x tp {self.tp} = {total} processes, but there are {world}")
        return out

    @property
    def microbatches(self) -> int:
        return self.pp_microbatches or 2 * self.pp

    @property
    def fewest_processes(self) -> int:
        """The smallest world the layout runs on (-1 degrees as 1)."""
        return self.tp * self.pp * max(self.dp_replicate, 1) * max(self.dp_shard, 1)


@dataclass
class TrainConfig:
    steps: int = 500
    time_budget_s: float = 0.0        # stop after this much training time (steps then a cap)
    batch_size: int = 16              # sequences per micro-batch
    grad_accum: int = 1               # micro-batches per optimizer step
    lr: float = 3e-3
    min_lr_ratio: float = 0.1         # the decay reaches lr * min_lr_ratio at step `steps`
    warmup_steps: int = 50
    schedule: Literal["cosine", "linear", "wsd"] = "cosine"
    decay_frac: float = 0.2           # wsd: the share of steps spent decaying
    optimizer: Literal["adamw", "muon"] = "adamw"  # muon: hidden matrices (AdamW for the rest)
    weight_decay: float = 0.1         # matrices but embeddings (and the head under muon)
    embed_lr_mult: float = 1.0        # the input embedding table's lr = the scheduled lr * this
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0            # 0 = off
    eval_every: int = 100
    eval_batches: int = 8             # val windows: eval_batches * batch_size * dp rows, split by domain
    log_every: int = 10
    # at every eval, greedy continuations of a fixed prompt per data domain (the start of
    # its first held-out document), stored with the step in train/generations.jsonl
    probe_prompt_tokens: int = 16
    probe_new_tokens: int = 32        # 0 = off
    threads: int = 0                  # torch intra-op threads; 0 = torch's default
    peak_tflops: float = 0.0          # hardware peak for MFU; 0 = measure it (CPU) or skip (GPU)
    init_from: str = field(default="", metadata=PATH)  # continue from: run dir, checkpoint or HF model dir
    mixture: list[MixtureEntry] = field(default_factory=list)  # domain weights; [] = by size
    # where each phase of the mixture starts, as fractions of training (first 0.0), for
    # entries with phase_weights; e.g. [0.0, 0.6, 0.9]
    mixture_phases: list[float] = field(default_factory=list)
    # "auto": bf16 autocast on a GPU that has it, fp32 elsewhere; "fp16": autocast with a
    # gradient scaler (its overflow skips are stability events); "fp8": torchao's float8
    # training on Hopper or newer (the [fp8] extra). Weights and optimizer state stay fp32.
    precision: Literal["auto", "fp32", "bf16", "fp16", "fp8"] = "auto"
    compile: bool = False             # torch.compile the model (inductor; needs a C++ compiler on CPU)
    # the head and the cross-entropy: "chunked" (fused, the logits made a chunk of tokens at a
    # time: no full-vocabulary logits in memory), "full" (the whole logits in the autocast
    # dtype; compiled, their fp32 upcast is fused into the loss kernels), "auto": see
    # parallelize.resolve_loss. Equal within fp32 tolerance: not part of the stage's key.
    loss: Literal["auto", "chunked", "full"] = "auto"
    # when the host reads a step's loss and gradient norm: "step" (each step, before its
    # update; the host takes or skips it), "lagged" (the device skips a bad update, through
    # fused AdamW's found_inf, and the host reads a step late, at once only at steps that
    # log, evaluate, checkpoint or end: no host synchronisation in other steps; with AdamW,
    # no fp16 scaler, no sharded parameters), "auto" (lagged on a GPU where it applies,
    # step otherwise). The same decisions either way: not part of the stage's key.
    host_sync: Literal["auto", "step", "lagged"] = "auto"
    activation_checkpointing: bool = False  # recompute block activations in backward
    checkpoint_every: int = 100       # steps between resumable checkpoints; 0 = none
    keep_last: int = 2                # checkpoints kept (plus the best by val loss)
    resume: bool = True               # continue from the latest checkpoint of the same config
    # checkpoints of this run's other train configs (other keys) are listed when training
    # starts; true removes them
    remove_other_checkpoints: bool = False
    spike_window: int = 50            # losses the spike z-score is computed over
    spike_zscore: float = 6.0         # a loss this many std above the window mean is a spike; 0 = off
    max_bad_steps: int = 3            # bad (skipped) steps in a row before rolling back
    max_rollbacks: int = 3            # then give up with an error
    # slow divergence: the loss (mean of the last 5 steps) above divergence_factor x the first
    # step's, or over divergence_window steps the newer half's mean divergence_rise above the
    # older half's. "rollback": to a checkpoint from before it began, the learning rate times
    # divergence_lr_factor from then on (counts against max_rollbacks); "stop": a one-line
    # error; "off": not watched. 0 turns one rule off.
    on_divergence: Literal["rollback", "stop", "off"] = "rollback"
    divergence_factor: float = 1.5
    divergence_window: int = 200
    divergence_rise: float = 0.1
    divergence_lr_factor: float = 0.5
    parallel: ParallelConfig = field(default_factory=ParallelConfig)  # under torchrun
    tensorboard: bool = True          # event files in runs/<name>/tensorboard/
    wandb: Literal["off", "offline", "online"] = "off"
    wandb_project: str = "pretrain"

    # what does not change the model a run trains: whether it resumes, how often it logs,
    # evaluates, generates and checkpoints, where its metrics go, its threads, the MFU's
    # denominator and how the processes split the work (the layout changes only the order of
    # float sums). Left out of the train stage's key: changing them never retrains, and a
    # run resumes its checkpoints under any of them (a layout with another number of
    # data-parallel ranks only with the batch_size that keeps the batch: loop._check_rows).
    UNKEYED: ClassVar[tuple[str, ...]] = (
        "resume", "remove_other_checkpoints", "log_every", "eval_every", "eval_batches", "probe_prompt_tokens",
        "probe_new_tokens", "threads", "peak_tflops", "checkpoint_every", "keep_last",
        "tensorboard", "wandb", "wandb_project", "parallel", "loss", "host_sync")
    # the same, but left the key after runs were keyed with them: the key holds their
    # default whatever they are set to, so that those runs' keys (and checkpoint lineages)
    # stay what they were. Activation checkpointing recomputes the same activations: a run
    # that hit an out-of-memory error resumes its checkpoints with it.
    KEYED_AS_DEFAULT: ClassVar[tuple[str, ...]] = ("activation_checkpointing",)
    # the names other tools give these keys (Hugging Face's Trainer, nanoGPT, litgpt): an
    # unknown key among them is answered with ours
    ELSEWHERE: ClassVar[dict[str, str]] = {
        "learning_rate": "lr", "max_steps": "steps", "max_iters": "steps",
        "train_steps": "steps", "warmup": "warmup_steps", "warmup_iters": "warmup_steps",
        "micro_batch_size": "batch_size", "per_device_train_batch_size": "batch_size",
        "gradient_accumulation_steps": "grad_accum", "max_grad_norm": "grad_clip",
        "clip_grad_norm": "grad_clip", "save_steps": "checkpoint_every",
        "save_interval": "checkpoint_every", "eval_interval": "eval_every",
        "eval_steps": "eval_every", "log_interval": "log_every", "logging_steps": "log_every",
        "adam_beta1": "beta1", "adam_beta2": "beta2"}

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "eval_batches", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        # each rule names its key and the value given (several keys were one message,
        # and which of them was wrong went unsaid)
        for name, ok, want in (
                ("lr", self.lr > 0, "> 0"),
                ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "within [0, 1]"),
                ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
                ("probe_prompt_tokens", self.probe_prompt_tokens >= 0, ">= 0"),
                ("probe_new_tokens", self.probe_new_tokens >= 0, ">= 0"),
                ("checkpoint_every", self.checkpoint_every >= 0, ">= 0 (0 = none)"),
                ("keep_last", self.keep_last >= 1, ">= 1"),
                ("spike_zscore", self.spike_zscore >= 0, ">= 0 (0 = off)"),
                ("decay_frac", 0 < self.decay_frac <= 1, "within (0, 1]"),
                ("time_budget_s", self.time_budget_s >= 0, ">= 0 (0 = train for `steps` steps)"),
                ("divergence_factor", self.divergence_factor == 0 or self.divergence_factor > 1,
                 "> 1 (or 0 = off)"),
                ("divergence_window", self.divergence_window == 0 or self.divergence_window >= 2,
                 "0 (off) or >= 2"),
                ("divergence_rise", self.divergence_rise > 0, "> 0"),
                ("divergence_lr_factor", 0 < self.divergence_lr_factor <= 1, "within (0, 1]"),
                ("beta1", 0 <= self.beta1 < 1, "within [0, 1)"),
                ("beta2", 0 <= self.beta2 < 1, "within [0, 1)"),
                ("weight_decay", self.weight_decay >= 0, ">= 0"),
                ("grad_clip", self.grad_clip >= 0, ">= 0 (0 = off)"),
                ("embed_lr_mult", self.embed_lr_mult >= 0,
                 ">= 0 (0 = the embedding table frozen)"),
                ("spike_window", self.spike_window >= 2, ">= 2"),
                ("max_bad_steps", self.max_bad_steps >= 1, ">= 1"),
                ("max_rollbacks", self.max_rollbacks >= 0, ">= 0")):
            if not ok:
                raise ConfigError(f"{name} must be {want}, got {getattr(self, name)!r}")
        if self.optimizer == "muon" and (self.parallel.dp_shard != 1 or self.parallel.tp > 1):
            raise ConfigError("optimizer = 'muon' needs whole matrices: not with dp_shard or tp "
                              "(train.parallel)")
        self._check_phases()

    def loss_path(self, tp: int) -> str:
        """``loss`` under tensor parallelism of degree ``tp``: "chunked" or "full". TP splits
        the head, which the chunked loss needs whole: "full" there; "auto" is "chunked"
        everywhere else. Here (no torch) so that the memory estimates follow it too."""
        if tp > 1:
            if self.loss == "chunked":
                raise ConfigError("train.loss = 'chunked' needs the whole output head: not "
                                  "with train.parallel.tp > 1 (use 'auto' or 'full')")
            return "full"
        return "chunked" if self.loss == "auto" else self.loss

    def _check_phases(self) -> None:
        ph = self.mixture_phases
        if ph and (ph[0] != 0.0 or any(b <= a for a, b in zip(ph, ph[1:], strict=False))
                   or ph[-1] >= 1.0):
            raise ConfigError(f"train.mixture_phases = {ph}: increasing fractions of training "
                              "in [0, 1), the first 0.0")
        for m in self.mixture:
            if m.phase_weights and len(m.phase_weights) != len(ph):
                raise ConfigError(f"train.mixture {m.domain!r}: {len(m.phase_weights)} "
                                  f"phase_weights for {len(ph)} train.mixture_phases")
        if ph and not any(m.phase_weights for m in self.mixture):
            raise ConfigError("train.mixture_phases is set but no [[train.mixture]] entry has "
                              "phase_weights")
        names = [m.domain for m in self.mixture]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"train.mixture names domain(s) {twice} more than once: one "
                              "entry per domain (its weight and max_epochs)")
        if self.time_budget_s and any(m.weight_end != -1.0 or m.phase_weights
                                      for m in self.mixture):
            raise ConfigError("mixture: a curriculum (weight_end, phase_weights) spreads over "
                              "train.steps, which with train.time_budget_s is only a cap: "
                              "set train.steps without a budget, or use constant weights")

    def unavailable(self) -> str | None:
        """What this machine lacks for the config to train: the ``init_from`` it names."""
        if self.init_from and not Path(self.init_from).exists():
            return f"train.init_from: {self.init_from} does not exist"
        return None

    def init_fingerprint(self) -> list[tuple[str, int, int]]:
        """What identifies the weights ``init_from`` names without reading them (each file's
        name, size and mtime): part of the train stage's key. A run directory's
        checkpoints (and stage folders being written) are left out: removing the base
        run's old checkpoints made every run continued from it out of date."""
        if not self.init_from:
            return []
        path = Path(self.init_from)

        def loaded(p: Path) -> bool:
            parts = p.relative_to(path).parts[:-1]
            return not any(q == "checkpoints" or q.startswith((".tmp-", ".old-", ".work"))
                           for q in parts)
        return [(str(p), p.stat().st_size, p.stat().st_mtime_ns)
                for p in sorted(path.rglob("*.safetensors")) + sorted(path.rglob("*config.json"))
                if loaded(p)]


def check_layout(model_cfg: ModelConfig, cfg: TrainConfig, layout: Mapping[str, int]) -> None:
    """What a layout (``train.parallel``'s degrees) cannot do with this model, as one-line
    errors before anything runs; `pretrain plan` asks it of the layouts it shows."""
    tp, pp = layout["tp"], layout["pp"]
    if tp > 1:
        if model_cfg.arch == "mla":
            raise ConfigError("train.parallel.tp > 1 is not implemented for mla: its latent "
                              "down-projections (kv_a, q_a) feed every head, so they do not "
                              "split by head; use dp_shard (FSDP) or pp")
        hidden_blocks = math.gcd(model_cfg.hidden, model_cfg.n_heads)
        if model_cfg.kv_heads % tp or (model_cfg.arch == "llama" and hidden_blocks % tp) \
                or model_cfg.hidden % tp:
            raise ConfigError(f"train.parallel.tp = {tp} must divide the kv heads "
                              f"({model_cfg.kv_heads}) and the MLP's hidden size "
                              f"({model_cfg.hidden}, in {hidden_blocks} gate/up blocks)")
        if layout["dp_replicate"] > 1 and layout["dp_shard"] == 1:
            raise ConfigError("DDP with tensor parallelism is not supported: shard the data "
                              "dimension instead (train.parallel.dp_shard = -1, or with "
                              "dp_replicate > 1 for HSDP)")
        if cfg.parallel.sequence_parallel and model_cfg.seq_len % tp:
            raise ConfigError(f"train.parallel.tp = {tp} must divide model.seq_len "
                              f"({model_cfg.seq_len}) with sequence parallel (the norms split "
                              "the positions); or set train.parallel.sequence_parallel = false")
        cfg.loss_path(tp)   # the chunked loss needs the whole head
        if cfg.compile:
            raise ConfigError("train.compile with train.parallel.tp > 1 fails in torch's "
                              "DTensor backward (tested with torch 2.13 on CPU): leave compile "
                              "off under tensor parallelism, or use dp_shard (FSDP) or pp")
    if pp > 1:
        if model_cfg.tied:
            raise ConfigError("pipeline parallelism needs untied embeddings (the embedding is "
                              "on the first stage, the head on the last): "
                              + ("gpt2 always ties them, use model.arch = 'llama' or 'mla'"
                                 if model_cfg.arch == "gpt2"
                                 else "set model.tie_embeddings = false"))
        if model_cfg.n_layers < pp:
            raise ConfigError(f"train.parallel.pp = {pp} stages need at least {pp} layers, "
                              f"the model has {model_cfg.n_layers}")
        if cfg.batch_size % cfg.parallel.microbatches:
            raise ConfigError(f"train.batch_size ({cfg.batch_size}) must be a multiple of the "
                              f"pipeline's microbatches ({cfg.parallel.microbatches})")
        if cfg.parallel.pp_schedule == "1F1B" and cfg.parallel.microbatches < pp:
            raise ConfigError(f"train.parallel.pp_microbatches = {cfg.parallel.microbatches}: "
                              f"the 1F1B schedule needs at least one per stage ({pp}); raise "
                              "it or use pp_schedule = 'GPipe'")
        if cfg.grad_accum != 1:
            raise ConfigError("with pp > 1 the pipeline's microbatches accumulate the "
                              "gradients: set train.grad_accum = 1 and raise "
                              "train.parallel.pp_microbatches instead")
    if cfg.precision == "fp16" and pp > 1:
        raise ConfigError("train.precision = 'fp16' needs a loss scaler the pipeline schedule "
                          "does not run: use bf16 with pp > 1")
    if cfg.optimizer == "muon" and (layout["dp_shard"] > 1 or tp > 1):
        raise ConfigError("optimizer = 'muon' needs whole matrices: not with dp_shard or tp")
