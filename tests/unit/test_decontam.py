"""Benchmark decontamination: planted evaluation items are found, dropped or cut out,
and counted per benchmark; clean documents pass untouched."""

import json
from dataclasses import replace
from pathlib import Path

from pretrain.data import decontam, stage
from pretrain.data.config import DataConfig, DecontamConfig
from pretrain.data.decontam import Decontaminate, benchmark_index, union
from pretrain.data.docs import DataOutput
from pretrain.data.document import Document
from pretrain.data.sources import LocalSource

from ..conftest import shared_data

QUESTION = ("Which statement best explains why photosynthesis is the foundation of most food "
            "webs in the ecosystems of the world today")
STORY = ("A man is sitting on a roof. He starts pulling up roofing on a roof and the old "
         "shingles fall down into the yard below while his dog watches")


def _filler(seed: int, words: int = 120) -> str:
    import random
    rng = random.Random(seed)
    vocab = ["river", "stone", "market", "valley", "bridge", "winter", "harvest", "school",
             "letter", "garden", "window", "engine", "morning", "silver", "forest", "island"]
    return " ".join(rng.choice(vocab) for _ in range(words)) + "."


def _benchmarks(tmp_path: Path) -> list[str]:
    arc = tmp_path / "arc.jsonl"
    arc.write_text(json.dumps({"query": f"Question: {QUESTION}?",
                               "choices": ["Sunlight is the source of energy.", "Rocks."],
                               "gold": 0}) + "\n")
    hs = tmp_path / "hellaswag.txt"
    hs.write_text(f"Roofing: {STORY}\n2\nending one\nending two\n")
    return [str(arc), str(hs)]


def test_planted_items_are_found_per_benchmark_and_dropped(tmp_path):
    ngrams = benchmark_index(_benchmarks(tmp_path), 13, 8)
    assert set(ngrams) == {"arc", "hellaswag"} and all(len(v) for v in ngrams.values())
    step = Decontaminate(DecontamConfig(), ngrams)
    docs = [Document("clean", _filler(0), "web"),
            # punctuation and case differ from the benchmark: still a 13-gram match
            Document("arc", _filler(1) + " " + QUESTION.upper().replace(" the ", ", the ")
                     + "! " + _filler(2), "web"),
            Document("hs", _filler(3) + " " + STORY + " " + _filler(4), "web"),
            # 12 words of the story: below the 13-gram unit, not a hit
            Document("near", _filler(5) + " " + " ".join(STORY.split()[:12]) + " " + _filler(6),
                     "web")]
    out = list(step(iter(docs)))
    kept = [o.id for o in out if isinstance(o, Document)]
    dropped = {o[0].id: o[1] for o in out if isinstance(o, tuple)}
    assert kept == ["clean", "near"]
    assert dropped == {"arc": "contaminated", "hs": "contaminated"}
    assert step.stats == {"hits_arc": 1, "hits_hellaswag": 1}
    assert docs[1].meta["contaminated"] == ["arc"]


def test_cut_mode_removes_the_match_with_its_window(tmp_path):
    ngrams = benchmark_index(_benchmarks(tmp_path), 13, 8)
    step = Decontaminate(DecontamConfig(mode="cut"), ngrams)
    before, after = _filler(7, 200), _filler(8, 200)
    doc = Document("d", before + " " + STORY + " " + after, "web")
    out = list(step(iter([doc])))
    assert all(isinstance(o, Document) for o in out) and len(out) == 2
    assert [o.id for o in out] == ["d#part0", "d#part1"]
    # the match and 200 characters either side are gone, the rest is intact
    assert before.startswith(out[0].text)
    # the match starts at "man": the story's first word, "A", is quiz scaffolding (an
    # option letter), skipped on both sides
    assert len(before) - len(out[0].text) in range(197, 201)
    assert after.endswith(out[1].text) and len(after) - len(out[1].text) in range(199, 203)
    assert "roof" not in out[0].text + out[1].text
    # too little left around the match: the document goes
    short = Document("s", _filler(9, 20) + " " + STORY, "web")
    assert list(step(iter([short]))) == [(short, "contaminated_nothing_left")]
    # cut more than max_cuts times: dropped
    many = Document("m", (" " + _filler(10, 80) + " " + STORY) * 12, "web")
    assert list(step(iter([many]))) == [(many, "contaminated_too_many_cuts")]



