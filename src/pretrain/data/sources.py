"""Document sources: one streaming reader interface, one small config class per source type.

Every reader yields :class:`Document` (with ``id``, ``text``, ``domain`` and metadata) or
:class:`Skip` (a record that could not be read, with a reason naming file and record).
Skips are counted and written to the audit log by the data stage, never dropped silently.

Source types:
- ``python-installation``: the offline default corpus, built from the running Python
  (``pysource.py``).
- ``local``: jsonl / jsonl.gz / jsonl.zst / txt / parquet files by glob; a text file is
  one document, or several with ``separator``.
- ``huggingface``: a ``datasets`` dataset by name, streamed one data file per task
  (``hf_source.py``; needs the ``[hf]`` extra).
- ``warc``: WARC files, HTML extracted to text by resiliparse (the ``[warc]`` extra).
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import functools
import glob
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from ..config import PATH, ConfigError, PretrainError
from ..log import log0
from ..rundir import drop, file_sha256
from . import filelines
from .document import Document, Skip
from .filelines import BOM, DamagedGzip, file_lines, read_errors, split_stream
from .parquet_parts import Part, batch_rows, first_row, row_group_parts
from .pathglob import glob_root, local_files
from .records import is_json, no_text, nonempty, record_meta

SourceType = Literal["python-installation", "local", "huggingface", "warc"]


@dataclass
class SourceConfig:
    """Fields shared by every source; ``type`` picks the subclass (see ``variant_for``)."""

    type: SourceType = "python-installation"
    domain: str = ""          # label used for mixing and per-domain loss; "" = source default
    max_docs: int = 0         # 0 = no limit
    max_bytes: int = 0        # stop after this many UTF-8 bytes of text; 0 = no limit
    # "val": every document of this source is held out (a dedicated held-out file);
    # "train": none is; "auto": the tokenize stage's hash split decides
    use_for: Literal["auto", "train", "val"] = "auto"
    # "web": the FineWeb chain (URL, language, Gopher, C4, FineWeb filters) runs on this
    # source; "none": only normalisation, length, PII, decontamination and dedup (code,
    # or a dataset that was filtered already, such as FineWeb-Edu)
    quality: Literal["web", "none"] = "web"
    # governance: under what terms the text may be used (an SPDX id such as "ODC-By-1.0"
    # where there is one), where those terms and the data are published, anything else a
    # reviewer should know. Carried into every document's meta (``license``), shards.json,
    # the manifest, the token shards' meta (tokens per licence) and the run report.
    license: str = ""
    terms_url: str = ""
    source_url: str = ""
    notes: str = ""

    variants: ClassVar[dict[str, Any]] = {}  # not `type`: a field of that name shadows it
    # True: one task per file even with max_docs/max_bytes, each file reading its share of
    # the limits (runner.limit_shares); False: a limited source is one task reading its
    # files in order until the limit
    shares_limits: ClassVar[bool] = False

    @classmethod
    def variant_for(cls, values: dict[str, Any], key: str) -> Any:
        kinds = get_args(SourceType)
        if "type" not in values:   # the default type, unless the keys say another was meant
            mine = {f.name for f in dataclasses.fields(cls.variants["python-installation"])}
            alien = [k for k in values if k not in mine]
            typo = next((k for k in alien if difflib.get_close_matches(k, ["type"])), None)
            if typo:
                raise ConfigError(f"{key}.{typo}: unknown key; did you mean 'type'?")
            for k in alien:   # a key of another type: the type was left out (else a typo,
                owners = [t for t in kinds   # which the unknown-key message suggests for)
                          if k in {f.name for f in dataclasses.fields(cls.variants[t])}]
                if owners:
                    raise ConfigError(
                        f"{key}: no type given ('python-installation' assumed), and {k!r} is "
                        f"not one of its keys; it belongs to type "
                        f"{' or '.join(map(repr, owners))}: set type")
        kind = values.get("type", "python-installation")
        if kind not in cls.variants:
            near = difflib.get_close_matches(str(kind).lower(), kinds, n=1)
            raise ConfigError(f"{key}.type: {kind!r} is not allowed; choose one of "
                              + " | ".join(repr(k) for k in kinds)
                              + (f" (did you mean {near[0]!r}?)" if near else ""))
        return cls.variants[kind]

    def __post_init__(self) -> None:
        if self.max_docs < 0 or self.max_bytes < 0:
            raise ConfigError("max_docs and max_bytes must be >= 0 (0 means no limit)")

    def label(self) -> str:
        return self.domain or self.type

    def governance(self) -> dict[str, str]:
        """The licence fields that are set."""
        return {k: v for k, v in (("license", self.license), ("terms_url", self.terms_url),
                                  ("source_url", self.source_url), ("notes", self.notes)) if v}

    def read(self, files: list[str] | None = None) -> Iterator[Document | Skip]:
        """The source's records; ``files`` (from ``task_files``) restricts to those."""
        raise NotImplementedError

    # whether ``read`` takes several of ``task_files`` at once: small local files then
    # share a task (runner.plan_tasks)
    groups_files: ClassVar[bool] = False

    def task_files(self) -> Sequence[str | Path]:
        """Input files (or URLs) that can be processed independently, a task each (small
        ones a task together, where ``groups_files``); [] = one task."""
        return []

    def task_parts(self, file: str, max_bytes: int) -> list[Part]:
        """``file`` (one of ``task_files``) cut into parts of at most about ``max_bytes``,
        each read by a task of its own (``read_part``); [] = the file is one task."""
        return []

    def read_part(self, file: str, part: Part) -> Iterator[Document | Skip]:
        """The records of one part of ``file`` (from ``task_parts``)."""
        raise NotImplementedError

    def fingerprint(self) -> Any:
        """What identifies this source's content without reading it all."""
        raise NotImplementedError

    def unavailable(self) -> str | None:
        """Why this machine cannot read the source yet (None: it can), for ``config
        validate``; it reads and downloads nothing."""
        return None


