"""Which files a local source reads: its globs, the folders and links they match, a file
matched under several names, a file with nothing in it."""

import glob
import gzip
import json
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


def test_a_json_array_file_is_read_as_records_whole_or_named_when_it_cannot_be(
        tmp_path: Path):
    """`.json` as many tools write it: one array of records, pretty-printed or on one
    line, plain or gzipped, with a BOM; its records are named by index."""
    recs = [{"text": f"story {i}", "id": f"s{i}"} for i in range(3)] + [{"text": 5}, "x",
                                                                         {"text": "no id"}]
    for name, raw in (("a.json", b"\xef\xbb\xbf" + json.dumps(recs, indent=2).encode()),
                      ("b.json", json.dumps(recs).encode()),
                      ("c.json.gz", gzip.compress(b"  \n" + json.dumps(recs).encode()))):
        (tmp_path / name).write_bytes(raw)
        docs, skips = _read(LocalSource(paths=[str(tmp_path / name)]))
        assert [(d.id, d.text) for d in docs] == [(f"s{i}", f"story {i}") for i in range(3)] \
            + [(f"{name}[5]", "no id")]   # a record and its skip are named alike
        assert [(s.reason, s.id) for s in skips] == [("missing_text", f"{name}[3]"),
                                                     ("not_an_object", f"{name}[4]")]
        assert skips[0].detail.startswith(f"{tmp_path / name}[3]: ")
    # cut short: one skip naming the file and what it is; over the cap: counted, not held
    (tmp_path / "cut.json").write_text(json.dumps(recs, indent=2)[:-30])
    docs, skips = _read(LocalSource(paths=[str(tmp_path / "cut.json")]))
    assert docs == [] and [s.reason for s in skips] == ["malformed_json"]
    assert "a JSON array file" in skips[0].detail and "not JSON lines" in skips[0].detail
    big = [{"text": "w " * 500}] * 400
    (tmp_path / "big.json").write_text(json.dumps(big, indent=1))
    size = (tmp_path / "big.json").stat().st_size
    docs, skips = _read(LocalSource(paths=[str(tmp_path / "big.json")],
                                    max_record_bytes=100_000))
    assert docs == [] and [s.reason for s in skips] == ["record_too_large"]
    assert f"{size:,} bytes" in skips[0].detail and "JSON lines" in skips[0].detail
    assert len(_read(LocalSource(paths=[str(tmp_path / "big.json")]))[0]) == 400
    # JSON lines whose first record is an object stay JSON lines; a `.jsonl` file is JSON
    # lines whatever its first line holds (a line "[..." is one bad record)
    (tmp_path / "l.json").write_text("\n".join(json.dumps(r) for r in recs[:3]))
    assert [d.id for d in _read(LocalSource(paths=[str(tmp_path / "l.json")]))[0]] == [
        "s0", "s1", "s2"]
    (tmp_path / "l.jsonl").write_text("[1, 2\n" + json.dumps(recs[0]) + "\n")
    docs, skips = _read(LocalSource(paths=[str(tmp_path / "l.jsonl")]))
    assert [d.id for d in docs] == ["s0"] and [s.reason for s in skips] == ["malformed_json"]


def test_a_json_file_of_one_object_over_several_lines_is_one_record(tmp_path: Path):
    """json.dump(obj, indent=2) was a malformed_json skip a line; it is one record, named
    by its id field or the file. A file that is not one object after all (a broken first
    JSON line, an object past max_record_bytes) is JSON lines, read from the start."""
    rec = {"id": "s0", "text": "a story\nover lines", "meta": {"k": [1, 2]}}
    (tmp_path / "o.json").write_text("\n" + json.dumps(rec, indent=2))
    (tmp_path / "n.json").write_text(json.dumps({"text": "no id"}, indent=1))
    docs, skips = _read(LocalSource(paths=[str(tmp_path / "*.json")]))
    assert [(d.id, d.text) for d in docs] == [("n.json", "no id"), ("s0", rec["text"])]
    assert skips == []
    lines = ['{"text": "cut', '{"text": "a"}', '{"text": "b"}']
    (tmp_path / "l.json").write_text("\n".join(lines) + "\n")
    docs, skips = _read(LocalSource(paths=[str(tmp_path / "l.json")]))
    assert [(d.id, d.text) for d in docs] == [("l.json:2", "a"), ("l.json:3", "b")]
    assert [(s.id, s.reason) for s in skips] == [("l.json:1", "malformed_json")]
    assert "not one JSON object either" in skips[0].detail
    # cut short as well (an interrupted download): the lines before the cut are kept, not
    # lost in one unreadable skip while it was tried as one object
    (tmp_path / "cut.json.gz").write_bytes(gzip.compress(
        ("\n".join(lines + [f'{{"text": "d{i}"}}' for i in range(3000)]) + "\n").encode())[:-2000])
    docs, skips = _read(LocalSource(paths=[str(tmp_path / "cut.json.gz")]))
    assert len(docs) > 100 and [s.reason for s in skips] == ["malformed_json", "unreadable"]
    cap = (tmp_path / "o.json").stat().st_size - 2   # each line fits, the object does not
    docs, skips = _read(LocalSource(paths=[str(tmp_path / "o.json")], max_record_bytes=cap))
    assert docs == [] and [s.id for s in skips][:2] == ["o.json:2", "o.json:3"]
    assert {s.reason for s in skips} == {"malformed_json", "not_an_object"}   # "    2"
    # a .jsonl file is JSON lines whatever it holds
    (tmp_path / "o.jsonl").write_text(json.dumps(rec, indent=2))
    docs, skips = _read(LocalSource(paths=[str(tmp_path / "o.jsonl")]))
    assert docs == [] and len(skips) == len(json.dumps(rec, indent=2).splitlines())