def test_a_dotted_capital_i_elsewhere_in_the_document_hides_nothing(tmp_path):
    """"İ".lower() is two characters: the whole document then kept its case, so a
    capitalised item in any text naming İstanbul or İzmir went through."""
    ngrams = benchmark_index(_benchmarks(tmp_path), 13, 8)
    text = "Flights from İstanbul. " + _filler(1) + " " + QUESTION + ". " + _filler(2)
    doc = Document("tr", text, "web")
    assert list(Decontaminate(DecontamConfig(), ngrams)(iter([doc]))) == [(doc, "contaminated")]
    # cut: the offsets are still the original text's
    before, after = "İ " + _filler(7, 200), _filler(8, 200) + " İ"
    out = list(Decontaminate(DecontamConfig(mode="cut"), ngrams)(
        iter([Document("c", before + " " + QUESTION.upper() + " " + after, "web")])))
    assert before.startswith(out[0].text) and after.endswith(out[1].text)
    assert len(before) - len(out[0].text) in range(197, 202)

def test_stage_reports_hits_in_the_funnel(tmp_path):
    benches = _benchmarks(tmp_path)
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"id": f"d{i}", "text": _filler(i, 150)}) + "\n"
                           for i in range(5))
                   + json.dumps({"id": "bad", "text": _filler(9) + " " + STORY}) + "\n")
    cfg = DataConfig(sources=[LocalSource(paths=[str(src)], quality="none")],
                           decontam=DecontamConfig(benchmarks=benches))
    (tmp_path / "out").mkdir()
    counts: dict = {}
    counts.update(stage.process(cfg, tmp_path / "out").counts())
    assert counts["dropped"] == {"contaminated": 1}
    # the audit line names the benchmark (the samples keep 20 documents a reason only)
    audit = [json.loads(x) for x in open(tmp_path / "out" / "dropped.jsonl")]
    assert [(a["id"], a["reason"], a["detail"]) for a in audit] == [
        ("bad", "contaminated", "hellaswag")]
    funnel = {r["step"]: r for r in json.loads((tmp_path / "out" / "funnel.json").read_text())}
    assert funnel["decontam"]["stats"] == {"hits_hellaswag": 1}


def test_real_benchmark_items_are_found_in_web_text():
    arc = shared_data("eval/llm-foundry/arc_easy.jsonl")
    c4 = shared_data("webtext/c4_sample.jsonl")
    ngrams = benchmark_index([str(arc)], 13, 8)
    rows = [json.loads(x) for x in open(arc)][:50]
    web = [json.loads(x)["text"] for x in open(c4)][:200]
    step = Decontaminate(DecontamConfig(), ngrams)
    planted = [Document(f"p{i}", web[i] + "\n" + r["query"] + " " + r["choices"][r["gold"]],
                        "web") for i, r in enumerate(rows) if len(r["query"].split()) >= 14]
    clean = [Document(f"c{i}", t, "web") for i, t in enumerate(web)]
    out = list(step(iter(planted + clean)))
    dropped = {o[0].id for o in out if isinstance(o, tuple)}
    assert dropped == {d.id for d in planted}  # every planted item, no false hit in C4


# --- items as they appear in documents -------------------------------------------------

