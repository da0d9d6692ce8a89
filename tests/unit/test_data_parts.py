"""A large parquet file cut into data tasks of row groups (``data.task_bytes``): the output
of one task reading it whole, resumed safely under another cut. Small files the other
way round: several a task, with the output of a task each."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pretrain.data import executor, runner
from pretrain.data.config import DataConfig
from pretrain.data.sources import LocalSource

from ..conftest import KilledTasks
from .test_data_stage import _prose, _run


def _big_parquet(tmp_path: Path) -> Path:
    """120 documents in 12 row groups of 10, no id column (ids are the rows of the whole
    file): a duplicate in another group than its original, a short one, a damaged group."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    texts = [_prose(i) for i in range(120)]
    texts[95] = texts[5]
    texts[50] = "too short"
    p = tmp_path / "big.parquet"
    pq.write_table(pa.table({"text": texts,
                             "url": [f"https://a.example/{i}" for i in range(120)]}),
                   p, row_group_size=10, compression="NONE")
    blob = bytearray(p.read_bytes())
    page = pq.ParquetFile(p).metadata.row_group(7).column(0).data_page_offset
    blob[page + 10:page + 60] = b"\xff" * 50     # row group 7 (rows 70..79) is damaged
    p.write_bytes(bytes(blob))
    return p


def _group_bytes(p: Path) -> int:
    import pyarrow.parquet as pq
    meta = pq.ParquetFile(p).metadata
    return max(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))


def test_a_large_parquet_file_runs_as_tasks_of_row_groups_with_the_output_of_one(
        tmp_path, monkeypatch):
    """Cut into runs of row groups, one task each, run by worker processes, a parquet file
    gives the output of one task reading it whole: the same shard files (documents, ids,
    order), drops, duplicates, damaged-group skips and provenance."""
    import pyarrow.parquet as pq
    p = _big_parquet(tmp_path)
    meta = pq.ParquetFile(p).metadata
    group = _group_bytes(p)

    def cfg(task_bytes: int) -> DataConfig:
        return DataConfig(sources=[LocalSource(paths=[str(p)])], task_bytes=task_bytes,
                          workers=2, docs_per_shard=40)
    assert len(runner.plan_tasks(cfg(0))) == 1
    split = runner.plan_tasks(cfg(3 * group))
    assert len(split) >= 4 and split[0].part == (0, split[1].part[0])
    assert [t.part[1] for t in split[:-1]] == [t.part[0] for t in split[1:]]
    assert split[-1].part[1] == 12
    assert all(sum(meta.row_group(g).total_byte_size for g in range(*t.part)) <= 3 * group
               for t in split)
    # a file this small would run its tasks in this process: in workers, as a large one
    monkeypatch.setattr(executor, "_MIN_PARALLEL_BYTES", 0)
    whole, parts = _run(tmp_path, cfg(0), "whole"), _run(tmp_path, cfg(3 * group), "parts")
    assert (whole.pop("tasks"), parts.pop("tasks")) == (1, len(split))
    assert whole == parts and len(whole["shards"]) == 3   # about 100 kept, 40 a shard
    for f in sorted((tmp_path / "whole").iterdir()):
        if f.name != "shards.json":
            assert f.read_bytes() == (tmp_path / "parts" / f.name).read_bytes(), f.name
    drops = [json.loads(x) for x in (tmp_path / "parts" / "dropped.jsonl").open()]
    assert {(d["id"], d["reason"]) for d in drops} >= {
        ("big.parquet:95", "exact_duplicate"), ("big.parquet:70", "unreadable")}
    # each shard's provenance: the whole file, fingerprinted once (by its first part)
    for prov in (tmp_path / "whole" / "shards.json", tmp_path / "parts" / "shards.json"):
        shards = json.loads(prov.read_text())
        assert [s["inputs"] for s in shards.values()] == [[{
            "path": str(p), "bytes": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}]] * 3


