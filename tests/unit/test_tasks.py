"""Benchmark scoring: a hand-computed log-likelihood, a model told the answers scores 1.0,
an untrained model scores at chance, and every task schema loads."""

import gzip
import json
import lzma
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pretrain.config import ConfigError
from pretrain.data.benchmarks import benchmark_texts
from pretrain.eval import tasks
from pretrain.eval.config import EvalConfig
from pretrain.eval.files import fingerprint
from pretrain.model.transformer import ModelConfig, Transformer
from pretrain.run_config import load_config
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import BOS, EOS, GPT4_PATTERN

from ..conftest import Oracle, shared_data, tiny_overrides

DEVICE = torch.device("cpu")


def _bytes_tok() -> Tokenizer:
    return Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])


def _model(seq_len: int = 512) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=258, d_model=32, n_layers=1, n_heads=2,
                                   seq_len=seq_len))


def test_loglikelihood_matches_a_hand_computation():
    tok, model = _bytes_tok(), _model()
    (t,) = tasks.loglikelihoods(model, tok, [("ab", "cd")])
    lp, n, greedy = t.logprob, t.tokens, t.greedy
    ids = [tok.bos_id, *tok.encode("abcd")]   # every context is read from BOS
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[:-1]]))
    logp = F.log_softmax(logits[0], -1)
    expected = float(logp[2, ids[3]] + logp[3, ids[4]])  # P(c | BOS ab) * P(d | BOS abc)
    assert n == 2 and lp == pytest.approx(expected, abs=1e-5)
    assert greedy == bool(logp[2].argmax() == ids[3] and logp[3].argmax() == ids[4])
    # batched with longer and shorter rows (right padding) the number is the same
    many = tasks.loglikelihoods(model, tok, [("x" * 40, "y"), ("ab", "cd"), ("q", "rs")],
                                batch_size=3)
    assert many[1].logprob == pytest.approx(lp, abs=1e-5)
    # a context longer than the model's seq_len is cut from the left, the continuation kept
    (cut,) = tasks.loglikelihoods(_model(seq_len=64), tok, [("z" * 600, "cd")])
    assert cut.tokens == 2 and cut.logprob < 0


def test_a_choice_longer_than_the_context_is_said_to_be_cut(capsys):
    """A continuation of more tokens than the model reads is scored on its last seq_len
    only: said, not silent (24 PIQA choices at the quickstart's 128 under GPT-2's tokens)."""
    short, long = tasks.loglikelihoods(_model(seq_len=64), _bytes_tok(),
                                       [("q", "ab"), ("q", "y" * 100)])
    assert short.tokens == 2 and long.tokens == 64
    assert "eval: 1 of 2 continuations are longer than the model's context (64 tokens): " \
        "scored on their last tokens only" in capsys.readouterr().err


def test_an_empty_context_is_scored_after_bos():
    """A record with an empty context or query crashed the scoring (a row of the
    continuation alone leaves its first token nothing to be predicted from)."""
    tok, model = _bytes_tok(), _model()
    alone, batched, _ = tasks.loglikelihoods(model, tok, [("", "def"), ("", "d"), ("ab", "cd")],
                                             batch_size=3)
    ids = [tok.bos_id, *tok.encode("def")]
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([ids[:-1]]))[0][0], -1)
    assert alone.tokens == 3
    assert alone.logprob == pytest.approx(float(sum(logp[i, ids[i + 1]] for i in range(3))),
                                          abs=1e-5)
    assert batched.tokens == 1 and batched.logprob == pytest.approx(float(logp[0, ids[1]]),
                                                                    abs=1e-5)


