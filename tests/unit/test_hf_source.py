"""The Hugging Face source split into one task per data file: a local parquet dataset read
through the same ``datasets`` code path a Hub dataset takes, by two worker processes, gives
one worker's output; its limits are shared out over the files the same way every run; a
rerun redoes only unfinished files; progress shows documents and bytes, also from inside
one long task."""

import json
import os
import re
from pathlib import Path

import pytest

from pretrain.data import executor, heartbeat
from pretrain.data.config import DataConfig, MinHashConfig
from pretrain.data.docs import read_docs
from pretrain.data.hf_source import HuggingFaceSource
from pretrain.data.runner import limit_shares, plan_tasks

from ..conftest import KilledTasks
from .test_data_stage import _prose, _run

pytest.importorskip("datasets")

N_FILES, PER_FILE = 4, 25


def _dataset(root: Path, n_files: int = N_FILES, per_file: int = PER_FILE) -> Path:
    """A folder laid out as on the Hub (``data/train-0000k-of-0000n.parquet``), with
    FineWeb-Edu's fields."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    (root / "data").mkdir(parents=True)
    for f in range(n_files):
        rows = [{"text": _prose(f * 1000 + i), "id": f"f{f}-{i}", "url": f"https://e.org/{f}/{i}",
                 "int_score": 3} for i in range(per_file)]
        pq.write_table(pa.Table.from_pylist(rows),
                       root / "data" / f"train-{f:05d}-of-{n_files:05d}.parquet")
    return root


def _cfg(src: HuggingFaceSource, workers: int) -> DataConfig:
    return DataConfig(sources=[src], workers=workers, minhash=MinHashConfig(enabled=False))


def test_data_files_are_listed_as_datasets_resolves_them(tmp_path):
    ds = _dataset(tmp_path / "ds")
    want = sorted(str(p) for p in (ds / "data").glob("*.parquet"))
    by_folder = HuggingFaceSource(name=str(ds))
    by_files = HuggingFaceSource(name="parquet", data_files=[str(ds / "data" / "*.parquet")])
    assert by_folder.task_files() == want and by_files.task_files() == want
    docs = list(by_files.read([want[2]]))   # one task streams only its own file
    assert [d.id for d in docs] == [f"f2-{i}" for i in range(PER_FILE)]
    assert docs[0].meta["url"] == "https://e.org/2/0"
    with pytest.raises(Exception, match="no split 'validation'"):
        HuggingFaceSource(name=str(ds), split="validation").task_files()
    # relative data_files of a dataset folder are relative to it, as datasets reads them:
    # the same files, checked and fingerprinted (sizes, times) from wherever the run starts
    part = HuggingFaceSource(name=str(ds), data_files=["data/train-0000[01]-*.parquet"])
    assert part.unavailable() is None and part.task_files() == want[:2]
    assert [f[0] for f in part.fingerprint()["files"]] == want[:2]
    gone = HuggingFaceSource(name=str(ds), data_files=["data/none-*.parquet"])
    assert "no file matches data_files" in (gone.unavailable() or "")
    # a packaged reader's pattern matching nothing: a one-line error when the stage plans
    # its tasks (datasets' builder took it, and the load raised a traceback later)
    from pretrain.config import ConfigError
    for name, pattern in (("parquet", "*.parquet"), ("json", "*.jsonX")):
        none = HuggingFaceSource(name=name, data_files=[str(tmp_path / "nothere" / pattern)])
        with pytest.raises(ConfigError, match="no file matches data_files"):
            none.task_files()
    # "~" in a folder's data_files is the home folder, as validate read it (datasets
    # joined "~/..." under the folder)
    home = HuggingFaceSource(name=str(ds), data_files=[f"~/{Path(want[0]).name}"])
    assert home.data_files == [os.path.expanduser(f"~/{Path(want[0]).name}")]


def test_two_workers_give_the_output_of_one(tmp_path, monkeypatch):
    monkeypatch.setattr(executor, "_MIN_PARALLEL_BYTES", 0)  # two processes even for tiny input
    src = HuggingFaceSource(name=str(_dataset(tmp_path / "ds")), quality="none")
    assert len(plan_tasks(_cfg(src, 2))) == N_FILES
    one = _run(tmp_path, _cfg(src, 1), "one")
    two = _run(tmp_path, _cfg(src, 2), "two")
    assert one == two and one["tasks"] == N_FILES
    ids = {d["id"] for d in read_docs(tmp_path / "two")}
    assert ids == {f"f{f}-{i}" for f in range(N_FILES) for i in range(PER_FILE)}
    for p in sorted((tmp_path / "one").iterdir()):
        assert p.read_bytes() == (tmp_path / "two" / p.name).read_bytes(), p.name


def test_limit_shares_are_even_with_the_remainder_to_the_first_files():
    assert limit_shares(10, 4) == [3, 3, 2, 2]
    assert limit_shares(8, 4) == [2, 2, 2, 2]
    assert limit_shares(0, 3) == [0, 0, 0]     # no limit
    assert limit_shares(2, 5) == [1, 1]        # fewer units than files: the first files only


def test_max_docs_and_max_bytes_are_split_over_files_the_same_way_each_run(tmp_path, monkeypatch):
    monkeypatch.setattr(executor, "_MIN_PARALLEL_BYTES", 0)
    ds = _dataset(tmp_path / "ds")
    src = HuggingFaceSource(name=str(ds), quality="none", max_docs=10)
    _run(tmp_path, _cfg(src, 1), "docs")
    got = sorted(d["id"] for d in read_docs(tmp_path / "docs"))
    # 10 over 4 files: 3, 3, 2, 2, each file's first documents
    assert got == sorted(f"f{f}-{i}" for f, n in enumerate([3, 3, 2, 2]) for i in range(n))

    max_bytes = 9_000
    src = HuggingFaceSource(name=str(ds), quality="none", max_bytes=max_bytes)
    tasks = plan_tasks(_cfg(src, 2))
    assert [t.max_bytes for t in tasks] == limit_shares(max_bytes, N_FILES) == [2250] * 4
    runs = [_run(tmp_path, _cfg(src, w), f"bytes-{w}") for w in (1, 2)]
    assert runs[0] == runs[1]
    for p in sorted((tmp_path / "bytes-1").iterdir()):
        assert p.read_bytes() == (tmp_path / "bytes-2" / p.name).read_bytes(), p.name
    kept = [d for d in read_docs(tmp_path / "bytes-2")]
    for f in range(N_FILES):
        sizes = [len(_prose(f * 1000 + i).encode()) for i in range(PER_FILE)]
        n = next(k for k in range(PER_FILE + 1) if sum(sizes[:k + 1]) > 2250)
        assert sorted(d["id"] for d in kept if d["id"].startswith(f"f{f}-")) == \
            sorted(f"f{f}-{i}" for i in range(n)), f
    assert sum(len(d["text"].encode()) for d in kept) <= max_bytes


def test_a_rerun_skips_the_files_already_done(tmp_path, monkeypatch):
    src = HuggingFaceSource(name=str(_dataset(tmp_path / "ds")), quality="none")
    cfg = _cfg(src, 1)
    _run(tmp_path, cfg, "whole")
    tasks = KilledTasks(monkeypatch, after=2)
    work = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, cfg, "resumed", work=work)
    tasks.revive()
    _run(tmp_path, cfg, "resumed", work=work)
    assert tasks.ran == [2, 3]
    for p in sorted((tmp_path / "whole").iterdir()):
        assert p.read_bytes() == (tmp_path / "resumed" / p.name).read_bytes(), p.name


def _lines(err: str) -> list[str]:
    return [x for x in err.splitlines() if x.startswith("[data]")]


def test_progress_shows_documents_and_bytes_read(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(executor, "_MIN_PARALLEL_BYTES", 0)
    src = HuggingFaceSource(name=str(_dataset(tmp_path / "ds")), quality="none")
    _run(tmp_path, _cfg(src, 2), "out")
    total = sum(len(_prose(f * 1000 + i).encode()) for f in range(N_FILES)
                for i in range(PER_FILE))
    last = _lines(capsys.readouterr().err)[-1]
    assert last.startswith(f"[data] {N_FILES}/{N_FILES} tasks"), last
    assert f"docs={N_FILES * PER_FILE:,}" in last and f"read={total / 1e6:,.1f} MB" in last


def test_one_long_task_reports_progress_before_it_ends(tmp_path, monkeypatch, capsys):
    """One file, one task, in this process: the counts on the line grow while it runs."""
    monkeypatch.setattr(heartbeat, "BEAT_S", 0.0)
    monkeypatch.setattr(heartbeat, "POLL_S", 0.002)
    monkeypatch.setattr(executor, "LINE_EVERY_S", 0.0)
    src = HuggingFaceSource(name=str(_dataset(tmp_path / "ds", n_files=1, per_file=1500)),
                            quality="none")
    _run(tmp_path, _cfg(src, 1), "out")
    lines = _lines(capsys.readouterr().err)
    during = [int(re.search(r"docs=([\d,]+)", x)[1].replace(",", ""))
              for x in lines if x.startswith("[data] 0/1") and "docs=" in x]
    # lines with part of the file read, while the one task still runs
    assert len({n for n in during if 0 < n < 1500}) >= 2, lines
    assert "docs=1,500" in lines[-1] and lines[-1].startswith("[data] 1/1"), lines[-1]


def test_a_truncated_shard_is_a_counted_skip_and_the_others_are_read(tmp_path):
    ds = _dataset(tmp_path / "ds", n_files=3, per_file=5)
    bad = ds / "data" / "train-00001-of-00003.parquet"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    src = HuggingFaceSource(name=str(ds), quality="none")
    counts = _run(tmp_path, _cfg(src, 1), "out")
    assert {d["id"] for d in read_docs(tmp_path / "out")} == \
        {f"f{f}-{i}" for f in (0, 2) for i in range(5)}
    assert counts["dropped"]["unreadable"] == 1
    audit = (tmp_path / "out" / "dropped.jsonl").read_text()
    assert "train-00001-of-00003.parquet" in audit


def test_a_file_ending_before_its_share_of_max_docs_is_said(tmp_path, capsys):
    """max_docs = 90 over files of 5, 30 and 30 rows read 65, unsaid; a source smaller
    than its limit in every file reads all it has and needs no word."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    (tmp_path / "ds" / "data").mkdir(parents=True)
    for f, rows in enumerate((5, 30, 30)):
        pq.write_table(pa.Table.from_pylist([{"text": _prose(f * 100 + i), "id": f"f{f}-{i}"}
                                             for i in range(rows)]),
                       tmp_path / "ds" / "data" / f"train-{f:05d}-of-00003.parquet")
    src = HuggingFaceSource(name=str(tmp_path / "ds"), quality="none", max_docs=90)
    _run(tmp_path, _cfg(src, 1), "short")
    assert "read 65 documents of its max_docs = 90: the limit is shared over its 3 files " \
        "(about 30 each), and the files with fewer left 25 unread" in capsys.readouterr().err
    src = HuggingFaceSource(name=str(tmp_path / "ds"), quality="none", max_docs=300)
    _run(tmp_path, _cfg(src, 1), "all")
    assert "documents of its max_docs" not in capsys.readouterr().err