def test_items_are_indexed_as_the_texts_they_appear_as():
    from pretrain.data.benchmarks import bare, item_texts
    mc = item_texts({"query": "Question: Why is the sky blue?\nAnswer:", "choices": ["x", "y"],
                     "gold": 0})
    # each choice after the question, and all of them listed, with and without scaffolding
    assert mc == ["Question: Why is the sky blue?\nAnswer: x",
                  "Question: Why is the sky blue?\nAnswer: y",
                  "Question: Why is the sky blue?\nAnswer: x y",
                  "Why is the sky blue? x", "Why is the sky blue? y", "Why is the sky blue? x y"]
    assert item_texts({"context_options": ["Sam said so because Sam", "Sam said so because Kim"],
                       "continuation": "was tired.", "gold": 1}) == [
        "Sam said so because Sam was tired.", "Sam said so because Kim was tired."]
    assert item_texts({"context": "The capital of Peru is", "continuation": "Lima"}) == [
        "The capital of Peru is Lima"]
    assert item_texts({"title": "t", "body": ["a", "b"], "n": 3}) == ["t a b"]
    assert bare("Roof shingle removal: A man is on a roof.") == "A man is on a roof."


def _index(tmp_path: Path, records: list[dict], min_words: int = 6):
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return benchmark_index([str(path)], 13, min_words)


def _dropped(index, texts: list[str]) -> list[bool]:
    step = Decontaminate(DecontamConfig(), index)
    docs = [Document(f"d{i}", t, "web") for i, t in enumerate(texts)]
    return [isinstance(o, tuple) for o in step(iter(docs))]


def test_a_short_question_with_its_answer_is_caught_through_quiz_scaffolding(tmp_path):
    index = _index(tmp_path, [
        {"query": "Question: Lightning may lead to", "gold": 1,
         "choices": ["rainbows", "damage to local foliage", "snow", "calm"]},
        {"context": "The sport played by Shane Victorino is", "continuation": "baseball"},
        {"context": "op 17 =", "continuation": "17"}])            # 4 words: too short
    before, after = _filler(20), _filler(21)
    assert _dropped(index, [
        f"{before}\n\nQ: Lightning may lead to\nA: damage to local foliage\n\n{after}",
        f"{before} 12. LIGHTNING MAY LEAD TO A) rainbows B) damage to local foliage C) snow "
        f"D) calm. Correct answer: damage to local foliage {after}",
        f"{before} the sport played by Shane Victorino is... baseball! {after}",
        # the question alone, or a different answer, or the short item: kept
        f"{before} Lightning may lead to fires. {after}",
        f"{before} The sport played by Shane Victorino is fun. {after}",
        f"{before} op 17 = 17 {after}",
    ]) == [True, True, True, False, False, False]


def test_planted_items_are_caught_and_clean_text_is_not_touched():
    """Items of nine benchmarks planted in C4 documents the ways quiz pages carry them
    (tests/planted.py; seed 0, bench/decontam_planted.py measures seed 1)."""
    from tests.planted import clean_texts, planted_set, web_texts
    eval_dir = shared_data("eval")
    names = ["llm-foundry/arc_easy.jsonl", "llm-foundry/piqa.jsonl", "llm-foundry/copa.jsonl",
             "llm-foundry/openbook_qa.jsonl", "llm-foundry/winogrande.jsonl",
             "llm-foundry/lambada_openai.jsonl", "llm-foundry/bigbench_qa_wikidata.jsonl",
             "llm-foundry/jeopardy_all.jsonl", "hellaswag/hellaswag_val_full.txt.bz2"]
    files = [eval_dir / n for n in names]
    shared = eval_dir.parent
    hosts = web_texts(shared / "webtext" / "c4_sample.jsonl", 500)
    planted = planted_set(files, hosts, per_benchmark=25, seed=0)
    index = benchmark_index([str(f) for f in files], 13, 6)
    caught = _dropped(index, [p.text for p in planted])
    missed = [p.item for p, c in zip(planted, caught, strict=True) if not c]
    assert len(missed) <= 0.05 * len(planted), missed
    clean = [t for texts in clean_texts(shared, c4_skip=500).values() for t in texts[:600]]
    touched = _dropped(index, clean)
    assert sum(touched) <= 0.02 * len(clean)


