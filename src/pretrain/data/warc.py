"""WARC sources (Common Crawl's format): HTML responses of ``.warc`` / ``.warc.gz`` files,
their HTTP codings removed, extracted to text with resiliparse. Registers the ``warc``
source type (``data/config.py`` imports this module)."""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from ..config import PATH, ConfigError
from .document import Document, Skip
from .sources import LocalSource, SourceConfig, SourceType


@dataclass
class WarcSource(SourceConfig):
    """WARC files (Common Crawl's format; .warc or .warc.gz), HTML responses extracted to
    text with resiliparse (``main_content``: boilerplate such as menus and footers removed).
    resiliparse over trafilatura: datatrove's users report trafilatura as 95% of their
    runtime; resiliparse is written in C++ and its WARC reader (fastwarc) is in the same
    wheel. Non-HTML and non-200 responses are counted skips."""

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

    def task_files(self) -> list[Path]:
        return self.files()

    def fingerprint(self) -> Any:
        return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files()]

    def read(self, files: list[str] | None = None) -> Iterator[Document | Skip]:
        try:
            from fastwarc.warc import ArchiveIterator, WarcRecordType
            from resiliparse.extract.html2text import extract_plain_text
            from resiliparse.parse.encoding import bytes_to_str, detect_encoding
        except ImportError:
            raise ConfigError("warc sources need resiliparse: pip install 'pretrain[warc]'"
                              ) from None
        for p in map(Path, files) if files else self.files():
            n = k = 0   # response records, records of any type
            try:
                with open(p, "rb") as f:
                    for rec in ArchiveIterator(_uncompressed(f)):
                        k += 1
                        if (rec.record_type == WarcRecordType.no_type
                                or rec.headers.get("Content-Length") is None):
                            # what fastwarc makes of a header the file ends inside
                            yield Skip(f"{p}:{k}", "truncated_record",
                                       f"{p} record {k}: a header without WARC-Type or "
                                       "Content-Length; the file is cut short (or damaged)")
                            continue
                        if rec.record_type != WarcRecordType.response:
                            if len(rec.reader.read()) < rec.content_length:
                                yield Skip(f"{p}:{k}", "truncated_record",
                                           f"{p} record {k} ({rec.record_type}): the file "
                                           "is cut short inside it")
                            continue
                        n += 1
                        url = (rec.headers.get("WARC-Target-URI") or "").strip("<>")
                        rid = (rec.record_id or f"{p.name}:{n}").strip("<>")
                        where = f"{p} record {n} ({url})"
                        if rec.http_headers is None or rec.http_headers.status_code != 200:
                            yield Skip(rid, "http_not_ok", where)
                            continue
                        if "html" not in (rec.http_content_type or ""):
                            yield Skip(rid, "not_html", f"{where}: {rec.http_content_type}")
                            continue
                        body = rec.reader.read()
                        if len(body) < rec.content_length:  # the file ends inside it
                            yield Skip(rid, "truncated_record",
                                       f"{where}: {len(body)} of its {rec.content_length} "
                                       "bytes; the file is cut short")
                            continue
                        try:
                            body = _http_payload(body, rec.http_headers)
                        except Exception as e:  # noqa: BLE001 -- this record only
                            yield Skip(rid, "undecodable_payload",
                                       f"{where}: {type(e).__name__}: {e}")
                            continue
                        try:
                            html = self._decode(body, rec.http_charset, bytes_to_str,
                                                detect_encoding)
                            text = extract_plain_text(html, main_content=self.main_content)
                        except Exception as e:  # noqa: BLE001 -- this record only
                            yield Skip(rid, "unreadable_record",
                                       f"{where}: {type(e).__name__}: {e}")
                            continue
                        meta = {"url": url, "date": rec.headers.get("WARC-Date") or "",
                                "path": str(p)}
                        yield Document(rid, text, self.label(), meta)
            except EOFError as e:  # the gzip stream ends inside a member
                yield Skip(f"{p}:{k + 1}", "truncated_record",
                           f"{p} after record {k}: the file is cut short ({e})")
                continue
            except Exception as e:  # fastwarc raises several types on corrupt input
                yield Skip(f"{p}:{k + 1}", "unreadable",
                           f"{p} after record {k}: {type(e).__name__}: {e}")
                continue
            if not n:
                yield Skip(str(p), "empty_file", f"{p}: no WARC response records")

    @staticmethod
    def _decode(body: bytes, charset: str | None, bytes_to_str: Any, detect: Any) -> str:
        """The page as text in its declared charset, or the detected one where the declared
        one is unknown (``x-bogus``), or UTF-8."""
        for name in (charset, detect(body), "utf-8"):
            if name:
                try:
                    return str(bytes_to_str(body, name))
                except LookupError:
                    continue
        return body.decode("utf-8", errors="replace")


def _uncompressed(f: BinaryIO) -> BinaryIO:
    """The WARC bytes of an open file: a gzip file through Python's ``gzip``, which raises
    EOFError where the file ends inside a member; fastwarc's own reader stops there
    silently, so a file cut short between records read as a whole one."""
    gz = f.read(2) == b"\x1f\x8b"
    f.seek(0)
    return cast(BinaryIO, gzip.GzipFile(fileobj=f)) if gz else f


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

    if "chunked" in codings("Transfer-Encoding"):
        body = _unchunk(body)
    for coding in reversed(codings("Content-Encoding")):
        if coding in ("gzip", "x-gzip"):
            body = gzip.decompress(body)
        elif coding == "deflate":   # zlib-wrapped as the RFC says, or raw as some servers send
            try:
                body = zlib.decompress(body)
            except zlib.error:
                body = zlib.decompress(body, -15)
        elif coding == "br":
            body = BrotliReader(io.BytesIO(body)).read()
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