def test_both_limits_are_shared_over_the_files_that_are_read(tmp_path):
    ds = _dataset(tmp_path / "ds", n_files=4)
    src = HuggingFaceSource(name=str(ds), max_docs=3, max_bytes=1000, quality="none")
    tasks = plan_tasks(_cfg(src, 1))
    # 3 documents reach only 3 files: the 1,000 bytes are shared over those 3, not 4
    assert [(t.max_docs, t.max_bytes) for t in tasks] == [(1, 334), (1, 333), (1, 333)]


def test_the_progress_reader_does_not_reread_ended_tasks(tmp_path, monkeypatch):
    paths = [heartbeat.beat_path(tmp_path, f"t-{i:05d}") for i in range(3)]
    beats = [heartbeat.Beat(p, tmp_path / f"{p.name}.tmp", every_s=0.0) for p in paths]
    beats[0](10, 100, done=True)
    beats[1](20, 200)                       # the third has not written yet
    done: dict = {}
    assert heartbeat.read_beats(paths, done) == (30, 300)
    reads = []
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(self) or real(self, *a, **k))
    beats[1](25, 250)
    beats[2](5, 50)
    assert heartbeat.read_beats(paths, done) == (40, 400)
    assert sorted(reads) == sorted(paths[1:])      # the ended first task came from memory
    assert heartbeat.read_beats(paths) == (40, 400)   # and without the memory, the same


