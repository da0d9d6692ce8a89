"""Reading a local file's bytes: its lines through gzip (checked first) or zstd by
extension, long lines read past or cut into pieces, and a text stream split at a separator
one piece at a time, each in bounded memory (``sources.py`` and ``hf_source.py`` build
their readers on them); a file in UTF-16 or UTF-32 told by its byte-order mark."""

from __future__ import annotations

import codecs
import gzip
import zlib
from collections.abc import Iterable, Iterator
from io import BufferedIOBase
from pathlib import Path

from ..config import ConfigError


def read_errors() -> tuple[type[BaseException], ...]:
    """What a truncated or corrupt (compressed) file raises while being read."""
    errors: list[type[BaseException]] = [EOFError, OSError, zlib.error]
    try:
        import zstandard
        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


BOM = b"\xef\xbb\xbf"   # UTF-8's byte-order mark, which some writers put first


class DamagedGzip(OSError):
    """A gzip file whose data fails its check (a member's CRC or length, or a deflate
    stream that does not decode): the bytes decoded before the failure cannot be trusted
    either (a flipped bit decodes to other text without an error until the member's end),
    so none of the file is read. ``lines``: how many it had up to the failure."""

    def __init__(self, p: Path, cause: BaseException, lines: int):
        super().__init__(f"{p}: {type(cause).__name__}: {cause}; none of its {lines:,} lines "
                         "are read, since the text before a failed check is not sound either")
        self.lines = lines


def check_gzip(p: Path) -> None:
    """Read a .gz file through once, for the checks gzip makes at each member's end only
    (after its lines were given): raise ``DamagedGzip`` when one fails. A file cut short
    passes: what was written before the cut is sound, and the reading says where it ends."""
    lines, last = 0, b"\n"
    try:
        with gzip.open(p, "rb") as f:
            # read1: one decompression a call, so a member's last text is counted before
            # the next call checks it (read() loses what it gathered when the check fails)
            while block := f.read1(1 << 20):
                lines, last = lines + block.count(b"\n"), block[-1:]
    except zlib.error as e:
        raise DamagedGzip(p, e, lines + (last != b"\n")) from None
    except gzip.BadGzipFile as e:   # not "Not a gzipped file": junk after a sound member
        if "CRC check failed" in str(e) or "Incorrect length" in str(e):
            raise DamagedGzip(p, e, lines + (last != b"\n")) from None
    except read_errors():
        pass


def _opened(p: Path) -> BufferedIOBase:
    """``p``'s bytes, through gzip by its extension (a .zst file is read by ``_zstd_lines``)."""
    return gzip.open(p, "rb") if p.name.lower().endswith(".gz") else open(p, "rb")


# the byte-order marks of text in UTF-32 and UTF-16 (UTF-32 LE's begins as UTF-16 LE's)
_WIDE = ((b"\xff\xfe\x00\x00", "UTF-32 LE", "utf-32"), (b"\x00\x00\xfe\xff", "UTF-32 BE", "utf-32"),
         (b"\xff\xfe", "UTF-16 LE", "utf-16"), (b"\xfe\xff", "UTF-16 BE", "utf-16"))


