"""The ``huggingface`` source: a ``datasets`` dataset, streamed one data file per task.

A dataset on the Hub is a set of data files (FineWeb-Edu's ``sample-10BT`` is 14 parquet
files of about 2 GB). Streaming it as one iterator makes it one task, so ``data.workers``
did nothing and a killed run started the whole stream over. Here the source lists the files
of the named dataset, config and split the way ``datasets`` itself resolves them (the
builder's ``data_files``; for the Hub these are ``hf://`` URLs pinned to a commit), and each
file is one task that streams only that file through the dataset's packaged reader
(``parquet``, ``json``, ...). Tasks run in parallel and a rerun skips finished files.

``data_files`` (globs of local files, or ``hf://`` URLs) replaces the Hub lookup, exactly as
``load_dataset(name, data_files=...)`` does: ``name = "parquet"`` with local shards reads
a downloaded copy, and it is how the tests run without network. A dataset whose files
cannot be listed (a loading script) falls back to one task over the whole stream.

Because this source runs one task per file, its ``max_docs``/``max_bytes`` are shared out
over the files (``shares_limits``; the split is ``runner.limit_shares``): each file's task
reads up to its share, so the output does not depend on which task finishes first.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..config import ConfigError, absolute, absolute_if_here, expand_path
from .document import Document, Skip
from .filelines import file_lines
from .pathglob import expand, glob_root
from .records import no_text, record_meta
from .sources import SourceConfig, SourceType

_INSTALL_HINT = "huggingface sources need the datasets library: pip install 'pretrain[hf]'"
# datasets' packaged readers of text data whose files can be read one at a time
_FILE_READERS = frozenset({"parquet", "json", "csv", "text", "arrow"})


# datasets' packaged builders: these names are never a folder, as `load_dataset` reads them
_PACKAGED = ("parquet", "json", "csv", "text", "arrow", "pandas", "webdataset", "xml", "sql")


def _dataset_name(name: str) -> str:
    """``name`` absolute where it is a folder here (see ``config.PATH``), else a Hub id or a
    packaged builder as it is."""
    return name if name in _PACKAGED else absolute_if_here(name)


@dataclass
class HuggingFaceSource(SourceConfig):
    """A ``datasets`` dataset, streamed. FineWeb-Edu: ``name = "HuggingFaceFW/fineweb-edu"``."""

    type: SourceType = "huggingface"
    name: str = field(default="", metadata={"resolve": _dataset_name})  # Hub id, folder, "parquet"...
    subset: str = ""                 # the dataset config, e.g. "sample-10BT"
    split: str = "train"
    revision: str = ""
    streaming: bool = True
    text_field: str = "text"
    id_field: str = "id"
    min_int_score: int = 0           # FineWeb-Edu's classifier score; 0 keeps everything
    # the dataset's files, instead of the ones the Hub lists: local globs or hf:// URLs
    # (with name = "parquet" or "json", like load_dataset's data_files)
    data_files: list[str] = field(default_factory=list)

    shares_limits: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.name:
            raise ConfigError("name: a huggingface source needs a dataset name (or 'parquet' "
                              "/ 'json' with data_files)")
        try:
            if not self._is_folder():   # relative to the current directory, see config.PATH
                self.data_files = [absolute(p) for p in self.data_files]
            else:   # relative to the folder, as datasets joins them; "~" is no folder's
                self.data_files = [expand_path(p) for p in self.data_files]
        except ConfigError as e:   # an unset variable
            raise ConfigError(f"data_files: {e}") from None

    def _is_folder(self) -> bool:
        """``name`` is a dataset folder here (a packaged builder's name never is)."""
        return self.name not in _PACKAGED and os.path.isdir(self.name)

    def label(self) -> str:
        return self.domain or self.name.rstrip("/").split("/")[-1]

    def fingerprint(self) -> Any:
        out: dict[str, Any] = {"name": self.name, "subset": self.subset, "split": self.split,
                               "revision": self.revision or "main",
                               "min_int_score": self.min_int_score}
        # local files (data_files, or a dataset folder): their sizes and times, as a local
        # source's; a Hub dataset is named by its revision, without asking the network
        files = self._local_files() or ([str(p) for p in sorted(Path(self.name).rglob("*"))
                                          if p.is_file()] if self._is_folder() else [])
        if files:
            out["files"] = [(p, os.path.getsize(p), os.stat(p).st_mtime_ns)
                            if os.path.isfile(p) else p for p in files]
        return out

    def _local_files(self) -> list[str]:
        """``data_files`` with local globs expanded (sorted); URLs as they are. A relative
        pattern is relative to the dataset's folder when ``name`` is one, as ``datasets``
        resolves it, else to the current directory."""
        out: list[str] = []
        for pattern in self.data_files:
            if "://" in pattern:
                out.append(pattern)
                continue
            pattern = os.path.expanduser(pattern)
            if self._is_folder():
                pattern = os.path.join(self.name, pattern)   # unchanged when absolute
            matched = expand(pattern)
            out += [m for m in matched if os.path.isfile(m)] or [pattern]
        return out

    def unavailable(self) -> str | None:
        try:
            import datasets  # noqa: F401
        except ImportError:
            return _INSTALL_HINT
        missing = [p for p in self._local_files() if "://" not in p and not os.path.isfile(p)]
        if missing:
            return f"huggingface source {self.name!r}: no file matches data_files {missing}"
        return None

    def task_files(self) -> list[str]:
        """The split's data files, sorted; [] when the dataset has none to list (one task).
        Reads the dataset's metadata (network for a Hub dataset), no data."""
        return sorted(_builder_files(self)[1])

    def read(self, files: list[str] | None = None) -> Iterator[Document | Skip]:
        try:
            import datasets
        except ImportError:
            raise ConfigError(_INSTALL_HINT) from None
        if not files and _saved(self.name):   # a save_to_disk folder: its arrow files
            saved = datasets.load_from_disk(self.name)
            if isinstance(saved, datasets.DatasetDict):
                if self.split not in saved:
                    raise ConfigError(f"huggingface source {self.name!r}: no split "
                                      f"{self.split!r}; it has {', '.join(map(repr, saved))}")
                saved = saved[self.split]
            yield from self._records(lambda: saved, f"{self.name}:{self.split}",
                                     ids=f"{Path(self.name).name}:{self.split}")
            return
        if not files:   # the whole stream; failing to open it is an error, not bad input
            try:
                ds = datasets.load_dataset(self.name, self.subset or None, split=self.split,
                                           streaming=self.streaming,
                                           data_files=self.data_files or None,
                                           revision=self.revision or None)
            except Exception as e:   # noqa: BLE001 -- as listing its files: many types
                raise ConfigError(f"huggingface source {self.name!r} (subset {self.subset!r}, "
                                  f"split {self.split!r}): could not open it "
                                  f"({type(e).__name__}: {str(e)[:300]})") from None
            yield from self._records(lambda: ds, f"{self.name}:{self.split}",
                                     remote=not self._is_folder(),
                                     ids=f"{Path(self.name).name}:{self.split}"
                                     if self._is_folder() else "")
            return
        module, _, kwargs = _builder_files(self)
        one = files[0] if len(files) == 1 and "://" not in files[0] else ""
        counts = {"json": _json_lines_lost, "parquet": _parquet_rows_lost}.get(module)
        if one and _no_rows(one, module):   # datasets' parquet reader raises on one
            yield Skip(self._file_id(one), "empty_file", f"{one}: empty, no records")
            return
        yield from self._records(
            lambda: datasets.load_dataset(module, data_files={"train": list(files)},
                                          split="train", streaming=self.streaming, **kwargs),
            ",".join(files), remote=any("://" in f for f in files),
            lost=(lambda n: counts(one, n)) if one and counts else None,
            ids=",".join(self._file_id(f) for f in files))

    def _file_id(self, file: str) -> str:
        """A file in the ids of records without one: a URL as it is, a local file by its
        path below the dataset's folder (or the folder ``data_files`` start in), so that
        ids, and the tokenize stage's held-out split that hashes them, do not change when
        the dataset is moved."""
        if "://" in file:
            return file
        root = self.name if self._is_folder() else glob_root(self.data_files or [file])
        # folders resolved (datasets resolves one reached through a symbolic link), not the
        # file: the Hub cache's files are links to blobs/<sha>
        here = os.path.join(os.path.realpath(os.path.dirname(file)), os.path.basename(file))
        return os.path.relpath(here, os.path.realpath(root))

    def _records(self, open_: Callable[[], Any], where: str, remote: bool = False,
                 lost: Callable[[int], tuple[int, str]] | None = None, ids: str = ""
                 ) -> Iterator[Document | Skip]:
        """The records of ``open_()``; a file that cannot be opened or ends early (corrupt,
        truncated) is one counted skip after what it yielded, as a local source's, standing
        for ``lost(yielded)``'s records where that can count them. Over the network an I/O
        error (a timeout, an HTTP error: requests' and the Hub's are OSErrors) fails the
        task instead, so that a rerun reads the file again rather than keeping it cut
        short."""
        n = 0
        try:
            for n, rec in enumerate(open_(), 1):
                yield self._record(rec, where, n - 1, ids or where)
        except Exception as e:  # pyarrow and fsspec raise many types for a corrupt file
            if remote and isinstance(e, OSError):
                raise
            records, why = lost(n) if lost else (1, "")
            yield Skip(f"{ids or where}:{n}", "unreadable",
                       f"{where} after record {n}: {type(e).__name__}: {str(e)[:300]}{why}",
                       records)
            return
        if not n:
            yield Skip(ids or where, "empty_file", f"{where}: no records")

    def _record(self, rec: dict[str, Any], where: str, i: int, ids: str) -> Document | Skip:
        rid = rec.get(self.id_field)
        doc_id = f"{ids}:{i}" if rid is None or rid == "" else str(rid)   # 0 is an id
        if self.min_int_score:
            if rec.get("int_score") is None:   # no such column (or null): not a low score
                return Skip(doc_id, "missing_int_score", f"{where} record {i}: no int_score "
                            "(min_int_score needs FineWeb-Edu's classifier score)")
            try:
                score = float(rec["int_score"])
                if not math.isfinite(score):
                    raise ValueError
            except (TypeError, ValueError):
                return Skip(doc_id, "bad_int_score", f"{where} record {i}: int_score "
                            f"{rec.get('int_score')!r} is not a number")
            if score < self.min_int_score:
                return Skip(doc_id, "below_min_int_score")
        text = rec.get(self.text_field)
        if not isinstance(text, str):
            return Skip(doc_id, "missing_text",
                        f"{where} record {i}: {no_text(rec, self.text_field)}")
        return Document(doc_id, text, self.label(), record_meta(rec, self.text_field,
                                                                self.id_field))


def _no_rows(path: str, module: str) -> bool:
    """Whether the local file ``path`` holds no records: 0 bytes, or a parquet footer that
    counts 0 rows (a well-formed file, which ``datasets``' reader fails on: "BatchSize
    must be greater than 0", read as damaged)."""
    try:
        if os.path.getsize(path) == 0:
            return True
        if module == "parquet":
            import pyarrow.parquet as pq
            return bool(pq.ParquetFile(path).metadata.num_rows == 0)
    except Exception:  # noqa: BLE001 -- unreadable: the reader's own error says so
        return False
    return False


def _parquet_rows_lost(path: str, read: int) -> tuple[int, str]:
    """(records lost, what to say) for a local parquet file ``datasets``' reader stopped in
    after ``read`` records (a damaged row group ends its stream): the rest of the file, by
    its footer's row count."""
    try:
        import pyarrow.parquet as pq
        total = pq.ParquetFile(path).metadata.num_rows
    except Exception:  # noqa: BLE001 -- a count only; the skip stands without it
        return 1, ""
    return max(1, total - read), ("; datasets' parquet reader lost the rest of the file with "
                                  "it: read local parquet files with a `local` source (a "
                                  "damaged row group costs its own rows there)")


def _json_lines_lost(path: str, read: int) -> tuple[int, str]:
    """(records lost, what to say) for a local JSON-lines file ``datasets``' json reader
    stopped in after ``read`` records: it reads a file in blocks and drops the whole block
    at one bad line (often the whole file), where a ``local`` source loses that line only.
    (1, "") for a file that is not JSON lines (a JSON array) or cannot be read again."""
    p = Path(path)
    if "://" in path or not re.search(r"\.jsonl?(\.gz|\.zst)?$", p.name.lower()):
        return 1, ""
    total, first = 0, ""
    try:
        for lineno, raw in enumerate(file_lines(p), 1):
            if isinstance(raw, int) or not raw.strip():
                continue
            if not total and raw.lstrip().startswith(b"["):
                return 1, ""   # one JSON document, not lines
            total += 1
            if not first:
                try:
                    json.loads(raw)
                except (ValueError, RecursionError):
                    first = f"; line {lineno} is not JSON"
    except Exception:  # noqa: BLE001 -- a recount only; the skip stands without it
        return 1, ""
    return max(1, total - read), (f"{first}; datasets' json reader lost the rest of the "
                                  "file with it: read local JSON lines with a `local` source "
                                  "(one bad line costs one record there)")


def _saved(name: str) -> bool:
    """A folder written by ``Dataset.save_to_disk`` (or a DatasetDict's), which
    ``load_dataset`` would misread as a folder of json files (its state.json)."""
    folder = Path(name)
    return folder.is_dir() and ((folder / "state.json").is_file()
                                or (folder / "dataset_dict.json").is_file())


def _builder_files(src: HuggingFaceSource) -> tuple[str, list[str], dict[str, Any]]:
    """(packaged reader, the split's data files, the reader's non-default options) of the
    source's dataset, as ``datasets.load_dataset_builder`` resolves them; no files when
    the dataset is not a set of files a packaged reader reads."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(_INSTALL_HINT) from None
    if _saved(src.name) and not src.data_files:
        return "save_to_disk", [], {}   # read whole by load_from_disk: one task
    if src.data_files and (missing := src.unavailable()):
        # a packaged reader's builder takes a pattern matching nothing, and its load failed
        # later with a traceback
        raise ConfigError(missing)
    try:
        builder = datasets.load_dataset_builder(src.name, src.subset or None,
                                                data_files=src.data_files or None,
                                                revision=src.revision or None)
    except Exception as e:   # network, authentication, a missing name: many types
        raise ConfigError(
            f"huggingface source {src.name!r} (subset {src.subset!r}): could not list its "
            f"data files ({type(e).__name__}: {e}); check the name, subset and network, or "
            "download the files and point data_files at them") from None
    files = builder.config.data_files
    if builder.name not in _FILE_READERS or not files:
        return builder.name, [], {}
    split = src.split
    if split not in files and src.data_files and list(files) == ["train"]:
        # a plain list of data files is one split, which datasets calls train
        raise ConfigError(f"huggingface source {src.name!r}: data_files name the files "
                          f"themselves, which datasets reads as split 'train', not "
                          f"{src.split!r}: leave split at 'train' (or name the folder "
                          "without data_files, whose file names give the splits)")
    if split not in files:
        raise ConfigError(f"huggingface source {src.name!r}: no split {src.split!r}; it has "
                          + ", ".join(repr(s) for s in files))
    # options the dataset's card sets for its reader (a json field, csv separators, the
    # features), so that one file is read the way the whole dataset would be
    config, default = builder.config, type(builder.config)()
    kwargs = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
              if f.name not in ("name", "version", "data_dir", "data_files", "description")
              and getattr(config, f.name) != getattr(default, f.name)}
    return builder.name, [str(f) for f in files[split]], kwargs


SourceConfig.variants["huggingface"] = HuggingFaceSource
