"""lm-evaluation-harness and our scorer: on the same model and local task file the same
accuracy whether lm-eval (in its own ARC layout: "Answer:" ends the context, the choice
after one space is the continuation) or we build the prompts; and lm-eval's own Hugging Face
model (``HFLM``) on our export gives our scores, request by request."""

from pathlib import Path

import pytest
import torch

from pretrain.eval import harness, tasks
from pretrain.eval.config import EvalConfig
from pretrain.model.transformer import ModelConfig, Transformer
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import BOS, EOS

from ..conftest import shared_data

pytest.importorskip("lm_eval", reason="lm-evaluation-harness (the [eval] extra) is not installed")

YAML = """task: arc_easy_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def _model_and_tok():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=258, d_model=32, n_layers=1, n_heads=2,
                                    seq_len=512))
    return model, Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])


def test_lm_eval_and_our_scorer_agree_exactly(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    arc = shared_data("eval/llm-foundry/arc_easy.jsonl")
    (tmp_path / "arc_local.yaml").write_text(YAML.format(path=arc))
    model, tok = _model_and_tok()
    cfg = EvalConfig(harness=["arc_easy_local"], task_limit=100, harness_include=str(tmp_path))
    theirs = harness.run(model, tok, cfg)["arc_easy_local"]
    kind, items = tasks.load(arc, "mc", "\nAnswer: ", limit=100)
    ours = tasks.evaluate(model, tok, "arc_easy", kind, items)
    print(f"\nlm-eval {theirs}\nours    {ours}")
    assert theirs["acc"] == ours["acc"] and theirs["acc_norm"] == ours["acc_norm"]


MINI = """task: mini
dataset_path: json
dataset_kwargs:
  data_files:
    test: mini.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{query}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{gold}}"
"""


@pytest.mark.parametrize("names, own", [
    (["mini"], True),
    # a group of the folder may name lm-eval's own tasks; so may the list
    pytest.param(["both"], False, marks=pytest.mark.slow),
    pytest.param(["mini", "arc_easy"], False, marks=pytest.mark.slow),
])
def test_tasks_of_the_include_folder_alone_skip_the_index_of_lm_evals_own(tmp_path: Path,
                                                                           names, own):
    """lm-eval's index of its own tasks takes 12 s; tasks all found in the folder need it not."""
    (tmp_path / "mini.yaml").write_text(MINI)
    (tmp_path / "both.yaml").write_text("group: both\ntask:\n  - mini\n  - arc_easy\n")
    manager = harness.task_manager(EvalConfig(harness=names, harness_include=str(tmp_path)))
    assert {"mini", "both"} <= set(manager.all_tasks)
    assert ("arc_easy" in manager.all_tasks) is not own


def test_rolling_loglikelihood_and_generation():
    model, tok = _model_and_tok()
    lm = harness.make_lm(model, tok)

    class Req:
        def __init__(self, *args):
            self.args = args

    text = "hello world, " * 60  # longer than one window of 512 tokens
    (total,) = lm.loglikelihood_rolling([Req(text)])
    ids = [tok.bos_id, *tok.encode(text)]
    with torch.no_grad():  # the same by hand: each window conditioned on what came before
        expect = 0.0
        for start in range(1, len(ids), 512):
            end = min(start + 512, len(ids))
            inp = torch.tensor([ids[max(0, end - 513):end - 1]])
            logp = torch.log_softmax(model(inp)[0][0, -(end - start):], -1)
            expect += float(logp.gather(1, torch.tensor(ids[start:end])[:, None]).sum())
    assert total == pytest.approx(expect, rel=1e-5)
    (out,) = lm.generate_until([Req("abc", {"until": ["\n"], "max_gen_toks": 8})])
    assert isinstance(out, str) and "\n" not in out and len(out) <= 8  # 8 byte tokens
    # a prompt longer than the context keeps its end and room for max_gen_toks (it kept
    # seq_len - 1 tokens, which left room for one)
    (out,) = lm.generate_until([Req("x" * 900, {"until": [], "max_gen_toks": 8})])
    assert len(out.encode()) == 8
    assert [harness._metric(k) for k in ("acc,none", "exact_match,strict-match", "f1")] == \
        ["acc", "exact_match/strict-match", "f1"]   # every filter of a task kept apart


