import gzip
import hashlib
import json
import random
from pathlib import Path

import pytest

from pretrain.config import ConfigError, PretrainError
from pretrain.data import stage as data_stage
from pretrain.data.config import CleanConfig, DataConfig, MinHashConfig
from pretrain.data.docs import _prefetched, read_docs
from pretrain.data.document import Document, Skip
from pretrain.data.filelines import _zstd_lines
from pretrain.data.pysource import PythonInstallationSource, _distributions
from pretrain.data.sources import LocalSource
from pretrain.tokenizer import shards
from pretrain.tokenizer.bpe import Tokenizer, training_sample
from pretrain.tokenizer.config import BOS, EOS, TokenizeConfig, TokenizerConfig

from ..conftest import shared_data


def _written(p: Path, raw: bytes) -> Path:
    """``raw`` written to ``p``, through gzip or zstd as its name says."""
    if p.name.endswith("gz"):
        raw = gzip.compress(raw)
    elif p.name.endswith("zst"):
        raw = pytest.importorskip("zstandard").ZstdCompressor().compress(raw)
    p.write_bytes(raw)
    return p


def _read(src):
    items = list(src.read())
    return [i for i in items if isinstance(i, Document)], [i for i in items if isinstance(i, Skip)]


def test_python_installation_code_is_the_stdlib():
    docs = []
    for item in PythonInstallationSource(part="code").read():
        docs.append(item)
        if len(docs) == 50:
            break
    assert all(isinstance(d, Document) and d.domain == "code" for d in docs)
    assert all(d.id.startswith("stdlib/") and d.id.endswith(".py") for d in docs)
    assert any("import " in d.text for d in docs)


def test_python_installation_prose_has_topics_docstrings_and_metadata(monkeypatch):
    # the docstrings of 40 stdlib files, not all ~2,000 (ast-parsing them all took 29 s)
    every_file = PythonInstallationSource._stdlib_files
    monkeypatch.setattr(PythonInstallationSource, "_stdlib_files",
                        lambda self: every_file(self)[:40])
    kinds = set()
    for item in PythonInstallationSource(part="prose").read():
        if isinstance(item, Document):
            assert item.domain == "prose" and item.text.strip()
            kinds.add(item.id.split("/")[0])
    assert {"pydoc-topic", "docstrings", "metadata"} <= kinds


def test_jsonl_bad_records_are_counted_skips_naming_file_and_line(tmp_path: Path):
    p = tmp_path / "docs.jsonl"
    p.write_text('{"text": "good one", "id": "a"}\n'
                 '{"text": "broken\n'
                 '\n'
                 '["not", "an", "object"]\n'
                 '{"body": "no text field"}\n'
                 '{"text": "good two"}\n'
                 '{"text": null}\n{"text": ["a list"]}\n')
    docs, skips = _read(LocalSource(paths=[str(p)]))
    assert [d.text for d in docs] == ["good one", "good two"]
    # the text field missing, null or of another type, each said as it is
    assert [s.detail.split(": ", 1)[1] for s in skips if s.reason == "missing_text"] == [
        "no field 'text' (its fields: 'body'; text_field names the text)",
        "field 'text' is null", "field 'text' is a list, not a string"]
    skips = skips[:3]
    assert docs[0].id == "a" and docs[1].id == "docs.jsonl:6"  # ids do not depend on the folder
    # a skip has the id its document would have had, its detail the file as given
    assert [(s.reason, s.id) for s in skips] == [("malformed_json", "docs.jsonl:2"),
                                                 ("not_an_object", "docs.jsonl:4"),
                                                 ("missing_text", "docs.jsonl:5")]
    assert all(s.detail.startswith(f"{p}:") for s in skips)
    # valid JSON that Python's reader still refuses: an integer past 4,300 digits and
    # arrays nested past the recursion limit (each stopped the stage, naming nothing)
    p.write_text('{"text": "ok", "n": ' + "9" * 5000 + '}\n' + "[" * 100_000 + "]" * 100_000
                 + '\n{"text": "after"}\n')
    docs, skips = _read(LocalSource(paths=[str(p)]))
    assert [d.text for d in docs] == ["after"]
    assert [(s.reason, s.id) for s in skips] == [("malformed_json", "docs.jsonl:1"),
                                                 ("malformed_json", "docs.jsonl:2")]


