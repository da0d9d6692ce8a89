"""DCLM CORE: which tokens each task type scores, few-shot prompts, selection by mean
per-token loss (checked by hand), a model told the answers scores 1.0 on every task type,
an untrained one scores at chance, and the offline subset is labelled as such."""

import bz2
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pretrain.config import ConfigError
from pretrain.eval import core
from pretrain.eval.config import EvalConfig
from pretrain.eval.tasks import Item, shot_indices
from pretrain.model.transformer import ModelConfig, Transformer
from pretrain.tokenizer import bpe
from pretrain.tokenizer.config import TokenizerConfig

from ..conftest import Oracle

DEVICE = torch.device("cpu")
CORPUS = ["Question: Which colour is the sky on a clear day?\nAnswer: blue\n\n",
          "The capital of France is Paris. The capital of Italy is Rome. ",
          "The trophy does not fit in the suitcase because the trophy is too big. "] * 30


@pytest.fixture(scope="module")
def tok() -> bpe.Tokenizer:
    return bpe.train(iter(CORPUS), TokenizerConfig(vocab_size=400))


def _model(vocab: int, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig(vocab_size=vocab, d_model=32, n_layers=1, n_heads=2,
                                   seq_len=512))


def test_multiple_choice_scores_what_the_choices_do_not_share(tok):
    it = Item(["Question: Which colour is the sky?"] * 3, ["blue", "green", "deep red"], 0,
              "\nAnswer: ")
    rows = core.sequences(it, "mc", "\nAnswer: ", [], tok)
    for (ids, n), choice in zip(rows, it.continuations, strict=True):
        assert ids[0] == tok.bos_id
        assert tok.decode(ids[1:]) == "Question: Which colour is the sky?\nAnswer: " + choice
        assert tok.decode(ids[-n:]).strip() == choice  # the choice, with its leading space
        assert tok.decode(ids[1:-n]).startswith("Question: Which colour is the sky?\nAnswer:")


def test_schema_scores_the_shared_suffix(tok):
    it = Item(["The trophy does not fit because the trophy", "The trophy does not fit because "
               "the suitcase"], ["is too big."] * 2, 0, " ")
    rows = core.sequences(it, "schema", " ", [], tok)
    assert rows[0][1] == rows[1][1]
    for ids, n in rows:
        assert tok.decode(ids[-n:]) == " is too big."


def test_language_modelling_trims_the_context_and_scores_the_answer(tok):
    it = Item(["  The capital of France is "], ["Paris"], 0, " ")
    (ids, n), = core.sequences(it, "lm", " ", [], tok)
    assert tok.decode(ids[1:]) == "The capital of France is Paris"
    assert tok.decode(ids[-n:]) == " Paris"


def test_fewshot_examples_are_answered_and_separated_by_a_blank_line(tok):
    shots = [Item(["Q one"] * 2, ["a", "b"], 1, "\nAnswer: "),
             Item(["Q two"] * 2, ["c", "d"], 0, "\nAnswer: ")]
    it = Item(["Q three"] * 2, ["e", "f"], 0, "\nAnswer: ")
    (ids, _), _ = core.sequences(it, "mc", "\nAnswer: ", shots, tok)
    assert tok.decode(ids[1:]) == "Q one\nAnswer: b\n\nQ two\nAnswer: c\n\nQ three\nAnswer: e"


def test_shots_are_nanochats_draw_and_never_the_item():
    import random
    for n, k in ((11, 10), (50, 3), (2000, 10)):
        for i in (0, 7, n - 1):
            got = shot_indices(i, n, k)
            assert got == random.Random(1234 + i).sample([j for j in range(n) if j != i], k)
            assert i not in got and len(set(got)) == k


def test_choice_is_the_lowest_mean_loss_computed_by_hand(tok):
    # choices of different token lengths: the mean and the sum per choice can disagree
    it = Item(["The capital of France is"] * 3, ["Paris", "Rome and Paris and Rome", "blue"],
              0, " ")
    rows = core.sequences(it, "mc", " ", [], tok)
    differs = 0
    for seed in range(8):
        model = _model(tok.vocab_size, seed)
        with torch.no_grad():  # sharper predictions than at init, so choices differ more
            for w in model.parameters():
                w.mul_(4)
        means, sums = [], []
        for ids, n in rows:
            with torch.no_grad():
                logits, _ = model(torch.tensor([ids[:-1]]))
            logp = F.log_softmax(logits[0], -1)
            tail = [float(logp[len(ids) - 1 - n + k, ids[len(ids) - n + k]]) for k in range(n)]
            means.append(-sum(tail) / n)
            sums.append(-sum(tail))
        expected = min(range(3), key=means.__getitem__)
        differs += expected != min(range(3), key=sums.__getitem__)
        task = core.CoreTask("t", (), "mc", 0, " ", 0.25)
        for gold in range(3):
            res = core.score_task(model, tok, task, [Item(it.contexts, it.continuations, gold,
                                                          " ")])
            assert res["acc"] == (1.0 if gold == expected else 0.0)
    assert differs  # some seed where the summed loss would pick another choice


