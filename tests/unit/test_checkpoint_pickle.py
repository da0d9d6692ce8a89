"""A checkpoint is DCP files, whose ``.metadata`` is a pickle: torch's reader unpickles it
whole, so a checkpoint someone sent could run their code when exported, resumed or
continued from. Ours builds only DCP's metadata classes (model/io.py ``safe_reader``)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from pretrain.config import ConfigError
from pretrain.model import io
from pretrain.rundir import file_sha256
from pretrain.train import state

from .training_runs import make_tokens
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
    with pytest.raises(pickle.UnpicklingError, match="names pathlib.Path.touch"):
        state._flat(bad)     # resume reads it so first
    assert not marker.exists()
    pickle.loads((bad / ".metadata").read_bytes())   # as torch's own reader would: it runs
    assert marker.exists()