def test_truncated_gzip_keeps_what_was_read_and_reports_the_rest(tmp_path: Path):
    p = tmp_path / "docs.jsonl.gz"
    lines = "".join(json.dumps({"text": f"document number {i} " * 20}) + "\n" for i in range(200))
    blob = gzip.compress(lines.encode())
    p.write_bytes(blob[: len(blob) // 2])
    docs, skips = _read(LocalSource(paths=[str(p)]))
    assert 0 < len(docs) < 200
    assert len(skips) == 1 and skips[0].reason == "unreadable" and str(p) in skips[0].detail


def test_a_gzip_file_failing_its_check_is_left_out_whole(tmp_path: Path):
    """gzip checks a member's CRC at its end, after its lines were read: a flipped bit
    decoded to other text and was kept ("opened up to" read "opened upto u"), then the
    file's end was a skip. Each flip here either fails the CRC or the deflate stream."""
    p = tmp_path / "docs.jsonl.gz"
    lines = "".join(json.dumps({"text": f"document number {i} " * 20}) + "\n" for i in range(200))
    blob = gzip.compress(lines.encode())
    crc = 0
    for at in range(len(blob) // 3, 2 * len(blob) // 3, len(blob) // 20):
        flipped = bytearray(blob)
        flipped[at] ^= 0x10
        p.write_bytes(flipped)
        docs, skips = _read(LocalSource(paths=[str(p)]))
        assert docs == [], at
        assert [(s.reason, s.id) for s in skips] == [("unreadable", "docs.jsonl.gz")], at
        assert skips[0].detail.startswith(f"{p}: ") and "none of its" in skips[0].detail
        assert skips[0].records >= 1   # the lines of the damaged text: more or fewer
        if "CRC check failed" in skips[0].detail:   # decoded to the end: its lines counted,
            crc += 1   # as many as the damaged text has (read() had lost them all: 0)
            assert skips[0].records > 50, skips[0].records
    assert crc   # the case that kept damaged text
    for name in ("docs.txt.gz", "stories.txt.gz"):   # one document, or documents between separators
        (tmp_path / name).write_bytes(flipped)
    source = LocalSource(paths=[str(tmp_path / "docs.txt.gz")])
    assert [s.reason for s in _read(source)[1]] == ["unreadable"] and not _read(source)[0]
    source = LocalSource(paths=[str(tmp_path / "stories.txt.gz")], separator="\n")
    docs, skips = _read(source)
    assert (docs, [(s.reason, s.id) for s in skips]) == ([], [("unreadable", "stories.txt.gz")])


def test_invalid_utf8_txt_is_a_counted_skip(tmp_path: Path):
    good, bad = tmp_path / "a.txt", tmp_path / "b.txt"
    good.write_text("fine text")
    bad.write_bytes(b"caf\xe9 latin-1")
    docs, skips = _read(LocalSource(paths=[str(tmp_path / "*.txt")]))
    assert [d.text for d in docs] == ["fine text"]
    assert skips[0].reason == "invalid_utf8" and str(bad) in skips[0].detail
    assert (docs[0].id, skips[0].id) == ("a.txt", "b.txt")   # the file's document's name


def test_invalid_utf8_line_costs_one_record(tmp_path: Path):
    p = tmp_path / "u.jsonl"
    lines = [json.dumps({"text": f"good {i}"}).encode() for i in range(100)]
    lines.insert(50, b'{"text": "caf\xe9"}')
    p.write_bytes(b"\n".join(lines) + b"\n")
    docs, skips = _read(LocalSource(paths=[str(p)]))
    assert len(docs) == 100
    assert [(s.reason, s.id) for s in skips] == [("invalid_utf8", "u.jsonl:51")]
    assert skips[0].detail.startswith(f"{p}:51: ")


def test_lone_surrogate_is_skipped_by_the_data_stage(tmp_path: Path):
    src = tmp_path / "s.jsonl"
    good = "fine words " * 30
    src.write_text(json.dumps({"id": "ok", "text": good}) + "\n"
                   + '{"id": "bad", "text": "bad \\ud800 ' + "words " * 50 + '", "url": "\\udfff"}\n'
                   + json.dumps({"id": "meta", "text": good + "x", "url": "\ud800"}) + "\n"
                   # in a key, and nested: the whole stage had died with a traceback
                   + '{"id": "key", "text": "' + good + 'y", "\\ud800k": "v", "ok": 1, '
                   '"metadata": {"tags": ["a", "\\udc00"]}}\n')
    cfg = DataConfig(sources=[LocalSource(paths=[str(src)], quality="none")])
    out = tmp_path / "out"
    out.mkdir()
    counts: dict = {}
    counts.update(data_stage.process(cfg, out).counts())
    assert counts["dropped"] == {"invalid_unicode": 1}
    kept = list(read_docs(out))
    assert [d["id"] for d in kept] == ["ok", "meta", "key"]
    # in metadata a lone surrogate becomes U+FFFD, counted: the URL still meets the URL filter
    assert kept[1]["meta"]["url"] == "\ufffd"
    assert kept[2]["meta"]["\ufffdk"] == "v" and kept[2]["meta"]["ok"] == 1
    funnel = json.loads((out / "funnel.json").read_text())
    assert funnel[0]["stats"] == {"meta_invalid_unicode": 2}
    # the skip has the record's id, its detail names the file and line
    (skip,) = [json.loads(line) for line in open(out / "dropped.jsonl")]
    assert skip["id"] == "bad" and skip["detail"].startswith(f"{src}:2: text: a lone surrogate U+D800")
    # and strict mode stops at it, as at any unreadable record
    strict = tmp_path / "strict"
    strict.mkdir()
    with pytest.raises(PretrainError, match=f"invalid_unicode.*{src.name}:2"):
        data_stage.process(DataConfig(sources=cfg.sources, strict=True), strict)



def test_a_metadata_nan_or_infinity_is_written_as_null_and_counted(tmp_path: Path):
    """Python's json writes NaN and Infinity as bare words, which strict readers (jq, Rust's
    serde, Spark) refuse: the docs files must be JSON."""
    src = tmp_path / "n.jsonl"
    good = "fine words " * 30
    src.write_text('{"id": "a", "text": "' + good + '", "score": NaN, "n": 3}\n'
                   '{"id": "b", "text": "' + good + 'b", "metadata": {"w": -Infinity}}\n'
                   '{"id": "c", "text": "' + good + 'c", "score": 0.5}\n')
    out = tmp_path / "out"
    out.mkdir()
    data_stage.process(DataConfig(sources=[LocalSource(paths=[str(src)], quality="none")]), out)
    def strict(word: str) -> None:
        raise ValueError(word)
    lines = [line for f in sorted(out.glob("docs-*.jsonl")) for line in open(f)]
    kept = [json.loads(line, parse_constant=strict) for line in lines]
    assert [(d["id"], d["meta"].get("score"), d["meta"].get("w", 0)) for d in kept] == [
        ("a", None, 0), ("b", None, None), ("c", 0.5, 0)]
    assert kept[0]["meta"]["n"] == 3
    funnel = json.loads((out / "funnel.json").read_text())
    assert funnel[0]["stats"] == {"meta_not_finite": 2}

def test_a_damaged_parquet_row_group_costs_only_its_rows_each_counted(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    p = tmp_path / "rg.parquet"
    texts = [f"Row {i} has its own sentence about item {i * i}, long enough. " * 4
             for i in range(30)]
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(30)], "text": texts}), p,
                   row_group_size=10, compression="NONE")
    blob = bytearray(p.read_bytes())
    page = pq.ParquetFile(p).metadata.row_group(1).column(1).data_page_offset
    blob[page + 10:page + 60] = b"\xff" * 50     # row group 1's text page header only
    p.write_bytes(bytes(blob))
    docs, skips = _read(LocalSource(paths=[str(p)]))
    assert [d.id for d in docs] == [f"r{i}" for i in (*range(10), *range(20, 30))]
    assert [(s.id, s.reason, s.records) for s in skips] == [("rg.parquet:10", "unreadable", 10)]
    assert skips[0].detail.startswith(f"{p}: rows 10..19")
    assert "rows 10..19 (row group 1)" in skips[0].detail
    # the funnel counts the ten lost rows, not one record
    cfg = DataConfig(sources=[LocalSource(paths=[str(p)], quality="none")],
                     minhash=MinHashConfig(enabled=False))
    out = tmp_path / "out"
    out.mkdir()
    counts = data_stage.process(cfg, out).counts()
    read = json.loads((out / "funnel.json").read_text())[0]
    assert (read["docs_in"], read["docs_out"], read["dropped"]) == (30, 20, {"unreadable": 10})
    assert counts["dropped"] == {"unreadable": 10}


