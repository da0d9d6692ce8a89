"""WARC sources (Common Crawl's format): HTML responses of ``.warc`` / ``.warc.gz`` files,
their HTTP codings removed, extracted to text with resiliparse. Registers the ``warc``
source type (``data/config.py`` imports this module)."""

from __future__ import annotations

import codecs
import gzip
import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..config import PATH, ConfigError
from .document import Document, Skip
from .sources import LocalSource, SourceConfig, SourceType
from .warcframe import BLANK_LINE, Bad, Record, fields, records


@dataclass
class WarcSource(SourceConfig):
    """WARC files (Common Crawl's format; .warc or .warc.gz), HTML responses extracted to
    text with resiliparse (``main_content``: boilerplate such as menus and footers removed).
    resiliparse over trafilatura: datatrove's users report trafilatura as 95% of their
    runtime; resiliparse is written in C++. Non-HTML and non-200 responses are counted
    skips; request, metadata and warcinfo records hold no page and are not counted."""

    type: SourceType = "warc"
    paths: list[str] = field(default_factory=list, metadata=PATH)
    main_content: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.paths:
            raise ConfigError("paths: a warc source needs at least one file or glob")

    def label(self) -> str:
        return self.domain or "web"

    def files(self) -> list[Path]:
        return LocalSource(paths=self.paths).files()

    def unavailable(self) -> str | None:
        return LocalSource(paths=self.paths).unavailable()

    groups_files = True

    def task_files(self) -> list[Path]:
        return self.files()

    def fingerprint(self) -> Any:
        return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files()]

    def read(self, files: list[str] | None = None) -> Iterator[Document | Skip]:
        try:
            from resiliparse.extract.html2text import extract_plain_text
        except ImportError:
            raise ConfigError("warc sources need resiliparse: pip install 'pretrain[warc]'"
                              ) from None
        for p in map(Path, files) if files else self.files():
            yield from self._read_file(p, extract_plain_text)

    def _read_file(self, p: Path, extract: Any) -> Iterator[Document | Skip]:
        n = bad = 0   # records that hold a page (their number names records without an id)
        try:
            with open(p, "rb") as f:
                for item in records(f):
                    if isinstance(item, Bad):
                        bad += 1
                        at = f" record {item.k}" if item.k else ""
                        yield Skip(f"{p}:{item.k}" if item.k else str(p), item.reason,
                                   f"{p}{at}: {item.detail}")
                    elif (page := _page(item)) is not None:   # else no page: request, ...
                        n += 1
                        yield self._document(p, item, n, page, extract)
        except OSError as e:   # the file itself (permissions, an I/O error)
            bad += 1
            yield Skip(str(p), "unreadable", f"{p}: {e}")
        if not n and not bad:
            yield Skip(str(p), "empty_file", f"{p}: no WARC record with a page")

    def _document(self, p: Path, rec: Record, n: int, page: _Page | _NotRead,
                  extract: Any) -> Document | Skip:
        """The document of the ``n``-th record of ``p`` that holds a page, or its skip."""
        url = rec.headers.get("warc-target-uri", "").strip("<>")
        rid = (rec.headers.get("warc-record-id") or f"{p.name}:{n}").strip("<>")
        where = f"{p} record {rec.k} ({url})"
        if isinstance(page, _NotRead):
            return Skip(rid, page.reason, f"{where}{page.detail}")
        try:
            text = _decode(page.body, page.charset)
            if page.html:
                text = extract(text, main_content=self.main_content)
        except Exception as e:  # noqa: BLE001 -- this record only
            return Skip(rid, "unreadable_record", f"{where}: {type(e).__name__}: {e}")
        meta = {"url": url, "date": rec.headers.get("warc-date", ""), "path": str(p)}
        if cut := rec.headers.get("warc-truncated"):   # the crawler cut the page short
            meta["warc_truncated"] = cut
        return Document(rid, str(text), self.label(), meta)


class _Page(NamedTuple):
    body: bytes
    charset: str | None      # as declared
    html: bool


class _NotRead(NamedTuple):
    reason: str
    detail: str


def _page(rec: Record) -> _Page | _NotRead | None:
    """What a record holds of a page, a response that is not a page we read (a skip's
    reason and detail), or None for a
    record that holds no page (request, metadata, warcinfo, revisit). A ``response`` is an
    HTTP response; a ``resource`` is read if it is HTML (a page stored without HTTP), a
    ``conversion`` if it is plain text (extracted by the crawler: Common Crawl's WET files)."""
    kind = rec.headers.get("warc-type", "").strip().lower()
    ctype = rec.headers.get("content-type", "")
    if kind == "resource" and "html" in ctype.lower():   # not text/plain: wget's logs are that
        return _Page(rec.block, _charset(ctype), True)
    if kind == "conversion" and "text/plain" in ctype.lower():
        return _Page(rec.block, _charset(ctype) or "utf-8", False)
    if kind in ("resource", "conversion"):
        return None
    if kind != "response":
        return None
    status, http, payload = _http(rec.block)
    if status != 200 or http is None:
        return _NotRead("http_not_ok", ": not an HTTP response" if status is None
                        else f": HTTP {status}")
    http_type = http.get("content-type")
    if http_type is None or "html" not in http_type.lower():
        return _NotRead("not_html", ": no Content-Type in its HTTP header" if http_type is None
                        else f": {http_type}")
    try:
        return _Page(_http_payload(payload, http), _charset(http_type), True)
    except Exception as e:  # noqa: BLE001 -- this record only
        return _NotRead("undecodable_payload", f": {type(e).__name__}: {e}")