def _blocks(p: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """``p``'s bytes in blocks of about ``size``, through gzip or zstd by its extension."""
    if p.name.lower().endswith(".zst"):
        yield from (b for b in _zstd_lines(p, split=size) if isinstance(b, bytes))
        return
    with _opened(p) as f:
        yield from iter(lambda: f.read(size), b"")


def wide_text(p: Path) -> tuple[str, str] | None:
    """(its name, the codec) when a text file (through gzip or zstd) opens with a UTF-16
    or UTF-32 byte-order mark: read as UTF-8, its every line would be a skip of its own."""
    try:
        head = next(_blocks(p, 64), b"")
    except read_errors():
        return None   # the reader says what is wrong
    return next(((name, codec) for bom, name, codec in _WIDE if head.startswith(bom)), None)


# what a compressed file begins with, and the suffix that has it read through that codec
_MAGIC = ((b"\x1f\x8b", "gzip", ".gz"), (b"\x28\xb5\x2f\xfd", "zstd", ".zst"),
          (b"BZh", "bzip2", ""), (b"\xfd7zXZ\x00", "xz", ""))
_BZIP2_BLOCK = b"1AY&SY"   # after "BZh" and the block size digit


def compression(p: Path) -> str | None:
    """The codec (gzip, zstd, bzip2, xz) whose magic number ``p`` starts with, whatever
    its name; None for other bytes, or a file that cannot be read (its reader says why)."""
    try:
        with open(p, "rb") as f:
            head = f.read(10)
    except OSError:
        return None
    return next((codec for magic, codec, _ in _MAGIC if head.startswith(magic)
                 and (codec != "bzip2" or head[4:10] == _BZIP2_BLOCK)), None)


def compressed_unread(p: Path) -> str | None:
    """Why ``p`` cannot be read as text although its name lets it be: its bytes are
    compressed with a codec its name does not say (``format = "jsonl"`` on a .bz2 file
    read the compressed bytes as thousands of bad lines); None when they are not."""
    if p.name.lower().endswith((".gz", ".zst")):
        return None
    codec = compression(p)
    if codec is None:
        return None
    suffix = next(x for _, c, x in _MAGIC if c == codec)
    if suffix:
        return (f"{p}: {codec}-compressed, though its name does not end in {suffix}: "
                f"rename it to end in {suffix} to have it read through {codec}")
    return (f"{p}: {codec}-compressed, which is not read here: decompress it, or "
            "re-compress it as .gz or .zst")


def wide_records(p: Path, codec: str, sep: str | None) -> int:
    """The records of a wide-text file: its non-blank lines, or with ``sep`` its non-blank
    pieces between separators (those before a cut, in a file cut short; at least 1);
    read in bounded memory, never kept."""
    n = 0
    decoder = codecs.getincrementaldecoder(codec)("replace")

    def text() -> Iterator[str]:
        for block in _blocks(p):
            yield decoder.decode(block)
        yield decoder.decode(b"", final=True)
    try:
        # lines end at LF only (not at U+2028, which a JSON string may hold); before a
        # separator written with LF, CRLF and CR are LF as the UTF-8 reader has them
        lf = sep is None or "\r" not in sep
        blocks = (b.replace("\r\n", "\n").replace("\r", "\n") if lf else b for b in text())
        for piece in split_stream(blocks, "\n" if sep is None else sep, 1 << 20):
            n += isinstance(piece, int) or bool(piece.strip())
    except read_errors():
        pass
    return max(1, n)


def file_lines(p: Path, cap: int = 0, split: int = 0) -> Iterator[bytes | int]:
    """The file's lines as bytes (decoded per line by the caller, so that one bad line
    costs one record), through gzip or zstd by extension. With ``cap``, a line longer than
    that (its line break not counted) is read past in 1 MB pieces and given as its length
    (a one-line JSON array of gigabytes is never held whole). With ``split``, a longer
    line comes in pieces of about that many bytes (for a caller that joins them again)."""
    name = p.name.lower()
    if name.endswith(".zst"):
        yield from _zstd_lines(p, cap, split=split)
        return
    if name.endswith(".gz"):
        check_gzip(p)
    with _opened(p) as f:
        if split:
            while line := f.readline(split):
                yield line
            return
        if not cap:
            yield from f
            return
        while line := f.readline(cap + 2):   # a line of ``cap`` bytes, and its CRLF
            if len(line) <= cap or line.endswith(b"\n"):
                yield line
                continue
            n, last = len(line), line
            while more := f.readline(1 << 20):
                n, last = n + len(more), more
                if more.endswith(b"\n"):
                    break
            yield n - (len(last) - len(last.rstrip(b"\r\n")))   # its line break not counted


def _zstd_lines(p: Path, cap: int = 0, chunk: int = 1 << 16,
                split: int = 0) -> Iterator[bytes | int]:
    """``file_lines`` of a .zst file: decompressed 64 KB of input at a time (what one piece
    holds is that times the compression ratio: ~0.3 MB for text, more for runs of one
    byte), one frame after another; a file cut inside a frame raises EOFError."""
    try:
        import zstandard
    except ImportError:
        raise ConfigError(f"{p}: .zst files need zstandard: pip install zstandard") from None
    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    # the line being read, in pieces (joined once it ends: a long line is not copied again
    # at every piece), and its length; past ``cap`` its pieces are dropped, only counted
    pieces: list[bytes] = []
    size = held = 0
    with open(p, "rb") as f:
        while block := f.read(chunk):
            size += len(block)
            if dobj.eof:   # the last block ended exactly where a frame does
                dobj = dctx.decompressobj()
            data = dobj.decompress(block)
            while dobj.eof and dobj.unused_data:  # concatenated frames
                rest = dobj.unused_data
                dobj = dctx.decompressobj()
                data += dobj.decompress(rest)
            *full, tail = data.split(b"\n")
            for line in full:
                if held > cap > 0:
                    yield held + len(line)   # its line break not counted
                else:
                    yield b"".join([*pieces, line, b"\n"])
                pieces, held = [], 0
            held += len(tail)
            if not (held > cap > 0):
                pieces.append(tail)
            else:
                pieces.clear()
            if split and held >= split:   # a long line's piece, for the caller to join
                yield b"".join(pieces)
                pieces, held = [], 0
    if not dobj.eof and size:   # a 0-byte file is an empty file, not a cut frame
        raise EOFError("zstd stream ends before its frame is complete (truncated file)")
    if held > cap > 0:
        yield held
    elif held:
        yield b"".join(pieces)


def split_stream(blocks: Iterable[str], sep: str, cap: int = 0) -> Iterator[str | int]:
    """``"".join(blocks).split(sep)``, one piece at a time, never holding more than the
    current piece and a block (a separator may straddle two blocks). With ``cap``, a piece
    of more characters than that is not held: it is given as its length."""
    parts: list[str] = []
    carry, keep, held, over = "", len(sep) - 1, 0, 0   # over: a piece past cap, its length

    def piece() -> str | int:
        n = over + held
        return n if cap and n > cap else "".join(parts)

    for block in blocks:
        s, start = carry + block, 0
        while (i := s.find(sep, start)) >= 0:
            parts.append(s[start:i])
            held += i - start
            yield piece()
            parts, start, held, over = [], i + len(sep), 0, 0
        rest = s[start:]
        cut = max(0, len(rest) - keep)   # the end that may begin a separator waits
        parts.append(rest[:cut])
        held += cut
        carry = rest[cut:]
        if cap and held > cap:   # too long to be a document: counted on, not kept
            over, parts, held = over + held, [], 0
    parts.append(carry)
    held += len(carry)
    yield piece()