def test_record_ids_empty_files_and_a_bom_before_a_blank_line(tmp_path: Path):
    for lang in ("en", "de"):   # same-named files in two folders: ids told apart by folder
        (tmp_path / lang).mkdir()
        (tmp_path / lang / "part-0.jsonl").write_text(
            json.dumps({"text": f"{lang} one"}) + "\n" + json.dumps({"id": 0, "text": "zero"}))
    docs, skips = _read(LocalSource(paths=[str(tmp_path / "*" / "part-0.jsonl")]))
    assert [d.id for d in docs] == ["de/part-0.jsonl:1", "0", "en/part-0.jsonl:1", "0"] and not skips
    # the files of one folder keep their names as before
    docs, _ = _read(LocalSource(paths=[str(tmp_path / "en" / "*.jsonl")]))
    assert docs[0].id == "part-0.jsonl:1"
    # a BOM on a blank first line is not a malformed record; a 0-byte .zst is an empty file
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf\n" + json.dumps({"text": "a"}).encode())
    (tmp_path / "empty.jsonl.zst").write_bytes(b"")
    docs, skips = _read(LocalSource(paths=[str(tmp_path / "bom.jsonl"),
                                           str(tmp_path / "empty.jsonl.zst")]))
    assert [d.text for d in docs] == ["a"]
    # a whole file's skip has the file's name in the ids' form (it had the absolute path)
    assert [(s.reason, s.id) for s in skips] == [("empty_file", "empty.jsonl.zst")]