def test_a_run_decontaminates_against_the_tasks_it_scores(tmp_path):
    from pretrain.run_config import load_config
    from pretrain.stages import get
    task = tmp_path / "mytask.jsonl"
    task.write_text(json.dumps({"query": QUESTION, "choices": ["a", "b"], "gold": 0}) + "\n")
    tasks = ("eval.tasks", f"[{json.dumps(str(task))}, \"no_such_task.jsonl\"]")
    cfg = load_config(None, [tasks, ("eval.core", "false")])
    assert cfg.data.decontam.eval_benchmarks == [str(task)]   # the missing one is skipped
    assert load_config(None, [tasks, ("data.decontam.from_eval", "false")]
                       ).data.decontam.eval_benchmarks == []
    # other tasks, other training data: the data stage's key changes
    other = load_config(None, [("eval.tasks", "[]"), ("eval.core", "false")])
    assert get("data").key_config(cfg) != get("data").key_config(other)
    # and the stage drops a document carrying the task's question
    src = tmp_path / "docs.jsonl"
    src.write_text(json.dumps({"id": "clean", "text": _filler(1, 150)}) + "\n"
                   + json.dumps({"id": "leak", "text": _filler(2) + " " + QUESTION}) + "\n")
    data = DataConfig(sources=[LocalSource(paths=[str(src)], quality="none")],
                      decontam=cfg.data.decontam)
    (tmp_path / "out").mkdir()
    counts = stage.process(data, tmp_path / "out").counts()
    assert counts["dropped"] == {"contaminated": 1}
    # how it matched goes to the eval stage, whose contamination report matches the same way
    # (it kept 13 and 6 whatever data.decontam said)
    assert counts["decontam_match"] == {"ngram": 13, "min_item_words": 6}
    longer = replace(cfg.data.decontam, ngram=20, min_item_words=12)
    out = tmp_path / "out20"
    out.mkdir()
    counts = stage.process(replace(data, decontam=longer), out).counts()
    assert counts["decontam_match"] == {"ngram": 20, "min_item_words": 12}
    assert DataOutput(**counts).decontam_match["ngram"] == 20


def test_the_quickstart_decontaminates_against_every_file_it_scores():
    from pretrain.eval.files import benchmark_files
    from pretrain.run_config import load_config
    shared_data("eval/llm-foundry/arc_easy.jsonl")
    cfg = load_config(None)
    scored = benchmark_files(cfg.eval)
    assert len(scored) >= 18 and any("hellaswag" in f for f in scored)
    assert set(scored) <= set(cfg.data.decontam.files())


def test_hugging_face_schemas_and_arrow_files_are_read_as_items():
    from pretrain.data.benchmarks import item_texts, read_items
    assert item_texts({"sentence": "Sam beat Kim so _ was glad.", "option1": "Sam",
                       "option2": "Kim", "answer": "1"}) == ["Sam beat Kim so Sam was glad.",
                                                             "Sam beat Kim so Kim was glad."]
    assert item_texts({"goal": "Open a jar", "sol1": "twist", "sol2": "pull", "label": 0})[:2] == [
        "Open a jar twist", "Open a jar pull"]
    assert item_texts({"question": "Which is a gas?", "answerKey": "B",
                       "choices": {"text": ["rock", "air"], "label": ["A", "B"]}})[:2] == [
        "Which is a gas? rock", "Which is a gas? air"]
    # the .arrow files `datasets` writes (IPC streams), as OLMo evaluates from
    arrow = shared_data("eval/olmo-hf-arrow/winogrande_xl_validation.arrow")
    first = next(read_items(arrow))
    assert first[0] == "Sarah was a much better surgeon than Maria so Sarah always got the easier cases."