def _write(path: Path, recs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def _bundle(root: Path, n: int = 16) -> Path:
    lf = root / "llm-foundry"
    _write(lf / "arc_easy.jsonl", [{"query": f"Question: item {i}?", "choices":
                                    ["red", "green", "blue", "sky"], "gold": i % 4}
                                   for i in range(n)])
    _write(lf / "boolq.jsonl", [{"query": f"Passage {i}. Is it?", "choices": ["no", "yes"],
                                 "gold": i % 2} for i in range(n)])
    _write(lf / "winogrande.jsonl", [{"context_options": [f"Anna {i} beat Maria so Anna",
                                                          f"Anna {i} beat Maria so Maria"],
                                      "continuation": "was sad.", "gold": i % 2}
                                     for i in range(n)])
    _write(lf / "lambada_openai.jsonl", [{"context": f"The number {i} is written as",
                                          "continuation": f"{i}"} for i in range(n)])
    _write(lf / "bigbench_operators.jsonl", [{"context": f"op {i} =", "continuation":
                                              f"{i * 2}"} for i in range(n)])
    hs = "".join(f"Making tea {i}: a man pours water.\n{i % 4}\nsits.\nstands.\nruns.\n"
                 f"waits.\n" for i in range(n))
    (root / "hellaswag").mkdir()
    (root / "hellaswag" / "hellaswag_val_full.txt.bz2").write_bytes(bz2.compress(hs.encode()))
    return root


def _gold_rows(tok, root: Path, limit: int) -> list[list[int]]:
    """The gold prompt of every item, few-shot examples included, as the scorer builds it."""
    rows = []
    for task in core.TASKS:
        found = core.task_items(task, str(root), limit)
        if found is None:
            continue
        items = found[2]
        for i, it in enumerate(items):
            shots = [items[j] for j in shot_indices(i, len(items), task.shots)]
            seqs = core.sequences(it, task.kind, task.delimiter, shots, tok)
            rows.append(seqs[it.gold][0])
    return rows


def test_a_model_told_the_answers_scores_one_on_every_task_type(tok, tmp_path: Path):
    root = _bundle(tmp_path)
    oracle = Oracle(_gold_rows(tok, root, 0), tok.vocab_size)
    res = core.run(oracle, tok, EvalConfig(tasks_dir=str(root), core_limit=0))
    assert set(res["tasks"]) == {"arc_easy", "boolq", "winogrande", "lambada_openai",
                                 "bigbench_operators", "hellaswag", "hellaswag_zeroshot"}
    for name, r in res["tasks"].items():
        assert r["acc"] == 1.0 and r["centered"] == 1.0, name
    assert res["core_exact"] == 1.0 and res["exact_tasks"] == 5
    assert not res["tasks"]["hellaswag"]["exact"]
    assert "squad" in res["missing"] and not res["comparable_with_gpt2"]
    assert "not comparable" in core.table(res)


def test_an_untrained_model_scores_at_chance_and_boolq_centres_on_its_majority(tok,
                                                                              tmp_path: Path):
    root = _bundle(tmp_path, n=240)
    res = core.run(_model(tok.vocab_size), tok, EvalConfig(tasks_dir=str(root), core_limit=0))
    arc = res["tasks"]["arc_easy"]
    assert arc["chance"] == 0.25 and abs(arc["acc"] - 0.25) < 3 * (0.25 * 0.75 / 240) ** 0.5
    boolq = res["tasks"]["boolq"]
    assert boolq["baseline"] == 0.62
    assert boolq["centered"] == pytest.approx((boolq["acc"] - 0.62) / 0.38, abs=1e-4)
    assert res["tasks"]["lambada_openai"]["acc"] == 0.0  # no greedy luck on 2+ digits
    # a limit scores the first items of DCLM's shuffle, the same ones on every run
    a = core.run(_model(tok.vocab_size), tok, EvalConfig(tasks_dir=str(root), core_limit=20))
    b = core.run(_model(tok.vocab_size), tok, EvalConfig(tasks_dir=str(root), core_limit=20))
    assert a == b and a["tasks"]["arc_easy"]["items"] == 20


def test_nothing_found_is_reported_not_scored(tok, tmp_path: Path):
    res = core.run(_model(tok.vocab_size), tok, EvalConfig(tasks_dir=str(tmp_path), core_limit=0))
    assert res["tasks"] == {} and res["core_exact"] is None
    assert len(res["missing"]) == len(core.TASKS) == 22
    assert "n/a" in core.table(res)


def test_core_limit_must_leave_room_for_ten_shots():
    with pytest.raises(ConfigError, match="core_limit"):
        EvalConfig(core_limit=10)
    EvalConfig(core_limit=11)
