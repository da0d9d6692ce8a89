"""Model I/O, all of it: weights in safetensors, the model config as JSON, and loading a
model from whatever a user points at (a run, its ``train/`` folder, a resumable
checkpoint, a Hugging Face directory through ``hf.py``'s conversion table).

Loading never unpickles arbitrary objects: safetensors, DCP tensors and JSON; DCP's
``.metadata`` (a pickle in torch's format) through ``safe_reader``, which builds only DCP's
own metadata classes (a checkpoint whose ``.metadata`` names anything else, such as
``os.system``, is refused before anything of it runs), and DCP's non-tensor entries (torch
``save`` blobs) through ``safe_planner``'s ``torch.load(weights_only=True)``. A folder of
ours holds::

    model.safetensors   the weights, each tied tensor once
    model_config.json   the ModelConfig (``dataclasses.asdict``)

or, for a resumable checkpoint (``train/state.py``), the sharded DCP files instead of
``model.safetensors``; ``load`` consolidates their ``model`` entries in this process (the
model's weights only, never the optimizer state).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, build
from ..rundir import DELETING, honour_umask
from .config import ModelConfig
from .hf import import_hf
from .transformer import Transformer

WEIGHTS, CONFIG = "model.safetensors", "model_config.json"
# The row order of the fused matrices (q/k/v by kv-head group, gate/up in block pairs),
# recorded in every weights file: the layout before it had the same names and shapes, so
# without the mark an old file would load without an error into a wrong model.
LAYOUT = {"pretrain_layout": "2"}


def aliases_for(cfg: ModelConfig) -> dict[str, str]:
    """``tied_aliases`` of a model of ``cfg``, without building it."""
    return {"head.weight": "embed.weight"} if cfg.tied else {}


def tied_aliases(model: torch.nn.Module) -> dict[str, str]:
    """Second names of shared parameters (``head.weight`` -> ``embed.weight`` when tied)."""
    first = {id(p): n for n, p in model.named_parameters()}
    return {n: first[id(p)] for n, p in model.named_parameters(remove_duplicate=False)
            if first[id(p)] != n}


def save_weights(model_sd: dict[str, torch.Tensor], aliases: dict[str, str], path: Path) -> None:
    """A full state dict as safetensors, each shared tensor once (as ``save_model`` does).
    One metadata key: safetensors writes several in a random order, and the same weights
    must give the same bytes (a stage's output fingerprint is their hash)."""
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model_sd.items() if k not in aliases}, str(path),
              metadata=dict(LAYOUT))
    honour_umask(path)


def _unreadable(path: Path, e: Exception) -> ConfigError:
    first = str(e).strip().splitlines()
    return ConfigError(f"{path}: not a readable safetensors file ({type(e).__name__}: "
                       f"{first[0][:200] if first else ''}); it may be truncated or damaged")


def check_layout(path: Path) -> None:
    """Refuse a weights file written with another row layout (by an older version), or
    one whose header cannot be read (truncated, not safetensors)."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise _unreadable(path, e) from None
    if meta.get("pretrain_layout") != LAYOUT["pretrain_layout"]:
        raise ConfigError(f"{path}: written by an older version of pretrain with another row "
                          "layout of the fused q/k/v and gate/up matrices; train again "
                          "(`--force train`), or export it with that version and import the "
                          "Hugging Face directory")


def load_weights(path: Path, aliases: dict[str, str]) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    check_layout(path)
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise _unreadable(path, e) from None
    for alias, name in aliases.items():
        sd.setdefault(alias, sd[name])
    return sd


def config_dict(cfg: ModelConfig) -> dict[str, object]:
    return dataclasses.asdict(cfg)


def save(folder: Path, cfg: ModelConfig, model_sd: dict[str, torch.Tensor],
         aliases: dict[str, str]) -> None:
    """The weights of a full state dict (a model's, or a consolidated one) and the config."""
    save_weights(model_sd, aliases, folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps(config_dict(cfg), indent=2), encoding="utf-8")


def _is_dcp(path: Path) -> bool:
    return (path / ".metadata").is_file() and (path / CONFIG).is_file()


def is_model_folder(path: Path) -> bool:
    return ((path / WEIGHTS).is_file() and (path / CONFIG).is_file()) or _is_dcp(path)


def model_folder(path: Path) -> Path | None:
    """The folder of ours that ``path`` names: a run directory's ``train/``, or ``path``
    itself (a ``train/`` folder or a resumable checkpoint); None if neither is one."""
    return next((f for f in (path / "train", path) if is_model_folder(f)), None)


@contextlib.contextmanager
def one_process_dcp() -> Iterator[None]:
    """Around a DCP save or load without a process group: DCP warns at each one that it
    assumes a single process, which is what a one-process run means; only that warning
    is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"torch\.distributed is .*assuming the intent",
                                UserWarning)
        yield


# what a DCP ``.metadata`` pickle may name: torch's metadata records, dtypes, sizes, layouts
# and paths (the names torch 2.13's saves use, DTensor and ShardedTensor ones included)
_DCP_CLASSES = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "TensorProperties", "MetadataIndex", "StorageMeta", "TensorStorageMetadata",
        "BytesStorageMetadata", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath",
                "PureWindowsPath"},
    "collections": {"OrderedDict"},
    "builtins": {"set", "frozenset", "slice"},
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in _DCP_CLASSES.get(module, ()) or (
                module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"its .metadata names {module}.{name}, which is not a "
                                     "part of DCP's checkpoint metadata: not loaded")


def safe_reader(folder: Path) -> Any:
    """A DCP storage reader of ``folder`` whose ``.metadata`` is read by
    ``_MetadataUnpickler`` (torch's reader unpickles it with ``pickle.load``: a checkpoint
    someone sent ran their code on load)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            path = self._get_metadata_path(kwargs.get("rank"))
            with self.fs.create_stream(path, "rb") as f:
                metadata = _MetadataUnpickler(f).load()
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata
    return SafeReader(str(folder))


def safe_planner() -> Any:
    """DCP's load planner, its non-tensor entries (an optimizer's lr, betas: ``torch.save``
    blobs in the ``.distcp`` files) read by ``torch.load(weights_only=True)``: torch's
    reads them with ``weights_only=False``, so a doctored entry ran code too."""
    from torch.distributed.checkpoint import DefaultLoadPlanner
    from torch.distributed.checkpoint._nested_dict import set_element

    class SafePlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item: Any, value: Any) -> None:
            loaded = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                set_element(self.original_state_dict,
                            self.mappings[read_item.dest_index.fqn], loaded)
            else:
                self.state_dict[read_item.dest_index.fqn] = loaded
    return SafePlanner()