def test_items_planted_from_arrow_benchmarks_are_caught():
    import random

    import pyarrow as pa

    from tests.planted import web_texts
    folder = shared_data("eval/olmo-hf-arrow")
    files = [folder / f"{n}.arrow" for n in ("arc_easy_validation", "piqa_validation",
                                             "winogrande_xl_validation")]
    index = benchmark_index([str(f) for f in files], 13, 6)
    rng = random.Random(3)
    hosts = web_texts(shared_data("webtext/c4_sample.jsonl"), 300)
    docs = []
    for f in files:
        rows = pa.ipc.open_stream(open(f, "rb")).read_all().to_pylist()
        for r in rng.sample(rows, 30):
            if "question" in r:
                gold = r["choices"]["text"][r["choices"]["label"].index(r["answerKey"])]
                item = f"Q: {r['question']}\nA: {gold}"
            elif "goal" in r:
                item = f"{r['goal']} {[r['sol1'], r['sol2']][r['label']]}"
            else:
                item = r["sentence"].replace("_", r["option" + r["answer"]])
            docs.append(rng.choice(hosts) + "\n\n" + item.upper() + "\n\n" + rng.choice(hosts))
    caught = _dropped(index, docs)
    assert sum(caught) >= 0.95 * len(docs)
    assert not any(_dropped(index, hosts))


def test_an_empty_or_unreadable_benchmark_file_is_an_error_naming_it(tmp_path):
    import pytest

    from pretrain.config import ConfigError
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "bad.jsonl").write_text('{"query": "x", "choices": ["a"]}\n{nope\n')
    (tmp_path / "bin.arrow").write_bytes(b"\x00\x01 not arrow")
    for name, match in (("empty.jsonl", "holds no items"), ("bad.jsonl", "bad.jsonl:2"),
                        ("bin.arrow", "bin.arrow: cannot read")):
        with pytest.raises(ConfigError, match=match):
            benchmark_index([str(tmp_path / name)], 13, 6)


def test_compressed_json_benchmarks_are_read_as_records_and_decontam_off_takes_no_eval_files(
        tmp_path):
    import gzip

    from pretrain.data.benchmarks import read_items
    from pretrain.run_config import load_config
    path = tmp_path / "b.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"context": "The capital of Peru is", "continuation": "Lima"}) + "\n")
    assert next(read_items(path)) == ["The capital of Peru is Lima"]
    task = tmp_path / "t.jsonl"
    task.write_text(json.dumps({"query": QUESTION, "choices": ["a"], "gold": 0}) + "\n")
    off = load_config(None, [("eval.tasks", f"[{json.dumps(str(task))}]"),
                             ("data.decontam.enabled", "false")])
    assert off.data.decontam.eval_benchmarks == []


def test_the_data_stage_says_which_scored_tasks_it_cannot_decontaminate_against(
        tmp_path, capsys):
    """eval.tasks named but their files not found (tasks_dir read from another current
    directory): the data stage said nothing and kept every planted item; it now warns,
    naming the files, whether it runs or is up to date, and says nothing when every file
    is there."""
    from pretrain.cli import main
    task = tmp_path / "mytask.jsonl"
    task.write_text(json.dumps({"query": QUESTION, "choices": ["a", "b"], "gold": 0}) + "\n")
    (tmp_path / "docs.jsonl").write_text(
        json.dumps({"id": "clean", "text": _filler(1, 150)}) + "\n"
        + json.dumps({"id": "leak", "text": _filler(2) + " " + QUESTION}) + "\n")
    for name, tasks in (("missing", ["arc_easy", str(task)]), ("found", [str(task)])):
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(f'name = "{name}"\nruns_dir = {json.dumps(str(tmp_path / "runs"))}\n'
                       f'[[data.sources]]\ntype = "local"\n'
                       f'paths = [{json.dumps(str(tmp_path / "docs.jsonl"))}]\n'
                       f'quality = "none"\n[eval]\ntasks = {json.dumps(tasks)}\n'
                       f'tasks_dir = {json.dumps(str(tmp_path / "nowhere"))}\ncore = false\n')
        assert main(["data", "-c", str(cfg)]) == 0
        err = capsys.readouterr().err
        warned = "[data] warning: 1 of eval.tasks' files not found, so not decontaminated " \
                 f"against: {tmp_path / 'nowhere' / 'llm-foundry' / 'arc_easy.jsonl'}"
        assert (warned in err) == (name == "missing"), err
        funnel = json.loads((tmp_path / "runs" / name / "data" / "funnel.json").read_text())
        assert [r["dropped"] for r in funnel if r["step"] == "decontam"] == [
            {"contaminated": 1}]   # the task found is still decontaminated against
    # a task whose file is missing leaves the stage's key as it was, so the stage is
    # skipped: it still says which files it cannot decontaminate against
    tasks = json.dumps(["arc_easy", str(task)])
    assert main(["data", "-c", str(cfg), f"--eval.tasks={tasks}"]) == 0
    err = capsys.readouterr().err
    assert "[data] up to date" in err and warned in err, err