def test_a_bad_record_costs_itself_and_a_blank_file_is_counted(tmp_path):
    """A non-numeric int_score skips its record, not the rest of its file; a file with no
    records is an empty_file skip, as a local source's."""
    good = _prose(1)
    (tmp_path / "sc.jsonl").write_text("".join(
        json.dumps({"text": f"{good} {i}", "int_score": s}) + "\n"
        for i, s in enumerate(["3", "high", "4", "5", "nan"])))
    (tmp_path / "blank.jsonl").write_text("\n\n")
    for name, want in (("sc.jsonl", [("D", ""), ("S", "bad_int_score"), ("D", ""), ("D", ""),
                                     ("S", "bad_int_score")]),
                       ("blank.jsonl", [("S", "empty_file")])):
        src = HuggingFaceSource(name="json", data_files=[str(tmp_path / name)], min_int_score=3)
        items = list(src.read(src.task_files()))
        assert [(type(i).__name__[0], getattr(i, "reason", "")) for i in items] == want, name
    # a parquet file of 0 rows (well formed) and a 0-byte file in a dataset's folder: empty,
    # named as its records would be (they were "unreadable", the reader "lost the rest of
    # the file", under the absolute path); a damaged file too
    import pyarrow as pa
    import pyarrow.parquet as pq
    data = tmp_path / "ds" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), data / "none.parquet")
    (data / "zero.parquet").write_bytes(b"")
    (data / "bad.parquet").write_bytes(b"PAR1 not a parquet file PAR1")
    for name, reason in (("none", "empty_file"), ("zero", "empty_file"), ("bad", "unreadable")):
        src = HuggingFaceSource(name=str(tmp_path / "ds"),
                                data_files=[f"data/{name}.parquet"])
        (skip,) = list(src.read(src.task_files()))
        assert (skip.reason, skip.id.split(":")[0]) == (reason, f"data/{name}.parquet"), skip


