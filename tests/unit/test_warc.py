"""WARC sources: records framed and checked (a cut, a damaged gzip member, a wrong
Content-Length or stray bytes cost their own record only), HTTP codings removed, pages
decoded as a browser decodes them, Common Crawl's WET text read."""

from __future__ import annotations

import gzip
import io
import random
import zlib
from pathlib import Path

import pytest

from pretrain.data import warcframe
from pretrain.data.document import Document, Skip
from pretrain.data.warc import WarcSource

from ..conftest import shared_data

pytest.importorskip("resiliparse", reason="warc sources need pip install 'pretrain[warc]'")

PROSE = b"Plain English text about plants and gardens, the seasons and the soil. " * 8


def _record(n: int, payload: bytes = b"", *, kind: bytes = b"response",
            http: bytes | None = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8",
            ctype: bytes = b"application/http; msgtype=response", length_off: int = 0,
            head_end: bytes = b"\r\n\r\n") -> bytes:
    """One WARC record: a response (an HTTP head, a blank line, ``payload``) or, with
    ``http=None``, a record of ``kind`` holding ``payload`` as it is."""
    payload = payload or b"<html><body><p>" + PROSE + b"%d</p></body></html>" % n
    block = payload if http is None else http + head_end + payload
    return (b"WARC/1.0\r\nWARC-Type: " + kind + b"\r\nWARC-Record-ID: <urn:uuid:%d>\r\n"
            b"WARC-Target-URI: http://x.org/%d\r\nContent-Type: " % (n, n) + ctype
            + b"\r\nContent-Length: %d\r\n\r\n" % (len(block) + length_off) + block + b"\r\n\r\n")


def _read(path: Path) -> tuple[list[Document], list[Skip]]:
    items = list(WarcSource(paths=[str(path)]).read())
    return ([i for i in items if isinstance(i, Document)],
            [i for i in items if isinstance(i, Skip)])


def _ids(docs: list[Document]) -> list[int]:
    return [int(d.id.rsplit(":", 1)[1]) for d in docs]


