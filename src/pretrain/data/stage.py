"""The data stage: sources -> per-document steps -> deduplication -> shards, with a funnel.

Execution follows datatrove's model. The input is split into tasks (one per input file of a
local or WARC source and per data file of a Hugging Face dataset, which shares its
``max_docs``/``max_bytes`` out over them; one for a local source with such a limit, or a
stream with no files to list). Each task (``runner.py``) runs the per-document steps
(normalisation, length, the web chain for ``quality = "web"`` sources, PII,
decontamination) and writes, in the stage's work folder, its kept documents, their dedup
keys, its drop records and counts, then a ``.done`` marker, last; ``executor.py`` runs the
tasks here, in worker processes or on Ray. A killed run resumes from the markers; a task
without one is redone from scratch, so the output is the same as an uninterrupted run's.

Deduplication (``dedup.py``) then runs over the keys only, and the kept documents are
written as ``docs-NNNNN.jsonl`` with their provenance (``docs.py`` is the output format).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from ..config import PretrainError
from ..log import log0
from ..rundir import RunDir, StageRun, remove_work
from .audit import FAILED, why_empty
from .config import DataConfig
from .decontam import benchmark_index, hits, save_index
from .dedup import deduplicate
from .docs import DataOutput, ShardWriter
from .executor import execute
from .funnel import DropLog, Funnel, format_funnel
from .runner import TMP_MARK, Task, plan_tasks
from .sources import LocalSource

# the end-of-document marker of GPT-2's tokenizer, between the documents of many text dumps
# (TinyStories' .txt files, OpenWebText): a kept document holding it was likely several
ENDOFTEXT = "<|endoftext|>"


def run(run: StageRun, cfg: DataConfig) -> None:
    """The stage body. Per-task results live outside the stage's temporary folder, so that a
    killed run resumes from them; they are keyed by the stage key and removed once it
    completes, with those a killed run of another data config left (their output can no
    longer be the run's). ``--force data`` starts them over."""
    work = RunDir(run.root).data_work(run.key)
    failed = run.root / FAILED
    shutil.rmtree(failed, ignore_errors=True)
    try:
        out = process(cfg, run.out, work=work, fresh=run.forced)
    except NothingKept as e:
        # the stage's output folder goes with the failure; its audit trail stays readable
        failed.mkdir()
        for name in AUDIT_FILES:
            shutil.copy2(run.out / name, failed / name)
        raise PretrainError(f"{e}\nThe audit trail is kept in {failed}; `pretrain data "
                            f"inspect {failed}` reads it (--reason R for examples).") from None
    run.counts.update(out.counts())
    for folder in remove_work(work.parent, "data-*", work):
        log0(f"data: removed {folder}, the unfinished work of an earlier data config")


class NothingKept(PretrainError):
    """The data stage kept no document; the message says why."""


AUDIT_FILES = ("funnel.json", "dropped.jsonl", "samples.jsonl")


def process(cfg: DataConfig, out: Path, work: Path | None = None,
            fresh: bool = False) -> DataOutput:
    """Run the stage into ``out``. ``work`` holds per-task results between attempts (a
    rerun after a kill skips the tasks marked done; default: inside ``out``, removed after);
    ``fresh`` discards them first."""
    own_work = work is None
    work = work or out / ".work"
    if fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    _sweep_attempts(work)
    tasks = plan_tasks(cfg)
    _warn_english_rules(cfg)
    _keep_plan(tasks, work)
    ngrams_path = _prepare_benchmarks(cfg, work)
    todo = [t for t in tasks if not (work / f"{t.stem}.done").exists()]
    if len(todo) < len(tasks):
        log0(f"data: {len(tasks) - len(todo)} of {len(tasks)} tasks already done, resuming")
    execute(cfg, todo, work, ngrams_path)

    funnel = Funnel()
    stats = []
    for t in tasks:
        st = json.loads((work / f"{t.stem}.stats.json").read_text(encoding="utf-8"))
        funnel.merge(st["funnel"])
        stats.append(st)
    removed = deduplicate(cfg, tasks, work, funnel)
    governance = _governance(cfg)
    writer = ShardWriter(out, cfg.docs_per_shard, [s.governance() for s in cfg.sources])
    licenses: dict[str, dict[str, int]] = {}
    kept: Counter[str] = Counter()
    kept_bytes: Counter[str] = Counter()
    kept_src: Counter[int] = Counter()          # by source index: sources may share a label
    marked: Counter[int] = Counter()            # kept documents holding ENDOFTEXT, by source
    deduped_src: dict[int, Counter[str]] = {}
    with open(out / "dropped.jsonl", "w", encoding="utf-8") as audit, \
            open(out / "samples.jsonl", "w", encoding="utf-8") as sample_f:
        log = DropLog(audit, sample_f, cfg.audit_samples)
        for k, (t, st) in enumerate(zip(tasks, stats, strict=True)):
            if not t.continues(tasks[k - 1] if k else None):   # a file's parts: one run
                # the drops of all its parts, then each part's duplicates: the order of
                # one task reading the file whole (each part's own, then its duplicates,
                # put a part's duplicates before a later part's unreadable rows)
                end = k + 1
                while end < len(tasks) and tasks[end].continues(tasks[end - 1]):
                    end += 1
                for u in tasks[k:end]:
                    log.copy(work / f"{u.stem}.drops.jsonl", work / f"{u.stem}.samples.jsonl")
                writer.start_task(t, st)
            gone = removed.of_task(k)
            # a task's documents all carry its source's label; sizes come from the keys
            sizes = np.load(work / f"{t.stem}.keys.npy", mmap_mode="r")[:, 1]
            domain = st["source"]
            lic = licenses.setdefault(cfg.sources[t.source].license, {"docs": 0, "bytes": 0})
            with open(work / f"{t.stem}.jsonl", encoding="utf-8") as f:
                for i, line in enumerate(f):
                    if i in gone:
                        reason, of, same = gone[i]
                        # the kept document stands for it; an exact duplicate of one that was
                        # itself a near duplicate names that one too (the kept one's text differs)
                        log.drop("dedup", json.loads(line), reason, detail=f"duplicate of {of}"
                                 + (f" (identical to {same}, itself a near duplicate of it)"
                                    if same else ""), duplicate_of=of,
                                 **({"identical_to": same} if same else {}))
                        deduped_src.setdefault(t.source, Counter())[reason] += 1
                        continue
                    writer.write_line(line)
                    kept_src[t.source] += 1
                    marked[t.source] += ENDOFTEXT in line   # as JSON writes it: unescaped
                    kept[domain] += 1
                    kept_bytes[domain] += int(sizes[i])
                    lic["docs"] += 1
                    lic["bytes"] += int(sizes[i])
    writer.close()
    rows = funnel.as_json()
    (out / "funnel.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    (out / "shards.json").write_text(json.dumps(writer.provenance, indent=1) + "\n",
                                     encoding="utf-8")
    if own_work:
        shutil.rmtree(work)
    got = [next(r["docs_out"] for r in st["funnel"] if r["step"] == "read") for st in stats]
    read_src: Counter[int] = Counter()   # documents read, by source index
    for t, n in zip(tasks, got, strict=True):
        read_src[t.source] += n
    notes = _source_notes(cfg, tasks, stats, got, read_src, kept_src, deduped_src, marked)
    if not writer.n:
        raise NothingKept("the data stage kept no documents:\n" + why_empty(out)
                          + "".join(f"\n{n}" for n in notes))
    read: dict[str, int] = {}   # by label: sources may share one
    for i, count in read_src.items():   # every source with a task, one that read nothing too
        read[cfg.sources[i].label()] = read.get(cfg.sources[i].label(), 0) + count
    decontam = funnel.rows.get("decontam")
    log0(format_funnel(rows))
    log0(f"data: kept {writer.n} docs ({sum(kept_bytes.values()) / 1e6:.1f} MB) {dict(kept)}")
    for note in notes:   # after the funnel, the stage's last lines
        log0(f"data: warning: {note}")
    return DataOutput(docs_kept=dict(kept), bytes_kept=dict(kept_bytes), docs_total=writer.n,
                      docs_read=read, dropped=dict(funnel.dropped()),
                      decontam_hits=hits(dict(decontam["stats"])) if decontam else {},
                      decontam_match={"ngram": cfg.decontam.ngram,
                                      "min_item_words": cfg.decontam.min_item_words},
                      shards=writer.shards, tasks=len(tasks), sources=governance,
                      licenses={k: v for k, v in licenses.items() if v["docs"]})


def _source_notes(cfg: DataConfig, tasks: list[Task], stats: list[dict], got: list[int],
                  read: Counter[int], kept: Counter[int], deduped: dict[int, Counter[str]],
                  marked: Counter[int]) -> list[str]:
    """A line for each source whose files ended before their shares of its max_docs, and
    for each that read no document (every record skipped: a wrong
    ``text_field``, an unreadable file) or kept none, with its top reasons: the funnel
    sums sources, so one source lost whole would show only as a count there."""
    reasons: dict[int, Counter[str]] = {}
    for t, st in zip(tasks, stats, strict=True):
        mine = reasons.setdefault(t.source, Counter())
        for row in st["funnel"]:
            mine.update(row["dropped"])
    notes = []   # (got: the documents each task read; read: by source)
    for i, src in enumerate(cfg.sources):
        name = f"data.sources.{i} ({src.type} '{src.label()}')"
        caps = [(t.max_docs, n) for t, n in zip(tasks, got, strict=True) if t.source == i]
        short = sum(cap - n for cap, n in caps if cap and n < cap)
        if src.max_docs and short and any(cap and n >= cap for cap, n in caps):
            # a file that ends before its share leaves the rest unread, which the others,
            # at their share, could have given: unsaid, max_docs = 90 read 65
            notes.append(f"{name} read {read[i]:,} documents of its max_docs = "
                         f"{src.max_docs:,}: the limit is shared over its {len(caps)} files "
                         f"(about {src.max_docs // max(len(caps), 1):,} each), and the "
                         f"files with fewer left {short:,} unread, not moved to the others "
                         "(that would make the output depend on which task ran first)")
        if kept[i]:
            continue
        why = reasons.get(i, Counter()) + deduped.get(i, Counter())
        top = ", ".join(f"{r} {k:,}" for r, k in why.most_common(3)) or "no records"
        if not read[i]:
            notes.append(f"{name} produced no document ({top}); check its paths, format "
                         "and text_field")
            continue
        line = f"{name} kept none of its {read[i]:,} documents (drops and skips: {top})"
        if "too_long" in why and _whole_text_files(src, tasks, i):
            line += ("; a text file is one document unless the source sets separator "
                     "(e.g. '<|endoftext|>' or '\\n\\n')")
        notes.append(line)
    for i, n in sorted(marked.items()):
        src = cfg.sources[i]
        if not n or (isinstance(src, LocalSource) and src.separator == ENDOFTEXT):
            continue
        txt = _whole_text_files(src, tasks, i)
        notes.append(f"data.sources.{i} ({src.type} '{src.label()}'): {n:,} kept document"
                     f"{'s hold' if n > 1 else ' holds'} '{ENDOFTEXT}', the end of a document "
                     "in many text dumps, trained on as text" + (
                         f"; a text file is one document unless the source sets separator = "
                         f"'{ENDOFTEXT}'" if txt else ""))
    return notes


def _whole_text_files(src: object, tasks: list[Task], i: int) -> bool:
    """Whether source ``i`` reads text files each as one document (no separator)."""
    return isinstance(src, LocalSource) and not src.separator and (src.format == "txt" or any(
        f.lower().endswith((".txt", ".txt.gz", ".txt.zst"))
        for t in tasks if t.source == i for f in t.files or []))


def _warn_english_rules(cfg: DataConfig) -> None:
    """The Gopher, C4 and FineWeb rules count whitespace-split words, English stop words and
    line-end punctuation: a language filter that lets other languages through (or none at
    all) sends their text to rules that drop it (Gopher's stop words drop nearly all German
    or Russian; a Chinese page is 4 "words", and FineWeb's list ratio drops it too; Thai
    ends no line with punctuation). Said once."""
    lang = cfg.language
    other = [x for x in lang.languages if x != "en"] if lang.languages else ["any language"]
    through = f"data.language lets {', '.join(other)}" if lang.enabled else \
        "data.language is off: it lets every language"
    rules = [n for n, on in (("gopher_quality", cfg.gopher_quality.enabled),
                             ("gopher_repetition", cfg.gopher_repetition.enabled),
                             ("c4", cfg.c4.enabled), ("fineweb", cfg.fineweb.enabled)) if on]
    if (other or not lang.enabled) and rules and any(s.quality == "web" for s in cfg.sources):
        log0(f"data: warning: {through} through to rules written for English "
             f"({', '.join(rules)}: whitespace-split words, English stop words, line-end "
             "punctuation), which drop most text in other languages (Gopher's stop words are "
             "English ones) and nearly all text without spaces between words (Chinese, "
             "Japanese, Thai); turn them off in [data.<rule>] or give such sources quality = "
             "'none'")


def _governance(cfg: DataConfig) -> dict[str, dict[str, str]]:
    """Source label -> licence fields; sources sharing a label share one entry, with
    differing values joined by " + ". Warns about sources without a licence."""
    out: dict[str, dict[str, str]] = {}
    for src in cfg.sources:
        mine = out.setdefault(src.label(), {})
        for k, v in src.governance().items():
            mine[k] = v if mine.get(k, v) == v else f"{mine[k]} + {v}"
    if cfg.unlicensed():
        log0(f"data: warning: source(s) {cfg.unlicensed()} have no license; set "
             "data.sources.N.license (data.require_license = true makes this an error)")
    return out


def _keep_plan(tasks: list[Task], work: Path) -> None:
    """Record what each task reads in ``work``; where an unfinished run planned otherwise
    (a parquet file cut at another ``data.task_bytes``, or its footer unreadable then), a
    task's number names other input now, so the finished tasks are redone, said in a line.
    A folder of finished tasks without a plan (left by a version before parts) is trusted
    only where nothing is cut or grouped now: its numbering was one task per file, as it
    is then."""
    path = work / "plan.json"
    plan = json.loads(json.dumps([t.plan() for t in tasks]))
    done = list(work.glob("t-*.done"))
    known = json.loads(path.read_text(encoding="utf-8")) if path.exists() else \
        (plan if not any(t.part or len(t.files or []) > 1 for t in tasks) else None)
    if done and known != plan:
        log0(f"data: the tasks are planned otherwise than in the unfinished run (a parquet "
             f"file cut at another data.task_bytes, small files grouped otherwise, or an "
             f"earlier version's plan?); its {len(done)} finished tasks are redone")
        for p in done:     # the markers first: a kill in between leaves no task done
            p.unlink()     # whose files are gone
        for p in work.glob("t-*"):
            p.unlink()
    tmp = work / f"plan.json{TMP_MARK}"
    tmp.write_text(json.dumps(plan), encoding="utf-8")
    os.replace(tmp, path)


def _sweep_attempts(work: Path) -> None:
    """Remove the temporary files of attempts that died. Called with the run directory's
    lock held: the process that held it before is gone, and its workers died with it."""
    stale = [p for p in work.iterdir() if TMP_MARK in p.name]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log0(f"data: removed {len(stale)} temporary files of an interrupted attempt")


def _prepare_benchmarks(cfg: DataConfig, work: Path) -> str:
    files = cfg.decontam.files()
    if not (cfg.decontam.enabled and files):
        return ""
    path = work / "benchmark_index.npz"
    if not path.exists():
        index = benchmark_index(files, cfg.decontam.ngram, cfg.decontam.min_item_words)
        tmp = work / f"benchmark_index{TMP_MARK}{os.getpid()}.npz"
        save_index(index, tmp)
        os.replace(tmp, path)
        log0(f"data: decontaminating against {len(index)} benchmarks ({', '.join(index)})")
    return str(path)
