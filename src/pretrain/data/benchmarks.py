"""Benchmark files read as the texts their items become when they leak into web pages.

A benchmark item leaks as a question followed by its answer (quiz pages, copied datasets),
a story with its ending, a sentence with its blank filled in; rarely as one field alone.
Indexing field by field (each string of a record alone, or all of them joined in file
order, which puts the choices before the question) missed a quarter of the documents that
carried a planted item: "question + answer" then formed no shared 13-gram. So each item
is rendered the way it reads in a document, one text per candidate answer:

- ``{"query", "choices"}`` (ARC, PIQA, OpenBookQA, COPA, BoolQ, llm-foundry's HellaSwag):
  the query joined to each choice, and to all of them in order (a quiz listing them);
- ``{"context_options", "continuation"}`` (WinoGrande, WSC): each filled-in sentence;
- ``{"context", "continuation"}`` (LAMBADA, Jeopardy, BIG-bench): the two joined;
- HellaSwag's text file (context, gold index, four endings; six lines an item): the
  context joined to each ending;
- the Hugging Face datasets' own schemas, in jsonl, parquet or ``.arrow`` files (ARC and
  OpenBookQA's question + choices, PIQA's goal + solutions, WinoGrande's sentence with its
  blank filled, HellaSwag's ctx + endings, COPA, BoolQ, question/answer sets);
- any other record: its strings joined in file order (the old behaviour);
- any other text file: one passage per line, whole (WikiText).

llm-foundry's prompt scaffolding (a leading ``Question:``/``Passage:`` label or a
HellaSwag activity label, a trailing ``Answer:``) is not what a copied page carries; the
text is indexed both with and without it. Which choice is gold is not used: a page that
pairs a question with a wrong answer still copies the question.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import ConfigError

# a short leading label ("Question: ", "Passage: ", "Roof shingle removal: ") and a
# trailing answer prompt ("\nAnswer:")
_LABEL = re.compile(r"^\s*[A-Z][\w ,'()-]{0,40}:\s+")
_PROMPT = re.compile(r"\s*\b(?:Answer|A)\s*:\s*$")


COMPRESSED = (".gz", ".bz2", ".xz", ".zst")


def open_text(path: Path, errors: str = "strict") -> Any:
    """A benchmark or task file as text: plain, .gz, .bz2, .xz or .zst (zstandard
    installed); a UTF-8 BOM is not part of the first record. The eval stage reads its task
    files through this too, so decontamination reads every file it scores. ``errors``: as
    ``open``'s ("surrogateescape" lets the reader name the line that is not UTF-8)."""
    name, enc = path.name.lower(), "utf-8-sig"
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise ConfigError(f"{path}: a .zst file needs zstandard: pip install "
                              "'pretrain[zstd]'") from None
        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
        return io.TextIOWrapper(raw, encoding=enc, errors=errors)
    opener: Any = {".bz2": bz2.open, ".gz": gzip.open, ".xz": lzma.open}.get(
        Path(name).suffix, open)
    return opener(path, "rt", encoding=enc, errors=errors)


def base_name(path: Path) -> str:
    """The file name without a compression suffix."""
    name = path.name.lower()
    for suffix in COMPRESSED:
        name = name.removesuffix(suffix)
    return name


def bare(text: str) -> str:
    """The text without llm-foundry's prompt scaffolding."""
    return _PROMPT.sub("", _LABEL.sub("", text, count=1)).strip()


def joined(firsts: list[str], seconds: list[str]) -> list[str]:
    """Each first part joined to each second part, the first part also without its
    scaffolding when it has some."""
    out = []
    for a in firsts:
        for head in dict.fromkeys([a.strip(), bare(a)]):
            out += [f"{head} {b.strip()}" for b in seconds]
    return out


def _choices(x: Any) -> list[str]:
    """A choice list: strings, or Hugging Face's {"text": [...], "label": [...]}."""
    if isinstance(x, dict):
        x = x.get("text")
    return [str(c) for c in x if isinstance(c, (str, int, float))] if isinstance(x, list) else []


def _with_answers(question: str, answers: list[str]) -> list[str]:
    """Each answer after the question, and the question with its answers listed."""
    return joined([question], answers + ([" ".join(answers)] if len(answers) > 1 else []))