def test_records_past_a_sources_limit_are_not_read_counted_or_strict(tmp_path: Path):
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps({"text": "fine words " * 30}) + "\n"
                   + '{"text": "bad \\ud800 ' + "words " * 50 + '"}\n' + '{"text": 5}\n')
    cfg = DataConfig(sources=[LocalSource(paths=[str(src)], quality="none", max_docs=1)],
                     strict=True)
    (tmp_path / "out").mkdir()
    data_stage.process(cfg, tmp_path / "out")   # strict: the bad records were never read
    read = json.loads((tmp_path / "out" / "funnel.json").read_text())[0]
    assert (read["docs_in"], read["dropped"]) == (1, {})


def test_corrupt_gzip_is_a_counted_skip(tmp_path: Path):
    p = tmp_path / "c.jsonl.gz"
    rng = random.Random(0)
    lines = "".join(json.dumps({"text": " ".join(f"{rng.random():.6f}" for _ in range(40))}) + "\n"
                    for _ in range(300))
    blob = bytearray(gzip.compress(lines.encode()))
    mid = len(blob) // 2
    blob[mid:mid + 8] = bytes(8)
    p.write_bytes(bytes(blob))
    docs, skips = _read(LocalSource(paths=[str(p)]))
    assert len(docs) < 300 and len(skips) >= 1
    assert skips[-1].reason == "unreadable" and str(p) in skips[-1].detail


def test_c4_sample_reads_with_its_own_schema():
    p = shared_data("webtext/c4_sample.jsonl")
    docs, skips = _read(LocalSource(paths=[str(p)], domain="web"))
    assert len(docs) == 1000 and not skips
    assert docs[0].text.startswith("Beginners BBQ Class Taking Place in Missoula!")
    assert docs[0].meta["url"].startswith("http") and docs[0].domain == "web"


def test_dolma_gzipped_schema():
    p = shared_data("webtext/dolma_cc_en_head-0091.jsonl.gz")
    docs, skips = _read(LocalSource(paths=[str(p)]))
    assert len(docs) == 10 and not skips
    assert all(d.id and d.text for d in docs)
    assert "source" in docs[0].meta