def consolidated(folder: Path) -> dict[str, torch.Tensor]:
    """The whole model state dict (CPU) of a DCP checkpoint, read by this process alone."""
    import torch.distributed.checkpoint as dcp
    with torch.device("meta"):
        model = Transformer(read_config(folder))
    model.to_empty(device="cpu")
    sd = model.state_dict()
    from torch.distributed.checkpoint.api import CheckpointException
    try:
        with one_process_dcp():
            dcp.load({"model": sd}, checkpoint_id=folder, storage_reader=safe_reader(folder),
                     planner=safe_planner(), no_dist=True)
    # DCP's CheckpointException (a BaseException) wraps what went wrong on read
    except (Exception, CheckpointException) as e:
        raise ConfigError(f"{folder}: unreadable checkpoint: {str(e).strip().splitlines()[-1][:300]}") from None
    return sd


def read_config(folder: Path) -> ModelConfig:
    path = folder / CONFIG
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:   # ValueError: not JSON, or not UTF-8
        raise ConfigError(f"{path}: cannot read the model config: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the model config is a JSON {type(values).__name__}, "
                          "not an object of settings")
    values.setdefault("pad_vocab_multiple", 1)   # saved before the vocabulary was padded
    try:
        return build(ModelConfig, values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def load(folder: Path, device: str | torch.device = "cpu") -> Transformer:
    """The model saved in ``folder`` (``save``), in eval mode on ``device``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model
    cfg = read_config(folder)
    if not (folder / WEIGHTS).is_file() and _is_dcp(folder):
        with torch.device("meta"):
            model = Transformer(cfg)
        model.load_state_dict(consolidated(folder), assign=True)
        if cfg.tied:
            model.head.weight = model.embed.weight
        model.init_buffers("cpu")
        return model.to(device).eval()
    model = Transformer(cfg)
    check_layout(folder / WEIGHTS)
    try:
        load_model(model, str(folder / WEIGHTS), device=str(device))
    except RuntimeError as e:  # names or shapes of another layout (e.g. an older version's)
        raise ConfigError(f"{folder / WEIGHTS}: the weights do not fit {CONFIG} "
                          f"({str(e).strip().splitlines()[0][:300]}); if an older version of "
                          "pretrain wrote them, train again (`--force train`)") from None
    except SafetensorError as e:
        raise _unreadable(folder / WEIGHTS, e) from None
    return model.to(device).eval()


def load_any(path: Path, device: str | torch.device = "cpu") -> Transformer:
    """Weights to start from or export: a run directory, its ``train/`` folder, a folder of
    ours (a resumable checkpoint too) or a Hugging Face model directory."""
    folder = model_folder(path)
    if folder is not None:
        return load(folder, device)
    if (path / "config.json").is_file():
        return import_hf(path).to(device).eval()
    if not path.exists():
        raise ConfigError(f"{path}: no such folder")
    raise ConfigError(f"{path}: neither a run directory with a completed train stage, a model "
                      f"or checkpoint folder of pretrain ({WEIGHTS} + {CONFIG}) nor a Hugging "
                      f"Face model directory (config.json){checkpoint_hint(path)}")


def checkpoint_hint(path: Path) -> str:
    """'; ... name that folder' for a run directory whose train stage has not completed
    but has checkpoints: the latest written (by any config of the run); '' otherwise."""
    written = [p for p in path.glob("checkpoints/*/step-*") if is_model_folder(p)
               and not p.name.endswith((".tmp", DELETING))]   # half-written, being removed
    if not written:
        return ""
    latest = max(written, key=lambda p: ((p / CONFIG).stat().st_mtime_ns, p.name))
    return (f"; its train stage has not completed, but it has checkpoints, the latest "
            f"{latest}: name that folder")
