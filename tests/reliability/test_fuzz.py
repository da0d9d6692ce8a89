"""Property-based fuzzing (hypothesis) of what reads user input: the document readers and
the config parser. Properties: a reader never raises on bad bytes, and every non-empty line
comes out as a document or a counted skip naming its file and line (nothing silently lost);
the config parser either builds a config or raises ConfigError (one line, naming the key),
never another exception, and what it builds survives ``to_toml`` unchanged.

The default examples keep the suite quick; ``-m slow`` variants run many more of each
(``make test`` and CI run both)."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pretrain.config import ConfigError, apply_override, build, to_dict, to_toml
from pretrain.data.document import Document, Skip
from pretrain.data.sources import LocalSource
from pretrain.data.warc import WarcSource
from pretrain.run_config import RunConfig, load_config

QUICK = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])
LONG = settings(max_examples=1500, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# lines that look like records, broken records and plain noise
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=3),
    max_leaves=6)
_records = st.dictionaries(st.sampled_from(["text", "id", "url", "metadata", "x"]),
                           _json_values, max_size=4)
_line = st.one_of(
    _records.map(lambda r: json.dumps(r).encode()),
    _records.map(lambda r: json.dumps(r).encode()[: max(1, len(json.dumps(r)) // 2)]),
    st.binary(max_size=80).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.text(max_size=40).map(lambda t: t.replace("\n", " ").replace("\r", " ").encode()))


def _read(src: LocalSource | WarcSource) -> tuple[list[Document], list[Skip]]:
    items = list(src.read())
    assert all(isinstance(i, (Document, Skip)) for i in items)
    return ([i for i in items if isinstance(i, Document)],
            [i for i in items if isinstance(i, Skip)])


def _check_jsonl(lines: list[bytes], gz: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("f.jsonl.gz" if gz else "f.jsonl")
        raw = b"\n".join(lines) + b"\n"
        path.write_bytes(gzip.compress(raw) if gz else raw)
        docs, skips = _read(LocalSource(paths=[str(path)]))
        # every line that holds something is a document or a skip naming file and line;
        # a file with none is one skip naming the file
        if raw.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):  # UTF-16/32
            assert not docs and [(s.id, s.reason) for s in skips] == [(path.name, "invalid_utf8")]
            return
        # bytes that open as gzip, zstd, xz or bzip2 do under a name that does not say so:
        # one skip for the file (the compressed bytes were thousands of bad lines)
        if not gz and (raw.startswith((b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00"))
                       or (raw[:3] == b"BZh" and raw[4:10] == b"1AY&SY")):
            assert not docs and [(s.id, s.reason) for s in skips] == [(path.name, "unreadable")]
            return
        rows = raw.split(b"\n")[:-1]
        rows[0] = rows[0].removeprefix(b"\xef\xbb\xbf")   # a BOM alone makes no record
        expected = sum(1 for ln in rows if ln.strip())
        if not expected:
            assert not docs and [(s.id, s.reason) for s in skips] == [(path.name, "empty_file")]
            return
        assert len(docs) + len(skips) == expected
        for s in skips:   # named as its document would have been; the detail: file and line
            assert s.id and s.reason and s.detail.startswith(f"{path}:")
            assert s.id.startswith(f"{path.name}:") or s.reason not in (
                "invalid_utf8", "malformed_json", "record_too_large")   # no id of its own
        for doc in docs:
            assert isinstance(doc.text, str)


def _check_truncated(lines: list[bytes], cut: float) -> None:
    """A compressed file cut short: what was readable comes out, the rest is one skip."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.jsonl.gz"
        blob = gzip.compress(b"\n".join(lines) + b"\n")
        path.write_bytes(blob[: max(1, int(len(blob) * cut))])
        docs, skips = _read(LocalSource(paths=[str(path)]))
        assert len(docs) + len(skips) <= sum(1 for ln in lines if ln.strip()) + 1
        assert all(s.id and s.detail.startswith(str(path)) for s in skips)
        assert all(s.id.startswith(f"{path.name}:") for s in skips if s.reason == "unreadable")


