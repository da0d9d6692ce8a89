"""MinHash near-duplicate detection: estimates, LSH recall and precision on planted
near-duplicates, and deduplication through the data stage (across tasks, by scope,
independent of the number of worker processes)."""

import json
import random
from pathlib import Path

import numpy as np

from pretrain.data import executor, minhash, runner, stage
from pretrain.data.config import DataConfig, MinHashConfig
from pretrain.data.docs import read_docs
from pretrain.data.minhash import MinHasher, estimate_jaccard, simplify
from pretrain.data.sources import LocalSource


def _vocab(rng: random.Random, n: int = 5000) -> list[str]:
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
            for _ in range(n)]


def _edit(words: list[str], rate: float, rng: random.Random, vocab: list[str]) -> list[str]:
    out = []
    for w in words:
        r = rng.random()
        if r < rate / 3:
            continue                              # delete
        if r < 2 * rate / 3:
            out += [w, rng.choice(vocab)]         # insert
        elif r < rate:
            out.append(rng.choice(vocab))         # substitute
        else:
            out.append(w)
    return out


def _jaccard(a: str, b: str, n: int = 5) -> float:
    wa, wb = simplify(a).split(), simplify(b).split()
    sa = {tuple(wa[i:i + n]) for i in range(len(wa) - n + 1)}
    sb = {tuple(wb[i:i + n]) for i in range(len(wb) - n + 1)}
    return len(sa & sb) / len(sa | sb)


def test_simplify_is_finewebs_normalisation():
    assert simplify("Héllo, WORLD!  It's 2024\n\tnow_here") == "hello world it s 0 now here"
    # a number is one 0 whatever its length (as datatrove's simplify_text: digits with one
    # "," or "." group); it was a 0 per digit, so pages differing in prices and dates
    # had other shingles (20% of C4 documents with renumbered numbers were missed)
    assert simplify("Price: $1,299.99 on May 3, 2019") == "price 0 0 on may 0 0"
    page = "Flights from {} to {} cost ${} this week, down from ${} on {} May {}. " * 4
    a = page.format(*[7, 12, 99, 1250, 3, 2019] * 4)
    b = page.format(*[1201, 3, 1099, 75, 28, 2024] * 4)
    assert simplify(a) == simplify(b)
    hasher = MinHasher(MinHashConfig())
    assert (hasher.keys([a]) == hasher.keys([b])).all()


def test_signature_estimates_match_exact_jaccard():
    rng = random.Random(0)
    vocab = _vocab(rng)
    hasher = MinHasher(MinHashConfig())
    errors = []
    for _ in range(60):
        base = [rng.choice(vocab) for _ in range(400)]
        other = _edit(base, rng.choice([0.02, 0.05, 0.1, 0.2]), rng, vocab)
        a, b = " ".join(base), " ".join(other)
        sig = hasher.signatures([a, b])
        errors.append(estimate_jaccard(sig[0], sig[1]) - _jaccard(a, b))
    errors_arr = np.array(errors)
    # 112 hashes: standard error <= 0.047; the mean error of 60 pairs is within ~0.02
    assert abs(errors_arr.mean()) < 0.03 and np.abs(errors_arr).max() < 0.2
    # signatures do not depend on the batch a document is hashed in
    texts = [" ".join(rng.choice(vocab) for _ in range(50)) for _ in range(5)]
    together = hasher.signatures(texts)
    alone = np.stack([hasher.signatures([t])[0] for t in texts])
    assert np.array_equal(together, alone)


def _lsh_clusters(texts: list[str], cfg: MinHashConfig) -> np.ndarray:
    hasher = MinHasher(cfg)
    keys = hasher.band_keys(hasher.signatures(texts))
    uf = minhash.UnionFind(len(texts))
    alive = np.ones(len(texts), bool)
    for b in range(cfg.bands):
        minhash.link_equal_keys(keys[:, b], alive, uf)
    return uf.roots()


def test_lsh_recall_follows_the_s_curve_and_precision_is_exact():
    rng = random.Random(1)
    vocab = _vocab(rng)
    cfg = MinHashConfig()
    bases = [[rng.choice(vocab) for _ in range(300)] for _ in range(200)]
    texts = [" ".join(b) for b in bases]
    planted: dict[float, list[int]] = {}
    for rate in (0.0, 0.02, 0.2):
        for i in range(60):
            planted.setdefault(rate, []).append(len(texts))
            texts.append(" ".join(_edit(bases[i], rate, rng, vocab)))
    roots = _lsh_clusters(texts, cfg)
    # precision: no two distinct base documents end up in one cluster
    assert len(set(roots[:200].tolist())) == 200
    recall = {rate: np.mean([roots[j] == roots[j - 200 - 60 * k]
                             for j in planted[rate]])
              for k, rate in enumerate(planted)}
    # theory 1 - (1 - J^8)^14: J = 1 -> 1; J ~ 0.85 (2% edits) -> ~0.99; J ~ 0.3 (20%) -> ~0
    assert recall[0.0] == 1.0
    assert recall[0.02] >= 0.9
    assert recall[0.2] <= 0.1
    assert abs(cfg.threshold() - 0.719) < 1e-3