def test_data_stage_drops_are_audited(tmp_path: Path):
    src = tmp_path / "in.jsonl"
    long_text = "a reasonable sentence of prose. " * 20
    src.write_text("\n".join(json.dumps(r) for r in [
        {"id": "1", "text": long_text},
        {"id": "2", "text": "  " + long_text.replace(" ", "  ") + "\r\n"},  # same after normalising
        {"id": "3", "text": "short"},
        {"id": "4", "text": "binary \x00\x01\x02 junk " * 30},
    ]) + "\n{oops\n")
    cfg = DataConfig(sources=[LocalSource(paths=[str(src)], domain="web", quality="none")])
    out = tmp_path / "out"
    out.mkdir()
    counts: dict = {}
    counts.update(data_stage.process(cfg, out).counts())
    assert counts["docs_kept"] == {"web": 1}
    assert counts["dropped"] == {"exact_duplicate": 1, "too_short": 1, "nonprintable": 1,
                                 "malformed_json": 1}
    audit = [json.loads(x) for x in (out / "dropped.jsonl").open()]
    assert {a["id"]: a["reason"] for a in audit} == {
        "2": "exact_duplicate", "3": "too_short", "4": "nonprintable",
        "in.jsonl:5": "malformed_json"}
    kept = list(read_docs(out))
    assert [d["id"] for d in kept] == ["1"]


