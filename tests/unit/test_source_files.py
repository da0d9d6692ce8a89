"""Which files a local source reads: its globs, the folders and links they match, a file
matched under several names, a file with nothing in it."""

from pathlib import Path

import pytest

from pretrain.config import ConfigError
from pretrain.data.sources import LocalSource

from .test_sources import _read


def test_only_folders_matching_is_an_error(tmp_path: Path):
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(ConfigError, match="only folders match"):
        LocalSource(paths=[str(tmp_path / "*.jsonl")]).files()


def test_a_broken_link_a_glob_matches_is_an_error(tmp_path: Path):
    """It was passed over as folders are, unsaid even under strict; alone, it read "only
    folders match"."""
    (tmp_path / "a.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "c.jsonl").symlink_to(tmp_path / "gone" / "x.jsonl")
    for paths in ([str(tmp_path / "*.jsonl")], [str(tmp_path / "c.jsonl")]):
        with pytest.raises(ConfigError, match=r"c.jsonl \(matched by .*\) is a link to "
                                              r".*gone/x.jsonl, which does not exist"):
            LocalSource(paths=paths).files()


def test_a_file_is_read_once_whatever_names_it_has(tmp_path: Path):
    """A link beside a file, and a link to a folder above it that "**" goes round (one
    file of 3 records was read 41 times)."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.jsonl").write_text("".join(f'{{"text": "doc {i}"}}\n' for i in range(3)))
    # names that sort before the file's own: it is named by its own (its ids are made of it)
    (tmp_path / "sub" / "0.jsonl").symlink_to("a.jsonl")
    (tmp_path / "sub" / "b.jsonl").symlink_to("a.jsonl")
    (tmp_path / "sub" / "0up").symlink_to("..")   # (two such links: 2^40 paths to glob)
    source = LocalSource(paths=[str(tmp_path / "**" / "*.jsonl")])
    assert source.files() == [tmp_path / "sub" / "a.jsonl"]
    assert [(d.id, d.text) for d in _read(source)[0]] == [
        (f"sub/a.jsonl:{i + 1}", f"doc {i}") for i in range(3)]
    # a link alone: by the shortest of its names
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "z.jsonl").symlink_to(tmp_path / "sub" / "a.jsonl")
    (tmp_path / "other" / "loop").symlink_to(".")
    assert LocalSource(paths=[str(tmp_path / "other" / "**" / "*.jsonl")]).files() == [
        tmp_path / "other" / "z.jsonl"]


def test_empty_file_is_a_counted_skip(tmp_path: Path):
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    docs, skips = _read(LocalSource(paths=[str(p)]))
    assert docs == [] and [(s.id, s.reason) for s in skips] == [("empty.jsonl", "empty_file")]


def test_glob_matching_nothing_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="no file matches"):
        list(LocalSource(paths=[str(tmp_path / "*.jsonl")]).read())
