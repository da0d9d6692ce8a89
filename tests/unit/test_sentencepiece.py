"""SentencePiece tokenizers: LLaMA-2's published tokenizer.model gives its published ids (checked
against transformers on web text), and a trained Unigram / SentencePiece-BPE goes through the
stages, the shards and the HF export with identical ids."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from pydoc_data.topics import topics as pydoc_topics

import numpy as np
import pytest
import torch

from pretrain import stages
from pretrain.config import ConfigError, PretrainError
from pretrain.eval import baselines
from pretrain.eval.loss import domain_windows, score
from pretrain.eval.tasks import encode_pair
from pretrain.model.config import ModelConfig
from pretrain.model.transformer import Transformer
from pretrain.pipeline import run_stages
from pretrain.run_config import load_config
from pretrain.tokenizer import bpe, pretrained, shards, spm
from pretrain.tokenizer.bytelevel import hf_token_bytes
from pretrain.tokenizer.config import BOS, EOS, PAD, TokenizeConfig, TokenizerConfig
from pretrain.tokenizer.files import id_bytes, load_tokenizer
from pretrain.tokenizer.hf import save_pretrained
from pretrain.tokenizer.report import report
from pretrain.train.stage import _same_tokens

from ..conftest import shared_data, tiny_overrides

pytest.importorskip("sentencepiece", reason="pip install sentencepiece (the dev extra has it)")

LLAMA2 = "tokenizers/llama2/tokenizer.model"
# real text every Python installation has (as in test_tokenizer.py), and unseen characters
CORPUS = [Path(textwrap.__file__).read_text(), Path(json.__file__).read_text(),
          pydoc_topics["if"] * 3, pydoc_topics["for"] * 3]
UNSEEN = "naïve café — 東京 🙂 ∮ 𝔘\tend\r\n  two  spaces "


def _web_texts(n: int = 1000) -> list[str]:
    with open(shared_data("webtext/c4_sample.jsonl"), encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f, strict=False)]


@pytest.fixture(scope="module")
def llama2() -> spm.SentencePieceTokenizer:
    tok = pretrained.load("sentencepiece:" + str(shared_data(LLAMA2)), "", [], "", "")
    assert isinstance(tok, spm.SentencePieceTokenizer)
    return tok


def test_llama2_published_ids_and_its_own_bos_eos(llama2):
    assert llama2.encode("Hello world") == [15043, 3186]
    assert (llama2.bos, llama2.bos_id, llama2.eos, llama2.eos_id) == ("<s>", 1, "</s>", 2)
    assert llama2.vocab_size == 32000 and llama2.unk_id == 0 and llama2.byte_fallback
    assert llama2.encode("\n") == [29871, 13]            # "▁" then byte piece <0x0A>
    assert llama2.decode(llama2.encode(UNSEEN)) == UNSEEN
    ids = llama2.encode("a <s> b </s>")                   # special-token text stays text
    assert 1 not in ids and 2 not in ids
    sizes = llama2.token_bytes()
    assert sizes[:3] == [0, 0, 0] and sizes[13] == 1 and sizes[15043] == len(" Hello")
    # a bare .model path is recognised too; a Llama-3 (tiktoken) file gets a hint
    plain = pretrained.load(str(shared_data(LLAMA2)), "", [], "", "")
    assert plain.vocab_hash() == llama2.vocab_hash()


def test_llama2_ids_equal_transformers_on_web_text(llama2):
    transformers = pytest.importorskip("transformers", reason="the reference tokenizer")
    texts = _web_texts()
    ours = llama2.encode_batch(texts)
    folder = shared_data(LLAMA2).parent
    # transformers' own conversion of the same tokenizer.model
    auto = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert [auto(t, add_special_tokens=False)["input_ids"] for t in texts] == ours
    # LlamaTokenizer (legacy): 4.x runs sentencepiece itself; 5.x's rebuilt BPE merges "▁▁"
    # before "▁I" in a run of spaces, so it may differ there and only there
    slow = transformers.LlamaTokenizer.from_pretrained(str(folder), legacy=True)
    differ = [t for t, o in zip(texts, ours, strict=True)
              if slow(t, add_special_tokens=False)["input_ids"] != o]
    assert all("  " in t for t in differ)
    assert len(differ) < len(texts) // 50


def test_llama2_export_loads_in_transformers_with_identical_ids(llama2, tmp_path: Path):
    transformers = pytest.importorskip("transformers", reason="HF export needs transformers")
    save_pretrained(llama2, tmp_path, model_max_length=4096)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    texts = [*_web_texts(300), UNSEEN, "", " lead", "trail  "]
    assert [hf(t, add_special_tokens=False)["input_ids"] for t in texts] == llama2.encode_batch(texts)
    assert hf("Hello world")["input_ids"] == [1, 15043, 3186]     # BOS from the post-processor
    assert (hf.bos_token_id, hf.eos_token_id, hf.unk_token_id, len(hf)) == (1, 2, 0, 32000)
    assert hf.decode(llama2.encode(UNSEEN)) == UNSEEN


def test_llama2_our_format_and_shards_hold_32000_ids(llama2, tmp_path: Path):
    llama2.save(tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert again.vocab_hash() == llama2.vocab_hash() and (again.bos_id, again.eos_id) == (1, 2)
    texts = _web_texts(40)
    docs = [{"id": f"d{i}", "domain": "web", "text": t} for i, t in enumerate(texts)]
    out = tmp_path / "tokenize"
    out.mkdir()
    counts: dict = {}
    shards.run(TokenizeConfig(val_fraction=0.2), again, iter(docs), ["web"], out, counts)
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["dtype"], meta["vocab_size"], meta["bos_id"], meta["eos_id"]) == ("uint16", 32000, 1, 2)
    stored = {tuple(a.tolist()) for split in ("train", "val")
              for a, _ in shards.TokenShards(out, split).documents()}
    assert stored == {(1, *llama2.encode(t), 2) for t in texts}
    reader = shards.TokenShards(out, "train")
    assert reader.tokenizer().vocab_hash() == llama2.vocab_hash()
    assert np.array_equal(reader.token_bytes(), np.asarray(llama2.token_bytes()))


def test_not_a_sentencepiece_model_is_refused_with_a_hint(tmp_path: Path):
    bad = tmp_path / "tokenizer.model"
    bad.write_text("SGVsbG8= 0\n")   # what a Llama-3 (tiktoken) tokenizer.model looks like
    with pytest.raises(ConfigError, match="llama3:PATH"):
        pretrained.load(str(bad), "", [], "", "")
    with pytest.raises(ConfigError, match="tokenizer.bos_token"):
        pretrained.load("sentencepiece:" + str(shared_data(LLAMA2)), "", [], "<unk>", "")


def test_a_vocab_too_small_for_the_sample_says_which_setting_to_raise():
    """SentencePiece's own advice named its CLI's --character_coverage, no setting of ours."""
    with pytest.raises(ConfigError, match=r"tokenizer.vocab_size = 270 is smaller than the "
                                          r"\d+ pieces SentencePiece needs .* raise "
                                          r"tokenizer.vocab_size$"):
        spm.train(iter(CORPUS), TokenizerConfig(kind="unigram", vocab_size=270))


@pytest.fixture(scope="module", params=["unigram", "sp_bpe"])
def trained(request) -> spm.SentencePieceTokenizer:
    return spm.train(iter(CORPUS), TokenizerConfig(kind=request.param, vocab_size=700))


@pytest.mark.parametrize("kind", ["unigram", "sp_bpe"])
def test_training_does_not_depend_on_the_machines_cores(kind, monkeypatch):
    """The same sample trains the same model on 1 core and on 16 (the Unigram's pieces moved
    with the thread count, and both kinds stored it in the model)."""
    texts = _web_texts(400)
    models = []
    for cores in (1, 16):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        models.append(spm.train(iter(texts), TokenizerConfig(kind=kind, vocab_size=1000)))
    assert models[0].proto == models[1].proto


def test_trained_vocab_specials_and_lossless_text(trained):
    assert trained.vocab_size == 700
    assert (trained.piece(0), trained.bos_id, trained.eos_id, trained.piece(3)) == ("<unk>", 1, 2, PAD)
    assert (trained.bos, trained.eos) == (BOS, EOS) and trained.byte_fallback
    for text in [*CORPUS, UNSEEN, "", f"x {BOS} y {EOS}"]:
        ids = trained.encode(text)
        assert trained.decode(ids) == text
        assert not {0, 1, 2, 3} & set(ids)              # never <unk>, never a special token
    # characters the sample never had go to bytes, not <unk>
    assert len(trained.encode("🙂")) >= 4


def test_trained_compresses_and_reports_like_the_bpe(trained):
    texts = {"code": CORPUS[:2], "prose": CORPUS[2:]}
    rep = report(trained, texts)
    # the byte-level BPE of the same size on the same text: 2.61 / 2.78 bytes per token;
    # unigram 2.40 / 2.71, sp_bpe 2.36 / 2.55 (the 256 byte pieces cost them more of 700)
    base = report(bpe.train(iter(CORPUS), TokenizerConfig(vocab_size=700)), texts)
    for domain, row in rep["domains"].items():
        assert row["bytes_per_token"] > 0.85 * base["domains"][domain]["bytes_per_token"]
        assert row["unk_tokens"] == 0 and "unk_tokens" not in base["domains"][domain]
    assert 0 <= rep["unused_share"] < 1 and rep["longest_tokens"][0]["bytes"] > 5
    words = [w["word"] for w in rep["domains"]["prose"]["fragmenting_words"]]
    assert words and all(" " not in w for w in words)


def test_trained_export_loads_with_identical_ids(trained, tmp_path: Path):
    transformers = pytest.importorskip("transformers", reason="HF export needs transformers")
    save_pretrained(trained, tmp_path, model_max_length=1024)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    texts = [*CORPUS, UNSEEN, "", " lead", "trail  ", "<0x41> and 12345678"]
    theirs = [hf(t, add_special_tokens=False)["input_ids"] for t in texts]
    ours = trained.encode_batch(texts)
    # identical, except where two segmentations score exactly alike (a Unigram's Viterbi
    # ties, broken by each library's own float sums: the same pieces in another order, as
    # "*" "*" "****************" against "*" "****************" "*"; seen with a model
    # that sentencepiece 0.2.2 trained, not 0.2.3's): the same text and the same score
    scores = [p.score for p in trained.model_proto().pieces]
    for text, a, b in zip(texts, theirs, ours, strict=True):
        if a != b:
            assert trained.decode(a) == trained.decode(b) == text
            assert math.isclose(sum(scores[i] for i in a), sum(scores[i] for i in b),
                                rel_tol=1e-6), (text[:80], len(a), len(b))
    assert sum(a == b for a, b in zip(theirs, ours, strict=True)) >= len(texts) - 1
    assert hf("if")["input_ids"][0] == 1 and hf.pad_token_id == 3
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert auto(UNSEEN, add_special_tokens=False)["input_ids"] == trained.encode(UNSEEN)


def test_init_from_reads_what_the_ids_of_a_sentencepiece_export_stand_for(trained, tmp_path):
    """An HF folder with a SentencePiece tokenizer.json (ours exported): its ids were taken
    to mean the run's, unread, and a byte-level run trained on from it with wrong ids."""
    save_pretrained(trained, tmp_path, 64)
    assert hf_token_bytes(tmp_path / "tokenizer.json") == id_bytes(trained)
    _same_tokens(tmp_path, id_bytes(trained), trained.vocab_size)   # the same: goes on
    byte_level = bpe.Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    with pytest.raises(PretrainError, match="was trained with another tokenizer"):
        _same_tokens(tmp_path, id_bytes(byte_level), trained.vocab_size)