def _write(path: Path, docs: list[tuple[str, str]]) -> None:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs))


def _corpus(tmp_path: Path) -> tuple[list[str], list[str]]:
    rng = random.Random(2)
    vocab = _vocab(rng)
    bases = [[rng.choice(vocab) for _ in range(120)] for _ in range(40)]
    a = [(f"a{i}", " ".join(b)) for i, b in enumerate(bases[:20])]
    # file b: 10 new documents, then a near-copy (1% edits) of each of a0..a9
    b = [(f"b{i}", " ".join(bases[20 + i])) for i in range(10)]
    b += [(f"copy{i}", " ".join(_edit(bases[i], 0.01, rng, vocab) + ["tail"])) for i in range(10)]
    _write(tmp_path / "a.jsonl", a)
    _write(tmp_path / "b.jsonl", b)
    return [d for d, _ in a + b[:10]], [f"copy{i}" for i in range(10)]


def _run(tmp_path: Path, out: str, sources, **kw) -> tuple[list[str], dict]:
    cfg = DataConfig(sources=sources, **kw)
    counts: dict = {}
    (tmp_path / out).mkdir()
    counts.update(stage.process(cfg, tmp_path / out).counts())
    return [d["id"] for d in read_docs(tmp_path / out)], counts


def test_stage_removes_near_duplicates_across_files(tmp_path):
    originals, copies = _corpus(tmp_path)
    src = LocalSource(paths=[str(tmp_path / "*.jsonl")], domain="x", quality="none")
    kept, counts = _run(tmp_path, "out", [src])
    assert kept == originals  # the first of each cluster (in file order) stays
    assert counts["dropped"] == {"near_duplicate": 10}
    audit = [json.loads(x) for x in open(tmp_path / "out" / "dropped.jsonl")]
    assert {a["id"]: a["detail"] for a in audit} == {
        f"copy{i}": f"duplicate of a{i}" for i in range(10)}
    samples = [json.loads(x) for x in open(tmp_path / "out" / "samples.jsonl")]
    assert samples and all(s["reason"] == "near_duplicate" and s["text"] for s in samples)