def test_warc_source_extracts_html():
    path = shared_data("webtext/dolma_sample-0000.warc.gz")
    items = list(WarcSource(paths=[str(path)]).read())
    docs = [d for d in items if hasattr(d, "text")]
    assert len(docs) == 22 and all(d.meta["url"].startswith("http") for d in docs)
    assert all("<html" not in d.text.lower() and "<div" not in d.text for d in docs)
    assert any("facts about me" in d.text for d in docs)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_warc_keeps_what_was_read_and_counts_the_cut_record(tmp_path, gz):
    """Cut in the middle of a record (of the gzip stream too): the whole records before it
    are documents; the cut one is a counted skip naming the file, not a shortened page."""
    path = shared_data("webtext/dolma_sample-0000.warc.gz")
    blob = path.read_bytes() if gz else gzip.decompress(path.read_bytes())
    cut = tmp_path / ("cut.warc.gz" if gz else "cut.warc")
    cut.write_bytes(blob[: len(blob) // 2])
    items = list(WarcSource(paths=[str(cut)]).read())
    docs = [d for d in items if hasattr(d, "text")]
    assert 5 <= len(docs) < 22
    whole = {d.id: d.text for d in WarcSource(paths=[str(path)]).read() if hasattr(d, "text")}
    assert all(whole[d.id] == d.text for d in docs)
    assert [(type(i).__name__, getattr(i, "reason", "")) for i in items[len(docs):]] == [
        ("Skip", "truncated_record")]
    assert cut.name in items[-1].detail and "cut short" in items[-1].detail



@pytest.mark.parametrize("gz", [False, True])
def test_a_warc_cut_anywhere_says_so(tmp_path, gz):
    """Cut inside a record's header (or, gzipped, anywhere in a member), the file once read
    as a whole shorter one, with no skip. 40 cuts spread over the file, and the one
    inside the third response's header that was found."""
    path = shared_data("webtext/dolma_sample-0000.warc.gz")
    blob = path.read_bytes() if gz else gzip.decompress(path.read_bytes())
    whole = {d.id: d.text for d in WarcSource(paths=[str(path)]).read() if hasattr(d, "text")}
    rng = random.Random(0)
    cut = tmp_path / ("cut.warc.gz" if gz else "cut.warc")
    for at in sorted(rng.sample(range(1, len(blob) - 1), 40)) + [119319] * (not gz):
        cut.write_bytes(blob[:at])
        items = list(WarcSource(paths=[str(cut)]).read())
        docs = [d for d in items if hasattr(d, "text")]
        assert all(whole[d.id] == d.text for d in docs), at
        assert items and getattr(items[-1], "reason", "") == "truncated_record", (at, items[-1:])
        assert str(cut) in items[-1].detail and "cut short" in items[-1].detail

def test_a_warc_record_that_cannot_be_decoded_skips_only_itself(tmp_path):
    def record(n: int, content_type: bytes = b"text/html") -> bytes:
        http = (b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n\r\n<html><body><p>"
                + b"Plain English text about plants and gardens. " * 20 + b"</p></body></html>")
        return (b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:%d>\r\n"
                b"WARC-Target-URI: http://x.org/%d\r\nContent-Type: application/http; "
                b"msgtype=response\r\nContent-Length: %d\r\n\r\n" % (n, n, len(http))
                + http + b"\r\n\r\n")
    path = tmp_path / "f.warc"
    path.write_bytes(record(1) + record(2, b"text/html; charset=x-bogus") + record(3) + record(4))
    items = list(WarcSource(paths=[str(path)]).read())
    assert [i.id for i in items] == [f"urn:uuid:{n}" for n in (1, 2, 3, 4)]
    assert all(hasattr(i, "text") and "plants and gardens" in i.text for i in items)


def _brotli(data: bytes) -> bytes:
    from fastwarc.stream_io import BrotliWriter
    buf = io.BytesIO()
    writer = BrotliWriter(buf)
    writer.write(data)
    writer.close()   # finish() alone leaves the stream unflushed
    return buf.getvalue()


def test_warc_payloads_are_read_without_their_http_codings(tmp_path):
    """Chunked transfer and gzip/deflate/br content codings come off before extraction (the
    chunk sizes were text, a gzip page 'too short'); a body its header mislabels is a skip
    of its own and the records after it are read."""
    page = (b"<html><body><article>" + b"".join(
        b"<p>Paragraph %d of a long English article about rivers and valleys.</p>" % j
        for j in range(40)) + b"</article></body></html>")

    def chunked(b: bytes, n: int = 300) -> bytes:
        return b"".join(b"%x\r\n" % len(b[i:i + n]) + b[i:i + n] + b"\r\n"
                        for i in range(0, len(b), n)) + b"0\r\n\r\n"

    def record(n: int, payload: bytes, headers: bytes = b"") -> bytes:
        http = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n" + headers
                + b"\r\n" + payload)
        return (b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:%d>\r\n"
                b"WARC-Target-URI: http://x.org/%d\r\nContent-Type: application/http; "
                b"msgtype=response\r\nContent-Length: %d\r\n\r\n" % (n, n, len(http))
                + http + b"\r\n\r\n")
    zstandard = pytest.importorskip("zstandard")
    raw_deflate = zlib.compressobj(wbits=-15)
    records = [
        (page, b""),
        (chunked(page), b"Transfer-Encoding: chunked\r\n"),
        (gzip.compress(page), b"Content-Encoding: gzip\r\n"),
        (zlib.compress(page), b"Content-Encoding: deflate\r\n"),
        (raw_deflate.compress(page) + raw_deflate.flush(), b"Content-Encoding: deflate\r\n"),
        (_brotli(page), b"Content-Encoding: br\r\n"),
        (chunked(gzip.compress(page), 100),
         b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
        (page, b"Content-Encoding: gzip\r\n"),      # mislabelled: stored decoded
        (page, b"Transfer-Encoding: chunked\r\n"),  # the same for the framing
        (page, b"X-Crawler-Content-Encoding: gzip\r\n"),   # Common Crawl's: decoded already
        (b"%x;ext=1\n" % len(page) + page + b"\n0\n\n", b"Transfer-Encoding: chunked\r\n"),
        (chunked(page)[:-700], b"Transfer-Encoding: chunked\r\n"),   # the server cut it
        (chunked(page)[:-5], b"Transfer-Encoding: chunked\r\n"),     # no last chunk: whole
        (page, b"Content-Encoding: UTF-8\r\n"),   # a server's mistake: read as it is
        (page, b"Content-Encoding: compress\r\n"),   # LZW: not read, a skip
        (zstandard.ZstdCompressor().compress(page), b"Content-Encoding: zstd\r\n"),
    ]
    path = tmp_path / "codings.warc"
    path.write_bytes(b"".join(record(n, p, h) for n, (p, h) in enumerate(records)))
    items = list(WarcSource(paths=[str(path)]).read())
    assert [i.id for i in items] == [f"urn:uuid:{n}" for n in range(len(records))]
    plain = items[0].text
    assert "Paragraph 39 of a long" in plain
    docs = [i for i in items if isinstance(i, Document)]
    assert [d.id for d in docs] == [f"urn:uuid:{n}" for n in (0, 1, 2, 3, 4, 5, 6, 9, 10, 12, 13, 15)]
    assert all(d.text == plain for d in docs)
    skips = [i for i in items if isinstance(i, Skip)]
    assert [s.reason for s in skips] == ["undecodable_payload"] * 4
    assert all(path.name in s.detail and "http://x.org/" in s.detail for s in skips)


def test_a_cut_or_damaged_gzip_member_costs_its_own_record(tmp_path):
    """Common Crawl writes each record as its own gzip member. A cut inside the last one
    kept none of the records decompressed in the same read before it (17 of 400 lost
    without a word); a damaged member in the middle lost every record after it."""
    members = [gzip.compress(_record(n)) for n in range(40)]
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(b"".join(members)[:-len(members[-1]) // 2])
    docs, skips = _read(cut)
    assert _ids(docs) == list(range(39))
    assert [(s.reason, "cut short" in s.detail) for s in skips] == [("truncated_record", True)]
    bad = bytearray(members[20])
    bad[len(bad) // 2: len(bad) // 2 + 8] = b"\xff" * 8   # inside its deflate data
    damaged = tmp_path / "damaged.warc.gz"
    damaged.write_bytes(b"".join(members[:20]) + bytes(bad) + b"".join(members[21:]))
    docs, skips = _read(damaged)
    assert _ids(docs) == [n for n in range(40) if n != 20]
    assert [s.reason for s in skips] == ["unreadable"]
    assert "record 21" in skips[0].detail and "damaged" in skips[0].detail


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("off", [40, -40, -2])
def test_a_wrong_content_length_costs_its_own_record(tmp_path, gz, off):
    """Too long, the next record's header was read into the page, which was kept, and the
    rest of the file was one skip; too short, the page was cut mid-sentence."""
    records = [_record(n, length_off=off if n == 2 else 0) for n in range(6)]
    path = tmp_path / ("f.warc.gz" if gz else "f.warc")
    path.write_bytes(b"".join(map(gzip.compress, records)) if gz else b"".join(records))
    docs, skips = _read(path)
    assert _ids(docs) == [0, 1, 3, 4, 5]
    assert not any("WARC/1.0" in d.text for d in docs)
    assert [(s.reason, "record 3" in s.detail) for s in skips] == [("bad_content_length", True)]


def test_bytes_between_records_are_one_skip_and_the_records_after_them_are_read(tmp_path):
    path = tmp_path / "f.warc"
    path.write_bytes(_record(0) + b"some stray line\r\n" + _record(1) + _record(2)
                     + b"\x00" * 30)
    docs, skips = _read(path)
    assert _ids(docs) == [0, 1, 2]
    assert [(s.reason, s.detail.split(": ", 1)[1]) for s in skips] == [
        ("unreadable", "15 bytes that are no WARC record after record 1"),
        ("unreadable", "30 bytes that are no WARC record after record 3")]


@pytest.mark.parametrize("declared, body, expected", [
    # declared ISO-8859-1 / ascii / ISO-8859-9: browsers decode windows-1252 / -1254
    (b"ISO-8859-1", "“Quoted” text costs 5 €.".encode("cp1252"), "“Quoted” text costs 5 €."),
    (b"us-ascii", "It’s café.".encode("cp1252"), "It’s café."),
    (b"iso-8859-9", "“Yağmur” şimdi".encode("cp1254"), "“Yağmur” şimdi"),
    # gb2312 / euc-kr / shift_jis pages with a character of the wider table browsers use
    (b"gb2312", "朱镕基是总理".encode("gbk"), "朱镕基是总理"),
    (b"euc-kr", "똠방각하 이야기".encode("cp949"), "똠방각하 이야기"),
    (b"shift_jis", "①髙橋さんの話".encode("cp932"), "①髙橋さんの話"),
    # a byte order mark wins over the header (HTML5)
    (b"iso-8859-1", "\ufeffcafé crème".encode("utf-8"), "café crème"),
    # a charset Python does not know: as if none was declared (the <meta> one here)
    (b"x-bogus", b'<meta charset="windows-1251">' + "Съешь же ещё".encode("cp1251"),
     "Съешь же ещё"),
])
def test_pages_are_decoded_as_a_browser_decodes_them(tmp_path, declared, body, expected):
    page = body + b"<p>" + PROSE + b"</p>"   # what a byte order mark would start
    path = tmp_path / "f.warc"
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=" + declared
    path.write_bytes(_record(1, page, http=http))
    docs, skips = _read(path)
    assert not skips and docs[0].text.startswith(expected), docs[0].text[:40]


def test_a_meta_charset_is_read_where_the_headers_declare_none(tmp_path):
    """An EUC-KR page with <meta charset> only: detection alone took it for UTF-8, then
    windows-1252 (mojibake kept as text)."""
    korean = "이것은 문자 인코딩을 시험하기 위한 한국어 단락입니다. 서울은 한국의 수도입니다. "
    page = (b'<html><head><meta charset="euc-kr"></head><body><p>'
            + (korean * 3).encode("euc-kr") + b"</p></body></html>")
    path = tmp_path / "f.warc"
    path.write_bytes(_record(1, page, http=b"HTTP/1.1 200 OK\r\nContent-Type: text/html"))
    docs, _ = _read(path)
    assert docs[0].text.startswith(korean.strip())


def test_record_kinds_and_http_heads_as_crawlers_write_them(tmp_path):
    """Header names are case-insensitive, HTTP heads with bare LF lines are read, a WET
    file's ``conversion`` records are its text, a ``resource`` holding HTML is a page;
    request, metadata and warcinfo records hold no page."""
    text = b"Text a crawler extracted, one paragraph of it.\nAnd a second line."
    path = tmp_path / "f.warc"
    path.write_bytes(b"".join([
        _record(0, http=b"HTTP/1.1 200 OK\r\nCONTENT-TYPE: TEXT/HTML; Charset=UTF-8"),
        _record(1, http=b"HTTP/1.1 200 OK\nContent-Type: text/html", head_end=b"\n\n"),
        _record(2, text, kind=b"conversion", http=None, ctype=b"text/plain"),
        _record(3, kind=b"resource", http=None, ctype=b"text/html"),
        _record(4, b"wget's log", kind=b"resource", http=None, ctype=b"text/plain"),
        _record(5, b"GET / HTTP/1.1", kind=b"request", http=None),
        _record(6, b"fetchTimeMs: 12", kind=b"metadata", http=None,
                ctype=b"application/warc-fields"),
        _record(7, http=b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html"),
        _record(8, http=b"HTTP/1.1 200 OK\r\nContent-Type: image/png"),
        _record(9, http=b"HTTP/1.1 200 OK\r\nServer: x"),
    ]))
    docs, skips = _read(path)
    assert _ids(docs) == [0, 1, 2, 3]
    assert docs[2].text == text.decode() and all("gardens" in d.text for d in docs[:2])
    assert [(s.reason, s.detail.rsplit(": ", 1)[1]) for s in skips] == [
        ("http_not_ok", "HTTP 404"), ("not_html", "image/png"),
        ("not_html", "no Content-Type in its HTTP header")]   # (it read "None")


def test_what_writers_put_between_records_and_after_the_last(tmp_path):
    """Records ended by LF LF or by nothing, and a .warc.gz padded with zeros, are whole
    (the CRLF CRLF check lost every record; Python's gzip ignores the padding)."""
    plain = [_record(n) for n in range(3)]
    for name, blob in [("lf.warc", b"".join(r[:-4] + b"\n\n" for r in plain)),
                       ("none.warc", b"".join(r[:-4] for r in plain)),
                       ("padded.warc.gz", b"".join(map(gzip.compress, plain)) + b"\0" * 512)]:
        (tmp_path / name).write_bytes(blob)
        docs, skips = _read(tmp_path / name)
        assert _ids(docs) == [0, 1, 2] and not skips, name


def test_a_page_quoting_a_warc_record_is_not_read_as_one(tmp_path, monkeypatch):
    """After a record whose Content-Length is wrong (or too large to read), the reader went
    on at a WARC/ line inside the page: a record the page quotes became a document."""
    quoted = _record(99, b"<html><body><p>A quoted page.</p></body></html>")
    page = b"<html><body><p>" + PROSE + b"</p><pre>\r\n" + quoted + b"</pre></body></html>"
    path = tmp_path / "f.warc"
    path.write_bytes(_record(0) + _record(1, page, length_off=40) + _record(2))
    docs, skips = _read(path)
    assert _ids(docs) == [0, 2] and [s.reason for s in skips] == ["bad_content_length"]
    monkeypatch.setattr(warcframe, "MAX_RECORD", 800)   # passed over, not held in memory
    path.write_bytes(_record(0) + _record(1, page) + _record(2))
    docs, skips = _read(path)
    assert _ids(docs) == [0, 2] and [s.reason for s in skips] == ["too_large"]


def test_a_header_cut_short_by_the_next_record_and_a_status_of_many_digits(tmp_path):
    path = tmp_path / "f.warc"
    cut = _record(1)[:60]   # inside its header
    path.write_bytes(_record(0) + cut + b"\r\n" + _record(2)
                     + _record(3, http=b"HTTP/1.1 " + b"2" * 5000 + b" OK"))
    docs, skips = _read(path)   # the status raised ValueError (int's digit limit)
    assert _ids(docs) == [0, 2]
    assert [(s.reason, s.detail.split(": ", 1)[1]) for s in skips] == [
        ("unreadable", "its header is cut short where the next record starts"),
        ("http_not_ok", "not an HTTP response")]


@pytest.mark.parametrize("pad", [b"", b" "])   # an even or odd number of bytes
def test_a_meta_charset_of_utf16_means_utf8(tmp_path, pad):
    """HTML5: a <meta> that says UTF-16 in a page without a byte order mark is UTF-8 (the
    page was decoded as UTF-16 into CJK-looking garbage and kept)."""
    page = (b'<html><head><meta charset="utf-16"></head><body><p>' + PROSE + pad
            + b"</p></body></html>")
    path = tmp_path / "f.warc"
    path.write_bytes(_record(1, page, http=b"HTTP/1.1 200 OK\r\nContent-Type: text/html"))
    docs, _ = _read(path)
    assert docs[0].text.startswith("Plain English text")


def test_a_file_that_cannot_be_read_is_a_skip_naming_it(tmp_path):
    """An OSError opening or reading a file (here: a folder where a file was listed) is a
    skip of that file; the files after it are read."""
    good = tmp_path / "good.warc"
    good.write_bytes(_record(1))
    folder = tmp_path / "gone.warc"
    folder.mkdir()
    items = list(WarcSource(paths=[str(good)]).read(files=[str(folder), str(good)]))
    assert [(type(i).__name__, getattr(i, "reason", "")) for i in items] == [
        ("Skip", "unreadable"), ("Document", "")]
    assert str(folder) in items[0].detail