def test_bits_per_byte_counts_the_texts_bytes_not_the_dummy_prefix(trained, tmp_path):
    """The dummy-prefix "▁" before each document is one byte of its first token that is
    not in the text: the denominator counted it, one byte per document too many."""
    texts = [t[:400] for t in CORPUS] + ["Ünïcode and 東京 text", "x"]
    docs = [{"id": f"v{i}", "domain": "prose", "text": t, "split": "val"}
            for i, t in enumerate(texts)]
    docs.append({"id": "t", "domain": "prose", "text": CORPUS[0], "split": "train"})
    shards.run(TokenizeConfig(), trained, iter(docs), ["prose"], tmp_path, {})
    val = shards.TokenShards(tmp_path, "val")
    assert val.doc_start() == (1, trained.bos_id)
    wins = domain_windows(val, 64, 0)
    model = Transformer(ModelConfig(vocab_size=trained.vocab_size, d_model=16, n_layers=1,
                                    n_heads=2, seq_len=64))
    res = score(model, wins, val.token_bytes(), 8, torch.device("cpu"),
                doc_start=val.doc_start())
    want = sum(len(t.encode()) for t in texts)
    assert res["all"]["bytes"] == want
    base = baselines.run(shards.TokenShards(tmp_path, "train").shards, wins, val.token_bytes(),
                         0, val.doc_start())
    assert base["unigram"]["all"]["bytes"] == want