def test_a_model_told_the_answers_scores_one(tmp_path: Path):
    tok = _bytes_tok()
    path = tmp_path / "t.jsonl"
    recs = [{"query": f"Question {i}: pick", "choices": ["red", "green", "blue"], "gold": i % 3}
            for i in range(9)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    kind, items = tasks.load(path, "auto", " ")
    assert kind == "mc" and len(items) == 9
    oracle = Oracle([[tok.bos_id, *tok.encode("".join(it.pairs()[it.gold]))] for it in items],
                    258)   # documents are read from BOS
    calls: list[tuple[int, int]] = []
    res = tasks.evaluate(oracle, tok, "mine", kind, items, batch_size=4,
                         progress=lambda done, rows: calls.append((done, rows)))
    assert res["acc"] == res["acc_norm"] == 1.0 and res["centered"] == 1.0
    assert res["chance"] == pytest.approx(1 / 3, abs=1e-4)
    # said after every batch of continuations (a 40,000-row task looked hung for minutes)
    assert calls == [(min(4 * b, 27), 27) for b in range(1, 8)]


def test_an_untrained_model_scores_at_chance():
    path = shared_data("eval/llm-foundry/arc_easy.jsonl")
    kind, items = tasks.load(path, "mc", "\nAnswer: ", limit=400)
    res = tasks.evaluate(_model(), _bytes_tok(), "arc_easy", kind, items, batch_size=32)
    assert res["chance"] == pytest.approx(0.25, abs=0.01)
    # 400 four-way items: standard error 0.022; 4 of them either way
    assert abs(res["acc"] - 0.25) < 0.09 and abs(res["acc_norm"] - 0.25) < 0.09
    assert abs(res["centered"]) < 0.12
    metrics = pytest.importorskip("lm_eval.api.metrics", reason="lm-eval's stderr to compare")
    hits = [float(i < round(res["acc_norm"] * 400)) for i in range(400)]   # arc: acc_norm
    assert res["stderr"] == pytest.approx(metrics.mean_stderr(hits), abs=1e-5)


def test_every_schema_loads(tmp_path: Path):
    kind, items = tasks.load(shared_data("eval/hellaswag/hellaswag_val_full.txt.bz2"),
                             "hellaswag", " ", limit=5)
    assert kind == "mc" and len(items) == 5 and all(len(i.continuations) == 4 for i in items)
    assert all(0 <= i.gold < 4 and i.pairs()[0][1].startswith(" ") for i in items)
    kind, items = tasks.load(shared_data("eval/llm-foundry/winogrande.jsonl"), "auto", " ", 3)
    assert kind == "schema" and len(set(items[0].continuations)) == 1
    assert len(set(items[0].contexts)) == 2
    kind, items = tasks.load(shared_data("eval/llm-foundry/lambada_openai.jsonl"), "auto", " ", 3)
    assert kind == "lm" and len(items[0].contexts) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "choices": ["a", "b"], "gold": 0}\n{"query": "q"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2"):
        tasks.load(bad, "auto")


@pytest.mark.parametrize("record, why", [
    ('{"query": "q", "choices": ["a", "b"], "gold": 5}', "not one of the 2 choices"),
    ('{"query": "q", "choices": ["a", "b"], "gold": -1}', "not one of the 2 choices"),
    ('{"query": "q", "choices": ["a", "b"], "gold": 0.5}', "not an index"),
    ('{"query": "q", "choices": [], "gold": 0}', "a list of 2 or more"),
    ('{"query": "q", "choices": "ab", "gold": 0}', "a list of 2 or more"),
    ('{"context_options": ["a"], "continuation": "b", "gold": 0}', "a list of 2 or more"),
    ('{"context_options": ["a", "b"], "continuation": "c", "gold": 2}', "not one of the 2"),
    ('[{"query": "q", "choices": ["a", "b"], "gold": 0}]', "a JSON list, not an object: task "
     "files are JSON lines, one object per line"),   # (it said: list indices must be ...)
    ('[', "; task files are JSON lines, one object per line"),   # an indented JSON array
])
def test_a_malformed_task_record_names_its_file_and_line(tmp_path: Path, record: str, why: str):
    path = tmp_path / "task.jsonl"
    good = ('{"query": "q", "choices": ["a", "b"], "gold": 1}' if "choices" in record else
            '{"context_options": ["a", "b"], "continuation": "c", "gold": 1}')
    path.write_text(good + "\n\n" + record + "\n")
    with pytest.raises(ConfigError, match=rf"task.jsonl:3: not a .* task record .*{why}"):
        tasks.load(path, "auto")


def test_an_empty_or_cut_task_file_is_a_clear_error(tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty.jsonl: no task items"):
        tasks.load(empty, "auto")
    item = ["ctx", "1", "a", "b", "c", "d"]
    swag = tmp_path / "swag.txt"
    swag.write_text("\n".join(item + item[:4]) + "\n\n")
    with pytest.raises(ConfigError, match="swag.txt: 10 lines.*from line 7, is cut short"):
        tasks.load(swag, "hellaswag")
    swag.write_text("\n".join(item + ["ctx", "x", "a", "b", "c", "d"]) + "\n")
    with pytest.raises(ConfigError, match="swag.txt:8: not a hellaswag gold line"):
        tasks.load(swag, "hellaswag")
    swag.write_text("\n".join(item + ["ctx", "4", "a", "b", "c", "d"]))
    with pytest.raises(ConfigError, match="swag.txt:8: .*not one of the 4 choices"):
        tasks.load(swag, "hellaswag")
    assert tasks.load(swag, "hellaswag", limit=1)[1][0].gold == 1


def test_each_items_scores_are_saved_and_give_the_tasks_figures(tmp_path: Path):
    """Per-item scores (``eval/samples/<task>.jsonl``): the accuracies recount from them
    without the model, and an item's scores are its own choices' log-likelihoods."""
    tok, model = _bytes_tok(), _model()
    recs = [{"query": f"Q{i}: which", "choices": ["a", "bb", "ccc", "dddd"][: 2 + i % 3],
             "gold": i % 2} for i in range(12)]
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "lm.jsonl").write_text("".join(
        json.dumps({"context": f"{i} is", "continuation": " x"}) + "\n" for i in range(5)))
    cfg = EvalConfig(tasks=[str(tmp_path / "mine.jsonl"), str(tmp_path / "lm.jsonl")],
                     batch_size=4)
    res = tasks.run_tasks(model, tok, cfg, tmp_path / "samples")
    rows = [json.loads(x) for x in (tmp_path / "samples" / "mine.jsonl").read_text().splitlines()]
    assert [r["item"] for r in rows] == list(range(12))
    assert [len(r["logprob"]) for r in rows] == [len(r["choices"]) for r in recs]
    assert res["mine"]["acc"] == pytest.approx(
        sum(r["pred"] == r["gold"] for r in rows) / 12, abs=1e-5)
    assert res["mine"]["acc_norm"] == pytest.approx(
        sum(r["pred_norm"] == r["gold"] for r in rows) / 12, abs=1e-5)
    kind, items = tasks.load(tmp_path / "mine.jsonl", "auto", " ")
    assert rows[5]["logprob"] == pytest.approx(
        [t.logprob for t in tasks.loglikelihoods(model, tok, items[5].pairs())], abs=1e-5)
    lm = [json.loads(x) for x in (tmp_path / "samples" / "lm.jsonl").read_text().splitlines()]
    assert len(lm) == 5 and res["lm"]["acc"] == sum(r["greedy"] for r in lm) / 5


def test_lm_tasks_need_every_token_greedy(tmp_path: Path):
    tok = _bytes_tok()
    path = tmp_path / "lm.jsonl"
    path.write_text(json.dumps({"context": "The sky is", "continuation": "blue"}) + "\n"
                    + json.dumps({"context": "Grass is", "continuation": "green"}) + "\n")
    kind, items = tasks.load(path, "auto")
    oracle = Oracle([[tok.bos_id, *tok.encode("The sky is blue")]], 258)  # only the first
    res = tasks.evaluate(oracle, tok, "lm", kind, items)
    assert res["acc"] == 0.5 and res["chance"] == 0.0


def test_missing_task_files_are_logged_skips(tmp_path: Path):
    res = tasks.run_tasks(_model(), _bytes_tok(),
                          EvalConfig(tasks=["arc_easy"], tasks_dir=str(tmp_path), batch_size=8))
    assert "no file at" in res["arc_easy"]["skipped"]
    assert "skipped" in tasks.table(res)


def test_wikitext_perplexity_is_the_loss_of_the_whole_file(tmp_path: Path):
    text = "The quick brown fox jumps over the lazy dog. " * 30
    (tmp_path / "wikitext-2").mkdir()
    (tmp_path / "wikitext-2" / "test.txt").write_text(text)
    model, tok = _model(seq_len=64), _bytes_tok()
    res = tasks.run_tasks(model, tok, EvalConfig(tasks=["wikitext2"], tasks_dir=str(tmp_path),
                                                batch_size=8))["wikitext2"]
    assert res["tokens"] == len(text) - 1 and res["bytes"] == len(text) - 1
    # the same number by hand: every byte after the first predicted once
    ids = torch.tensor(tok.encode(text))
    with torch.no_grad():
        total = 0.0
        for i in range(0, len(ids) - 1, 64):
            x = ids[i:min(i + 64, len(ids) - 1)]
            total += float(model(x[None], ids[i + 1:i + 1 + len(x)][None], reduction="sum")[1])
    assert res["loss"] == pytest.approx(total / (len(text) - 1), abs=1e-4)
    assert "wikitext2" in tasks.table({"wikitext2": res})


def test_fewshot_prefixes_other_answered_items():
    items = [tasks.Item([f"Q{i}:"] * 2, ["yes", "no"], i % 2) for i in range(6)]
    shot = tasks.with_fewshot(items, 2)
    assert shot[0].continuations == items[0].continuations and shot[0].gold == 0
    prefix = shot[0].contexts[0].removesuffix("Q0:")
    assert prefix.count("\n\n") == 2 and "Q0:" not in prefix
    for line in prefix.strip().split("\n\n"):  # each shot carries its own gold answer
        i = int(line[1:line.index(":")])
        assert line == f"Q{i}:" + (" yes" if i % 2 == 0 else " no")
    assert tasks.with_fewshot(items, 2)[3].contexts == shot[3].contexts  # same shots each run
    with pytest.raises(ConfigError, match="needs more than 6 items"):
        tasks.with_fewshot(items, 6)


@pytest.mark.parametrize("tasks", [["/a/mytask.v1.jsonl", "/b/mytask.v2.jsonl"],
                                   ["piqa", "/mine/piqa.jsonl"], ["copa", "copa"]])
def test_two_tasks_of_one_name_are_a_config_error(tasks):
    """Results are keyed by task name: the second of two same-named tasks replaced the
    first's result (and contamination row) without a word."""
    for decontam in ("true", "false"):   # at load, also when nothing else reads the tasks
        with pytest.raises(ConfigError, match=r"eval.tasks: .* are both task"):
            load_config(None, [("eval.tasks", json.dumps(tasks)),
                               ("data.decontam.enabled", decontam)])


def test_a_misspelt_built_in_task_is_a_config_error_and_a_file_may_share_a_built_in_name(
        tmp_path: Path):
    with pytest.raises(ConfigError, match="'arc_easyy' is neither a built-in task"):
        load_config(None, [("eval.tasks", '["arc_easyy"]'), ("runs_dir", str(tmp_path))])
    path = tmp_path / "wikitext2.jsonl"   # a user's task named like the perplexity built-in
    path.write_text(json.dumps({"query": "Pick", "choices": ["a", "b"], "gold": 0}) + "\n")
    kind, items = tasks.load(path, "auto")
    assert tasks.evaluate(_model(), _bytes_tok(), "wikitext2", kind, items)["items"] == 1


def test_a_task_file_edited_in_place_changes_the_eval_key(tmp_path: Path):
    """Same size and modification time (labels fixed in place, `cp -p`): the content's
    hash still changes the eval stage's key."""
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"query": "Pick", "choices": ["a", "b"], "gold": 0}) + "\n")
    cfg = EvalConfig(tasks=[str(path)])
    before, st = fingerprint(cfg), path.stat()
    path.write_text(path.read_text().replace('"gold": 0', '"gold": 1'))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and fingerprint(cfg) != before