def test_a_save_to_disk_folder_is_read_from_its_arrow_files(tmp_path):
    import datasets
    rows = [{"text": _prose(i), "id": f"r{i}"} for i in range(20)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:5]),
                          "test": datasets.Dataset.from_list(rows[5:8])}
                         ).save_to_disk(str(tmp_path / "dict"))
    src = HuggingFaceSource(name=str(tmp_path / "saved"))
    assert src.task_files() == []
    assert [d.id for d in src.read()] == [r["id"] for r in rows]
    test = HuggingFaceSource(name=str(tmp_path / "dict"), split="test")
    assert [d.id for d in test.read()] == ["r5", "r6", "r7"]


def test_an_id_of_zero_is_an_id(tmp_path):
    (tmp_path / "z.jsonl").write_text("".join(
        json.dumps({"id": i, "text": _prose(i)}) + "\n" for i in (0, 1)))
    src = HuggingFaceSource(name="json", data_files=[str(tmp_path / "z.jsonl")])
    assert [d.id for d in src.read(src.task_files())] == ["0", "1"]


def test_a_bad_json_line_counts_the_records_datasets_drops_with_it(tmp_path):
    """datasets' json reader fails a whole file (block) at one bad line: the skip said one
    record for the file's 100. It counts them, names the line and the way to lose one only."""
    lines = [json.dumps({"text": f"{_prose(i)} {i}"}) for i in range(100)]
    lines[50] = '{"text": broken'
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    src = HuggingFaceSource(name="json", data_files=[str(path)], quality="none")
    items = list(src.read(src.task_files()))
    docs = [i for i in items if hasattr(i, "text")]
    (skip,) = [i for i in items if not hasattr(i, "text")]
    assert skip.reason == "unreadable" and skip.records == 100 - len(docs)
    assert "line 51 is not JSON" in skip.detail and "`local` source" in skip.detail
    # a JSON array file: no lines to count, one skip as before
    (tmp_path / "arr.json").write_text("[" + ",\n".join(lines) + "]\n")
    src = HuggingFaceSource(name="json", data_files=[str(tmp_path / "arr.json")])
    skips = [i for i in src.read(src.task_files()) if not hasattr(i, "text")]
    assert [s.records for s in skips] == [1]