def test_config_combinations_are_refused_by_flag():
    with pytest.raises(ConfigError, match="tokenizer.kind: unknown 'wordpiece'"):
        TokenizerConfig(kind="wordpiece")
    with pytest.raises(ConfigError, match="tokenizer.pretrained"):
        TokenizerConfig(kind="unigram", pretrained="sentencepiece:x.model")
    with pytest.raises(ConfigError, match="tokenizer.pattern"):
        TokenizerConfig(kind="unigram", pattern="gpt2")
    with pytest.raises(ConfigError, match="extend_words"):
        TokenizerConfig(kind="sp_bpe", extend_words=["pharmacokinetics"])


def test_unigram_through_the_tokenizer_and_tokenize_stages(tmp_path: Path):
    cfg = load_config(None, tiny_overrides(   # decontamination is most of the data stage's time
        tmp_path, tokenizer__kind="unigram", tokenizer__vocab_size="1024",
        data__decontam__enabled="false", tokenizer__report_chars="100000"))
    rd = run_stages(cfg, stages.names()[:3], force=set())
    tok = load_tokenizer(rd.root / "tokenizer" / "tokenizer.json")
    assert isinstance(tok, spm.SentencePieceTokenizer) and tok.vocab_size == 1024
    rep = json.loads((rd.root / "tokenizer" / "report.json").read_text())
    assert all(r["bytes_per_token"] > 2 and r["unk_tokens"] == 0 for r in rep["domains"].values())
    meta = json.loads((rd.root / "tokenize" / "meta.json").read_text())
    assert (meta["vocab_size"], meta["vocab_hash"]) == (1024, tok.vocab_hash())
    docs = list(shards.TokenShards(rd.root / "tokenize", "train").documents())
    assert docs and all(d[0] == tok.bos_id and d[-1] == tok.eos_id for d, _ in docs)


def test_a_task_continuation_is_scored_as_in_running_text(trained):
    """A choice is scored with the pieces it has mid-document: no dummy-prefix "▁" of its
    own (which alone cost a model that knows the text several nats per choice), and a
    context's trailing space scored with the continuation (lm-eval's convention)."""
    for ctx, cont in (("The cat sat on the", " mat"), ("Question: why?\nAnswer: ", "because"),
                      ("", "Once upon a time")):
        head, tail = encode_pair(trained, ctx, cont)
        assert head + tail == trained.encode(ctx + cont)
        assert trained.decode(tail).strip() == cont.strip()
    head, tail = encode_pair(trained, "Answer: ", "yes")
    assert head == trained.encode("Answer:") and tail == trained.encode("Answer: yes")[len(head):]
    assert trained.decode_after(head, tail) == " yes"   # the space kept, though "▁" leads
