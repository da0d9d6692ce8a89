"""The run config: one section per stage, each defined in its package's light ``config.py``
(none imports torch, so ``pretrain config show`` and ``--dry-run`` are instant).

``load_config(path, overrides)`` resolves defaults < TOML < ``--a.b=value`` overrides.
A config argument that is not a file names a shipped config: ``quickstart`` is
``configs/quickstart.toml`` inside the package (the top-level ``configs/`` of the
repository links there).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .config import PATH, ConfigError, apply_override, build, load_toml, to_dict
from .data.config import DataConfig
from .eval.config import RESULT_KEYS, EvalConfig, SampleConfig
from .eval.files import benchmark_files
from .eval.files import resolve as resolve_tasks
from .eval.gates import check_heads as check_gate_heads
from .log import log0
from .model.config import ModelConfig
from .tokenizer.config import TokenizeConfig, TokenizerConfig
from .train.config import TrainConfig

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = "quickstart"


@dataclass
class RunConfig:
    name: str = "quickstart"          # the run directory is <runs_dir>/<name>
    runs_dir: str = field(default="runs", metadata=PATH)
    seed: int = 1337
    # where the model trains, is evaluated and samples: "auto" = the GPU when there is one
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError(f"name: {self.name!r} must be a plain folder name")
        if not 0 <= self.seed < 2**64:   # torch's generators take 64 bits (a larger one
            raise ConfigError(f"seed must be >= 0 and below 2**64, got {self.seed}")   # failed at train)
        # a run never trains on what it scores: the data stage decontaminates against the
        # eval stage's benchmark files (and reruns when they change)
        resolve_tasks(self.eval.tasks, self.eval.tasks_dir)   # two of one name: an error here
        for i, src in enumerate(self.data.sources):   # results.json keys domains by name
            d = src.domain   # a set one (a source's default label is left as it was)
            if d and (d in RESULT_KEYS or not re.fullmatch(r"[\w\-]+", d)):
                raise ConfigError(f"data.sources.{i}.domain = {d!r} would be unreachable in "
                                  f"the eval results: not {', '.join(RESULT_KEYS)}; letters, "
                                  "digits, '_' and '-' only (a gate's metric path)")
        labels = {src.label() for src in self.data.sources}
        unknown = [m.domain for m in self.train.mixture if m.domain not in labels]
        if unknown:   # said now, not after the data, tokenizer and tokenize stages ran
            raise ConfigError(f"train.mixture: domain(s) {unknown} are no source's; the "
                              f"data sources' domains are {sorted(labels)}")
        trained = {src.label() for src in self.data.sources if src.use_for != "val"}
        held = [m.domain for m in self.train.mixture if m.domain not in trained]
        if held:   # the data are only held out: training would find no tokens of them
            raise ConfigError(f"train.mixture: domain(s) {held} come only from sources with "
                              "use_for = \"val\": held out, never trained on; drop the entry "
                              "or add a source of that domain to train on")
        check_gate_heads(self.eval.gates, {*RESULT_KEYS, *labels})
        decontam = self.data.decontam
        files = benchmark_files(self.eval) if decontam.enabled and decontam.from_eval else []
        if files != decontam.eval_benchmarks:   # new objects: a replace()d config shares them
            self.data = replace(self.data, decontam=replace(decontam, eval_benchmarks=files))

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def shipped_configs() -> list[Path]:
    return sorted(CONFIG_DIR.glob("*.toml"))


def resolve_config_path(arg: str | None) -> Path:
    if arg is None:
        arg = DEFAULT_CONFIG
    p = Path(arg).expanduser()   # --config=~/x.toml: no shell expands `~` after `=`
    if p.is_file():
        return p
    if p.is_dir():
        raise ConfigError(f"config {arg!r} is a folder, not a config file")
    named = p if p.suffix == ".toml" else p.with_name(f"{p.name}.toml")
    if "/" in arg or "\\" in arg or arg.startswith("~"):   # a path: its .toml, never a
        if named.is_file():                               # shipped one (./quickstart read
            return named                                  # the shipped quickstart)
        raise ConfigError(f"config {arg!r}: no such file" + (
            f" (nor {named})" if named != p else ""))
    shipped = CONFIG_DIR / named.name
    if shipped.is_file():
        if named.is_file():   # quickstart beside ./quickstart.toml: which was meant?
            log0(f"config: {arg!r} is the shipped {shipped.name}; ./{named.name} here is "
                 f"not read (name it {named.name!r} or ./{named.name})")
        return shipped
    names = ", ".join(c.stem for c in shipped_configs())
    here = f"; ./{named.name} is here: name it {named.name!r} or ./{arg}" if named.is_file() else ""
    raise ConfigError(f"config {arg!r} is neither a file nor a shipped config ({names}){here}")


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v  # lists (e.g. data.sources) are replaced, not merged
    return out


def _misplaced(tree: dict[str, Any], defaults: dict[str, Any]) -> None:
    """A key given in a section (or at the top) that is another section's is named where
    it lives: ``train.seq_len`` is ``model.seq_len``; a close spelling in its own section
    misled (``train.vocab_size`` was told ``train.batch_size``). ``defaults``: the default
    config as a tree, whose tables are the sections."""
    sections = {k: set(v) for k, v in defaults.items() if isinstance(v, dict)}
    top = set(defaults) - set(sections)
    for where, keys in [("", [k for k in tree if k not in sections])] + [
            (s, list(v)) for s, v in tree.items() if s in sections and isinstance(v, dict)]:
        own = sections.get(where, top | set(sections))
        for key in keys:
            if key in own:
                continue
            homes = [f"{s}.{key}" for s, names in sections.items() if s != where and key in names]
            homes += [key] if where and key in top else []
            if homes:
                raise ConfigError(f"unknown config key {(where + '.' if where else '') + key!r}: "
                                  f"it is {' or '.join(map(repr, homes))}")


def load_config(path: str | None = None, overrides: list[tuple[str, str]] = ()) -> RunConfig:  # type: ignore[assignment]
    defaults = to_dict(RunConfig())
    tree = copy.deepcopy(defaults)
    file = resolve_config_path(path) if path != "" else None
    if file is not None:
        tree = _merge(tree, load_toml(file))
    from_file = copy.deepcopy(tree)
    for key, value in overrides:
        apply_override(tree, key, value)
    try:
        _misplaced(tree, defaults)
        return build(RunConfig, tree)
    except ConfigError as e:
        if file is None:
            raise
        try:   # the same error from the file alone: its value, not an override's
            build(RunConfig, from_file)
        except ConfigError as alone:
            if str(alone) == str(e):
                raise ConfigError(f"{file}: {e}") from None
        raise
