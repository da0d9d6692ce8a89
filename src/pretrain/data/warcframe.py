"""WARC records framed from a file's bytes: each gzip member decompressed on its own, each
record checked to end where its Content-Length says; what cannot be read is a ``Bad``
naming the record. ``data/warc.py`` reads pages from the records."""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

# Written here rather than read with fastwarc: fastwarc reads a .warc.gz as one stream, so a
# wrong Content-Length put the next record's header into a page and lost the rest of the file
# as one skip, a damaged or cut gzip member lost the whole records decompressed before it,
# and bytes between records ended the file. Here each gzip member is decompressed on its
# own (a damaged one costs its record, the file goes on at the next member), and a record
# must end where its Content-Length says: CRLF CRLF, or (as other writers end them) LF LF
# or nothing before the next ``WARC/`` line. One that does not is a skip, and the reader
# goes on at the next gzip member if the record was one, else at the next record start
# after a blank line that itself ends where its length says (not a record a page quotes).
# Measured with bench/warc_read.py: the framing is 5-12% of a read with extraction (the
# .warc.gz: 118 ms against fastwarc's 45 ms for 960 records, mostly zlib's; with
# extraction 1,000 ms; load 2.6); linear in the records (27-50 us a tiny record, 1k-100k).

_BLOCK = 1 << 20
_FEED = 1 << 14           # compressed bytes fed to zlib at a time
_MAX_HEADER = 1 << 20
MAX_RECORD = 256 << 20   # a record above it is passed over, not held in memory
_SCAN = 64 << 20         # how far past a bad record its successor is looked for in memory
_GZIP = b"\x1f\x8b\x08"


@dataclass
class Record:
    k: int                   # its number among the file's records, from 1
    headers: dict[str, str]   # by lower-cased name
    block: bytes


@dataclass
class Bad:
    k: int
    reason: str              # "truncated_record", "unreadable", "bad_content_length", ...
    detail: str


@dataclass
class _Break:
    """The bytes stop making sense here: a damaged gzip member (the stream goes on at the
    next member) or the file's end inside one."""
    reason: str
    detail: str


def _chunks(f: BinaryIO) -> Iterator[bytes | _Break | None]:
    """The file's WARC bytes, decompressed member by member when gzipped; None where each
    gzip member starts (a record that starts there may be its own member: Common Crawl's)."""
    gz = f.read(2) == _GZIP[:2]
    f.seek(0)
    if not gz:
        while block := f.read(_BLOCK):
            yield block
        return
    at, raw = 0, b""   # the file offset of the member being read; read bytes not yet fed
    while True:
        if not raw:
            raw = f.read(_FEED)
        if not raw or not raw.strip(b"\0"):   # the end, or zeros some writers pad it with
            if raw and f.read().strip(b"\0"):
                raw = b"."   # more than padding: said as a damaged member below
            else:
                return
        d = zlib.decompressobj(31)
        yield None
        try:
            while not d.eof:
                if not raw:   # small reads: a damaged member loses what one read made
                    raw = f.read(_FEED)
                    if not raw:   # the file ends inside the member
                        yield _Break("truncated_record", "the file is cut short inside "
                                     f"the gzip member at byte {at}")
                        return
                fed, raw = raw, b""
                out = d.decompress(fed)
                if out:
                    yield out
        except zlib.error as e:
            yield _Break("unreadable", f"the gzip member at byte {at} is damaged ({e})")
            nxt = _next_member(f, at + 1)
            if nxt is None:
                return
            f.seek(nxt)
            at, raw = nxt, b""
            continue
        raw = d.unused_data
        at = f.tell() - len(raw)


def _next_member(f: BinaryIO, start: int) -> int | None:
    """The offset of the next gzip member from ``start`` that decompresses."""
    pos = start
    while True:
        f.seek(pos)
        window = f.read(_BLOCK + len(_GZIP))
        if len(window) < len(_GZIP):
            return None
        i = window.find(_GZIP)
        while i >= 0:
            f.seek(pos + i)
            try:
                zlib.decompressobj(31).decompress(f.read(1 << 16))
                return pos + i
            except zlib.error:
                i = window.find(_GZIP, i + 1)
        pos += _BLOCK