def test_task_files_of_other_encodings_and_wrong_field_types(tmp_path: Path):
    """A BOM before the first record and a .zst or .xz file load; a field that is not text,
    or a file that is not UTF-8, is an error naming the file and line, not a traceback in
    the middle of the evaluation."""
    rec = {"query": "Pick", "choices": ["a", "b"], "gold": 1}
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(rec).encode() + b"\n")
    assert tasks.load(tmp_path / "bom.jsonl", "auto")[1][0].gold == 1
    (tmp_path / "t.jsonl.xz").write_bytes(lzma.compress(json.dumps(rec).encode()))
    assert tasks.load(tmp_path / "t.jsonl.xz", "auto")[0] == "mc"
    zstandard = pytest.importorskip("zstandard")
    (tmp_path / "t.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        json.dumps(rec).encode()))
    assert tasks.load(tmp_path / "t.jsonl.zst", "auto")[0] == "mc"
    for bad, field in (({"context_options": ["The cat", 5], "continuation": "x", "gold": 0},
                        "context_options"), ({"query": None, "choices": ["a", "b"], "gold": 0},
                                             "query"), ({"context": "x", "continuation": 3}, "continuation"),
                       ({"query": "q", "choices": ["a", None], "gold": 0}, "choices")):
        (tmp_path / "bad.jsonl").write_text("\n" + json.dumps(bad) + "\n")
        with pytest.raises(ConfigError, match=f"bad.jsonl:2: .*{field} must be text"):
            tasks.load(tmp_path / "bad.jsonl", "auto")
    # the line is named (it was the decoder's offset in a block of the file)
    latin = json.dumps({**rec, "query": "Caf\u00e9?"}, ensure_ascii=False).encode("latin-1")
    (tmp_path / "latin.jsonl").write_bytes((json.dumps(rec).encode() + b"\n") * 300 + latin)
    with pytest.raises(ConfigError, match=r"latin.jsonl:301: not UTF-8 \(byte 0xe9 at "
                                          r"character 15 of the line\)"):
        tasks.load(tmp_path / "latin.jsonl", "auto")
    (tmp_path / "packed.jsonl").write_bytes(gzip.compress(json.dumps(rec).encode() * 50))
    with pytest.raises(ConfigError, match=r"packed.jsonl:1: not UTF-8 .*: a gzip \(.gz\) file "
                                          "under a name without its suffix"):
        tasks.load(tmp_path / "packed.jsonl", "auto")
    (tmp_path / "latin.jsonl.gz").write_bytes(gzip.compress(latin))   # named right: no hint
    with pytest.raises(ConfigError, match=r"latin.jsonl.gz:1: not UTF-8 .*save the task file "
                                          "as UTF-8"):
        tasks.load(tmp_path / "latin.jsonl.gz", "auto")
    for name in ("plain.jsonl.xz", "plain.jsonl.zst"):   # named as compressed, but not
        (tmp_path / name).write_text(json.dumps(rec) + "\n")
        with pytest.raises(ConfigError, match=f"{name}: not a UTF-8 task file .*compression"):
            tasks.load(tmp_path / name, "auto")
    # the data stage reads every file the eval stage scores (decontamination, from_eval)
    for name in ("bom.jsonl", "t.jsonl.xz", "t.jsonl.zst"):
        assert "Pick b" in benchmark_texts(tmp_path / name)


def test_a_token_merged_across_context_and_choice_keeps_the_text_the_model_reads():
    """With the GPT-4 split "?" and "\\n" form one token: the context's tokens are then not
    a prefix of the whole text's, and cutting the whole at the context's length showed the
    model "...webs?Answer: B" (the newline gone) or "Total: 124" for "Total: 12" + "34".
    The pair is the whole text's tokens, split where they stop agreeing with the
    context's."""
    ranks = [bytes([i]) for i in range(256)] + [b"?\n", b"12", b"123", b"34"]
    tok = Tokenizer(ranks, GPT4_PATTERN, [BOS, EOS])
    for ctx, cont in (("Why do webs?", "\nAnswer: Sunlight"), ("Total: 12", "34"),
                      ("Total: 12", "3"), ("Answer: ", "yes")):
        head, tail = tasks.encode_pair(tok, ctx, cont)
        assert tok.decode(head + tail) == ctx + cont and tail, (ctx, cont)
        assert head == tok.encode(ctx.rstrip())[:len(head)]
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                                    n_heads=2, seq_len=64))
    (t,) = tasks.loglikelihoods(model, tok, [("Total: 12", "3")])   # was an error
    assert t.tokens == 1


