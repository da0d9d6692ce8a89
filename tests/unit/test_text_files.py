"""A local source's text files of several documents (``separator``): the pieces, streamed
in blocks, with CRLF, char_range, cut files, invalid bytes and byte-order marks; and the
data stage's line for a source that produced or kept nothing."""

import gzip
import json
import random
import tracemalloc
from pathlib import Path

import pytest

from pretrain.config import ConfigError, PretrainError
from pretrain.data import stage as data_stage
from pretrain.data.config import CleanConfig, DataConfig, MinHashConfig
from pretrain.data.document import Document, Skip
from pretrain.data.filelines import split_stream
from pretrain.data.sources import LocalSource


def test_a_text_file_is_one_document_or_the_pieces_between_its_separators(tmp_path: Path):
    stories = ["Once upon a time.\r\nThe end.", "A second story.", "  Indented third."]
    (tmp_path / "s.txt").write_text("\r\n<|endoftext|>\r\n".join(stories[:2])
                                    + "\n<|endoftext|>\n\n<|endoftext|>\n" + stories[2] + "\n")
    whole = list(LocalSource(paths=[str(tmp_path / "s.txt")]).read())
    assert [d.id for d in whole] == ["s.txt"]
    src = LocalSource(paths=[str(tmp_path / "s.txt")], separator="<|endoftext|>")
    docs = list(src.read())
    assert [(d.id, d.text) for d in docs] == [   # CRLF read as LF
        ("s.txt:1", "Once upon a time.\nThe end."), ("s.txt:2", stories[1]),
        ("s.txt:4", stories[2])]
    (tmp_path / "r.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(ConfigError, match="separator applies to text files only"):
        list(LocalSource(paths=[str(tmp_path / "r.jsonl")], separator="\n\n").read())
    # CRLF files with a separator written "\n\n"; the pieces of a 2 MB file streamed in
    # blocks, one separator straddling two blocks
    (tmp_path / "crlf.txt").write_bytes(b"story one\r\nline two\r\n\r\nstory two\r\n")
    crlf = LocalSource(paths=[str(tmp_path / "crlf.txt")], separator="\n\n")
    assert [d.text for d in crlf.read()] == ["story one\nline two", "story two"]
    (tmp_path / "big.txt").write_text("a" * (1 << 20) + "\n" + "\nb c\n\n" + "d" * (1 << 20))
    big = LocalSource(paths=[str(tmp_path / "big.txt")], separator="\n\n")
    assert [len(d.text) for d in big.read()] == [1 << 20, 3, 1 << 20]
    assert [d.text for d in big.read()][1] == "b c"
    # a range of a file of documents takes whole documents, those that start in it
    (tmp_path / "r.txt").write_text("aaaa aaaa|bbbb bbbb|cccc cccc")
    halves = [LocalSource(paths=[str(tmp_path / "r.txt")], separator="|", char_range=r)
              for r in ([0.0, 0.5], [0.5, 1.0])]
    assert [[(d.id, d.text) for d in h.read()] for h in halves] == [
        [("r.txt:1", "aaaa aaaa"), ("r.txt:2", "bbbb bbbb")], [("r.txt:3", "cccc cccc")]]
    # overlapping globs read a file once
    both = LocalSource(paths=[str(tmp_path / "s*.txt"), str(tmp_path / "s*")])
    assert both.files() == [tmp_path / "s.txt"]


def test_split_stream_is_split_whatever_the_blocks():
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice(["a", "b", "<>", "<", ">", "\n"]) for _ in range(rng.randint(0, 40)))
        sep = rng.choice(["<>", "\n", "<><", "ab"])
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 5))))
        blocks = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert list(split_stream(blocks, sep)) == text.split(sep), (text, sep, blocks)
        cap = rng.randint(1, 8)   # a piece longer than cap is given as its length
        assert list(split_stream(blocks, sep, cap)) == [
            len(x) if len(x) > cap else x for x in text.split(sep)], (text, sep, blocks, cap)