class _Bytes:
    """The decompressed bytes, read on demand: ``buf[at:]`` is what is not used yet. A
    ``_Break`` in the stream stops the reads (``broken``) until ``resume``; ``members``
    holds the offsets in ``buf`` where gzip members start."""

    def __init__(self, chunks: Iterator[bytes | _Break | None]):
        self.chunks, self.buf, self.at = chunks, bytearray(), 0
        self.members: list[int] = []
        self.broken: _Break | None = None
        self.eof = False

    def more(self) -> bool:
        if self.broken is not None or self.eof:
            return False
        while (nxt := next(self.chunks, b"")) is None:   # a member starts
            self.members.append(len(self.buf))
        if isinstance(nxt, _Break):
            self.broken = nxt
            return False
        if not nxt:
            self.eof = True
            return False
        self.buf += nxt
        return True

    def compact(self) -> None:
        """Drop the bytes used (between records: offsets into ``buf`` are kept within one)."""
        if self.at > _BLOCK:
            del self.buf[:self.at]
            self.members = [m - self.at for m in self.members if m >= self.at]
            self.at = 0

    def resume(self) -> None:
        """After a break: what was read of the lost member is dropped."""
        self.buf, self.at, self.members, self.broken = bytearray(), 0, [], None

    def left(self) -> int:
        return len(self.buf) - self.at

    def need(self, n: int) -> bool:
        while self.left() < n:
            if not self.more():
                return False
        return True

    def discard(self, n: int) -> bool:
        """Pass over ``n`` bytes without holding them (a record too large to read)."""
        while self.left() < n:
            n -= self.left()
            self.at = len(self.buf)
            self.compact()
            if not self.more():
                return False
        self.at += n
        return True

    def member_after(self, pos: int) -> int:
        """Where the first gzip member after ``pos`` starts (within ``_SCAN``), or -1."""
        while True:
            nxt = next((m for m in self.members if m > pos), -1)
            if nxt >= 0 or len(self.buf) - pos > _SCAN or not self.more():
                return nxt

    def ends(self, end: int, final: bool) -> bool:
        """Whether a record's block ending at ``end`` is followed by what ends a record:
        blank lines (CRLF CRLF, as the standard says, or LF LF, or none) before the next
        ``WARC/`` line, a gzip member's start or the end of the bytes (``final``: no more
        will be read)."""
        tail = bytes(self.buf[end:end + _TRAILER])
        if tail.startswith(b"\r\n\r\n"):   # the standard's end, whatever follows it
            return True
        rest = tail.lstrip(_SPACE)
        if not rest:
            return final or len(tail) == _TRAILER or end + len(tail) in self.members
        return rest.startswith(b"WARC/"[:len(rest)]) if len(rest) < 5 and final else \
            rest.startswith(b"WARC/")

    def header_end(self) -> int:
        """The offset past the blank line that ends the header at ``at`` (CRLF or LF
        lines); -1 where the bytes end first, -2 past ``_MAX_HEADER``."""
        while True:
            m = BLANK_LINE.search(self.buf, self.at, self.at + _MAX_HEADER)
            if m:
                return m.end()
            if self.left() > _MAX_HEADER:
                return -2
            if not self.more():
                return -1

    def to_next_record(self) -> tuple[int, bytes]:
        """Pass over bytes up to the next line that starts with ``WARC/`` (or the end of
        what can be read): (the number of bytes other than whitespace passed over, the
        last of them where the bytes end: a cut inside ``WARC/`` itself)."""
        passed = 0
        while True:
            m = _RECORD_START.match(self.buf, self.at)
            if m:
                self.at = m.end() - 5
                return passed, b""
            if self.left() < 64 and self.more():   # "WARC/" may be coming
                continue
            found = [i for sep in (b"\nWARC/", b"\0WARC/") if (i := self.buf.find(sep, self.at)) >= 0]
            # without one, all but the last bytes (the start of a "\nWARC/" to come)
            stop = min(found) + 1 if found else max(self.at, len(self.buf) - 5)
            passed += len(bytes(self.buf[self.at:stop]).strip(_SPACE))
            self.at = stop
            if found:
                continue
            self.compact()
            if not self.more():
                tail = bytes(self.buf[self.at:]).strip(_SPACE)
                self.at = len(self.buf)
                if tail and b"WARC/".startswith(tail):
                    return passed, tail
                return passed + len(tail), b""

    def plausible(self, pos: int) -> bool:
        """Whether a record starts at ``pos`` and ends where its Content-Length says (in
        the bytes read so far): where to go on after a record whose end was not found."""
        m = BLANK_LINE.search(self.buf, pos, pos + _MAX_HEADER)
        if not m or not self.buf.startswith(b"WARC/", pos):
            return False
        length = fields(bytes(self.buf[pos:m.start()]), "utf-8").get("content-length", "")
        if not length.strip().isdigit() or int(length) > MAX_RECORD:
            return False
        end = m.end() + int(length)
        while len(self.buf) < end + _TRAILER and self.more():
            pass
        return end <= len(self.buf) and self.ends(end, final=len(self.buf) < end + _TRAILER)

    def next_plausible(self, start: int) -> int:
        """The first record start after ``start`` that ``plausible`` takes (read on as far
        as it takes), or -1."""
        i = start
        while True:
            while (i := self.buf.find(b"WARC/", i + 1)) >= 0:
                # after a blank line, as records are (less likely a page quoting one)
                if (self.buf[i - 2:i] in (b"\n\n", b"\0\0")
                        or self.buf[i - 4:i] == b"\r\n\r\n") and self.plausible(i):
                    return i
            i = max(start, len(self.buf) - 6)
            if len(self.buf) - start > _SCAN or not self.more():
                return -1