@pytest.mark.parametrize("planned", [True, False])
def test_a_rerun_that_cuts_a_file_otherwise_redoes_the_finished_tasks(
        tmp_path, monkeypatch, capsys, planned):
    """A killed run resumed with another data.task_bytes: the task numbers name other row
    groups now, so the finished tasks are redone (not taken for the new ones), said in a
    line, and the output is the uninterrupted run's. Also where the killed run left no
    plan (a version before parts): finished tasks are then trusted only where nothing is
    cut."""
    p = _big_parquet(tmp_path)
    group = _group_bytes(p)

    def cfg(task_bytes: int) -> DataConfig:
        return DataConfig(sources=[LocalSource(paths=[str(p)])], task_bytes=task_bytes,
                          workers=1)
    _run(tmp_path, cfg(0), "whole")
    tasks = KilledTasks(monkeypatch, after=2)
    work = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, cfg(2 * group), "resumed", work=work)
    if not planned:
        (work / "plan.json").unlink()
    tasks.revive()
    capsys.readouterr()
    _run(tmp_path, cfg(5 * group), "resumed", work=work)
    assert "its 2 finished tasks are redone" in capsys.readouterr().err
    for f in sorted((tmp_path / "whole").iterdir()):
        if f.name != "shards.json":
            assert f.read_bytes() == (tmp_path / "resumed" / f.name).read_bytes(), f.name


def test_a_row_group_without_rows_never_makes_a_task_of_its_own(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from pretrain.data.parquet_parts import row_group_parts

    def write(name: str, sizes: list[int]) -> Path:
        path = tmp_path / name
        with pq.ParquetWriter(path, pa.schema([("text", pa.string())])) as w:
            for n in sizes:
                w.write_table(pa.table({"text": [_prose(i) for i in range(n)]},
                                       schema=pa.schema([("text", pa.string())])))
        assert pq.ParquetFile(path).metadata.num_row_groups == len(sizes)
        return path
    # every group over the limit: each with rows is a task, the empty one joins the one before
    assert row_group_parts(write("a.parquet", [10, 0, 10, 0]), 1) == [(0, 2), (2, 4)]
    assert row_group_parts(write("b.parquet", [0, 0, 0]), 1) == []
    assert row_group_parts(write("c.parquet", [0, 10, 10]), 1) == [(0, 2), (2, 3)]
    assert row_group_parts(write("d.parquet", [10, 10]), 0) == []     # task_bytes = 0: off
    (tmp_path / "e.parquet").write_bytes(b"PAR1 not a parquet file")
    assert row_group_parts(tmp_path / "e.parquet", 1) == []


def test_small_files_share_a_task_with_the_output_of_a_task_each(tmp_path, monkeypatch):
    """3,000 one-record files were 3,000 tasks and shards (40x the time of one file of
    the same records). Consecutive small files now share a task, up to data.group_bytes
    or GROUP_FILES; a large file keeps a task of its own."""
    monkeypatch.setattr(runner, "GROUP_FILES", 4)
    for i in range(11):
        (tmp_path / f"f{i:02d}.jsonl").write_text(json.dumps({"id": f"d{i}", "text": _prose(i)})
                                                   + "\n" * (1 + 3000 * (i == 6)))
    src = LocalSource(paths=[str(tmp_path / "f*.jsonl")])
    groups = [[Path(f).name[1:3] for f in t.files or []]
              for t in runner.plan_tasks(DataConfig(sources=[src], group_bytes=4000))]
    # four files a task at most; f06 is large (3,000 more bytes): a task of its own, after
    # which the files group again
    assert groups == [["00", "01", "02", "03"], ["04", "05"], ["06"], ["07", "08", "09", "10"]]
    _run(tmp_path, DataConfig(sources=[src], group_bytes=4000), "grouped")
    _run(tmp_path, DataConfig(sources=[src], group_bytes=0), "each")   # 0: a task a file

    def docs(folder: str) -> list[str]:
        return [line for f in sorted((tmp_path / folder).glob("docs-*.jsonl"))
                for line in f.read_text().splitlines()]

    assert docs("grouped") == docs("each") and len(docs("each")) == 11
    assert len(list((tmp_path / "grouped").glob("docs-*"))) == 4
    assert len(list((tmp_path / "each").glob("docs-*"))) == 11
    shards = json.loads((tmp_path / "grouped" / "shards.json").read_text())
    assert [len(s["inputs"]) for s in shards.values()] == [4, 2, 1, 4]


def test_compressed_inputs_count_as_the_text_they_hold_for_workers(tmp_path):
    """3 MB of .zst (~12 MB of text) ran in one process, its size on disk under the 8 MB
    below which workers cost more than they save."""
    plain, packed = tmp_path / "a.jsonl", tmp_path / "a.jsonl.zst"
    for p in (plain, packed):
        p.write_bytes(b"x" * (3 << 20))
    assert executor._small([runner.Task(0, 0, [str(plain)])])
    assert not executor._small([runner.Task(0, 0, [str(packed)])])
