"""The data stage as a whole: the funnel adds up, a killed run resumes to the same output,
bad inputs are counted skips (or errors in strict mode), every source type reads, and
``pretrain data inspect`` shows the audit trail."""

import bz2
import gzip
import io
import json
import random
from pathlib import Path

import pytest

from pretrain.cli import main
from pretrain.config import PretrainError
from pretrain.data import runner, stage
from pretrain.data.config import DataConfig, MinHashConfig
from pretrain.data.docs import read_docs
from pretrain.data.document import Document, Skip
from pretrain.data.funnel import SAMPLE_CHARS, DropLog, format_funnel
from pretrain.data.hf_source import HuggingFaceSource
from pretrain.data.sources import LocalSource

from ..conftest import KilledTasks, shared_data
from .test_filters import PROSE

_SENTENCES = [s.strip() + "." for s in PROSE.replace("\n", " ").split(".") if s.strip()] + [
    "The baker opens the shop before dawn and sells bread to the workers of the mill.",
    "In spring the fields turn green and the children walk to school along the hedges.",
    "A storm in the autumn of that year broke the old mill wheel and flooded the cellars.",
    "The council met in the hall to decide how the new road should be paid for.",
    "Letters from the capital arrived once a week, carried by a rider on a grey horse.",
    "Most families kept a few goats and a garden where they grew beans and cabbages.",
    "The church bell was cast in the city and brought to the valley on an ox cart.",
    "When the railway came, the market moved closer to the station at the edge of town.",
    "Fishermen sold their catch on the bridge, and the smell of smoke filled the air.",
    "The teacher wrote the names of the rivers on the board and the pupils copied them.",
    "Every winter the lake froze, and the young people skated there in the evenings.",
    "Old maps show a second road that crossed the hills to the north of the valley.",
]


def _prose(i: int) -> str:
    rng = random.Random(i)
    picked = rng.sample(_SENTENCES, 9)
    return f"Record {i} of the archive.\n" + " ".join(picked[:5]) + "\n" + " ".join(picked[5:])


def _run(tmp_path: Path, cfg: DataConfig, out: str = "out", **kw) -> dict:
    (tmp_path / out).mkdir(exist_ok=True)
    counts: dict = {}
    counts.update(stage.process(cfg, tmp_path / out, **kw).counts())
    return counts