def test_records_without_ids_keep_theirs_when_the_dataset_moves(tmp_path):
    """The tokenize stage's held-out split hashes document ids: a record without one is
    named by its file below the dataset's folder (or where data_files start), not by an
    absolute path, so a copied dataset holds out the same documents."""
    import shutil

    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [{"text": _prose(i)} for i in range(6)]
    (tmp_path / "a" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a" / "data" / "train-0.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "a" / "saved"))
    shutil.copytree(tmp_path / "a", tmp_path / "b" / "deeper")

    def ids(root: Path) -> list[list[str]]:
        folder = HuggingFaceSource(name=str(root / "data"))
        files = HuggingFaceSource(name="parquet", data_files=[str(root / "data" / "*.parquet")])
        saved = HuggingFaceSource(name=str(root / "saved"))
        return [[d.id for d in s.read(s.task_files())] for s in (folder, files, saved)]

    here, there = ids(tmp_path / "a"), ids(tmp_path / "b" / "deeper")
    assert here == there
    # the Hub cache's layout: a snapshot's files are links to blobs/<sha>
    snap = tmp_path / "hub" / "snapshots" / "rev1" / "data"
    snap.mkdir(parents=True)
    (tmp_path / "hub" / "blobs").mkdir()
    os.replace(tmp_path / "a" / "data" / "train-0.parquet", tmp_path / "hub" / "blobs" / "f00d")
    (snap / "train-0.parquet").symlink_to(tmp_path / "hub" / "blobs" / "f00d")
    hub = HuggingFaceSource(name=str(snap.parent))
    assert [d.id for d in hub.read(hub.task_files())][:1] == ["data/train-0.parquet:0"]
    assert here[0][:2] == ["train-0.parquet:0", "train-0.parquet:1"]
    assert here[2][:1] == ["saved:train:0"]


def test_a_damaged_row_group_counts_the_rows_datasets_loses_with_it(tmp_path):
    """datasets' parquet stream stops at a damaged row group: the skip counted 1 record
    where the rest of the file (350 rows) was lost."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": _prose(i)} for i in range(450)]), path,
                   row_group_size=90)
    offset = pq.ParquetFile(path).metadata.row_group(1).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset:offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    src = HuggingFaceSource(name="parquet", data_files=[str(path)], quality="none")
    items = list(src.read(src.task_files()))
    read = sum(1 for i in items if not hasattr(i, "reason"))
    (skip,) = [i for i in items if hasattr(i, "reason")]
    assert skip.reason == "unreadable" and skip.records == 450 - read
    assert "read local parquet files with a `local` source" in skip.detail


def test_record_fields_reach_the_filters_as_a_local_source_gives_them(tmp_path):
    """The id taken from `url` (C4 has no other id) left the URL filter nothing to read,
    and Dolma's nested metadata (its url) was not lifted: the URL filter never fired. A
    dataset without int_score was all 'below_min_int_score'; split with data_files was
    ignored (every file read as that split)."""
    (tmp_path / "c4.jsonl").write_text(json.dumps({"text": "t", "url": "https://x.org/a"}) + "\n")
    (tmp_path / "dolma.jsonl").write_text(json.dumps(
        {"text": "t", "id": "d1", "metadata": {"url": "https://y.org/b"}}) + "\n")
    c4 = HuggingFaceSource(name="json", data_files=[str(tmp_path / "c4.jsonl")], id_field="url")
    (doc,) = c4.read(c4.task_files())
    assert doc.id == "https://x.org/a" and doc.meta["url"] == "https://x.org/a"
    dolma = HuggingFaceSource(name="json", data_files=[str(tmp_path / "dolma.jsonl")])
    (doc,) = dolma.read(dolma.task_files())
    assert doc.meta["url"] == "https://y.org/b"
    scored = HuggingFaceSource(name="json", data_files=[str(tmp_path / "c4.jsonl")],
                               min_int_score=3)
    (skip,) = scored.read(scored.task_files())
    assert skip.reason == "missing_int_score"
    with pytest.raises(Exception, match="data_files name the files themselves"):
        HuggingFaceSource(name="json", data_files=[str(tmp_path / "c4.jsonl")],
                          split="validation").task_files()
