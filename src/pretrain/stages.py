"""The pipeline's stages, one record each, in order: the only place that lists them.

The orchestration (``pipeline.py``), the CLI (one command per stage) and the run report
read this registry. A record says what a stage reads (upstream stages), which config
sections it is given (exactly those are hashed into its key, so a stage cannot depend on
a setting that would not rerun it), what else outside the run directory its output
depends on (source files, weights to start from), and where its body is.

The body is named as ``"module:function"`` and imported when the stage runs, so that the
commands that only read configs (``pretrain config show``, ``--dry-run``, ``--help``) never
import torch. It is called as ``function(run, *sections)`` with the stage's
:class:`~pretrain.rundir.StageRun` (where to write, what it reads) and its config sections
in the order listed. Adding a stage: a module with the body, and one line below.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .config import ConfigError, PretrainError, fingerprint, jsonable, keyed
from .eval import files as eval_files
from .run_config import RunConfig
from .rundir import StageRun


@dataclass(frozen=True)
class Stage:
    name: str
    help: str                              # one line: `pretrain --help` and the report
    reads: tuple[str, ...]                 # the stages whose outputs it reads
    sections: tuple[str, ...]              # RunConfig fields it is given and keyed by
    body: str                              # "module:function"
    external: Callable[[RunConfig], Any] | None = None  # inputs outside the run directory
    torchrun: bool = False                 # runs on every process under torchrun
    unkeyed: tuple[str, ...] = ()          # of the sections: given, but not in the key
    # "module:function", given the sections as the body is: what refuses this config on
    # this machine (a precision the device lacks), asked when a command that is to run the
    # stage starts, not after the stages before it have run
    preflight: str = ""

    def key_config(self, cfg: RunConfig) -> dict[str, Any]:
        """What of the config (and of the outside world) its output depends on."""
        part = {s: keyed(getattr(cfg, s)) for s in self.sections if s not in self.unkeyed}
        if self.external is not None:
            part["external"] = self.external(cfg)
        return part

    def run(self, cfg: RunConfig, run: StageRun) -> None:
        module, _, fn = self.body.partition(":")
        getattr(importlib.import_module(module), fn)(run, *(getattr(cfg, s) for s in self.sections))

    def check_here(self, cfg: RunConfig) -> None:
        """Its ``preflight``: raises what would stop it on this machine."""
        if self.preflight:
            module, _, fn = self.preflight.partition(":")
            getattr(importlib.import_module(module), fn)(*(getattr(cfg, s) for s in self.sections))

    def config_changed(self, cfg: RunConfig, recorded: Any) -> bool:
        """Whether the config part of its key differs from ``recorded`` (a manifest's): the
        stage will run again (it may also run for its inputs, unknown before they run)."""
        now = json.loads(json.dumps({s: keyed(getattr(cfg, s)) for s in self.sections
                                     if s not in self.unkeyed}, default=jsonable))
        return not isinstance(recorded, dict) \
            or {k: v for k, v in recorded.items() if k != "external"} != now


def _source_fingerprints(cfg: RunConfig) -> list[Any]:
    """Each source's fingerprint (its files' sizes and times); a source that cannot give
    one (a glob matching nothing) is named by its place in the config."""
    out = []
    for i, src in enumerate(cfg.data.sources):
        try:
            out.append(src.fingerprint())
        except ConfigError as e:
            raise ConfigError(f"data.sources.{i}: {e}") from None
    return out


STAGES: tuple[Stage, ...] = (
    Stage("data", "read sources, filter, deduplicate, decontaminate; write documents and an "
          "audit trail (`pretrain data inspect RUN` shows it)",
          reads=(), sections=("data",), body="pretrain.data.stage:run",
          external=lambda cfg: _source_fingerprints(cfg)
          + cfg.data.decontam.fingerprint() + cfg.data.side_files()),
    Stage("tokenizer", "train a byte-level BPE tokenizer on a sample of the cleaned documents, "
          "or load a published one",
          reads=("data",), sections=("tokenizer",), body="pretrain.tokenizer.stage:run_tokenizer",
          external=lambda cfg: cfg.tokenizer.fingerprint()),
    Stage("tokenize", "encode the documents into memory-mapped train/val token shards",
          reads=("data", "tokenizer"), sections=("tokenize",),
          body="pretrain.tokenizer.stage:run_tokenize"),
    Stage("train", "train the model on the token shards (checkpoints, resume, data parallel "
          "under torchrun)",
          reads=("tokenize",), sections=("model", "train", "seed", "device"),
          body="pretrain.train.stage:run", external=lambda cfg: cfg.train.init_fingerprint(),
          # where it trains, like the layout, is not what it trains ("auto" and "cpu" on a
          # CPU are the same, and a GPU-trained model is evaluated and sampled on a CPU)
          torchrun=True, unkeyed=("device",), preflight="pretrain.train.stage:preflight"),
    Stage("eval", "held-out loss, perplexity and bits per byte per domain; benchmarks, CORE, "
          "contamination, memorization",
          reads=("data", "tokenizer", "tokenize", "train"), sections=("eval", "device"),
          body="pretrain.eval.stage:run", external=lambda cfg: eval_files.fingerprint(cfg.eval)),
    Stage("sample", "generate text from the trained model for the configured prompts",
          reads=("tokenizer", "train"), sections=("sample", "device"),
          body="pretrain.eval.sample:run"),
)


def names() -> list[str]:
    return [s.name for s in STAGES]


def get(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise PretrainError(f"no stage {name!r}; the stages are {', '.join(names())}")


def check_force(force: set[str], names: Sequence[str]) -> None:
    """Refuse a ``--force`` naming a stage the command does not run (it would do nothing)."""
    stray = sorted(force - {"all", *names})
    if stray:
        raise PretrainError(
            f"--force {stray[0]} has no effect here: it reruns a stage this command does "
            f"not run (try `pretrain {stray[0]} --force {stray[0]}` or `pretrain run "
            f"--force {stray[0]}`)")


def ancestors(name: str) -> list[str]:
    """Every stage ``name`` reads from, directly or through others, in pipeline order."""
    found: set[str] = set()
    todo = list(get(name).reads)
    while todo:
        u = todo.pop()
        if u not in found:
            found.add(u)
            todo += get(u).reads
    return [s for s in names() if s in found]


def law_key(cfg: RunConfig) -> str:
    """What a scaling law fitted on ``cfg``'s runs holds for: the corpus, the tokenizer and
    its shards (the units of the losses), the architecture and the context length, as
    configured (the source files themselves are not read: ``pretrain plan`` reads none)."""
    return fingerprint({"data": keyed(cfg.data), "tokenizer": keyed(cfg.tokenizer),
                        "tokenize": keyed(cfg.tokenize), "arch": cfg.model.arch,
                        "seq_len": cfg.model.seq_len})


def fit_mismatch(fit: Any, cfg: RunConfig, path: str) -> str:
    """Why a sweep's parsed ``fit.json`` does not hold for ``cfg`` ("" if it does, or if
    it predates the record)."""
    made = fit.get("fitted_on") if isinstance(fit, dict) else None
    if made is None or made == law_key(cfg):
        return ""
    return (f"{path} was fitted with another corpus, tokenizer, architecture or seq_len than "
            "this config's (its losses are in other units); rerun `pretrain sweep` for it")