@pytest.mark.parametrize("ext", ["txt", "txt.gz", "txt.zst"])
def test_a_text_document_over_max_record_bytes_is_a_skip_never_held(tmp_path: Path, ext):
    """A separator that never comes (a 19 MB piece on one line, 64 KiB allowed) is one
    counted `record_too_large` skip, read past in blocks: the old reader held the line,
    the piece and their copies (4.2 GB for a 230 MB one). A piece of fewer characters
    than the cap but more bytes is one too; the documents around them are read."""
    p = tmp_path / f"t.{ext}"
    rng = random.Random(0)   # words, not one repeated: a zstd block of that is 64 MB out
    words = "".join(rng.choice(["tale ", "of ", "two ", "cities "]) for _ in range(4 << 20))
    raw = ("first\n\n" + words + "\n\n" + "\u00e9" * 40_000 + "\n\nlast\n").encode()
    size = len(raw)
    if ext.endswith("gz"):
        raw = gzip.compress(raw, compresslevel=1)   # level 9 took 8 s of the test
    elif ext.endswith("zst"):
        raw = pytest.importorskip("zstandard").ZstdCompressor().compress(raw)
    p.write_bytes(raw)
    name = p.name
    tracemalloc.start()
    try:
        got = list(LocalSource(paths=[str(p)], separator="\n\n", max_record_bytes=1 << 16)
                   .read())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(x.id, x.text) for x in got if isinstance(x, Document)] == [
        (f"{name}:1", "first"), (f"{name}:4", "last")]
    assert [(x.id, x.reason, x.detail) for x in got if isinstance(x, Skip)] == [
        (f"{name}:2", "record_too_large",
         f"{p}: document 2: {len(words):,} characters > max_record_bytes (65,536)"),
        (f"{name}:3", "record_too_large",
         f"{p}: document 3: 80,000 bytes > max_record_bytes (65,536)")]
    assert peak < 16e6, peak   # the old reader: 80 MB and more
    # the file as one document (no separator): held up to the cap only (the file and its
    # text were held whole, and dropped later by the length filter)
    tracemalloc.start()
    try:
        got = list(LocalSource(paths=[str(p)], max_record_bytes=1 << 16).read())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(x.id, x.reason, x.detail) for x in got] == [
        (name, "record_too_large", f"{p}: one document of {size:,} bytes > max_record_bytes; "
         "a file of several documents needs the source's separator")]
    assert peak < 16e6, peak


def test_a_source_that_loses_every_document_is_named(tmp_path: Path, capsys):
    """The funnel sums the sources: a wrong text_field, or a text file of stories read as
    one too-long document, lost a whole source with only a count to show for it."""
    (tmp_path / "good.jsonl").write_text("".join(
        json.dumps({"text": _long_prose(i)}) + "\n" for i in range(3)))
    (tmp_path / "body.jsonl").write_text("".join(
        json.dumps({"body": _long_prose(i)}) + "\n" for i in range(4)))
    (tmp_path / "stories.txt").write_text("\n\n".join(_long_prose(i) for i in range(9)))
    sources = [LocalSource(paths=[str(tmp_path / "good.jsonl")], domain="good", quality="none"),
               LocalSource(paths=[str(tmp_path / "body.jsonl")], domain="web", quality="none"),
               LocalSource(paths=[str(tmp_path / "stories.txt")], domain="tales",
                           quality="none")]

    def cfg(srcs: list) -> DataConfig:
        return DataConfig(sources=srcs, clean=CleanConfig(max_chars=3000),
                          minhash=MinHashConfig(enabled=False))
    (tmp_path / "out").mkdir()
    data_stage.process(cfg(sources), tmp_path / "out")
    log = capsys.readouterr().err
    assert "data.sources.1 (local 'web') produced no document (missing_text 4)" in log
    assert "data.sources.2 (local 'tales') kept none of its 1 documents (drops and skips: " \
           "too_long 1); a text " \
           "file is one document unless the source sets separator" in log
    assert "data.sources.0" not in log
    assert log.index("data: kept") < log.index("data: warning: data.sources.1")   # at the end
    (tmp_path / "out2").mkdir()
    with pytest.raises(PretrainError, match=r"(?s)kept no documents.*data\.sources\.0 "
                       r"\(local 'web'\) produced no document"):
        data_stage.process(cfg(sources[1:2]), tmp_path / "out2")
    sources[2].separator = "\n\n"
    (tmp_path / "out3").mkdir()
    assert data_stage.process(cfg(sources[2:]), tmp_path / "out3").docs_total == 9


def _long_prose(i: int) -> str:
    rng = random.Random(i)
    words = ["river", "stone", "light", "garden", "winter", "market", "letter", "window"]
    return " ".join(rng.choice(words) for _ in range(60)) + f" {i}."