def _web_files(tmp_path: Path, n_files: int = 4, per_file: int = 6) -> None:
    for f in range(n_files):
        recs = [{"id": f"f{f}-{i}", "text": _prose(f * 100 + i),
                 "url": f"https://site{f}.example/{i}"} for i in range(per_file)]
        recs.append({"id": f"f{f}-short", "text": "too short"})
        (tmp_path / f"in-{f}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_funnel_adds_up_and_names_every_drop(tmp_path):
    _web_files(tmp_path)
    (tmp_path / "in-1.jsonl").open("a").write(
        json.dumps({"id": "fr", "text": "Le village est au bord de la rivière. " * 20}) + "\n"
        + json.dumps({"id": "dup", "text": _prose(0)}) + "\n")
    cfg = DataConfig(sources=[LocalSource(paths=[str(tmp_path / "in-*.jsonl")],
                                                domain="web")])
    counts = _run(tmp_path, cfg)
    funnel = json.loads((tmp_path / "out" / "funnel.json").read_text())
    steps = [r["step"] for r in funnel]
    assert steps[:4] == ["read", "normalize", "length", "url"] and steps[-1] == "minhash_dedup"
    for r in funnel:
        assert r["docs_in"] == r["docs_out"] + sum(r["dropped"].values()), r["step"]
    for a, b in zip(funnel, funnel[1:], strict=False):
        assert b["docs_in"] == a["docs_out"], (a["step"], b["step"])
    assert counts["dropped"] == {"too_short": 4, "language": 1, "exact_duplicate": 1}
    assert counts["docs_total"] == funnel[-1]["docs_out"] == 24
    audit = [json.loads(x) for x in open(tmp_path / "out" / "dropped.jsonl")]
    assert len(audit) == 6 and {a["step"] for a in audit} == {"length", "language", "dedup"}
    # a filter's drop says the value it measured against its limit, or what it found
    why = {a["reason"]: a["detail"] for a in audit}
    assert why["too_short"] == "9 < 200" and why["language"].startswith("fr 0.8")
    shards = json.loads((tmp_path / "out" / "shards.json").read_text())
    # four small files: one task, one shard, whose provenance names each of them
    assert len(shards) == 1 and [Path(i["path"]).name for i in shards["docs-00000.jsonl"][
        "inputs"]] == [f"in-{f}.jsonl" for f in range(4)]
    assert all(len(i["sha256"]) == 64 for i in shards["docs-00000.jsonl"]["inputs"])
    kept = list(read_docs(tmp_path / "out"))
    assert kept[0]["meta"]["language"] == "en" and kept[0]["meta"]["url"]


def test_funnel_keeps_pipeline_order_when_a_shorter_source_comes_first(tmp_path, capsys):
    """The first task's source skips the web filters: their rows still come before pii (they
    were appended after it), and a dropped Chinese page shows its text in the audit
    (``textwrap.shorten`` dropped a first 'word' longer than the width: all of it)."""
    _web_files(tmp_path, n_files=1)
    chinese = "\u8fd9\u662f\u4e00\u4e2a\u5173\u4e8e\u6cb3\u6d41\u548c\u5c71\u8c37\u7684\u957f\u7bc7\u6587\u7ae0\u3002" * 40
    (tmp_path / "in-0.jsonl").open("a").write(json.dumps({"id": "zh", "text": chinese}) + "\n")
    (tmp_path / "code.jsonl").write_text("".join(
        json.dumps({"id": f"c{i}", "text": _prose(500 + i)}) + "\n" for i in range(3)))
    cfg = DataConfig(sources=[LocalSource(paths=[str(tmp_path / "code.jsonl")], quality="none"),
                              LocalSource(paths=[str(tmp_path / "in-*.jsonl")])])
    _run(tmp_path, cfg)
    steps = [r["step"] for r in json.loads((tmp_path / "out" / "funnel.json").read_text())]
    assert steps == ["read", "normalize", "length", "url", "language", "gopher_repetition",
                     "gopher_quality", "c4", "fineweb", "pii", "exact_dedup", "minhash_dedup"]
    assert main(["data", "inspect", str(tmp_path / "out"), "--reason", "language"]) == 0
    out = capsys.readouterr().out
    assert chinese[:60] in out
    # the rows do not chain (url sees the web source's documents only): the table says why
    assert "where some sources skip it" in out
    rows = json.loads((tmp_path / "out" / "funnel.json").read_text())
    assert "where some sources skip it" not in format_funnel(
        [{**r, "docs_in": 5, "docs_out": 5} for r in rows])


def test_killed_run_resumes_to_identical_output(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "GROUP_FILES", 2)   # small files two a task: three tasks
    _web_files(tmp_path, n_files=6)
    cfg = DataConfig(sources=[LocalSource(paths=[str(tmp_path / "in-*.jsonl")])],
                           workers=1)
    _run(tmp_path, cfg, "whole")

    tasks = KilledTasks(monkeypatch, after=2, half_written=True)
    work = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, cfg, "resumed", work=work)
    assert sorted(p.name for p in work.glob("*.done")) == ["t-00000.done", "t-00001.done"]
    tasks.revive()
    _run(tmp_path, cfg, "resumed", work=work)
    assert tasks.ran == [2]  # only the task without a marker ran again
    for p in sorted((tmp_path / "whole").iterdir()):
        assert p.read_bytes() == (tmp_path / "resumed" / p.name).read_bytes(), p.name
    # finished tasks without a plan (an earlier version's: a task a file) are not trusted
    # where files are grouped now (its t-00000 read in-0 alone; in-1 was never read)
    again = KilledTasks(monkeypatch, after=2)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, cfg, "again", work=tmp_path / "work2")
    (tmp_path / "work2" / "plan.json").unlink()
    again.revive()
    _run(tmp_path, cfg, "again", work=tmp_path / "work2")
    assert again.ran == [0, 1, 2]


