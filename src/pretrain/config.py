"""Typed configuration: dataclasses + TOML + dotted command-line overrides.

Each stage's package keeps its ``@dataclass`` configs in a light ``config.py`` (no torch);
``RunConfig`` (in ``pretrain.run_config``) composes them. A config is data: validated in
``__post_init__`` with messages that name the key, and built into the object it describes
by that object's own constructor or function (``Transformer(model_cfg)``,
``Normalize(data_cfg.clean)``, ``tokenizer.stage.build(tokenizer_cfg, sample)``), never by a
method of the config. Values resolve in this order:

    dataclass defaults  <  TOML file  <  ``--section.key=value`` overrides

Everything funnels through :func:`build`, which walks the dataclass type hints and
rejects unknown keys and wrong types with a :class:`ConfigError` that names the
dotted key and what would have been accepted. Fields that name files (``metadata=PATH``)
are made absolute as they are built, relative to the directory the command runs in. We wrote this by hand (about 230 lines)
instead of pulling in OmegaConf/Hydra/pydantic: those bring their own override
grammar and error style, and the behaviour we need (strict keys, clear one-line
errors, TOML round trip) is small.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

T = TypeVar("T")


class PretrainError(Exception):
    """An error caused by the user's input; the CLI prints its message as one line."""


class SaidOnRankZero(PretrainError):
    """Under torchrun, an error every process meets alike (a check of the config and the
    number of processes, or rank 0's decision handed to the others): rank 0 prints it and
    the others exit with its status without a word (it was printed once per process)."""


def said_once(error: PretrainError) -> PretrainError:
    """``error`` on rank 0; on the others (under torchrun) a ``SaidOnRankZero`` of it: for
    an error every process meets alike (its config, a checkpoint they all read); never
    one a machine's own files decide (a path only some machines have)."""
    quiet = int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0
    return SaidOnRankZero(str(error)) if quiet else error


class Diverged(PretrainError):
    """Training diverged and no rollback was left to mend it: the run's config (its
    learning rate) is at fault, and the same command diverges again."""


class Preempted(Exception):
    """Training stopped on request (SIGTERM, SIGUSR1) after writing a checkpoint; the same
    command resumes it. The CLI exits with ``EXIT_PREEMPTED``."""


EXIT_PREEMPTED = 75   # EX_TEMPFAIL: "try again later", what a scheduler's requeue expects


class ConfigError(PretrainError, ValueError):
    """A config value or key is invalid; the message is meant for the user as is."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin is list:
        (inner,) = get_args(tp)
        return f"list of {_type_name(inner)}"
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


class CliValue(str):
    """A value typed on the command line: parsed into the field's type (TOML values are not)."""


def _parse_cli(text: str, tp: Any, key: str) -> Any:
    """Convert a command-line string to ``tp``; TOML syntax is accepted for lists."""
    if tp is bool:
        low = text.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {text!r}")
    if tp is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            pass
        try:  # 1e6-style integers, when exact
            f = float(text)
        except ValueError:
            f = math.nan
        if math.isfinite(f) and f.is_integer():
            return int(f)
        raise ConfigError(f"{key}: expected int, got {text!r}")
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}: expected float, got {text!r}") from None
    if tp is str:
        # in double quotes: a TOML string, escapes read (`'"\n\n"'`: two line breaks,
        # which a shell cannot pass otherwise); anything else as typed
        if len(text) >= 2 and text[0] == text[-1] == '"':
            try:
                return str(tomllib.loads(f"v = {text}")["v"])
            except tomllib.TOMLDecodeError:
                pass
        return str(text)
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {text!r}") from None