def test_a_cut_text_file_of_documents_keeps_those_before_the_cut(tmp_path: Path):
    """A truncated .txt.gz lost the last block of stories read before the cut (about 1 MB):
    a read error ended the block unyielded. A byte-order mark before a first separator was
    a document of its own."""
    stories = [f"Story {i}: " + "word " * 40 for i in range(8000)]
    blob = gzip.compress(("\n<|endoftext|>\n".join(stories)).encode())
    (tmp_path / "cut.txt.gz").write_bytes(blob[: len(blob) * 3 // 4])
    items = list(LocalSource(paths=[str(tmp_path / "cut.txt.gz")],
                             separator="<|endoftext|>").read())
    docs = [d for d in items if isinstance(d, Document)]
    (skip,) = [s for s in items if isinstance(s, Skip)]
    assert skip.reason == "unreadable" and f"after document {len(docs)}" in skip.detail
    assert [d.text for d in docs] == stories[:len(docs)]
    # all but the story the cut runs through (the gzip stream's last ~100 KB are unread)
    assert len(docs) > 5000
    # an invalid byte costs its document only (the ~1 MB block before it and the rest of
    # the file were lost, counted as one record), streamed or in a range
    body = "\n<|endoftext|>\n".join(stories).encode()
    bad = body.index(b"Story 6000:")
    (tmp_path / "bad.txt").write_bytes(body[:bad] + b"\xff" + body[bad:])
    for rng in ([0.0, 1.0], [0.5, 1.0]):
        items = list(LocalSource(paths=[str(tmp_path / "bad.txt")], separator="<|endoftext|>",
                                 char_range=rng).read())
        docs = [d for d in items if isinstance(d, Document)]
        skips = [(s.id, s.reason) for s in items if isinstance(s, Skip)]
        assert skips == [("bad.txt:6001", "invalid_utf8")]
        assert [d.text for d in docs] == [t for t in stories if not t.startswith(
            "Story 6000:")][len(stories) - len(docs) - 1:]
    (tmp_path / "bom.txt").write_text("\ufeff<|endoftext|>one<|endoftext|>two")
    bom = LocalSource(paths=[str(tmp_path / "bom.txt")], separator="<|endoftext|>")
    assert [(d.id, d.text) for d in bom.read()] == [("bom.txt:2", "one"), ("bom.txt:3", "two")]


def test_lone_cr_line_ends_and_text_that_is_not_utf8(tmp_path: Path):
    """A file of lone CRs was one document under separator "\n\n" (normalising made them
    LF only later); a UTF-16 file was a skip a line ("malformed_json" three times, one for
    its last NUL) and a jsonl of lone CRs one malformed record that did not say why."""
    (tmp_path / "cr.txt").write_bytes(b"story one\rline two\r\rstory two\r")
    src = LocalSource(paths=[str(tmp_path / "cr.txt")], separator="\n\n")
    assert [d.text for d in src.read()] == ["story one\nline two", "story two"]
    records = "\n".join(json.dumps({"text": f"record {i}"}) for i in range(3)) + "\n"
    (tmp_path / "cr.jsonl").write_text(records.replace("\n", "\r"), newline="")
    (skip,) = LocalSource(paths=[str(tmp_path / "cr.jsonl")]).read()
    assert skip.reason == "malformed_json" and skip.detail.endswith(
        "; the line holds a lone CR: lines end at LF only here, so re-save the file with LF "
        "line ends")
    stories = "story one\n\nstory two\n\n\n\nstory three\n"
    (tmp_path / "w.jsonl").write_bytes(records.encode("utf-16"))                  # LE, a BOM
    (tmp_path / "w.jsonl.gz").write_bytes(gzip.compress(records.encode("utf-32")))
    (tmp_path / "w.txt").write_bytes(b"\xfe\xff" + stories.encode("utf-16-be"))
    zstd = pytest.importorskip("zstandard")   # through zstd too (51 skips of 3 reasons)
    (tmp_path / "w.jsonl.zst").write_bytes(zstd.ZstdCompressor().compress(records.encode("utf-16")))
    for name, sep, said, records_ in (("w.jsonl", "", "UTF-16 LE", 3),
                                      ("w.jsonl.gz", "", "UTF-32 LE", 3),
                                      ("w.jsonl.zst", "", "UTF-16 LE", 3),
                                      ("w.txt", "\n\n", "UTF-16 BE", 3), ("w.txt", "", "UTF-16 BE", 1)):
        out = list(LocalSource(paths=[str(tmp_path / name)], separator=sep).read())
        assert [(s.reason, s.id, s.records) for s in out] == [("invalid_utf8", name, records_)]
        assert out[0].detail == (f"{tmp_path / name}: {said} text (its byte-order mark), not "
                                 "UTF-8: re-save it as UTF-8 (iconv -t UTF-8)")
    # counted as the UTF-8 readers count: CRLF before a separator written with LF, and
    # lines at LF only (U+2028 may be inside a JSON string)
    (tmp_path / "crlf.txt").write_bytes(stories.replace("\n", "\r\n").encode("utf-16"))
    (tmp_path / "ls.jsonl").write_bytes((json.dumps({"text": "a\u2028b"}, ensure_ascii=False)
                                         + "\n" + records).encode("utf-16"))
    for name, sep, records_ in (("crlf.txt", "\n\n", 3), ("ls.jsonl", "", 4)):
        (skip,) = LocalSource(paths=[str(tmp_path / name)], separator=sep).read()
        assert (skip.reason, skip.records) == ("invalid_utf8", records_), name
    # UTF-8 with its own byte-order mark is read as before
    (tmp_path / "u.jsonl").write_bytes(b"\xef\xbb\xbf" + records.encode())
    assert len(list(LocalSource(paths=[str(tmp_path / "u.jsonl")]).read())) == 3