def test_generation_is_batched_and_stops_at_its_until_strings(monkeypatch):
    """generate_until ran one request at a time, each to its max_gen_toks, and cut at an
    ``until`` string only afterwards. Batched now (greedy: a row's output does not depend
    on the others) and stopped where a stop string appears: the same texts."""
    model, tok = _model_and_tok()

    class Req:
        def __init__(self, *args):
            self.args = args

    prompts = ["abc", "hello there", "x", "a much longer prompt than the others"]
    free = harness.make_lm(model, tok, batch_size=1).generate_until(
        [Req(p, {"until": [], "max_gen_toks": 24}) for p in prompts])
    # a stop string from each free run's middle; one request of another budget
    stops = [t[5:7] if len(t) >= 7 else "\x00never" for t in free]
    reqs = [Req(p, {"until": [s], "max_gen_toks": 24}) for p, s in zip(prompts, stops, strict=True)]
    reqs.append(Req("abc", {"until": ["\x00never", ""], "max_gen_toks": 6}))   # "": no stop
    six = harness.make_lm(model, tok, batch_size=1).generate_until(
        [Req("abc", {"until": [], "max_gen_toks": 6})])
    made = []
    real = harness.generate

    def counted(*args, **kwargs):   # the real generate; what it made kept
        news = real(*args, **kwargs)
        made.append([len(n) for n in news])
        return news

    monkeypatch.setattr(harness, "generate", counted)
    got = harness.make_lm(model, tok, batch_size=3).generate_until(reqs)
    want = [t.split(s)[0] for t, s in zip(free, stops, strict=True)] + six
    assert got == want
    assert sorted(map(len, made)) == [1, 1, 3]     # 4 of one budget in batches of 3, then 1
    assert sum(n < 24 for batch in made for n in batch) >= 3   # stopped at their strings


def test_our_scores_are_lm_evals_hugging_face_model_on_the_export(tmp_path: Path):
    """The reference, not our own code on both sides: lm-eval's ``HFLM`` on the exported
    model and tokenizer scores every (context, continuation) of a real task as our scorer
    does (BOS before the context, the context's trailing space moved into the
    continuation, the continuation as it tokenizes in running text)."""
    pytest.importorskip("accelerate", reason="lm-eval's HFLM needs accelerate")
    pytest.importorskip("transformers")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from pretrain.model import hf as model_hf
    from pretrain.tokenizer import hf as tok_hf
    model, tok = _model_and_tok()
    model_hf.export(model, tmp_path / "hf", tok.bos_id, tok.eos_id)
    tok_hf.save_pretrained(tok, tmp_path / "hf", model.cfg.seq_len)
    ref = HFLM(pretrained=str(tmp_path / "hf"), device="cpu", batch_size=1, dtype="float32")
    kind, items = tasks.load(shared_data("eval/llm-foundry/arc_easy.jsonl"), "mc",
                             "\nAnswer: ", limit=8)
    pairs = [p for it in items for p in it.pairs()] + [("Question: 2 + 2 = ", "4"), ("", "ab")]
    theirs = [ref.loglikelihood([Instance("loglikelihood", {}, p, 0)], disable_tqdm=True)[0][0]
              for p in pairs]   # one at a time: HFLM would share a context's forward
    ours = [t.logprob for t in tasks.loglikelihoods(model, tok, pairs)]
    assert ours == pytest.approx(theirs, abs=2e-4)


def test_lm_evals_rolling_loglikelihood_on_the_export_is_ours_without_its_second_bos(
        tmp_path: Path):
    """Perplexity tasks (wikitext, ...) go through ``loglikelihood_rolling``: lm-eval's
    ``HFLM`` puts its prefix token (BOS) before the text and, since 0.4.10, lets the
    tokenizer add its own BOS too, so the export's text is read after two BOS (-4120.13
    against our -4114.81 on this model with lm-eval 0.4.13). With ``add_bos_token=False``
    it is our figure exactly, as the README advises."""
    pytest.importorskip("accelerate", reason="lm-eval's HFLM needs accelerate")
    pytest.importorskip("transformers")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from pretrain.model import hf as model_hf
    from pretrain.tokenizer import hf as tok_hf
    model, tok = _model_and_tok()
    model_hf.export(model, tmp_path / "hf", tok.bos_id, tok.eos_id)
    tok_hf.save_pretrained(tok, tmp_path / "hf", model.cfg.seq_len)

    class Req:
        def __init__(self, *args):
            self.args = args

    text = "hello world, the cat sat on the mat. " * 20   # 740 tokens: two windows
    (ours,) = harness.make_lm(model, tok).loglikelihood_rolling([Req(text)])
    ref = HFLM(pretrained=str(tmp_path / "hf"), device="cpu", batch_size=1, dtype="float32",
               add_bos_token=False)
    (theirs,) = ref.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)
    assert theirs == pytest.approx(ours, abs=1e-3)