@dataclass
class LocalSource(SourceConfig):
    type: SourceType = "local"
    paths: list[str] = field(default_factory=list, metadata=PATH)   # globs; "**" recurses
    format: Literal["auto", "jsonl", "txt", "parquet"] = "auto"
    text_field: str = "text"
    id_field: str = "id"
    # a longer jsonl line, or txt document between separators, is a counted skip without
    # being parsed or held (a runaway record, such as a whole dump on one line or a file
    # whose separator never comes, would otherwise cost its size several times in memory)
    max_record_bytes: int = 64 << 20
    # One file a user may not have yet: with ``url`` the single path is downloaded there
    # when it is missing (and checked against ``sha256`` when given). The source is then
    # identified by the URL and checksum, so a download does not change the stage key.
    url: str = ""
    sha256: str = ""
    # text files: the share of each file's characters to read, [start, end) as fractions;
    # [0, 0.9] and [0.9, 1] split one file into train and val the way nanoGPT does
    char_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    # text files: a file is one document, unless this string separates its documents
    # ("<|endoftext|>" in TinyStories' own .txt files, "\n\n" for blank-line-separated
    # ones, CRLF read as LF); each piece loses the line breaks around it, and blank pieces
    # are not documents; with char_range, a range takes the documents that start in it
    separator: str = ""

    KEYED_IF_SET: ClassVar[tuple[str, ...]] = ("separator",)   # added after keys existed

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.paths:
            raise ConfigError("paths: a local source needs at least one file or glob")
        if self.url and (len(self.paths) != 1 or glob.has_magic(self.paths[0])):
            raise ConfigError("url: a downloaded source names exactly one file in paths "
                              f"(not a glob), got {self.paths}")
        if self.max_record_bytes < 1:   # 0 and -1 read a file as empty or every line too long
            raise ConfigError(f"max_record_bytes: the longest record to read, in bytes (>= 1), "
                              f"got {self.max_record_bytes}")
        lo, hi = (list(self.char_range) + [None, None])[:2]
        if len(self.char_range) != 2 or not (lo is not None and hi is not None
                                             and 0.0 <= lo < hi <= 1.0):
            raise ConfigError(f"char_range: [start, end] with 0 <= start < end <= 1, got "
                              f"{self.char_range}")

    def fetch(self) -> Path:
        """The ``url`` source's file, downloaded to its path first if it is missing."""
        path = Path(os.path.expanduser(self.paths[0]))
        if not path.is_file():
            import urllib.request
            log0(f"data: {path} is missing; downloading {self.url}")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.download-{os.getpid()}")
            try:
                with urllib.request.urlopen(self.url, timeout=60) as r, open(tmp, "wb") as f:
                    while block := r.read(1 << 20):
                        f.write(block)
            except (OSError, ValueError) as e:   # URLError is an OSError
                drop(tmp)
                raise ConfigError(f"local source: {path} is missing and could not be "
                                  f"downloaded from {self.url} ({e}); put the file there "
                                  "yourself, or point paths at a copy") from None
            os.replace(tmp, path)
        if self.sha256:
            got = file_sha256(path)
            if got != self.sha256:
                raise ConfigError(f"local source: {path} has sha256 {got}, not the "
                                  f"{self.sha256} this source expects (from {self.url or 'config'})")
        return path

    def unavailable(self) -> str | None:
        if self.url:
            path = Path(os.path.expanduser(self.paths[0]))
            return None if path.is_file() else (
                f"{path} is not here yet; the data stage will download it from {self.url}")
        try:
            self.files()
        except ConfigError as e:
            return str(e)
        return None

    def files(self) -> list[Path]:
        if self.url:
            return [self.fetch()]
        return local_files(self.paths)

    def fingerprint(self) -> Any:
        if self.url:   # what the URL and checksum name, whether downloaded yet or not
            return [self.url, self.sha256, self.char_range]
        return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files()] + (
            [self.char_range] if self.char_range != [0.0, 1.0] else [])

    def _format(self, p: Path) -> str:
        if self.format != "auto":
            return self.format
        name = p.name.lower()
        for suffix, fmt in ((".jsonl", "jsonl"), (".jsonl.gz", "jsonl"), (".jsonl.zst", "jsonl"),
                            (".json", "jsonl"), (".json.gz", "jsonl"), (".json.zst", "jsonl"),
                            (".parquet", "parquet"),
                            (".txt", "txt"), (".txt.gz", "txt"), (".txt.zst", "txt")):
            if name.endswith(suffix):
                return fmt
        raise ConfigError(f"{p}: cannot tell the format from the name; set format = "
                          "'jsonl', 'txt' or 'parquet' on this source")

    groups_files = True

    def task_files(self) -> list[Path]:
        return self.files()

    def task_parts(self, file: str, max_bytes: int) -> list[Part]:
        return row_group_parts(file, max_bytes) if self._format(Path(file)) == "parquet" else []

    def read_part(self, file: str, part: Part) -> Iterator[Document | Skip]:
        if self.char_range != [0.0, 1.0] or self.separator:
            what = "separator" if self.separator else "char_range"
            raise ConfigError(f"{file}: {what} applies to text files only, not parquet")
        yield from self._read_parquet(Path(file), part)

    @functools.cached_property
    def _root(self) -> str:
        return glob_root(self.paths)

    def _name(self, p: Path) -> str:
        """A file in the ids of records without one: its path below ``_root``, so that
        same-named files in different folders (en/part-0.jsonl, de/part-0.jsonl) give
        different ids; for the files of one folder, their names."""
        rel = os.path.relpath(os.path.abspath(p), self._root)
        return p.name if rel.startswith("..") else rel

    def read(self, files: list[str] | None = None) -> Iterator[Document | Skip]:
        for p in map(Path, files) if files else self.files():
            fmt = self._format(p)
            if fmt != "txt" and (self.char_range != [0.0, 1.0] or self.separator):
                what = "separator" if self.separator else "char_range"
                raise ConfigError(f"{p}: {what} applies to text files only, not {fmt}")
            if fmt != "parquet" and (packed := filelines.compressed_unread(p)):
                yield Skip(self._name(p), "unreadable", packed)   # not thousands of bad lines
                continue
            if fmt != "parquet" and (wide := filelines.wide_text(p)):   # one skip, not one a line
                sep = None if fmt == "jsonl" else self.separator
                yield Skip(self._name(p), "invalid_utf8", f"{p}: {wide[0]} text (its byte-order "
                           "mark), not UTF-8: re-save it as UTF-8 (iconv -t UTF-8)",
                           records=filelines.wide_records(p, wide[1], sep) if sep != "" else 1)
                continue
            reader = self._read_jsonl if fmt == "jsonl" else self._read_txt if fmt == "txt" \
                else self._read_parquet
            yield from nonempty(reader(p), p, self._name(p))

    def _record(self, rec: Any, where: str, default_id: str) -> Document | Skip:
        """The record at ``where`` (the file's path as given and the line: the skips'
        details), named ``default_id`` (``_name``'s form) unless it has an id: a skip has
        the id its document would have had."""
        if not isinstance(rec, dict):
            return Skip(default_id, "not_an_object",
                        f"{where}: record is {type(rec).__name__}")
        rid = rec.get(self.id_field)
        doc_id = default_id if rid is None or rid == "" else str(rid)
        text = rec.get(self.text_field)
        if not isinstance(text, str):
            return Skip(doc_id, "missing_text", f"{where}: {no_text(rec, self.text_field)}")
        for part, value in (("text", text), ("id", doc_id)):
            try:   # a lone surrogate from a JSON escape ("\ud800") cannot be written as UTF-8
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                return Skip(default_id if part == "id" else doc_id, "invalid_unicode",
                            f"{where}: {part}: a lone surrogate "
                            f"U+{ord(e.object[e.start]):04X} at character {e.start}")
        return Document(doc_id, text, self.label(), record_meta(rec, self.text_field,
                                                                self.id_field))

    def _read_jsonl(self, p: Path, whole: bool = True) -> Iterator[Document | Skip]:
        # a `.json` file may hold one JSON array of records (as `json.dump` writes a list)
        # or one object over several lines; a `.jsonl` one is JSON lines whatever its
        # first line holds
        lineno, head, name, first = 0, 0, self._name(p), True
        json_file = whole and p.name.lower().endswith((".json", ".json.gz", ".json.zst"))
        try:
            lines = enumerate(file_lines(p, self.max_record_bytes), 1)
            for lineno, raw in lines:
                where, rid = f"{p}:{lineno}", f"{name}:{lineno}"
                if first and (isinstance(raw, int) or raw.removeprefix(BOM).strip()):
                    first, head = False, lineno   # the first line that holds any
                    lead = raw.removeprefix(BOM).lstrip()[:1] if json_file and isinstance(
                        raw, bytes) else b""
                    if lead == b"[" and isinstance(raw, bytes):
                        # a JSON array of records, not JSON lines: no JSON line holding
                        # an array is a document anyway
                        yield from self._json_array(p, raw, (r for _, r in lines))
                        return
                    if lead == b"{" and isinstance(raw, bytes) and not is_json(raw):
                        # one object over several lines (json.dump(obj, indent=2)): one
                        # record; else JSON lines after all, from the start
                        one = self._json_object(p, raw, (r for _, r in lines))
                        yield from self._read_jsonl(p, whole=False) if one is None else one
                        return
                size = raw if isinstance(raw, int) else len(raw.rstrip(b"\r\n"))
                if isinstance(raw, int) or size > self.max_record_bytes:   # (line break not counted)
                    yield Skip(rid, "record_too_large", f"{where}: {size:,} bytes > "
                               f"max_record_bytes ({self.max_record_bytes:,})")
                    continue
                if not raw.strip() or (lineno == 1 and not raw.removeprefix(BOM).strip()):
                    continue
                try:  # a byte-order mark before the first record is not part of it
                    rec = json.loads(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
                except UnicodeDecodeError as e:
                    yield Skip(rid, "invalid_utf8", f"{where}: {e}")
                    continue
                except (ValueError, RecursionError) as e:
                    # JSONDecodeError, and what valid JSON can still raise: an integer of
                    # more than 4,300 digits (ValueError), arrays nested 100,000 deep
                    cr = ("; the line holds a lone CR: lines end at LF only here, so "
                          "re-save the file with LF line ends" if b"\r" in raw.rstrip(b"\r\n")
                          else "; the file is not one JSON object either (read whole up to "
                          "max_record_bytes), so it is read as JSON lines"
                          if not whole and lineno == head else "")
                    yield Skip(rid, "malformed_json", f"{where}: {type(e).__name__}: "
                               f"{str(e)[:200]}{cr}")
                    continue
                yield self._record(rec, where, rid)
        except DamagedGzip as e:   # found before any line was given
            yield Skip(name, "unreadable", str(e), records=max(1, e.lines))
        except read_errors() as e:
            # truncated or corrupt compression: everything before it was yielded already
            yield Skip(f"{name}:{lineno + 1}", "unreadable",
                       f"{p} after line {lineno}: {type(e).__name__}: {e}")

    def _json_object(self, p: Path, first: bytes, rest: Iterator[bytes | int]
                     ) -> list[Document | Skip] | None:
        """A file holding one JSON object over several lines, as its one record named
        by the file; None when it is not one object of up to ``max_record_bytes``."""
        parts, size = [first], len(first)
        try:
            for raw in rest:
                size += raw if isinstance(raw, int) else len(raw)
                if size > self.max_record_bytes:
                    return None
                parts.append(raw)   # type: ignore[arg-type]
        except read_errors():   # cut short: no object, and its lines up to the cut are kept
            return None
        try:
            rec = json.loads(b"".join(parts).decode("utf-8-sig"))
        except (ValueError, RecursionError):   # UnicodeDecodeError is a ValueError
            return None
        return [self._record(rec, str(p), self._name(p))] if isinstance(rec, dict) else None

    def _json_array(self, p: Path, first: bytes, rest: Iterator[bytes | int]
                    ) -> Iterator[Document | Skip]:
        """A file holding one JSON array of records: parsed whole, so up to
        ``max_record_bytes``; a record is named by its index, ``file[0]``."""
        parts, size, name = [first], len(first), self._name(p)
        for raw in rest:
            size += raw if isinstance(raw, int) else len(raw)
            if size > self.max_record_bytes:
                for raw in rest:   # counted to the end, not held
                    size += raw if isinstance(raw, int) else len(raw)
                yield Skip(name, "record_too_large", f"{p}: a JSON array of {size:,} bytes "
                           f"> max_record_bytes ({self.max_record_bytes:,}); write it as "
                           "JSON lines (one record per line) or raise max_record_bytes")
                return
            parts.append(raw)   # type: ignore[arg-type]
        try:
            records = json.loads(b"".join(parts).decode("utf-8-sig"))
        except UnicodeDecodeError as e:
            yield Skip(name, "invalid_utf8", f"{p}: a JSON array file: {e}")
            return
        except (ValueError, RecursionError) as e:
            yield Skip(name, "malformed_json", f"{p}: a JSON array file (its first "
                       f"character is '['), not JSON lines: {type(e).__name__}: "
                       f"{str(e)[:200]}")
            return
        if not isinstance(records, list):   # "[1] x": valid JSON is one value only
            yield Skip(name, "malformed_json", f"{p}: not one JSON array")
            return
        for i, rec in enumerate(records):
            yield self._record(rec, f"{p}[{i}]", f"{name}[{i}]")

    def _read_txt(self, p: Path) -> Iterator[Document | Skip]:
        name = self._name(p)
        if self.separator and self.char_range == [0.0, 1.0]:
            yield from self._txt_pieces(p, name)   # streamed: a 2 GB file is not held twice
            return
        # one document (no separator, the whole file) is held only up to max_record_bytes:
        # one of 89 MB had taken 840 MB before its length filter dropped it
        cap = self.max_record_bytes if not self.separator and self.char_range == [0.0, 1.0] \
            else 0
        try:   # a file of documents: an invalid byte costs its document only (_piece)
            held: list[bytes] = []
            size = 0
            for raw in file_lines(p, split=1 << 20):
                size += len(raw)  # type: ignore[arg-type]   # no cap: bytes only
                if cap and size > cap:
                    held.clear()
                else:
                    held.append(raw)  # type: ignore[arg-type]
            if cap and size > cap:
                yield Skip(name, "record_too_large", f"{p}: one document of {size:,} bytes > "
                           "max_record_bytes; a file of several documents needs the "
                           "source's separator")
                return
            text = b"".join(held).decode("utf-8", "surrogateescape" if self.separator else "strict")
        except UnicodeDecodeError as e:   # named as the file's document would have been
            yield Skip(name, "invalid_utf8", f"{p}: {e}")
            return
        except DamagedGzip as e:
            yield Skip(name, "unreadable", str(e))
            return
        except read_errors() as e:
            yield Skip(name, "unreadable", f"{p}: {type(e).__name__}: {e}")
            return
        if not text.strip():
            return  # a blank file: `nonempty` counts it
        if not self.separator:
            if self.char_range != [0.0, 1.0]:
                lo, hi = (int(len(text) * f) for f in self.char_range)
                text, name = text[lo:hi], f"{name}[{lo}:{hi}]"
            yield Document(name, text, self.label(), {"path": str(p)})
            return
        # a range of a file of documents: the documents that start in it, whole (a cut
        # would put half a story in train and half in val), numbered as in the whole file
        text = self._lf(text)
        lo, hi = (int(len(text) * f) for f in self.char_range)
        at = 0
        for k, piece in enumerate(text.split(self.separator), 1):
            if lo <= at < hi:
                yield from self._piece(name, k, piece, p)
            at += len(piece) + len(self.separator)

    def _lf(self, text: str) -> str:
        """CRLF and a lone CR as LF before a separator written with LF ("\n\n") is looked
        for (normalising makes them LF later: a file of lone CRs was one document)."""
        return text if "\r" in self.separator else \
            text.replace("\r\n", "\n").replace("\r", "\n")

    def _piece(self, name: str, k: int, piece: str, p: Path) -> Iterator[Document | Skip]:
        """Document ``k`` of a file of documents, decoded with ``surrogateescape``: one
        holding an invalid byte is a skip of its own (not the rest of the file)."""
        piece = (piece.removeprefix("\ufeff") if k == 1 else piece).strip("\r\n")   # a BOM
        if not piece.strip():   # blank pieces (a separator at the end) are not documents
            return
        try:
            size = len(piece.encode("utf-8"))
        except UnicodeEncodeError as e:
            yield Skip(f"{name}:{k}", "invalid_utf8", f"{p}: document {k}: an invalid byte "
                       f"at character {e.start}")
            return
        if size > self.max_record_bytes:
            yield Skip(f"{name}:{k}", "record_too_large",
                       f"{p}: document {k}: {size:,} bytes > max_record_bytes "
                       f"({self.max_record_bytes:,})")
            return
        yield Document(f"{name}:{k}", piece, self.label(), {"path": str(p)})

    def _txt_pieces(self, p: Path, name: str) -> Iterator[Document | Skip]:
        """The documents between ``separator``s, read in blocks of about 1 MB of whole lines
        (a CRLF pair never straddles two); a read error (a cut file) ends the file with a
        counted skip after the documents before it."""
        decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")

        def blocks() -> Iterator[str]:
            lines: list[bytes] = []
            size = 0
            try:   # a long line in 1 MB pieces: a CR ending one waits for the next block
                for raw in file_lines(p, split=1 << 20):
                    lines.append(raw)  # type: ignore[arg-type]   # no cap: bytes only
                    size += len(raw)  # type: ignore[arg-type]
                    if size >= 1 << 20:
                        block = b"".join(lines)
                        cr = block.endswith(b"\r")
                        yield self._lf(decoder.decode(block[:-1] if cr else block))
                        lines, size = ([b"\r"], 1) if cr else ([], 0)
            except read_errors():   # a cut file: the documents read before the cut first
                yield self._lf(decoder.decode(b"".join(lines)))
                raise
            yield self._lf(decoder.decode(b"".join(lines), final=True))
        k = 0
        try:
            for k, piece in enumerate(split_stream(blocks(), self.separator,
                                                   self.max_record_bytes), 1):
                if isinstance(piece, int):   # characters: at least as many bytes
                    yield Skip(f"{name}:{k}", "record_too_large", f"{p}: document {k}: "
                               f"{piece:,} characters > max_record_bytes "
                               f"({self.max_record_bytes:,})")
                    continue
                yield from self._piece(name, k, piece, p)
        except DamagedGzip as e:   # found before any document was given
            yield Skip(name, "unreadable", str(e))
        except read_errors() as e:
            yield Skip(f"{name}:{k + 1}", "unreadable",
                       f"{p} after document {k}: {type(e).__name__}: {e}")

    def _read_parquet(self, p: Path, part: Part | None = None) -> Iterator[Document | Skip]:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError("parquet sources need pyarrow: pip install pyarrow") from None
        name = self._name(p)
        if os.path.getsize(p) == 0:   # an empty file, as a 0-byte jsonl is (not "unreadable")
            return
        try:
            # pages read through a 1 MB buffer, not each row group's column chunks whole
            # (a 130 MB row group: +64 MB instead of +185 MB, as fast)
            pf = pq.ParquetFile(p, pre_buffer=False, buffer_size=1 << 20)
        except Exception as e:  # pyarrow raises several types for corrupt files
            yield Skip(name, "unreadable", f"{p}: {type(e).__name__}: {e}")
            return
        # row group by row group: a damaged one costs its own rows (counted, from the
        # footer's row counts), not the rest of the file; a part reads its own groups,
        # its rows numbered as in the whole file
        groups = range(*part) if part else range(pf.metadata.num_row_groups)
        if groups.stop > pf.metadata.num_row_groups:
            raise PretrainError(f"{p} changed while the data stage ran: it has "
                                f"{pf.metadata.num_row_groups} row groups, planned for "
                                f"{groups.stop}; rerun the stage")
        row = first_row(pf.metadata, groups.start)
        for g in groups:
            end = row + pf.metadata.row_group(g).num_rows
            try:
                for batch in pf.iter_batches(batch_size=1024, row_groups=[g]):
                    for rec in batch_rows(batch):
                        yield (self._record(rec, f"{p}:row {row}", f"{name}:{row}")
                               if isinstance(rec, dict) else
                               Skip(f"{name}:{row}", "invalid_utf8", f"{p}:row {row}: {rec}"))
                        row += 1
            except Exception as e:  # noqa: BLE001 -- this row group only
                if row < end:
                    yield Skip(f"{name}:{row}", "unreadable",
                               f"{p}: rows {row}..{end - 1} (row group {g}): "
                               f"{type(e).__name__}: {e}", records=end - row)
            row = end


# "python-installation", "huggingface" and "warc" register themselves in pysource.py,
# hf_source.py and warc.py
SourceConfig.variants["local"] = LocalSource
