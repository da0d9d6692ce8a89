"""Quality gates and the contamination report."""

import json
from pathlib import Path

import pytest

from pretrain.config import ConfigError
from pretrain.eval import contamination, gates
from pretrain.eval.config import EvalConfig
from pretrain.eval.files import scored
from pretrain.tokenizer import shards
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import BOS, EOS, TokenizeConfig

STORY = ("A man is sitting on a roof. He starts pulling up roofing on a roof and the old "
         "shingles fall down into the yard below while his dog watches")


def _hellaswag(folder):
    (folder / "hellaswag").mkdir()
    (folder / "hellaswag" / "hellaswag_val_full.txt.bz2").write_bytes(
        __import__("bz2").compress(f"Roofing: {STORY}\n0\na\nb\nc\nd\n".encode()))


def test_gates_pass_fail_and_missing_metrics():
    results = {"all": {"bpb": 1.8}, "tasks": {"hellaswag": {"acc_norm": 0.31},
                                              "piqa": {"skipped": "no file"}}}
    assert gates.check(["all.bpb <= 1.9", "tasks.hellaswag.acc_norm >= 0.3"], results) == []
    failed = gates.check(["all.bpb < 1.5", "tasks.piqa.acc > 0.5", "all.bpb>=1e-3"], results)
    assert failed == ["all.bpb < 1.5: got 1.8",
                      "tasks.piqa.acc > 0.5: no value at tasks.piqa.acc in the results"]
    with pytest.raises(ConfigError, match="not '<metric> <op> <number>'"):
        EvalConfig(gates=["bpb is low"])
    # numbers as TOML and Python write them (these were config errors)
    assert [gates.parse(g)[2] for g in ("all.bpb <= 1e+3", "all.bpb < 1E3", "all.bpb <= .5",
                                        "all.bpb > +2", "x <= y * 2.5E-1")] == [
        1000.0, 1000.0, 0.5, 2.0, ("y", 0.25)]
    assert gates.check(["all.bpb <= 1e+3", "all.bpb <= .5"], results) == ["all.bpb <= .5: got 1.8"]
    # a mistyped key (known only once eval has run) says what was meant
    assert gates.check(["all.bbp <= 2", "tasks.helaswag.acc_norm > 0", "alll.bpb < 2"],
                       results) == [
        "all.bbp <= 2: no value at all.bbp in the results (did you mean all.bpb?)",
        "tasks.helaswag.acc_norm > 0: no value at tasks.helaswag.acc_norm in the results "
        "(did you mean tasks.hellaswag.acc_norm?)",
        "alll.bpb < 2: no value at alll.bpb in the results (did you mean all.bpb?)"]
    # no close spelling: the keys it begins (the CORE score's two were not suggested)
    core = {"core": {"core_exact": 0.1, "core_offline": 0.12, "tasks": {}}}
    assert gates.check(["core.core >= 0"], core) == [
        "core.core >= 0: no value at core.core in the results "
        "(did you mean core.core_exact or core.core_offline?)"]


def test_gates_that_cannot_be_checked_fail_and_say_why(tmp_path):
    """A NaN (a domain with nothing scored) passed any `!=` gate; a path ending at a table
    said "no value"; a right side could not name a domain starting with a digit; and lm-eval's
    scores, in harness.json (written after results.json), could never be gated."""
    results = {"all": {"bpb": float("nan"), "loss": 1.2}, "2024": {"bpb": 1.5},
               "web": {"bpb": 1.4}}
    assert gates.check(["all.bpb != 0", "all <= 1", "web.bpb < 2024.bpb"], results) == [
        "all.bpb != 0: all.bpb is NaN (nothing scored)",
        "all <= 1: all is a table (bpb, loss), not a number"]
    (tmp_path / "results.json").write_text(json.dumps({"all": {"bpb": 1.8}}))
    (tmp_path / "harness.json").write_text(json.dumps({"arc_easy": {"acc": 0.5}, "gsm8k": {
        "exact_match/strict-match": 0.2}}))   # a metric under a filter, as harness.py names it
    loaded = gates.load_results(tmp_path)
    assert loaded is not None
    assert gates.check(["harness.arc_easy.acc >= 0.5", "all.bpb <= 1.9",
                        "harness.gsm8k.exact_match/strict-match >= 0.1",
                        "all.bpb >= harness.gsm8k.exact_match/strict-match * 5"], loaded) == []
    with pytest.raises(ConfigError):   # a mistyped number is no metric path
        gates.parse("all.bpb <= 1.9x")
    assert gates.load_results(tmp_path / "missing") is None


def _files(tasks_dir: Path, *names: str, core: bool = False) -> dict[str, Path]:
    return scored(EvalConfig(tasks=list(names), tasks_dir=str(tasks_dir), core=core))


def test_contamination_report_counts_what_remains(tmp_path):
    story = STORY
    _hellaswag(tmp_path)
    docs = [{"text": "unrelated words about gardens and rivers " * 10},
            {"text": "blog post. " + story + " the end."},
            {"text": story, "split": "val"}]  # held out: not training data
    rep = contamination.report(iter(docs), _files(tmp_path, "hellaswag", "arc_easy"),
                               {"hellaswag_val_full": 2})
    assert set(rep) == {"hellaswag"}  # arc_easy has no file here
    r = rep["hellaswag"]
    assert r["docs"] == 1 and r["train_docs"] == 2 and r["removed_by_data_stage"] == 2
    # every 13-gram of the item but the one starting at "Roofing:" is in that document
    assert r["ngrams_in_train"] == r["ngrams"] - 1 and 0 < r["ngram_share"] < 1
    assert "hellaswag" in contamination.table(rep)
    json.dumps(rep)  # goes into results.json as is