# values other tools write for an allowed one, suggested before a close spelling (device
# "gpu" was told "did you mean 'cpu'?")
_VALUE_ALIASES = {"gpu": "cuda", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
                  "float32": "fp32", "float": "fp32"}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` (from TOML, or a :class:`CliValue`) against the type hint ``tp``."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, CliValue):   # --data.clean={min_chars=100}: a TOML inline table
            value = _parse_cli(value, tp, key)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table of {_type_name(tp)} fields, got {value!r}")
        if hasattr(tp, "variant_for"):  # tagged union, e.g. data sources keyed by `type`
            tp = tp.variant_for(value, key)
        return build(tp, value, prefix=key)
    if origin is Literal:
        allowed = get_args(tp)
        if isinstance(value, CliValue):   # quoted or not, as a str field takes it
            text = _parse_cli(value, str, key)
            value = next((a for a in allowed if str(a) == text), text)
        if value not in allowed:
            alias = _VALUE_ALIASES.get(str(value).lower())
            close = [alias] if alias in allowed else difflib.get_close_matches(
                str(value), [str(a) for a in typing.get_args(tp)], n=1, cutoff=0.6)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{key}: {value!r} is not allowed{guess}; choose one of "
                              f"{_type_name(tp)}")
        return value
    if origin is list:
        (inner,) = get_args(tp)
        if isinstance(value, CliValue):
            value = _parse_cli(value, tp, key)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return [_coerce(v, inner, f"{key}.{i}") for i, v in enumerate(value)]
    if isinstance(value, CliValue):
        value = _parse_cli(value, tp, key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is int and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)   # TOML's `steps = 1e6`, as the command line's --train.steps=1e6
    if tp not in (int, float, str, bool):
        raise ConfigError(f"{key}: unsupported config type {tp!r}")  # a bug in a dataclass
    if type(value) is not tp:
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    return value


_ENV_VAR = re.compile(r"\$(\w+|\{[^}]*\})")


def expand_path(path: str) -> str:
    """``~`` and environment variables (``$HOME``, ``${SCRATCH}``) expanded. A variable that
    is not set is an error (it made a folder named ``$SCRATCH``), unless a file of that very
    name exists (then it is that file)."""
    home = os.path.expanduser(path)
    if "$" not in home or os.path.lexists(home):
        return home
    expanded = os.path.expandvars(home)
    unset = _ENV_VAR.search(expanded)
    if unset and not re.fullmatch(r"\$(\w+|\{\w+\})", unset.group()):   # ${X:-d}, ${X%.gz}
        raise ConfigError(f"{path!r}: {unset.group()} is a shell form not read here: only $NAME "
                          "and ${NAME} are expanded")
    if unset:
        raise ConfigError(f"{path!r} names the environment variable {unset.group()}, which is "
                          "not set here")
    return expanded


def absolute(path: str) -> str:
    """A path a config names, made independent of where the command runs: expanded
    (``expand_path``) and a relative path (a glob too) joined to the current directory. ``""``
    (not set) and URLs stay as they are."""
    if not path or "://" in path:
        return path
    return os.path.abspath(expand_path(path))


def absolute_if_here(value: str) -> str:
    """For a value that is a path or a name (a Hub dataset, ``gpt2``): absolute when a file
    or folder of that name is here, else the name as it is."""
    return absolute(value) if value and os.path.exists(expand_path(value)) else value


# ``field(metadata=PATH)``: the field names files (a string or a list of strings). A relative
# path is relative to the directory the command runs in, and is stored absolute when the
# config is built, so that the run's ``config.toml`` names the same files from anywhere.
PATH = {"resolve": absolute}


def _resolve(value: Any, f: dataclasses.Field[Any]) -> Any:
    how = f.metadata.get("resolve")
    if how is None:
        return value
    return [how(v) for v in value] if isinstance(value, list) else how(value)


def _hints(cls: type) -> dict[str, Any]:
    # the names of every module along the MRO: a subclass defined in another module (the
    # huggingface source) inherits annotations written with its base module's imports
    names: dict[str, Any] = {}
    for c in reversed(cls.__mro__):
        names.update(vars(sys.modules[c.__module__]))
    return typing.get_type_hints(cls, names)


def build(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, strictly (unknown keys are errors)."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in fields:
            known = getattr(cls, "ELSEWHERE", {}).get(name)   # another tool's name for it
            close = [known] if known else difflib.get_close_matches(name, fields, n=1,
                                                                     cutoff=0.6)
            guess = f"did you mean {(prefix + '.' if prefix else '') + close[0]!r}? " if close else ""
            allowed = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key {key!r}; {guess}allowed here: {allowed}")
        value = _coerce(value, hints[name], key)
        try:
            kwargs[name] = _resolve(value, fields[name])
        except ConfigError as e:   # a path's unset variable
            raise ConfigError(f"{key}: {e}") from None
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if prefix and not str(e).startswith(prefix):
            raise ConfigError(f"{prefix}.{e}") from None
        raise


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a dataclass (``None`` values dropped, since TOML has no null)."""
    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    return clean(dataclasses.asdict(cfg))


def to_toml(cfg: Any, notes: bool = False) -> str:
    """The config as TOML; with ``notes``, each key a section's ``notes()`` has a word for
    (a value not the one in use) followed by it as a comment."""
    import tomli_w
    text = tomli_w.dumps(to_dict(cfg))
    if not notes:
        return text
    said = {f.name: section.notes() for f in dataclasses.fields(cfg)
            if callable(getattr(section := getattr(cfg, f.name), "notes", None))}
    lines, table = [], ""
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            table = line.strip("[]\n")
        elif (key := line.split(" = ", 1)[0]) in said.get(table, {}):
            line = f"{line.rstrip()}   # {said[table][key]}\n"
        lines.append(line)
    return "".join(lines)


def jsonable(obj: Any) -> Any:
    """``json.dumps`` fallback: dataclasses as dicts, anything else as its string."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return str(obj)


def keyed(cfg: Any) -> Any:
    """What of a config section identifies the output it produces: the dataclass as a dict
    without the fields it lists in ``UNKEYED`` (those that change how a stage runs or
    reports, not what it writes), and with its default for each it lists in
    ``KEYED_AS_DEFAULT`` (the same, for fields that once were keyed). A field listed in
    ``KEYED_IF_SET`` (at any depth: a source in a list too) is left out while it holds its
    default, so that adding an option keeps the keys of the configs that do not use it.
    Anything else is returned as it is."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        return cfg
    skip = getattr(cfg, "UNKEYED", ())
    out = {k: v for k, v in _keyed_value(cfg).items() if k not in skip}
    for f in dataclasses.fields(cfg):   # unkeyed too, but keys made with them kept theirs
        if f.name in getattr(cfg, "KEYED_AS_DEFAULT", ()):
            out[f.name] = f.default   # plain values only (no default_factory)
    return out


def _keyed_value(v: Any) -> Any:
    """A value inside a keyed section: as ``dataclasses.asdict`` gives it, less the
    ``KEYED_IF_SET`` fields at their defaults of the dataclasses within."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        unset = getattr(v, "KEYED_IF_SET", ())
        return {f.name: _keyed_value(getattr(v, f.name)) for f in dataclasses.fields(v)
                if not (f.name in unset and getattr(v, f.name) == f.default)}
    if isinstance(v, (list, tuple)):
        return type(v)(_keyed_value(x) for x in v)
    if isinstance(v, dict):
        return {k: _keyed_value(x) for k, x in v.items()}
    return copy.deepcopy(v)


def fingerprint(obj: Any) -> str:
    """Stable short hash of a JSON-able object (dataclasses included)."""
    blob = json.dumps(obj, sort_keys=True, default=jsonable).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def load_toml(path: Path) -> dict[str, Any]:
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is read past, where
        # tomllib said only "Invalid statement (at line 1, column 1)"
        return tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except IsADirectoryError:
        raise ConfigError(f"config {path} is a directory, not a TOML file") from None


def apply_override(tree: dict[str, Any], dotted: str, raw: str) -> None:
    """Set ``tree[a][b][c] = CliValue(raw)`` for ``'a.b.c'``; integer parts index lists."""
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"malformed override key {dotted!r}")
    node: Any = tree
    for i, part in enumerate(parts):
        here = ".".join(parts[:i + 1])
        last = i == len(parts) - 1
        if isinstance(node, list):
            try:
                idx = int(part)
                node[idx]  # noqa: B018 - raises IndexError for a missing element
            except (ValueError, IndexError):
                raise ConfigError(f"{here}: no list element {part!r}") from None
        elif isinstance(node, dict):
            idx = part  # type: ignore[assignment]
            if not last and node.get(part) is None:
                node[part] = {}  # an unknown section: `build` names it
        else:
            raise ConfigError(f"{'.'.join(parts[:i])} is a value, not a section")
        if last:
            node[idx] = CliValue(raw)
        else:
            if isinstance(node[idx], CliValue):   # a list or table typed before this one
                try:                              # (--train.mixture=[..] then .0.weight)
                    node[idx] = tomllib.loads(f"v = {node[idx]}")["v"]
                except tomllib.TOMLDecodeError:
                    pass
            node = node[idx]


def parse_override_args(args: list[str]) -> list[tuple[str, str]]:
    """``['--a.b=1', '--c', '2']`` -> ``[('a.b', '1'), ('c', '2')]``."""
    out = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"unexpected argument {arg!r}; overrides look like --section.key=value")
        body = arg[2:]
        if "=" in body:
            key, value = body.split("=", 1)
        else:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"--{body} is not an option of this command; as a config "
                                  f"override it needs a value: --{body}=VALUE")
            key, value = body, args[i + 1]
            i += 1
        # --train.grad-accum is train.grad_accum; a list index (-1) keeps its sign
        out.append((".".join(k if k.lstrip("-").isdigit() else k.replace("-", "_")
                             for k in key.split(".")), value))
        i += 1
    return out