def _check_txt(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.txt"
        path.write_bytes(blob)
        docs, skips = _read(LocalSource(paths=[str(path)]))
        assert len(docs) + len(skips) == 1   # a text file is one document, or one skip
        if docs:
            assert docs[0].text == blob.decode("utf-8")


def _check_warc(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.warc"
        path.write_bytes(blob)
        _read(WarcSource(paths=[str(path)]))   # no exception, whatever the bytes


@QUICK
@given(st.lists(_line, min_size=1, max_size=12), st.booleans())
def test_jsonl_reader_accounts_for_every_line(lines, gz):
    _check_jsonl(lines, gz)


@QUICK
@given(st.lists(_line, min_size=1, max_size=12), st.floats(0.05, 0.95))
def test_a_truncated_compressed_file_yields_what_it_can_and_one_skip(lines, cut):
    _check_truncated(lines, cut)


@QUICK
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_txt_reader_is_one_document_or_one_skip(blob):
    _check_txt(blob)


_warc_head = (b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://x.org/\r\n"
              b"Content-Type: application/http; msgtype=response\r\n")


@QUICK
@given(st.binary(max_size=300), st.booleans())
def test_warc_reader_never_raises(blob, headed):
    _check_warc((_warc_head + b"Content-Length: %d\r\n\r\n" % len(blob) + blob) if headed else blob)


# ---- the config parser ----------------------------------------------------------------
_KEYS = sorted({f"{section}.{k}" for section, sub in to_dict(RunConfig()).items()
                if isinstance(sub, dict) for k, v in sub.items() if not isinstance(v, dict)}
               | {"seed", "name", "device", "runs_dir", "nonsense", "train.nonsense",
                  "model.d_model.x", "train.parallel.tp", "data.sources.0.max_bytes",
                  "data.sources.7.paths", "eval.tasks"})
_raw_values = st.one_of(
    st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(str),
    st.sampled_from(["true", "false", "[]", "[1, 2]", '["a"]', "{}", "", "nan", "inf",
                     "1e400", "0x10", "llama", "cosine", "bf16", "auto", "-1"]),
    st.text(max_size=20))


def _check_overrides(pairs: list[tuple[str, str]]) -> None:
    try:
        cfg = load_config(None, pairs)
    except ConfigError as e:
        assert "\n" not in str(e).strip() and str(e)
        return
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.toml"
        path.write_text(to_toml(cfg))
        assert to_dict(load_config(str(path))) == to_dict(cfg)


@QUICK
@given(st.lists(st.tuples(st.sampled_from(_KEYS), _raw_values), max_size=4))
def test_overrides_build_a_config_or_raise_one_line(pairs):
    _check_overrides(pairs)


@QUICK
@given(st.dictionaries(st.sampled_from(["train", "model", "data", "eval", "seed", "x"]),
                       st.dictionaries(st.sampled_from(["lr", "steps", "d_model", "arch",
                                                        "sources", "tasks", "zz"]),
                                       _json_values, max_size=3) | _json_values,
                       max_size=3))
def test_any_toml_tree_builds_or_raises_config_error(tree):
    tree = json.loads(json.dumps(tree, default=str).replace("NaN", "0"))
    base = to_dict(RunConfig())
    try:
        for section, value in tree.items():
            if isinstance(value, dict) and isinstance(base.get(section), dict):
                for k, v in value.items():
                    apply_override(base, f"{section}.{k}", json.dumps(v))
            else:
                apply_override(base, section, json.dumps(value))
        build(RunConfig, base)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e).strip()


@pytest.mark.slow
@LONG
@given(st.lists(_line, min_size=1, max_size=30), st.booleans())
def test_jsonl_reader_accounts_for_every_line_long(lines, gz):
    _check_jsonl(lines, gz)


@pytest.mark.slow
@LONG
@given(st.binary(max_size=2000), st.booleans())
def test_warc_and_txt_readers_long(blob, headed):
    _check_txt(blob)
    _check_warc((_warc_head + b"Content-Length: %d\r\n\r\n" % len(blob) + blob) if headed else blob)


@pytest.mark.slow
@LONG
@given(st.lists(st.tuples(st.sampled_from(_KEYS), _raw_values), max_size=6))
def test_overrides_build_a_config_or_raise_one_line_long(pairs):
    _check_overrides(pairs)