def test_a_gate_can_compare_with_another_metric_times_a_factor():
    results = {"all": {"bpb": 1.5}, "baselines": {"trigram": {"all": {"bpb": 2.0}},
                                                  "bigram": {"all": {"bpb": 1.6}}}}
    assert gates.check(["all.bpb <= baselines.trigram.all.bpb * 0.85",
                        "all.bpb < baselines.bigram.all.bpb"], results) == []
    assert gates.check(["all.bpb <= baselines.bigram.all.bpb * 0.85"], results) == [
        "all.bpb <= baselines.bigram.all.bpb * 0.85: got 1.5 against 1.36"]
    assert gates.check(["all.bpb <= baselines.kn5.all.bpb"], results) == [
        "all.bpb <= baselines.kn5.all.bpb: no value at baselines.kn5.all.bpb in the results"]
    with pytest.raises(ConfigError, match="<metric> \\[\\* <number>\\]"):
        EvalConfig(gates=["all.bpb <= baselines.trigram.all.bpb * lots"])


def test_contamination_leaves_out_what_the_tokenize_stage_held_out(tmp_path):
    """Documents without a ``split`` of their own are split by the tokenize stage (the first
    of each domain, then by hash): the report tells them again from meta.json, so a
    benchmark item in a held-out document is not training contamination."""
    _hellaswag(tmp_path)
    docs = [{"id": "0", "domain": "web", "text": "roofs. " + STORY},  # first of its domain: val
            *({"id": str(i), "domain": "web", "text": f"gardens and rivers {i} " * 20}
              for i in range(1, 40)),
            {"id": "40", "domain": "web", "text": "blog post. " + STORY + " the end."}]
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    cfg = TokenizeConfig(val_fraction=0.1, min_val_docs=1)
    (tmp_path / "tok").mkdir()
    shards.run(cfg, tok, iter(docs), ["web"], tmp_path / "tok", {})
    meta = json.loads((tmp_path / "tok" / "meta.json").read_text())
    rep = contamination.report(iter(docs), _files(tmp_path, "hellaswag"), {},
                               shards.Splitter.of(meta))["hellaswag"]
    assert 0 < meta["splits"]["val"]["docs"] < 41 - 1
    assert rep["train_docs"] == meta["splits"]["train"]["docs"]
    assert rep["docs"] == 1 - (shards.is_val("40", 0.1))   # the blog post, unless held out
    # without the rule, as before: the held-out story counted as training data
    assert contamination.report(iter(docs), _files(tmp_path, "hellaswag"), {})["hellaswag"][
        "train_docs"] == 41


def test_contamination_keeps_benchmarks_of_one_file_stem_apart_and_covers_core(tmp_path):
    """wikitext2's file is test.txt: a task file test.jsonl is another benchmark, with its
    own index (a leaked item of it was reported as wikitext2's); with ``core`` CORE's
    files are scanned too (the data stage removes them, the report had left them out)."""
    item = {"query": STORY, "choices": ["yes", "no"], "gold": 0}
    (tmp_path / "wikitext-2").mkdir()
    (tmp_path / "wikitext-2" / "test.txt").write_text("gardens and rivers " * 50)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "test.jsonl").write_text(json.dumps(item) + "\n")
    lf = tmp_path / "llm-foundry"
    lf.mkdir()
    (lf / "copa.jsonl").write_text(json.dumps(item) + "\n")
    docs = [{"text": "blog post. " + STORY + " the end."}]
    files = _files(tmp_path, "wikitext2", str(tmp_path / "mine" / "test.jsonl"), core=True)
    assert files["copa"] == lf / "copa.jsonl"
    rep = contamination.report(iter(docs), files, {"test": 3})
    assert rep["wikitext2"]["docs"] == 0 and rep["test"]["docs"] == 1 and rep["copa"]["docs"] == 1
    assert rep["wikitext2"]["removed_by_data_stage"] is None   # the data stage's count of both
    assert "shared stem" in contamination.table(rep)


def test_gate_without_gates_is_refused_before_any_stage_runs(tmp_path, capsys):
    """A CI config that forgot its gates ran the whole pipeline before saying so."""
    from pretrain.cli import main
    rc = main(["run", "--gate", f"--runs_dir={tmp_path}", "--eval.gates=[]"])
    assert rc == 2 and "--gate: no gates configured" in capsys.readouterr().err
    assert not (tmp_path / "quickstart").exists()   # nothing ran, nothing written



def test_a_gate_on_a_metric_the_results_never_hold_is_refused_before_any_stage_runs(tmp_path,
                                                                                  capsys):
    """A mistyped first key (``al.bpb``, a domain no source has) failed as a gate only
    after the whole pipeline had run; the results' own keys and the sources' domains
    pass, on either side of a gate."""
    from pretrain.cli import main
    from pretrain.run_config import load_config
    rc = main(["run", f"--runs_dir={tmp_path}", '--eval.gates=["al.bpb <= 2"]'])
    err = capsys.readouterr().err
    assert rc == 2 and "'al' is not in the eval results (did you mean all?)" in err, err
    assert not (tmp_path / "quickstart").exists()
    domains = sorted(s.label() for s in load_config(None, []).data.sources)
    ok = [f"{domains[0]}.bpb <= 2", "all.bpb <= baselines.trigram.all.bpb * 0.9",
          "harness.arc_easy.acc >= 0.3", "contamination.arc_easy.docs == 0"]
    assert load_config(None, [("eval.gates", json.dumps(ok))]).eval.gates == ok
    for bad in ("poetry.bpb <= 2", "all.bpb <= baseline.trigram.all.bpb"):
        with pytest.raises(ConfigError, match="is not in the eval results"):
            load_config(None, [("eval.gates", json.dumps([bad]))])