_SPACE = b" \t\r\n"
_TRAILER = 64   # what is read past a record's block to see how it ends
BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_RECORD_START = re.compile(rb"[ \t\r\n]*WARC/")


def records(f: BinaryIO) -> Iterator[Record | Bad]:
    """The file's WARC records, each checked to end where its Content-Length says. What
    cannot be read is a ``Bad`` naming the record; the reader goes on at the next record
    it finds: the next gzip member where the bad record was one, else the next record
    start that itself ends where its Content-Length says (not a ``WARC/`` line a page
    quotes)."""
    s, k, quiet = _Bytes(_chunks(f)), 0, False
    while True:
        s.compact()
        junk, cut = s.to_next_record()
        if junk and not quiet:   # k 0: not a record's skip
            yield Bad(0, "unreadable", f"{junk} bytes that are no WARC record "
                       + (f"after record {k}" if k else "at its start"))
        quiet = False
        if cut:
            yield Bad(k + 1, "truncated_record", "the file is cut short at its first bytes")
            return
        if s.broken is not None:   # a member lost, and the record in it
            k += 1
            yield Bad(k, s.broken.reason, s.broken.detail)
            s.resume()
            continue
        if not s.left():
            return
        k += 1
        start, end = s.at, s.header_end()
        if end == -1 and s.broken is not None:
            k -= 1   # said for this record at the top of the loop
            continue
        if end == -1:   # no blank line before the end: one cut record, whatever follows
            yield Bad(k, "truncated_record", "the file is cut short inside its header")
            return
        if end == -2:
            yield Bad(k, "unreadable", f"a header of over {_MAX_HEADER >> 10} KiB")
            s.at, quiet = start + _MAX_HEADER, True
            continue
        head = bytes(s.buf[start:end])
        if (inner := head.find(b"\nWARC/")) >= 0:   # another record starts inside its header
            yield Bad(k, "unreadable", "its header is cut short where the next record starts")
            s.at = start + inner + 1
            continue
        headers = fields(head.partition(b"\n")[2], "utf-8")
        length = headers.get("content-length", "").strip()
        if not length.isdigit():
            yield Bad(k, "unreadable", "no valid Content-Length in its header")
            s.at, quiet = end, True
            continue
        block_end = end + int(length)
        if int(length) > MAX_RECORD:
            yield Bad(k, "too_large", f"{length} bytes (over {MAX_RECORD >> 20} MiB)")
            s.at = end
            if not s.discard(int(length)):
                return
            quiet = True
            continue
        whole = s.need(block_end - start + _TRAILER)
        final = not whole and s.broken is None
        if block_end <= len(s.buf) and s.ends(block_end, final):
            yield Record(k, headers, bytes(s.buf[end:block_end]))
            s.at = block_end
            continue
        if not whole and s.broken is not None:
            k -= 1   # said for this record at the top of the loop
            continue
        # its end is not where its Content-Length says: go on at the next gzip member if
        # the record began one, else at the next record start that ends where it should
        nxt = s.member_after(end) if start in s.members else s.next_plausible(end)
        if nxt < 0 and final:
            yield Bad(k, "truncated_record",
                       f"{len(s.buf) - end} of its {length} bytes; the file is cut short")
            return
        yield Bad(k, "bad_content_length",
                   f"it does not end where its Content-Length ({length}) says")
        s.at, quiet = (nxt, False) if nxt >= 0 else (end, True)


def fields(lines: bytes, encoding: str) -> dict[str, str]:
    """Header fields by lower-cased name: the first of a name given twice, folded lines
    joined. Written here because the email package's parser cost two thirds of reading
    a record (its policies and Message objects, none of which a WARC needs)."""
    out: dict[str, str] = {}
    name: str | None = None
    for raw in lines.split(b"\n"):   # str.splitlines would also cut at \x85, \x0c, ...
        line = raw.rstrip(b"\r").decode(encoding, errors="replace")
        if line[:1] in (" ", "\t"):   # a folded line goes on with the field before
            if name is not None:
                out[name] += " " + line.strip()
            continue
        key, sep, value = line.partition(":")
        name = key.strip().lower() if sep else None
        if name is not None:
            if name in out:
                name = None
            else:
                out[name] = value.strip()
    return out