def test_a_bad_record_of_ones_own_task_file_stops_the_run_before_its_first_stage(tmp_path):
    """It was the eval stage's error, after data, tokenizer, tokenize and train had run."""
    from pretrain.pipeline import run_stages
    from pretrain.stages import names
    bad = tmp_path / "mine.jsonl"
    bad.write_text(json.dumps({"query": "q", "choices": ["a", "b"], "gold": 0}) + "\n"
                   + json.dumps({"query": "q", "choices": ["a", "b"], "gold": 5}) + "\n")
    cfg = load_config(None, [*tiny_overrides(tmp_path), ("eval.tasks", json.dumps([str(bad)]))])
    with pytest.raises(ConfigError, match=f"{bad}:2: .*gold 5 is not one of the 2 choices"):
        run_stages(cfg, names(), force=set())
    assert not (cfg.run_dir / "data").exists()
    # and by `pretrain data`, which reads it to decontaminate, and `pretrain eval` alone
    # (it said the data stage was out of date)
    reads = load_config(None, [*tiny_overrides(tmp_path), ("data.decontam.from_eval", "true"),
                               ("eval.tasks", json.dumps([str(bad)]))])
    for stage in ("data", "eval"):
        with pytest.raises(ConfigError, match=f"{bad}:2: .*gold 5 is not one of the 2"):
            run_stages(reads, (stage,), force=set(), require_current_upstream=True)
    assert not (cfg.run_dir / "data").exists()
    bad.write_text(json.dumps({"query": "q", "choices": ["a", "b"], "gold": 1}) + "\n")
    tasks.check_own_files(cfg.eval)   # mended: nothing to say
    # too few items for eval.num_fewshot: said there too, naming the file (it came after
    # training, with the scores of the tasks before it lost, naming no task)
    few = load_config(None, [*tiny_overrides(tmp_path), ("eval.tasks", json.dumps([str(bad)])),
                             ("eval.num_fewshot", "2")])
    with pytest.raises(ConfigError, match=f"num_fewshot = 2 needs more than 2 items in {bad}, "
                                          "which has 1"):
        run_stages(few, names(), force=set())
    assert not (cfg.run_dir / "data").exists()
    with pytest.raises(ConfigError, match="task_limit = 3 leaves too few"):
        load_config(None, [*tiny_overrides(tmp_path), ("eval.num_fewshot", "3"),
                           ("eval.task_limit", "3")])


