"""A checkpoint is DCP files, whose ``.metadata`` is a pickle: torch's reader unpickles it
whole, so a checkpoint someone sent could run their code when exported, resumed or
continued from. Ours builds only DCP's metadata classes (model/io.py ``safe_reader``)."""

from __future__ import annotations

import io as io_
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

from pretrain.config import ConfigError, PretrainError
from pretrain.model import io
from pretrain.model.transformer import Transformer
from pretrain.rundir import file_sha256
from pretrain.train import state

from .training_runs import MODEL, make_tokens
from .training_runs import run as _run


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _poisoned(ckpt: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of ``ckpt`` whose .metadata runs code when unpickled, its checksums updated
    (whoever ships a checkpoint ships those too)."""
    bad, marker = tmp_path / "bad" / ckpt.name, tmp_path / "RAN"
    shutil.copytree(ckpt, bad)
    meta = bad / ".metadata"
    meta.write_bytes(pickle.dumps(_Payload(marker)))
    sums = json.loads((bad / "checksums.json").read_text())
    sums[".metadata"] = {"bytes": meta.stat().st_size, "sha256": file_sha256(meta)}
    (bad / "checksums.json").write_text(json.dumps(sums))
    return bad, marker


def test_a_checkpoint_whose_metadata_names_other_code_is_refused_unrun(tmp_path_factory,
                                                                      tmp_path):
    tokens = make_tokens(tmp_path_factory)
    _run(tokens, tmp_path / "out", tmp_path / "ckpt", steps=8, checkpoint_every=8)
    (ckpt,) = sorted((tmp_path / "ckpt").glob("step-*"))
    assert io.load_any(ckpt) is not None   # a sound one loads through the same reader
    bad, marker = _poisoned(ckpt, tmp_path)
    with pytest.raises(ConfigError, match=r"unreadable checkpoint: .*its \.metadata names "
                                          r"pathlib\.Path\.touch, which is not a part of DCP"):
        io.load_any(bad)     # export and init_from read a checkpoint so
    model = Transformer(MODEL)   # resume reads it so (a traceback of UnpicklingError)
    with pytest.raises(PretrainError, match=r"unreadable checkpoint \(.*names pathlib\.Path\."
                                            r"touch.*\); move it aside"):
        state.load(bad, model, torch.optim.AdamW(model.parameters()))
    assert not marker.exists()
    pickle.loads((bad / ".metadata").read_bytes())   # as torch's own reader would: it runs
    assert marker.exists()


def test_a_checkpoint_whose_saved_values_hold_code_is_refused_unrun(tmp_path_factory, tmp_path):
    """DCP keeps a non-tensor entry (an optimizer's lr, betas) as a ``torch.save`` blob, and
    torch's planner reads it with ``weights_only=False``: pointed at a blob of one's own, a
    resume ran it, through a .metadata of DCP's own classes only."""
    tokens = make_tokens(tmp_path_factory)
    _run(tokens, tmp_path / "out", tmp_path / "ckpt", steps=8, checkpoint_every=8)
    (ckpt,) = sorted((tmp_path / "ckpt").glob("step-*"))
    bad, marker = tmp_path / "bad" / ckpt.name, tmp_path / "RAN"
    shutil.copytree(ckpt, bad)
    blob = io_.BytesIO()
    torch.save(_Payload(marker), blob)
    (bad / "evil.distcp").write_bytes(blob.getvalue())
    with open(bad / ".metadata", "rb") as f:
        meta = io._MetadataUnpickler(f).load()
    key = next(k for k, v in meta.state_dict_metadata.items()
               if isinstance(v, BytesStorageMetadata) and k.endswith(".lr"))
    meta.storage_data[MetadataIndex(key)] = _StorageInfo("evil.distcp", 0, len(blob.getvalue()))
    (bad / ".metadata").write_bytes(pickle.dumps(meta))
    model = Transformer(MODEL)
    with pytest.raises(PretrainError, match=r"unreadable checkpoint \(.*\); move it aside"):
        state.load(bad, model, torch.optim.AdamW(model.parameters()))
    assert not marker.exists()