def test_the_benchmark_union_is_made_once_per_process_not_per_task(tmp_path, monkeypatch):
    """Three files, three tasks in this process: the union of the benchmark hashes is made
    once (it was made per task, 2-3 s each for the shared benchmarks) and every task still
    drops the document carrying the item."""
    from pretrain.data import runner
    task = tmp_path / "mytask.jsonl"
    task.write_text(json.dumps({"query": QUESTION, "choices": ["a", "b"], "gold": 0}) + "\n")
    for i in range(3):
        (tmp_path / f"docs{i}.jsonl").write_text(
            json.dumps({"id": f"clean{i}", "text": _filler(i, 150)}) + "\n"
            + json.dumps({"id": f"leak{i}", "text": _filler(i + 5) + " " + QUESTION}) + "\n")
    made = []
    for module in (runner, decontam):
        monkeypatch.setattr(module, "union", lambda index: made.append(1) or union(index),
                            raising=False)
    data = DataConfig(sources=[LocalSource(paths=[str(tmp_path / "docs*.jsonl")],
                                           quality="none")],
                      decontam=DecontamConfig(benchmarks=[str(task)], from_eval=False))
    (tmp_path / "out").mkdir()
    counts = stage.process(data, tmp_path / "out", work=tmp_path / "work").counts()
    assert counts["dropped"] == {"contaminated": 3} and len(made) == 1


def test_hash_set_membership_is_binary_search_membership():
    """The bit table in front of the binary search only rules out absent hashes: every
    answer is ``is_member``'s, for sets of every size (one table slot for all of them
    too) and hashes either side of the set's ends."""
    import numpy as np
    rng = np.random.default_rng(0)
    for size in (0, 1, 7, 5000, 300_000):
        hashes = np.unique(rng.integers(0, 2**64 - 1, size, dtype=np.uint64))
        if size == 7:   # all in one slot of the table
            hashes = np.unique(np.uint64(2**63) + np.arange(7, dtype=np.uint64))
        x = np.concatenate([rng.integers(0, 2**64 - 1, 20_000, dtype=np.uint64), hashes,
                            hashes + np.uint64(1), np.array([0, 2**64 - 1], np.uint64)])
        s = decontam.HashSet(hashes)
        got = s.contains(x)
        assert (got == decontam.is_member(x, hashes)).all() and len(s) == len(hashes)
        assert got[20_000:20_000 + len(hashes)].all()


def test_normalising_is_the_regex_one_character_for_one():
    """``_prep`` (a byte table for ASCII, the regex for the rest) equals lower case (one
    character for one) then ``minhash.NOT_WORD`` to a space, on text of any script."""
    import random

    from pretrain.data.minhash import NOT_WORD

    rng = random.Random(0)
    alphabet = [chr(i) for i in range(0x3000)] + list("İKß_\u00a0\u2019\U0001F600") \
        + ["\ud800", "\udfff"]   # lone surrogates: documents read from a file can hold them
    texts = ["", "Hello, World_2!", "İstanbul\tÇay\n", "a\u2019b c\u00a0d"] + [
        "".join(rng.choice(alphabet if k % 2 else alphabet[:128]) for _ in range(rng.randint(0, 60)))
        for k in range(6000)]
    for t in texts:
        low = t.lower()   # in context ("Σ" ends a word as "ς"), unless a length changes
        if len(low) != len(t):
            low = "".join(c.lower()[:1] for c in t)
        want = NOT_WORD.sub(" ", low)
        assert decontam._prep(t) == want, repr(t)
