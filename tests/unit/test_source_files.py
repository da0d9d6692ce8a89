"""Which files a local source reads: its globs, the folders and links they match, a file
matched under several names, a file with nothing in it."""

import glob
import os
from pathlib import Path

import pytest

from pretrain.config import ConfigError
from pretrain.data.pathglob import expand
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


def test_links_going_round_twice_are_walked_once(tmp_path: Path):
    """Two links to the folder above in one folder: Python's glob makes 2^40 paths of
    them (it did not finish); each real folder is walked once."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "a.jsonl").write_text('{"text": "a"}\n')
    for name in ("up1", "up2", "up3"):
        (tmp_path / "d" / "sub" / name).symlink_to("..")
    (tmp_path / "d" / "side").symlink_to("sub")
    assert LocalSource(paths=[str(tmp_path / "**" / "*.jsonl")]).files() == [
        tmp_path / "d" / "sub" / "a.jsonl"]
    # reached only through a link, the link's name is the one the pattern asks for
    assert expand(str(tmp_path / "d" / "**" / "s?de" / "*.jsonl")) == [
        str(tmp_path / "d" / "side" / "a.jsonl")]


@pytest.mark.parametrize("pattern", ["**/*.jsonl", "**", "*/**/*.jsonl", "**/.h*", "**/.h/*",
                                     "a/**/*", "**/b/**/*.txt", "**/l*/*", "a/**/b/*.jsonl"])
def test_double_star_matches_the_files_glob_does(tmp_path: Path, pattern: str,
                                                  monkeypatch: pytest.MonkeyPatch):
    """Hidden names only by a part that starts with ".", no folder or any depth of them,
    linked folders followed: the files glob.glob finds, by names it gives too."""
    for f in ("x.jsonl", "a/y.jsonl", "a/b/z.jsonl", "a/b/c.txt", ".h/w.jsonl",
              "a/.h/v.jsonl", "b/b/b/u.jsonl", "a/b/.g.jsonl", "e/b/t.txt"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("{}\n")
    (tmp_path / "e" / "link").symlink_to("../a")
    (tmp_path / "lone.jsonl").symlink_to("b/b/b/u.jsonl")
    for root, prefix in ((tmp_path, ""), (None, str(tmp_path) + os.sep)):
        if root:
            monkeypatch.chdir(root)
        ours = [m for m in expand(prefix + pattern) if os.path.isfile(m)]
        theirs = {m for m in glob.glob(prefix + pattern, recursive=True) if os.path.isfile(m)}
        assert set(ours) <= theirs
        assert {os.path.realpath(m) for m in ours} == {os.path.realpath(m) for m in theirs}


def test_empty_file_is_a_counted_skip(tmp_path: Path):
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    docs, skips = _read(LocalSource(paths=[str(p)]))
    assert docs == [] and [(s.id, s.reason) for s in skips] == [("empty.jsonl", "empty_file")]


def test_glob_matching_nothing_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="no file matches"):
        list(LocalSource(paths=[str(tmp_path / "*.jsonl")]).read())