def test_bad_inputs_are_counted_skips_and_good_documents_survive(tmp_path):
    good = [{"id": f"g{i}", "text": _prose(i)} for i in range(3)]
    lines = "".join(json.dumps(r) + "\n" for r in good)
    (tmp_path / "a-good.jsonl").write_text(lines)
    (tmp_path / "b-empty.jsonl").write_bytes(b"")
    (tmp_path / "c-mixed.jsonl").write_bytes(
        b'{"id": "utf", "text": "bad \xff\xfe bytes"}\n' + b"{not json\n"
        + json.dumps({"id": "nul", "text": "nul\x00" * 100}).encode() + b"\n"
        + json.dumps({"id": "g3", "text": _prose(3)}).encode() + b"\n")
    def many(prefix: str, start: int) -> bytes:
        return "".join(json.dumps({"id": f"{prefix}{i}", "text": _prose(start + i)}) + "\n"
                       for i in range(300)).encode()

    blob = gzip.compress(many("z", 100))
    (tmp_path / "d-trunc.jsonl.gz").write_bytes(blob[: len(blob) * 2 // 3])
    zstd = pytest.importorskip("zstandard")
    # two frames (as zstd -T or a concatenation writes them), cut inside the second
    frames = [zstd.ZstdCompressor().compress(many(p, 1000)) for p in ("s", "t")]
    (tmp_path / "e-trunc.jsonl.zst").write_bytes(frames[0] + frames[1][: len(frames[1]) // 2])
    huge = json.dumps({"id": "huge", "text": "x" * (100 << 20)})  # one 100 MB line
    (tmp_path / "f-huge.jsonl").write_text(huge + "\n" + json.dumps(
        {"id": "after-huge", "text": _prose(9)}) + "\n")
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    pq.write_table(pa.table({"id": ["p0", "p1"], "text": [_prose(20), _prose(21)]}),
                   tmp_path / "g.parquet")
    raw = (tmp_path / "g.parquet").read_bytes()
    (tmp_path / "h-trunc.parquet").write_bytes(raw[: len(raw) // 2])
    src = LocalSource(paths=[str(tmp_path / "*")], quality="none")
    cfg = DataConfig(sources=[src], minhash=MinHashConfig(enabled=False))
    counts = _run(tmp_path / "..", cfg, out=tmp_path.name + "-out")
    out = tmp_path.parent / (tmp_path.name + "-out")
    kept = {d["id"] for d in read_docs(out)}
    assert {"g0", "g1", "g2", "g3", "after-huge", "p0", "p1"} <= kept
    assert any(k.startswith("z") for k in kept) and any(k.startswith("s") for k in kept)
    d = counts["dropped"]
    assert d["invalid_utf8"] == 1 and d["malformed_json"] == 1 and d["nonprintable"] == 1
    assert d["record_too_large"] == 1 and d["unreadable"] == 3  # gzip, zstd, parquet
    assert d["empty_file"] == 1
    audit = [json.loads(x) for x in open(out / "dropped.jsonl")]
    details = " ".join(a.get("detail", "") for a in audit)
    for name in ("b-empty.jsonl", "c-mixed.jsonl:1", "c-mixed.jsonl:2", "d-trunc.jsonl.gz",
                 "e-trunc.jsonl.zst", "f-huge.jsonl:1", "h-trunc.parquet"):
        assert name in details, name
    # strict mode: the first skip stops the stage, naming the file (and line); which file's
    # task gets there first depends on the workers' timing and count: any damaged file's
    # (only the first two were accepted, and a run on a 16-core machine failed here once)
    with pytest.raises(PretrainError, match=r"unreadable input \(.*\): .*(b-empty\.jsonl|"
                       r"c-mixed\.jsonl:1|d-trunc\.jsonl\.gz|e-trunc\.jsonl\.zst|"
                       r"f-huge\.jsonl:1|h-trunc\.parquet)"):
        _run(tmp_path / "..", DataConfig(sources=[src], strict=True),
             out=tmp_path.name + "-strict")


def test_huggingface_source_streams_a_local_dataset_with_fineweb_edu_fields(tmp_path):
    pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [{"text": _prose(i), "id": f"<urn:{i}>", "url": f"https://e.org/{i}",
             "dump": "CC-MAIN-2024-10", "score": 1.0 + i * 0.7, "int_score": round(1 + i * 0.7),
             "language_score": 0.97} for i in range(6)]
    (tmp_path / "ds" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ds" / "data" / "train-0.parquet")
    src = HuggingFaceSource(name=str(tmp_path / "ds"), min_int_score=3, quality="none")
    items = list(src.read())
    docs = [d for d in items if hasattr(d, "text")]
    assert [d.id for d in docs] == [r["id"] for r in rows if r["int_score"] >= 3]
    assert docs[0].meta["dump"] == "CC-MAIN-2024-10" and "url" in docs[0].meta
    assert sum(1 for d in items if getattr(d, "reason", "") == "below_min_int_score") == 3


def test_inspect_prints_the_funnel_and_examples(tmp_path, capsys):
    _web_files(tmp_path, n_files=2)
    (tmp_path / "in-bad.jsonl").write_text('{"txt": "renamed"}\n{"text": 5}\n')
    cfg = DataConfig(sources=[LocalSource(paths=[str(tmp_path / "in-*.jsonl")])])
    _run(tmp_path, cfg)
    assert main(["data", "inspect", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "gopher_quality" in text and "too_short 2" in text
    assert main(["data", "inspect", str(tmp_path / "out"), "--reason", "too_short"]) == 0
    text = capsys.readouterr().out
    assert "f0-short" in text and "too short" in text
    assert "too_short (9 < 200)" in text   # what the filter measured, as in dropped.jsonl
    # read-level drops keep no text: their records' details (they were 'no examples')
    assert main(["data", "inspect", str(tmp_path / "out"), "--reason", "missing_text"]) == 0
    text = capsys.readouterr().out
    assert text.count("missing_text (no text kept)") == 2 and "in-bad.jsonl:2" in text
    assert main(["data", "inspect", str(tmp_path / "out"), "--reason", "nope"]) == 2
    err = capsys.readouterr().err
    assert "too_short" in err and "missing_text" in err
    assert main(["data", "inspect", str(tmp_path / "nothing")]) == 2
    # damaged audit files: one line naming the file (and line), not a traceback
    out = tmp_path / "out"
    samples = (out / "samples.jsonl").read_text()
    with open(out / "samples.jsonl", "a") as f:
        f.write('{"id": broken\n')
    lines = (out / "samples.jsonl").read_text().count("\n")
    assert main(["data", "inspect", str(out), "--reason", "too_short"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'samples.jsonl'}: line {lines} is damaged" in err
    assert "`pretrain data --force data`" in err and "Traceback" not in err
    (out / "samples.jsonl").write_text(samples)
    with open(out / "dropped.jsonl", "a") as f:
        f.write('{"reason": "missing_text", "id": \n')
    assert main(["data", "inspect", str(out), "--reason", "missing_text", "-n", "9"]) == 2
    assert f"{out / 'dropped.jsonl'}: line " in capsys.readouterr().err
    funnel = (out / "funnel.json").read_text()
    (out / "funnel.json").write_text(funnel[:30])
    assert main(["data", "inspect", str(out)]) == 2
    assert f"{out / 'funnel.json'}: unreadable or damaged" in capsys.readouterr().err


def test_benchmark_reader_reads_hellaswag_items_from_bz2_text():
    from pretrain.data.benchmarks import read_items
    path = shared_data("eval/hellaswag/hellaswag_val_full.txt.bz2")
    first = next(read_items(path))
    with bz2.open(path, "rt") as f:
        ctx, _, *endings = [f.readline().strip() for _ in range(6)]
    # the context joined to each ending, with and without its activity label
    assert first[:4] == [f"{ctx} {e}" for e in endings]
    assert first[4] == ctx.split(": ", 1)[1] + " " + endings[0] and len(first) == 8


@pytest.mark.slow
def test_ray_executor_gives_the_output_of_the_local_one(tmp_path, capsys):
    """Ray is an extra (the local executor must not need it; ``[dev]`` installs it): on a
    local Ray instance of two CPUs, its tasks, a local source's small files in one and a
    Hugging Face source's one per file, produce exactly the local run's output, with documents on the progress
    line. About 10 s on two cores, most of it Ray starting and stopping."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'pretrain[ray]'")
    pytest.importorskip("datasets")
    from .test_hf_source import _dataset
    _web_files(tmp_path, n_files=3)
    sources = [LocalSource(paths=[str(tmp_path / "in-*.jsonl")]),
               HuggingFaceSource(name=str(_dataset(tmp_path / "ds", n_files=2, per_file=5)),
                                 quality="none")]
    _run(tmp_path, DataConfig(sources=sources), "local")
    capsys.readouterr()
    # started here, so the executor uses it and leaves it running; small object store:
    # the tasks pass only their config through it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False, object_store_memory=80 << 20)
    try:
        counts = _run(tmp_path, DataConfig(sources=sources, executor="ray"), "ray")
    finally:
        ray.shutdown()
    assert counts["tasks"] == 3
    last = [x for x in capsys.readouterr().err.splitlines() if x.startswith("[data]")][-1]
    assert last.startswith("[data] 3/3 tasks") and "docs=31 " in last, last
    for p in sorted((tmp_path / "local").iterdir()):
        assert p.read_bytes() == (tmp_path / "ray" / p.name).read_bytes(), p.name


# --- failure paths ---------------------------------------------------------------------

def test_empty_and_blank_files_are_counted_skips(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    (tmp_path / "blank.txt").write_text(" \n\n")
    with gzip.open(tmp_path / "empty.jsonl.gz", "wt") as f:
        f.write("")
    (tmp_path / "ok.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    items = list(LocalSource(paths=[str(tmp_path / "*")]).read())
    skips = {Path(s.id).name: s for s in items if isinstance(s, Skip)}
    assert set(skips) == {"empty.jsonl", "blank.jsonl", "blank.txt", "empty.jsonl.gz"}
    assert all(s.reason == "empty_file" and s.id in s.detail for s in skips.values())
    assert [d.text for d in items if isinstance(d, Document)] == ["hello"]


def test_invisible_characters_inside_text_are_removed_and_counted():
    from pretrain.data.config import CleanConfig
    from pretrain.data.filters import Normalize
    step = Normalize(CleanConfig(fix_mojibake=False))
    doc = Document("d", "\ufeffone\ufefftwo zero\u200bwidth soft\u00adhyphen "
                   "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 \U0001f468\u200d\U0001f469", "web")
    assert list(step(iter([doc]))) == [doc]
    # ZWNJ (Persian spelling) and ZWJ (an emoji sequence) stay
    assert doc.text == ("onetwo zerowidth softhyphen \u0645\u06cc\u200c\u062e\u0648\u0627\u0647"
                        "\u0645 \U0001f468\u200d\U0001f469")
    assert step.stats == {"invisible_chars_removed": 4, "invisible_docs": 1}


def test_normalised_text_is_nfc_without_trailing_spaces_of_any_script():
    from pretrain.data.config import CleanConfig
    from pretrain.data.filters import LengthAndBinaryFilter, Normalize
    step = Normalize(CleanConfig(fix_mojibake=False))
    doc = Document("d", "Cafe\u00ad\u0301 au lait \u200b\nline\u3000\u00a0\u2003\t\n\fpage\f\n"
                   "end \u200b ", "web")
    assert list(step(iter([doc]))) == [doc]
    # the soft hyphen no longer keeps e and its accent apart; spaces before a line end go,
    # whatever their script, also behind an invisible character; form feeds stay
    assert doc.text == "Caf\u00e9 au lait\nline\n\fpage\f\nend"
    # a record of spaces and line breaks only (ideographic, no-break, em) is no document
    blank = Document("b", " \u3000\u00a0\u2003\t\n\n" * 60, "web")
    length = LengthAndBinaryFilter(CleanConfig())
    assert length.check(blank) == "blank"
    assert list(step(iter([blank]))) == [blank] and length.check(blank) == "blank"


def _failing_run(tmp_path: Path, records: list[dict], extra: str = "") -> tuple[int, Path]:
    src = tmp_path / "src.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'name = "r"\nruns_dir = "{tmp_path / "runs"}"\n[[data.sources]]\n'
                   f'type = "local"\npaths = ["{src}"]\nquality = "none"\n{extra}')
    return main(["data", "-c", str(cfg)]), tmp_path / "runs" / "r"


def test_a_stage_that_keeps_nothing_says_why_and_keeps_its_audit(tmp_path, capsys):
    # every record lacks the text field: the message blames the reading, not the filters
    rc, run = _failing_run(tmp_path, [{"body": f"text {i} " * 80} for i in range(4)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no source produced a document: all 4 records were skipped while read" in err
    # and the fields it has, to set text_field from ("no string field 'text'" said neither)
    assert "missing_text (read): 4" in err and (
        "no field 'text' (its fields: 'body'; text_field names the text)") in err
    # the example names the record once: its file as given (the id is its path below the
    # source's root, which the detail's path ends with)
    assert f"e.g. {tmp_path / 'src.jsonl'}:1: no field" in err and "src.jsonl:1: /" not in err
    assert main(["data", "inspect", str(run)]) == 0
    out = capsys.readouterr().out   # (the examples' line ended in nothing)
    assert "missing_text 4" in out and "examples kept per drop reason: none (a record" in out
    # every document is too short: the filter's reason with an example of its text
    rc, run = _failing_run(tmp_path, [{"id": f"d{i}", "text": f"tiny {i}"} for i in range(3)])
    err = capsys.readouterr().err
    assert rc == 2 and "no source produced" not in err
    assert "too_short (length): 3  e.g. d0 (6 < 200): tiny 0" in err
    assert main(["data", "inspect", str(run), "--reason", "too_short"]) == 0
    assert "tiny 1" in capsys.readouterr().out
    # the report shows the failure and its funnel ("not run" before)
    assert main(["report", str(run)]) == 0
    report = (run / "report.md").read_text()
    assert "| data | failed (its audit trail in data-failed/" in report
    assert "**The data stage failed**" in report and "too_short" in report
    # the failed attempts' per-task results wait for a rerun of their config
    assert len(list((run / ".work").glob("data-*"))) == 2
    # a run that keeps documents again removes the failed attempt's trail, and the other
    # configs' per-task results with its own
    rc, run = _failing_run(tmp_path, [{"text": f"long enough {i} " * 40} for i in range(3)])
    assert rc == 0 and not (run / "data-failed").exists() and (run / "data").is_dir()
    assert "unfinished work of an earlier data config" in capsys.readouterr().err
    assert not (run / ".work").exists()
    # a killed `--force data` attempt's work, with the stage up to date: removed on the next
    # command (it was left for good, as large as the documents)
    key = json.loads((run / "data" / "manifest.json").read_text())["key"]
    left = run / ".work" / f"data-{key[:16]}"
    other = run / ".work" / "data-0123456789abcdef"   # another data config's: it resumes it
    for folder in (left, other):
        folder.mkdir(parents=True)
        (folder / "t-00002.tmp-1-x.jsonl").write_text("{}\n" * 100)
    assert main(["data", "-c", str(tmp_path / "c.toml")]) == 0
    err = capsys.readouterr().err
    assert "[data] up to date" in err and f"[data] removed {left} (0.0 MB), the unfinished " \
        "work of an interrupted attempt" in err
    assert not left.exists() and other.is_dir() and str(other) not in err
    assert main(["data", "inspect", str(run)]) == 0
    assert "kept: 1 documents (local 1), " in capsys.readouterr().out   # (a Python dict)
    # failing beside the completed stage: `data inspect` on the path the failure names, and
    # on the run, reads the failure's trail (the run gave the completed stage's)
    rc, run = _failing_run(tmp_path, [{"id": "x", "text": "tiny"}])
    assert rc == 2 and (run / "data").is_dir()
    assert f"`pretrain data inspect {run / 'data-failed'}` reads it" in capsys.readouterr().err
    for where in (run / "data-failed", run):
        assert main(["data", "inspect", str(where)]) == 0
        assert "too_short 1" in capsys.readouterr().out


def test_licences_travel_from_the_sources_to_the_shards_and_the_report(tmp_path, capsys):
    body = "The harbour was quiet that morning, and the boats rocked at anchor. " * 6
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"id": f"{name}{i}", "text": f"{name} {i}. {body}"}) + "\n"
            for i in range(30)))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'''name = "lic"
runs_dir = "{tmp_path / 'runs'}"
[[data.sources]]
type = "local"
paths = ["{tmp_path / 'a.jsonl'}"]
domain = "alpha"
quality = "none"
license = "CC-BY-4.0"
terms_url = "https://example.org/terms"
[[data.sources]]
type = "local"
paths = ["{tmp_path / 'b.jsonl'}"]
domain = "beta"
quality = "none"
[data.minhash]
enabled = false
[tokenizer]
vocab_size = 300
[tokenize]
val_fraction = 0.2
''')
    assert main(["data", "-c", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "source(s) ['beta'] have no license" in err
    run = tmp_path / "runs" / "lic"
    docs = {d["domain"]: d["meta"] for d in read_docs(run / "data")}
    assert docs["alpha"]["license"] == "CC-BY-4.0" and "license" not in docs["beta"]
    shards = json.loads((run / "data" / "shards.json").read_text())
    by_source = {v["source"]: v for v in shards.values()}
    assert by_source["alpha"]["terms_url"] == "https://example.org/terms"
    assert "license" not in by_source["beta"]
    assert main(["data", "inspect", str(run)]) == 0
    out = capsys.readouterr().out
    assert "kept by licence:" in out and "CC-BY-4.0" in out
    assert "sources without a licence: beta" in out
    assert main(["tokenizer", "-c", str(cfg)]) == 0
    assert main(["tokenize", "-c", str(cfg)]) == 0
    meta = json.loads((run / "tokenize" / "meta.json").read_text())
    per = meta["splits"]["train"]["tokens_per_license"]
    assert set(per) == {"CC-BY-4.0", ""}
    assert sum(per.values()) == meta["splits"]["train"]["tokens"]
    assert main(["report", str(run)]) == 0
    report = (run / "report.md").read_text()
    assert "| alpha | CC-BY-4.0 | https://example.org/terms |" in report
    assert "| beta | **none** |" in report and "| CC-BY-4.0 |" in report
    # required: the missing licence is an error before anything runs
    assert main(["data", "-c", str(cfg), "--data.require_license=true"]) == 2
    assert "source(s) ['beta'] have no license" in capsys.readouterr().err


def test_sources_sharing_a_domain_keep_their_own_licences(tmp_path):
    body = "The lighthouse keeper wrote down the weather every evening at six. " * 6
    srcs = []
    for name, lic in (("a", "CC-BY-4.0"), ("b", "MIT")):
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"id": f"{name}{i}", "text": f"{name} {i}. {body}"}) + "\n"
            for i in range(5 if name == "a" else 3)))
        srcs.append(LocalSource(paths=[str(tmp_path / f"{name}.jsonl")], domain="books",
                                quality="none", license=lic))
    (tmp_path / "out").mkdir()
    out = stage.process(DataConfig(sources=srcs, minhash=MinHashConfig(enabled=False)),
                        tmp_path / "out")
    assert out.sources == {"books": {"license": "CC-BY-4.0 + MIT"}}
    assert {k: v["docs"] for k, v in out.licenses.items()} == {"CC-BY-4.0": 5, "MIT": 3}
    shards = json.loads((tmp_path / "out" / "shards.json").read_text())
    assert sorted(v["license"] for v in shards.values()) == ["CC-BY-4.0", "MIT"]
    assert {d["id"][0] + d["meta"]["license"] for d in read_docs(tmp_path / "out")} == {
        "aCC-BY-4.0", "bMIT"}


def test_a_records_own_licence_is_kept_apart_from_the_sources(tmp_path):
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps({"id": "x", "text": "some text " * 40, "license": "GPL-3.0"}) + "\n")
    (tmp_path / "out").mkdir()
    stage.process(DataConfig(sources=[LocalSource(paths=[str(src)], quality="none",
                                                  license="MIT")],
                             minhash=MinHashConfig(enabled=False)), tmp_path / "out")
    (doc,) = read_docs(tmp_path / "out")
    assert doc["meta"]["license"] == "MIT" and doc["meta"]["record_license"] == "GPL-3.0"


def test_a_file_dropped_whole_is_written_out_as_it_goes_not_held(tmp_path):
    """Drops and skips were held in memory, text and all, until the next kept document: a
    file dropped whole (a dump in another language) was held whole, about 2.2 bytes of
    memory per byte read. Now each is written as it happens: the peak does not grow with
    the run of drops."""
    import tracemalloc

    from pretrain.data.config import CleanConfig

    def peak(n: int) -> int:
        folder = tmp_path / f"n{n}"
        folder.mkdir()
        recs = [{"id": f"long{i}", "text": f"{i} " + "word " * 1200} for i in range(n)]
        recs += [{"id": f"bad{i}"} for i in range(n // 4)]   # no text: counted skips
        recs.append({"id": "kept", "text": _prose(1)})
        (folder / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        cfg = DataConfig(sources=[LocalSource(paths=[str(folder / "in.jsonl")], quality="none")],
                         clean=CleanConfig(max_chars=2000), minhash=MinHashConfig(enabled=False),
                         workers=1)
        tracemalloc.start()
        try:
            counts = _run(folder, cfg)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert counts["dropped"]["too_long"] == n and counts["docs_total"] == 1
        assert len((folder / "out" / "dropped.jsonl").read_text().splitlines()) == n + n // 4
        return peak

    peak(20)   # what is loaded once (the language tables, ftfy) is not counted below
    # both files over the 4 MB blocks their fingerprints are read in
    small, big = peak(1000), peak(4000)
    assert big - small < 2e6, (small, big)   # the old code: +10 MB (3,000 more 6 KB documents)



def test_a_long_dropped_documents_sample_keeps_its_start_and_length():
    """samples.jsonl is read by a person: a 250,000-character document dropped as too long
    keeps its first 100,000 characters and its length (the whole of a 230 MB one was
    written, and `inspect` then took 1.9 GB to print 100 characters)."""
    audit, samples = io.StringIO(), io.StringIO()
    log = DropLog(audit, samples, max_samples=5)
    log.drop("length", {"id": "big", "domain": "web", "text": "ab" * 125_000}, "too_long")
    log.drop("length", {"id": "small", "domain": "web", "text": "short"}, "too_short")
    big, small = map(json.loads, samples.getvalue().splitlines())
    assert big["text"] == ("ab" * 125_000)[:SAMPLE_CHARS] and big["chars"] == 250_000
    assert small["text"] == "short" and "chars" not in small
    assert [json.loads(x)["chars"] for x in audit.getvalue().splitlines()] == [250_000, 5]


def test_a_text_file_of_documents_read_as_one_is_said(tmp_path, capsys):
    """TinyStories' .txt file without ``separator`` became one document with 1,840 literal
    '<|endoftext|>' markers, trained on as text (a shipped config did so, unsaid). The stage
    says which source holds such documents and how to split the file; with the separator
    set the file is its stories and nothing is said."""
    stories = [_prose(i) for i in range(6)]
    (tmp_path / "stories.txt").write_text("\n<|endoftext|>\n".join(stories) + "\n")
    (tmp_path / "web.jsonl").write_text(json.dumps({"text": _prose(50)}) + "\n")
    one = LocalSource(paths=[str(tmp_path / "stories.txt")], domain="books", quality="none")
    web = LocalSource(paths=[str(tmp_path / "web.jsonl")], domain="web", quality="none")
    _run(tmp_path, DataConfig(sources=[web, one]), "a")
    err = capsys.readouterr().err
    assert ("data: warning: data.sources.1 (local 'books'): 1 kept document holds '<|endoftext|>', "
            "the end of a document in many text dumps, trained on as text; a text file is one "
            "document unless the source sets separator = '<|endoftext|>'") in err
    assert "data.sources.0" not in err
    split = LocalSource(paths=[str(tmp_path / "stories.txt")], domain="books", quality="none",
                        separator="<|endoftext|>")
    counts = _run(tmp_path, DataConfig(sources=[web, split]), "b")
    assert "<|endoftext|>'" not in capsys.readouterr().err
    assert counts["docs_kept"]["books"] == 6
    # kept documents only (a dropped one is trained on by no one), and another separator's
    # file is not told to set one
    (tmp_path / "short.txt").write_text("a <|endoftext|> b")   # dropped: too short
    (tmp_path / "blank.txt").write_text("\n\n".join(s.replace("Record", "Entry <|endoftext|>")
                                                     for s in stories[:2]))
    short = LocalSource(paths=[str(tmp_path / "short.txt")], domain="s", quality="none")
    blank = LocalSource(paths=[str(tmp_path / "blank.txt")], domain="b", quality="none",
                        separator="\n\n")
    _run(tmp_path, DataConfig(sources=[web, short, blank]), "c")
    err = capsys.readouterr().err
    assert "data.sources.1 (local 's'): " not in err   # said as keeping none, only
    assert ("data.sources.2 (local 'b'): 2 kept documents hold '<|endoftext|>', the end of a "
            "document in many text dumps, trained on as text\n") in err
