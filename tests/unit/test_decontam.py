"""Benchmark decontamination: planted evaluation items are found, dropped or cut out,
and counted per benchmark; clean documents pass untouched."""

import json
from pathlib import Path

from pretrain.data import stage
from pretrain.data.config import DataConfig, DecontamConfig
from pretrain.data.decontam import Decontaminate, benchmark_ngrams
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
    ngrams = benchmark_ngrams(_benchmarks(tmp_path), 13)
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
    ngrams = benchmark_ngrams(_benchmarks(tmp_path), 13)
    step = Decontaminate(DecontamConfig(mode="cut"), ngrams)
    before, after = _filler(7, 200), _filler(8, 200)
    doc = Document("d", before + " " + STORY + " " + after, "web")
    out = list(step(iter([doc])))
    assert all(isinstance(o, Document) for o in out) and len(out) == 2
    assert [o.id for o in out] == ["d#part0", "d#part1"]
    # the match and 200 characters either side are gone, the rest is intact
    assert before.startswith(out[0].text)
    assert len(before) - len(out[0].text) in range(199, 203)
    assert after.endswith(out[1].text) and len(after) - len(out[1].text) in range(199, 203)
    assert "roof" not in out[0].text + out[1].text
    # too little left around the match: the document goes
    short = Document("s", _filler(9, 20) + " " + STORY, "web")
    assert list(step(iter([short]))) == [(short, "contaminated_nothing_left")]
    # cut more than max_cuts times: dropped
    many = Document("m", (" " + _filler(10, 80) + " " + STORY) * 12, "web")
    assert list(step(iter([many]))) == [(many, "contaminated_too_many_cuts")]


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
    funnel = {r["step"]: r for r in json.loads((tmp_path / "out" / "funnel.json").read_text())}
    assert funnel["decontam"]["stats"] == {"hits_hellaswag": 1}


def test_real_benchmark_items_are_found_in_web_text():
    arc = shared_data("eval/llm-foundry/arc_easy.jsonl")
    c4 = shared_data("webtext/c4_sample.jsonl")
    ngrams = benchmark_ngrams([str(arc)], 13)
    rows = [json.loads(x) for x in open(arc)][:50]
    web = [json.loads(x)["text"] for x in open(c4)][:200]
    step = Decontaminate(DecontamConfig(), ngrams)
    planted = [Document(f"p{i}", web[i] + "\n" + r["query"] + " " + r["choices"][r["gold"]],
                        "web") for i, r in enumerate(rows) if len(r["query"].split()) >= 14]
    clean = [Document(f"c{i}", t, "web") for i, t in enumerate(web)]
    out = list(step(iter(planted + clean)))
    dropped = {o[0].id for o in out if isinstance(o, tuple)}
    assert dropped == {d.id for d in planted}  # every planted item, no false hit in C4
