"""The contamination report at scale: the files of kept documents scanned apart (in worker
processes) give the report one reading of the whole corpus in order gives, the tokenize
stage's split rule included, whose first held-out documents of a domain depend on the
files before."""

import json
import multiprocessing
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pretrain.config import PretrainError
from pretrain.data.decontam import benchmark_index, find, is_member, union
from pretrain.data.docs import doc_files, read_docs
from pretrain.eval import contamination
from pretrain.eval.config import EvalConfig
from pretrain.eval.files import scored
from pretrain.tokenizer.shards import Splitter

WORDS = ("river garden stone lamp window orange cloud paper silver engine harbor quiet "
         "ladder forest candle bridge marble violin tunnel meadow copper falcon").split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _benchmarks(folder: Path, rng: random.Random) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """Two task files of random items (two file stems: two benchmarks) and their items'
    texts as they appear in documents (the question, a space, its gold answer)."""
    items: dict[str, list[str]] = {}
    for name in ("quiz", "trivia"):
        (folder / name).mkdir()
        rows = [{"query": _sentence(rng, 20), "choices": [_sentence(rng, 3), _sentence(rng, 3)],
                 "gold": 0} for _ in range(6)]
        (folder / name / f"{name}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        items[name] = [f"{r['query']} {r['choices'][0]}" for r in rows]
    files = scored(EvalConfig(tasks=[str(folder / n / f"{n}.jsonl") for n in items]))
    assert set(files) == set(items)
    return files, items


def _corpus(folder: Path, rng: random.Random, items: dict[str, list[str]]
            ) -> list[dict[str, object]]:
    """Documents of three domains in files of 1 to 9 (some files of one domain only,
    so a domain's first documents spread over files), some with a split of their own,
    a third carrying a benchmark item."""
    folder.mkdir()
    docs, i = [], 0
    for f in range(12):
        domains = ["web"] if f % 4 == 0 else ["web", "code", "books"]
        rows = []
        for _ in range(rng.randint(1, 9)):
            text = _sentence(rng, rng.randint(5, 40))
            if rng.random() < 0.35:
                name = rng.choice(sorted(items))
                text = f"{text} {rng.choice(items[name])} {_sentence(rng, 5)}"
            d: dict[str, object] = {"id": f"d{i}", "domain": rng.choice(domains), "text": text,
                                    "meta": {}}
            if rng.random() < 0.15:
                d["split"] = rng.choice(["val", "train"])
            rows.append(d)
            i += 1
        (folder / f"docs-{f:05d}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        docs += rows
    return docs


def _one_by_one(docs, files, split_of: Splitter | None) -> dict[str, tuple[int, int, int]]:
    """Benchmark -> (training documents, those with an item, distinct n-grams found): each
    document split by the tokenize stage's own rule in order and matched alone."""
    index = {name: benchmark_index([str(p)], 13, 6)[name] for name, p in files.items()}
    every = union(index)
    train, hit, found = 0, Counter(), {name: set() for name in index}
    for d in docs:
        if (split_of(d) if split_of else d.get("split")) == "val":
            continue
        train += 1
        for name, by_k in index.items():
            mine = [g[is_member(g, by_k[k])] for k, g, _, _, _ in find([d["text"]], every)
                    if k in by_k]
            g = np.concatenate(mine) if mine else np.zeros(0, np.uint64)
            hit[name] += bool(len(g))
            found[name].update(g.tolist())
    return {name: (train, hit[name], len(found[name])) for name in index}


def _counts(rep) -> dict[str, tuple[int, int, int]]:
    return {name: (r["train_docs"], r["docs"], r["ngrams_in_train"]) for name, r in rep.items()}


@pytest.mark.parametrize("seed,min_val_docs", [(0, 3), (1, 1), (2, 5), (3, 0)])
def test_files_scanned_apart_give_the_report_of_one_reading_in_order(tmp_path, seed,
                                                                    min_val_docs):
    rng = random.Random(seed)
    files, items = _benchmarks(tmp_path, rng)
    docs = _corpus(tmp_path / "data", rng, items)
    paths = doc_files(tmp_path / "data")
    assert len(paths) == 12
    rule = Splitter(0.2, min_val_docs)
    expected = _one_by_one(docs, files, Splitter(0.2, min_val_docs))
    # the case is one the rule decides: some held out by it, some items in training
    held = sum(Splitter(0.2, min_val_docs)(d) == "val" for d in docs)
    assert 0 < held < len(docs) and all(hit for _, hit, _ in expected.values())
    assert _counts(contamination.report(iter(docs), files, {}, rule)) == expected
    for workers in (1, 2):
        rep = contamination.report_files(paths, files, {}, rule, workers=workers, batch=3)
        assert _counts(rep) == expected, workers
    # without the rule only the documents marked val are held out
    assert _counts(contamination.report_files(paths, files, {}, None, workers=2)) == \
        _one_by_one(docs, files, None)


def test_every_planted_item_in_a_training_document_is_counted(tmp_path):
    """Against what was planted, not the matcher: the documents hit per benchmark are those
    in training that carry one of its items."""
    rng = random.Random(7)
    files, items = _benchmarks(tmp_path, rng)
    docs = _corpus(tmp_path / "data", rng, items)
    split = Splitter(0.2, 2)
    planted = Counter(name for d in docs if split(d) != "val"
                      for name, texts in items.items() if any(t in d["text"] for t in texts))
    rep = contamination.report_files(doc_files(tmp_path / "data"), files, {}, Splitter(0.2, 2),
                                     workers=2)
    assert {name: r["docs"] for name, r in rep.items()} == {name: planted[name] for name in items}
    assert all(0 < r["ngram_share"] <= 1 for r in rep.values())


def test_a_damaged_file_of_documents_is_an_error_naming_it(tmp_path):
    rng = random.Random(3)
    files, items = _benchmarks(tmp_path, rng)
    _corpus(tmp_path / "data", rng, items)
    bad = tmp_path / "data" / "docs-00007.jsonl"
    bad.write_bytes(bad.read_bytes() + b'{"id": "x", "text": "cut off\n')
    paths = doc_files(tmp_path / "data")
    # a process of the caller's own, which the failing scan stops its workers beside
    bystander = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
    bystander.start()
    for workers in (1, 2):
        with pytest.raises(PretrainError, match=r"docs-00007.jsonl: line \d+ is not a document"):
            contamination.report_files(paths, files, {}, Splitter(0.2, 1), workers=workers)
    assert bystander.is_alive()
    bystander.kill()
    bad.write_bytes(b'{"id": "x", "text": "\xff"}\n')   # not UTF-8
    with pytest.raises(PretrainError, match="docs-00007.jsonl: line 1 is not a document"):
        list(read_docs(tmp_path / "data"))