def test_the_table_heads_its_columns_only_when_a_task_has_numbers():
    skipped = {"piqa": {"skipped": "no file at x/piqa.jsonl"}}
    assert tasks.table(skipped) == "piqa              skipped: no file at x/piqa.jsonl"
    wiki = {"kind": "perplexity", "loss": 4.0, "ppl": 54.6, "bpb": 1.5, "tokens": 128}
    assert tasks.table({**skipped, "wikitext2": wiki}).splitlines()[1].startswith("wikitext2")
    scored = {**skipped, "mine": {"items": 4, "acc": 0.5, "acc_norm": 0.25, "chance": 0.5,
                                  "centered": 0.0}}
    lines = tasks.table(scored).splitlines()
    assert lines[0].split() == ["task", "items", "acc", "acc_norm", "chance", "centered"]
    assert lines[2].split() == ["mine", "4", "0.500", "0.250", "0.500", "0.000"]


def test_a_model_answering_one_position_throughout_is_said_so(tmp_path: Path):
    """A model that picks the third choice of every item scores the share of items whose
    gold is third (CommonsenseQA's "C": 0.403, centred +0.204 against a chance of 0.25):
    the table says it answers one position and what that position alone scores."""
    tok = _bytes_tok()
    recs = [{"query": f"Q{i}:", "choices": ["a", "b", "c", "d"], "gold": 2 if i % 5 < 2 else i % 4}
            for i in range(40)]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    kind, items = tasks.load(path, "auto", " ")
    third = [[tok.bos_id, *tok.encode(it.pairs()[2][0] + it.pairs()[2][1])] for it in items]
    res = tasks.evaluate(Oracle(third, 258), tok, "mine", kind, items)
    gold_third = sum(it.gold == 2 for it in items) / len(items)
    assert res["acc"] == res["majority"] == gold_third and res["same_choice"] == 1.0
    assert res["centered"] > 0.1   # what the accuracy alone suggests
    assert (f"the same choice position for 100% of the items: the gold's most common "
            f"position alone scores {gold_third:.3f}") in tasks.table({"mine": res})
    honest = tasks.evaluate(Oracle([[tok.bos_id, *tok.encode("".join(it.pairs()[it.gold]))]
                                    for it in items], 258), tok, "mine", kind, items)
    assert honest["acc"] == 1.0 and "same choice" not in tasks.table({"mine": honest})