_CHARSET = re.compile(r";\s*charset\s*=\s*[\"']?([^\"';\s]+)", re.IGNORECASE)


def _charset(content_type: str) -> str | None:
    m = _CHARSET.search(content_type)
    return m.group(1).lower() if m else None


def _http(block: bytes) -> tuple[int | None, dict[str, str] | None, bytes]:
    """(status, headers, payload) of an HTTP response (CRLF or bare LF lines); a status of
    None where the block is not one."""
    blank = BLANK_LINE.search(block)
    if not blank:
        return None, None, b""
    head = block[:blank.start()].split(b"\n", 1)
    parts = head[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit() \
            or len(parts[1]) != 3:
        return None, None, b""
    return int(parts[1]), fields(head[1] if len(head) > 1 else b"", "latin-1"), \
        block[blank.end():]


# HTML5 decodes these labels with wider tables than Python's codecs of the same name
# (WHATWG encoding standard: its Shift_JIS, EUC-KR, GBK and windows-874 decoders)
_WIDER = {"shift_jis": "cp932", "euc_kr": "cp949", "gbk": "gb18030", "iso8859-11": "cp874"}
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def _decode(body: bytes, declared: str | None) -> str:
    """A page as a browser decodes it (HTML5): a byte order mark first, then the charset
    its headers declare, then a ``<meta>`` charset, then detection; names mapped as the
    WHATWG standard maps them (ISO-8859-1 is windows-1252, gb2312 is GBK), a declared
    name Python does not know (``x-bogus``) taken as not declared. Bytes that do not
    decode fall back to UTF-8 then windows-1252 (mislabelled pages), else are replaced."""
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding, map_encoding_to_html5

    name: str | None = next((enc for bom, enc in _BOMS if body.startswith(bom)), None)
    if name is None and declared:
        try:
            codecs.lookup(declared)
            name = map_encoding_to_html5(declared)
        except LookupError:
            pass
    if name is None:
        name = str(detect_encoding(body, from_html_meta=True))
        if name.startswith("utf-16"):   # HTML5: a <meta> UTF-16 without a BOM means UTF-8
            name = "utf-8"
    name = _WIDER.get(name, name)
    fallback = ["cp1252"] if name == "utf-8" else ["utf-8", "cp1252"]
    return str(bytes_to_str(body, name, errors="replace", fallback_encodings=fallback))


def _http_payload(body: bytes, headers: Any) -> bytes:
    """An HTTP response body without the codings its headers name, as a browser reads it:
    ``Transfer-Encoding: chunked`` and ``Content-Encoding`` gzip, deflate or br (outermost
    last in the header; another name, a server's mistake, leaves the body as it is). We decode after reading the raw
    record rather than with FastWARC's ``auto_decode``: that gives the truncation check the
    record's raw length, and a body that does not decode (a crawler that stored it decoded
    but kept the header) is a skip of its own instead of a stream error that ends the file.
    Common Crawl's WARCs come decoded, the original headers renamed ``X-Crawler-...``."""
    from fastwarc.stream_io import BrotliReader

    def codings(name: str) -> list[str]:
        return [c.strip() for c in (headers.get(name) or "").lower().split(",") if c.strip()]

    if "chunked" in codings("transfer-encoding"):
        body = _unchunk(body)
    for coding in reversed(codings("content-encoding")):
        if coding in ("gzip", "x-gzip"):
            body = gzip.decompress(body)
        elif coding == "deflate":   # zlib-wrapped as the RFC says, or raw as some servers send
            try:
                body = zlib.decompress(body)
            except zlib.error:
                body = zlib.decompress(body, -15)
        elif coding == "br":
            body = BrotliReader(io.BytesIO(body)).read()
        elif coding == "zstd":
            try:
                import zstandard
            except ImportError:
                raise ValueError("Content-Encoding zstd needs pip install zstandard") from None
            body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
        elif coding in ("compress", "x-compress"):   # LZW, which no browser reads any more
            raise ValueError(f"Content-Encoding {coding} is not read")
        # anything else ("identity", and servers' mistakes such as "UTF-8", "none",
        # "binary"): the body as it is, as browsers read it
    return body


_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")


def _unchunk(body: bytes) -> bytes:
    """The data of a ``Transfer-Encoding: chunked`` body (RFC 9112 7.1: hex size line, data,
    CRLF, ..., size 0, trailers). Written here because resiliparse's ``read_http_chunk``
    returns nothing for a line that is not a chunk size, which would turn a mislabelled
    page into an empty one; this one raises, naming the byte. A body that ends after a
    whole chunk (with or without its line end, or a last ``0`` without one) is taken as
    complete, as browsers do."""
    out, pos = [], 0
    while pos < len(body):
        eol = body.find(b"\n", pos)
        eol = len(body) if eol < 0 else eol
        line = body[pos:eol].split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(line):
            raise ValueError(f"chunked body: {line[:24]!r} at byte {pos} is not a chunk size")
        size, pos = int(line, 16), eol + 1
        if size == 0:
            break   # the trailer fields, if any, are not the page
        if pos + size > len(body):
            raise ValueError(f"chunked body ends inside a chunk of {size} bytes at byte {pos}")
        out.append(body[pos:pos + size])
        pos += size
        for end in (b"\r\n", b"\n", b""):   # b"": the body ends with the chunk's data
            if body.startswith(end, pos) and (end or pos == len(body)):
                pos += len(end)
                break
        else:
            raise ValueError(f"chunked body: no line end after the chunk at byte {pos}")
    return b"".join(out)


SourceConfig.variants["warc"] = WarcSource