def test_a_parquet_string_that_is_not_utf8_costs_its_row(tmp_path: Path):
    """One bad byte in any string column lost its whole batch of rows (and a real row
    group is ~100k rows), said without the column or the row."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    def strings(values: list[bytes]):   # as a writer that does not check UTF-8 writes them
        offsets = [0]
        for v in values:
            offsets.append(offsets[-1] + len(v))
        return pa.Array.from_buffers(pa.string(), len(values), [
            None, pa.py_buffer(pa.array(offsets, pa.int32()).buffers()[1]),
            pa.py_buffer(b"".join(values))])
    urls = [b"http://ok/%d" % i for i in range(10)]
    urls[3] = b"http://bad\xff.com/"
    texts = [b"row %d text" % i for i in range(10)]
    texts[7] = b"caf\xe9"
    pq.write_table(pa.table({"text": strings(texts), "url": strings(urls)}),
                   tmp_path / "t.parquet", row_group_size=5)
    docs, skips = _read(LocalSource(paths=[str(tmp_path / "t.parquet")]))
    assert [d.id for d in docs] == [f"t.parquet:{i}" for i in (0, 1, 2, 4, 5, 6, 8, 9)]
    assert [(s.reason, s.id, s.records) for s in skips] == [
        ("invalid_utf8", "t.parquet:3", 1), ("invalid_utf8", "t.parquet:7", 1)]
    assert skips[0].detail.startswith(f"{tmp_path / 't.parquet'}:row 3: column 'url': ")
    assert skips[1].detail.startswith(f"{tmp_path / 't.parquet'}:row 7: column 'text': ")


def test_parquet_rows_and_a_truncated_file(tmp_path: Path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    rows = [{"id": f"r{i}", "text": f"row {i} " * 30, "url": "http://x"} for i in range(3000)]
    good = tmp_path / "good.parquet"
    pq.write_table(pa.Table.from_pylist(rows), good, row_group_size=500)
    docs, skips = _read(LocalSource(paths=[str(good)]))
    assert [d.id for d in docs] == [r["id"] for r in rows] and not skips
    assert docs[0].meta == {"url": "http://x"}
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    docs, skips = _read(LocalSource(paths=[str(bad)]))
    assert len(skips) == 1 and skips[0].reason == "unreadable" and str(bad) in skips[0].detail
    # a 0-byte file is an empty file, as a 0-byte jsonl is (it was "unreadable")
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    docs, skips = _read(LocalSource(paths=[str(empty)]))
    assert [(s.reason, s.detail) for s in skips] == [
        ("empty_file", f"{empty}: empty or blank file, no records")]


def test_zstd_jsonl(tmp_path: Path):
    zstandard = pytest.importorskip("zstandard")
    p = tmp_path / "docs.jsonl.zst"
    lines = "".join(json.dumps({"text": f"doc {i}", "id": str(i)}) + "\n" for i in range(5))
    p.write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    docs, skips = _read(LocalSource(paths=[str(p)]))
    assert [d.text for d in docs] == [f"doc {i}" for i in range(5)] and not skips
    # truncated: the complete lines before the cut are kept, the loss is reported
    big = "".join(json.dumps({"text": f"doc {i} " * 40}) + "\n" for i in range(2000)).encode()
    blob = zstandard.ZstdCompressor().compress(big)
    p.write_bytes(blob[: len(blob) // 2])
    docs, skips = _read(LocalSource(paths=[str(p)]))
    assert len(skips) == 1 and skips[0].reason == "unreadable" and "truncated" in skips[0].detail
    assert len(docs) < 2000
    # one frame per record, as a writer that appends makes: a frame ending exactly at a
    # 64 KB read was taken for the end of the file's readable part (the rest lost)
    frames = [zstandard.ZstdCompressor().compress(json.dumps({"text": f"doc {i}"}).encode()
                                                   + b"\n") for i in range(3)]
    p.write_bytes(b"".join(frames))
    for chunk in (len(frames[0]), len(frames[0]) + len(frames[1]), 7):
        lines = list(_zstd_lines(p, chunk=chunk))
        assert [json.loads(b)["text"] for b in lines] == ["doc 0", "doc 1", "doc 2"], chunk
    # not zstd at all
    p.write_bytes(b"this is not a zstd frame" * 10)
    docs, skips = _read(LocalSource(paths=[str(p)]))
    assert not docs and skips[0].reason == "unreadable"


@pytest.mark.parametrize("ext", ["jsonl", "json", "jsonl.gz", "jsonl.zst"])
def test_a_line_over_max_record_bytes_is_read_past_not_held(tmp_path: Path, ext: str):
    """A record over ``max_record_bytes`` was read whole before it was skipped (a one-line
    JSON array of 167 MB: +315 MB); now it is read past in 1 MB pieces and counted with its
    size, and the records around it are read."""
    import tracemalloc
    rng = random.Random(0)   # text, not runs of one byte: zstd decompresses 64 KB at a time
    words = ["".join(rng.choices("abcdefghij", k=6)) for _ in range(5000)]
    huge = json.dumps([{"text": " ".join(rng.choices(words, k=20))} for _ in range(50_000)])
    body = "".join(json.dumps({"id": f"a{i}", "text": f"record {i}"}) + "\n" for i in range(3))
    body += huge + "\n" + json.dumps({"id": "after", "text": "still read"}) + "\n"
    raw = body.encode()
    p = _written(tmp_path / f"docs.{ext}", raw)
    tracemalloc.start()
    try:
        docs, skips = _read(LocalSource(paths=[str(p)], max_record_bytes=1 << 16))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [d.id for d in docs] == ["a0", "a1", "a2", "after"]
    assert [(s.reason, s.detail) for s in skips] == [
        ("record_too_large", f"{p}:4: {len(huge):,} bytes > max_record_bytes (65,536)")]
    assert peak < 4e6, peak   # the old reader: 15 MB and more (the line, then its copies)


@pytest.mark.parametrize("ext", ["jsonl", "jsonl.gz", "json.zst"])
def test_max_record_bytes_is_the_record_without_its_line_break(tmp_path: Path, ext: str):
    """A line of exactly max_record_bytes was a skip ("101 bytes > max_record_bytes": its LF
    counted), and with CRLF; 0 and -1 read every line as too long or the file as empty;
    a .json.zst file was refused (no format from its name)."""
    cap = 100
    lines = [json.dumps({"id": f"r{i}", "text": "x" * (cap - 25 + i)}) for i in range(3)]
    assert [len(x) for x in lines] == [cap - 1, cap, cap + 1]
    raw = ("\n".join(lines[:2]) + "\r\n" + lines[2] + "\n" + lines[0] + "\r\n").encode()
    p = _written(tmp_path / f"docs.{ext}", raw)
    docs, skips = _read(LocalSource(paths=[str(p)], max_record_bytes=cap))
    assert [d.id for d in docs] == ["r0", "r1", "r0"]
    assert [(s.reason, s.detail) for s in skips] == [
        ("record_too_large", f"{p}:3: {cap + 1} bytes > max_record_bytes ({cap})")]
    for bad in (0, -1):
        with pytest.raises(ConfigError, match=f"max_record_bytes: .* got {bad}"):
            LocalSource(paths=[str(p)], max_record_bytes=bad)


def test_compressed_bytes_the_name_does_not_say_are_one_skip_saying_so(tmp_path: Path):
    """``format = "jsonl"`` on a .bz2 file read its compressed bytes as 3,167 bad lines."""
    import bz2
    import lzma
    raw = "".join(json.dumps({"text": f"record {i}"}) + "\n" for i in range(50)).encode()
    for name, packed, said in (
            ("a.jsonl.bz2", bz2.compress(raw), "bzip2-compressed, which is not read here"),
            ("b.jsonl.xz", lzma.compress(raw), "xz-compressed, which is not read here"),
            ("c.jsonl", gzip.compress(raw), "gzip-compressed, though its name does not end "
                                            "in .gz: rename it to end in .gz")):
        (tmp_path / name).write_bytes(packed)
        docs, skips = _read(LocalSource(paths=[str(tmp_path / name)], format="jsonl"))
        assert not docs and [s.reason for s in skips] == ["unreadable"]
        assert skips[0].detail.startswith(f"{tmp_path / name}: {said}")
    # text that merely begins as a bzip2 header does is text
    (tmp_path / "t.txt").write_text("BZh is how a bzip2 file begins")
    docs, skips = _read(LocalSource(paths=[str(tmp_path / "t.txt")]))
    assert [d.text for d in docs] == ["BZh is how a bzip2 file begins"] and not skips


def test_unknown_extension_asks_for_a_format(tmp_path: Path):
    p = tmp_path / "docs.data"
    p.write_text("x")
    with pytest.raises(ConfigError, match="set format"):
        list(LocalSource(paths=[str(p)]).read())
    docs, _ = _read(LocalSource(paths=[str(p)], format="txt"))
    assert [d.text for d in docs] == ["x"]


def test_a_source_can_be_held_out_whole(tmp_path: Path):
    """use_for = "val": a dedicated held-out file goes to the val split whatever the hash
    says, and the tokenizer never trains on it."""
    texts = {f"t{i}.txt": f"training text number {i} " * 20 for i in range(30)}
    texts["held.txt"] = "held out text " * 30
    for name, t in texts.items():
        (tmp_path / name).write_text(t)
    cfg = DataConfig(
        sources=[LocalSource(paths=[str(tmp_path / "t*.txt")], domain="d", use_for="train",
                             quality="none"),
                 LocalSource(paths=[str(tmp_path / "held.txt")], domain="d", use_for="val",
                             quality="none")],
        clean=CleanConfig(min_chars=10),
        minhash=MinHashConfig(enabled=False))  # the training texts are near-duplicates
    out = tmp_path / "data"
    out.mkdir()
    data_stage.process(cfg, out)
    docs = list(read_docs(out))
    assert [d.get("split") for d in docs] == ["train"] * 30 + ["val"]
    sample = list(training_sample(iter(docs), TokenizerConfig(), ["d"]))
    assert len(sample) == 30 and not any("held out" in s for s in sample)
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    # a val_fraction that would hold out most documents by hash changes nothing here
    (tmp_path / "tok").mkdir()
    shards.run(TokenizeConfig(val_fraction=0.9), tok, iter(docs), ["d"], tmp_path / "tok", {})
    val = shards.TokenShards(tmp_path / "tok", "val")
    (only, domain), = list(val.documents())
    # as normalised: the last line's trailing blank stripped
    assert tok.decode(only[1:-1]) == texts["held.txt"].rstrip() and domain == "d"
    assert shards.TokenShards(tmp_path / "tok", "train").meta["splits"]["train"]["docs"] == 30


def test_prefetched_documents_keep_order_errors_and_early_stop():

    def gen(n: int, fail_at: int = -1):
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"bad record {i}")
            yield i

    assert list(_prefetched(gen(1000), 7)) == list(range(1000))
    it = _prefetched(gen(100, fail_at=42), 5)
    with pytest.raises(ValueError, match="bad record 42"):
        assert list(it)
    first = _prefetched(gen(10**9), 3)     # a consumer that stops early ends the producer
    assert [next(first) for _ in range(5)] == [0, 1, 2, 3, 4]
    first.close()


def test_prose_corpus_does_not_depend_on_what_the_process_imported(monkeypatch):
    """Importing setuptools (torch.compile does) adds its _vendor folder to sys.path; the
    installed distributions, and so the prose corpus and its fingerprint, must not change."""
    import sys

    before = PythonInstallationSource(part="prose").fingerprint(), _distributions()
    vendor = Path(__import__("setuptools").__file__).parent / "_vendor"
    if not vendor.is_dir():
        pytest.skip("this setuptools vendors nothing")
    monkeypatch.setattr(sys, "path", [*sys.path, str(vendor)])
    assert (PythonInstallationSource(part="prose").fingerprint(), _distributions()) == before


def test_a_url_source_downloads_once_checks_its_sum_and_splits_by_characters(tmp_path,
                                                                             monkeypatch):
    remote = tmp_path / "remote" / "input.txt"
    remote.parent.mkdir()
    text = "".join(f"line {i}: to be or not to be\n" for i in range(400))
    remote.write_text(text)
    sha = hashlib.sha256(remote.read_bytes()).hexdigest()
    monkeypatch.chdir(tmp_path)
    train = LocalSource(paths=["dl/input.txt"], url=remote.as_uri(), sha256=sha,
                        char_range=[0.0, 0.9])
    val = LocalSource(paths=["dl/input.txt"], url=remote.as_uri(), sha256=sha,
                      char_range=[0.9, 1.0])
    key = train.fingerprint()   # computed before the file exists: planning downloads nothing
    assert not (tmp_path / "dl").exists()
    [a], _ = _read(train)
    assert (tmp_path / "dl" / "input.txt").read_text() == text
    [b], _ = _read(val)
    cut = int(len(text) * 0.9)   # nanoGPT's split: the first 90% of the characters train
    assert (a.text, b.text) == (text[:cut], text[cut:])
    assert train.fingerprint() == key   # the download does not change the data stage's key
    with pytest.raises(ConfigError, match="has sha256"):
        _read(LocalSource(paths=["dl/input.txt"], url=remote.as_uri(), sha256="0" * 64))
    with pytest.raises(ConfigError, match="could not be downloaded from .*put the file there"):
        _read(LocalSource(paths=["elsewhere/x.txt"], url=(tmp_path / "none").as_uri()))
    assert not list((tmp_path / "elsewhere").iterdir())   # no partial download left
    with pytest.raises(ConfigError, match="char_range"):
        LocalSource(paths=["x.txt"], char_range=[0.5, 0.2])
    with pytest.raises(ConfigError, match="exactly one file"):
        LocalSource(paths=["*.txt"], url=remote.as_uri())


def test_a_byte_order_mark_before_the_first_jsonl_record_is_no_error(tmp_path: Path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "first"}).encode() + b"\n"
                  + json.dumps({"text": "second"}).encode() + b"\n")
    docs, skips = _read(LocalSource(paths=[str(p)]))
    assert [d.text for d in docs] == ["first", "second"] and skips == []


def test_a_domain_missing_from_a_split_gets_advice_that_fits_the_split(tmp_path: Path, capsys):
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    docs = [{"id": f"w{i}", "domain": "web", "text": f"web text {i} " * 20} for i in range(30)]
    code = {"id": "c0", "domain": "code", "text": "x = 1\n" * 40}
    shards.run(TokenizeConfig(val_fraction=0.2), tok, iter([*docs, code]), ["web", "code"],
               tmp_path, {})
    err = capsys.readouterr().err
    # too few train documents: a larger val share makes it worse, not better
    assert "no train documents for domain(s) ['code']; the model will not train on them " \
        "(lower tokenize.val_fraction or tokenize.min_val_docs (a domain's first 1 " \
        "document(s) are held out), check the source's use_for or add data)" in err
    # held out whole by its source's use_for = "val": as configured, said as such
    (held := tmp_path / "held").mkdir()
    shards.run(TokenizeConfig(val_fraction=0.2), tok, iter([*docs, {**code, "split": "val"}]),
               ["web", "code"], held, {})
    assert "domain(s) ['code'] held out whole, as their sources' use_for = \"val\" says: " \
        "scored, not trained on" in (err := capsys.readouterr().err) and "no train" not in err


def test_docs_shards_are_read_in_their_numbers_order_past_99999(tmp_path: Path):
    """One shard per input file at least: a corpus of 100,000 small files has docs-100000,
    which sorts before docs-10001 by name."""
    for n in (9, 10_001, 99_999, 100_000, 100_001):
        (tmp_path / f"docs-{n:05d}.jsonl").write_text(json.dumps({"id": str(n)}) + "\n")
    assert [d["id"] for d in read_docs(tmp_path)] == ["9", "10001", "99999", "100000", "100001"]