def test_texts_without_words_are_not_near_duplicates_of_each_other(tmp_path):
    """Emoji, box drawing and punctuation have no word shingles (an all-ones signature): they
    were all one 'near-duplicate' cluster; now each meets only its exact copies."""
    originals, _ = _corpus(tmp_path)
    wordless = [("emoji", "\U0001f600\U0001f680\u2728 " * 90), ("box", "\u2554\u2550\u2557\n" * 90),
                ("punct", "!?.,;:-- " * 50), ("arrows", "\u2190\u2192\u2191\u2193 " * 90),
                ("emoji-again", "\U0001f600\U0001f680\u2728 " * 90)]
    _write(tmp_path / "c.jsonl", wordless)
    src = LocalSource(paths=[str(tmp_path / "*.jsonl")], domain="x", quality="none")
    kept, counts = _run(tmp_path, "out", [src])
    assert kept == originals + ["emoji", "box", "punct", "arrows"]
    assert counts["dropped"] == {"near_duplicate": 10, "exact_duplicate": 1}
    # a one-word difference still links two texts that have words
    hasher = MinHasher(MinHashConfig())
    text = " ".join(f"w{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(200))  # no digits: a 0 each
    keys = hasher.keys([text, text + " extra", "\u2728", "\u2729"])
    assert (keys[0] == keys[1]).any() and not (keys[2] == keys[3]).any()


def test_scope_source_keeps_duplicates_that_are_in_different_sources(tmp_path):
    _, copies = _corpus(tmp_path)
    a = LocalSource(paths=[str(tmp_path / "a.jsonl")], domain="a", quality="none")
    b = LocalSource(paths=[str(tmp_path / "b.jsonl")], domain="b", quality="none")
    kept, _ = _run(tmp_path, "per-source", [a, b])
    assert set(copies) <= set(kept)
    kept, counts = _run(tmp_path, "global", [a, b], minhash=MinHashConfig(scope="all"))
    assert not set(copies) & set(kept) and counts["dropped"] == {"near_duplicate": 10}



def test_the_audit_names_a_kept_document_when_an_exact_root_was_a_near_duplicate(tmp_path):
    """c0 is an exact copy of b0, which is itself a near copy of a0: c0's audit record said
    "duplicate of b0", a document removed too; then only "exact duplicate of a0", a text
    other than its own. It names the kept one and the identical one."""
    rng = random.Random(1)
    vocab = _vocab(rng)
    p, q = [rng.choice(vocab) for _ in range(300)], [rng.choice(vocab) for _ in range(300)]
    near = " ".join(p[:-3] + [rng.choice(vocab) for _ in range(3)])
    _write(tmp_path / "a.jsonl", [("a0", " ".join(p)), ("a1", " ".join(q))])
    _write(tmp_path / "b.jsonl", [("b0", near), ("b1", "  \n".join(p)), ("b2", " ".join(q) + " ")])
    _write(tmp_path / "c.jsonl", [("c0", near)])
    src = LocalSource(paths=[str(tmp_path / "*.jsonl")], domain="x", quality="none")
    kept, counts = _run(tmp_path, "out", [src])
    assert kept == ["a0", "a1"]
    assert counts["dropped"] == {"exact_duplicate": 3, "near_duplicate": 1}
    audit = {a["id"]: a["detail"] for a in map(json.loads, open(tmp_path / "out" / "dropped.jsonl"))}
    assert audit == {"b0": "duplicate of a0", "b1": "duplicate of a0", "b2": "duplicate of a1",
                     "c0": "duplicate of a0 (identical to b0, itself a near duplicate of it)"}
    rows = {a["id"]: a for a in map(json.loads, open(tmp_path / "out" / "dropped.jsonl"))}
    assert rows["c0"]["duplicate_of"] == "a0" and rows["c0"]["identical_to"] == "b0"
    assert "identical_to" not in rows["b1"]   # identical to a0, the kept one itself

def test_output_does_not_depend_on_worker_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "GROUP_FILES", 1)   # a task a file: two tasks of small files
    _corpus(tmp_path)
    src = LocalSource(paths=[str(tmp_path / "*.jsonl")], domain="x", quality="none")
    _run(tmp_path, "one", [src], workers=1)
    monkeypatch.setattr(executor, "_MIN_PARALLEL_BYTES", 0)  # two processes even for tiny input
    _run(tmp_path, "two", [src], workers=2)
    for name in ("docs-00000.jsonl", "docs-00001.jsonl", "dropped.jsonl", "funnel.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_dedup_memory_is_tens_of_bytes_a_document(tmp_path):
    """What deduplication holds besides the mapped keys: two union-finds, a column and its
    sort, and the removed documents as arrays. A dict entry per removed document and three
    per-document index arrays made it ~150 bytes a document (15 GB at 100M documents)."""
    import tracemalloc

    from pretrain.data.dedup import deduplicate
    from pretrain.data.funnel import Funnel
    from pretrain.data.runner import Task

    rng = np.random.default_rng(0)
    per, n_tasks, bands = 60_000, 4, MinHashConfig().bands
    for t in range(n_tasks):
        k = rng.integers(0, 2**62, (per, 2 + bands), dtype=np.int64).astype(np.uint64)
        j = np.flatnonzero(rng.random(per) < 0.3)[1:]
        prev = (rng.random(len(j)) * j).astype(np.int64)   # an earlier row of the task
        k[j[::2]] = k[prev[::2]]                     # exact copies
        k[j[1::2], 2] = k[prev[1::2], 2]             # one band shared: near copies
        np.save(tmp_path / f"t-{t:05d}.keys.npy", k)
        (tmp_path / f"t-{t:05d}.jsonl").write_text("".join(
            f'{{"id": "d{t}-{i}"}}\n' for i in range(per)))
    tasks = [Task(t, 0) for t in range(n_tasks)]
    funnel = Funnel()
    tracemalloc.start()
    try:
        dups = deduplicate(DataConfig(), tasks, tmp_path, funnel)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    n_exact = funnel.rows["exact_dedup"]["dropped"]["exact_duplicate"]
    n_near = funnel.rows["minhash_dedup"]["dropped"]["near_duplicate"]
    assert len(dups.gone) == n_exact + n_near > 0.25 * per * n_tasks and n_near > 0.4 * n_exact
    assert peak < 90 * per * n_tasks, peak / (per * n_tasks)
    # a removed line names the document kept in its place
    line, (reason, kept, _) = next(iter(dups.of_task(1).items()))
    assert reason in ("exact_duplicate", "near_duplicate") and kept.startswith("d1-")