def item_texts(rec: Any) -> list[str]:
    """The texts one record of a benchmark appears as in a document: llm-foundry's
    schemas, and the Hugging Face datasets' own (ARC/OpenBookQA, PIQA, WinoGrande,
    HellaSwag, COPA, BoolQ, question/answer sets); anything else its strings joined."""
    if not isinstance(rec, dict):
        strings = list(_strings(rec))
        return [" ".join(strings)] if strings else []
    get = rec.get

    def text(key: str) -> str | None:
        v = get(key)
        return v if isinstance(v, str) else None
    query, context, cont = text("query"), text("context"), text("continuation")
    options = get("context_options")
    question = text("question") or text("question_stem")
    sentence, goal, ctx = text("sentence"), text("goal"), text("ctx")
    premise, passage = text("premise"), text("passage")
    if query is not None and _choices(get("choices")):
        return _with_answers(query, _choices(get("choices")))
    if isinstance(options, list) and cont is not None:
        return joined([c for c in options if isinstance(c, str)], [cont])
    if context is not None and cont is not None:
        return joined([context], [cont])
    if sentence is not None and "_" in sentence and "option1" in rec:     # WinoGrande
        return [sentence.replace("_", str(get(k)), 1) for k in ("option1", "option2") if k in rec]
    if goal is not None and "sol1" in rec:                                 # PIQA
        return _with_answers(goal, [str(get(k)) for k in ("sol1", "sol2") if k in rec])
    if ctx is not None and _choices(get("endings")):                       # HellaSwag
        return joined([ctx], _choices(get("endings")))
    if premise is not None and "choice1" in rec:                           # COPA
        return joined([premise], [str(get(k)) for k in ("choice1", "choice2") if k in rec])
    if question is not None and _choices(get("choices")):                  # ARC, OpenBookQA
        return _with_answers(question, _choices(get("choices")))
    if passage is not None and question is not None:                       # BoolQ
        return [passage, f"{question} {get('answer', '')}".strip()]
    if question is not None and "answer" in rec:                           # QA sets
        answer = get("answer")
        answers = _choices(answer) or ([str(answer.get("value", ""))] if isinstance(answer, dict)
                                       else [str(answer)])
        return _with_answers(question, answers)
    strings = list(_strings(rec))
    return [" ".join(strings)] if strings else []


def _strings(x: Any) -> Iterator[str]:
    if isinstance(x, str):
        yield x
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)


def _is_hellaswag(head: list[str]) -> bool:
    """HellaSwag's six-lines-an-item text file: the second line of every item is the gold
    index (0-3)."""
    return len(head) >= 12 and all(head[i].strip() in {"0", "1", "2", "3"} for i in (1, 7))


def _table_records(path: Path) -> Iterator[Any]:
    """The rows of a parquet file or an Arrow IPC file (the ``.arrow`` files ``datasets``
    writes are IPC streams), as dicts."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    if path.name.lower().endswith(".parquet"):
        table = pq.read_table(path)
    else:
        with open(path, "rb") as f:
            try:
                table = pa.ipc.open_stream(f).read_all()
            except pa.ArrowInvalid:
                f.seek(0)
                table = pa.ipc.open_file(f).read_all()
    for batch in table.to_batches():
        yield from batch.to_pylist()


def read_items(path: Path) -> Iterator[list[str]]:
    """Each item of a benchmark file as the texts it appears as."""
    name = path.name.lower()
    if name.endswith((".parquet", ".arrow")):
        try:
            records = list(_table_records(path))
        except Exception as e:  # pyarrow raises several types for a file it cannot read
            raise ConfigError(f"benchmark file {path}: cannot read it ({e})") from None
        for rec in records:
            texts = item_texts(rec)
            if texts:
                yield texts
        return
    try:
        with open_text(path) as f:
            if base_name(path).endswith((".jsonl", ".json")):
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ConfigError(f"{path}:{lineno}: not JSON ({e})") from None
                    texts = item_texts(rec)
                    if texts:
                        yield texts
                return
            lines = [line.rstrip("\n") for line in f]
    except ConfigError:
        raise
    except Exception as e:   # noqa: BLE001 -- each codec raises its own type (LZMAError, ZstdError)
        raise ConfigError(f"benchmark file {path}: cannot read it ({type(e).__name__}: {e})"
                          ) from None
    if _is_hellaswag(lines[:12]):
        for i in range(0, len(lines) - 5, 6):
            yield joined([lines[i]], lines[i + 2:i + 6])
    else:
        yield from ([line] for line in lines if line.strip())


def benchmark_texts(path: Path) -> list[str]:
    """Every text a benchmark file's items appear as."""
    return [t for texts in read_items(path) for t in texts]


def name_of(path: str | Path) -> str:
    """A benchmark's name in counts and reports: the file name up to its first dot."""
    return Path(path).name.split(".")[0]
