"""Domain tokens added to a trained tokenizer; embeddings grown for continued pretraining."""

from __future__ import annotations

import json.decoder
import textwrap
from pathlib import Path

import pytest
import tiktoken
import torch

from pretrain.cli import main
from pretrain.model.config import ModelConfig
from pretrain.model.transformer import Transformer, grow_vocab
from pretrain.tokenizer import bpe
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import TokenizerConfig
from pretrain.tokenizer.extend import extend
from pretrain.tokenizer.hf import save_pretrained
from pretrain.tokenizer.report import report, table

CORPUS = [Path(textwrap.__file__).read_text(), Path(json.decoder.__file__).read_text()]
TEXT = "The transformer's tokenization of pharmacokinetics and immunohistochemistry: fine."


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return bpe.train(iter(CORPUS), TokenizerConfig(vocab_size=600))


def test_added_words_become_one_token_and_old_ids_stay(tok: Tokenizer, tmp_path: Path):
    words = ["pharmacokinetics", "immunohistochemistry"]
    new, result = extend(tok, words)
    assert result["added"] == ["pharmacokinetics", " pharmacokinetics", "immunohistochemistry",
                               " immunohistochemistry"]
    assert new.ranks == tok.ranks and new.special == tok.special      # nothing renumbered
    assert (new.bos_id, new.eos_id) == (tok.bos_id, tok.eos_id)
    assert all(a.id >= tok.vocab_size for a in new.added)
    for w in words:
        (one,) = new.encode(" " + w)
        assert one >= tok.vocab_size and new.decode([one]) == " " + w
        assert new.token_bytes()[one] == len(w) + 1
        added = next(a for a in new.added if a.id == one)
        assert added.parts == tok.encode(" " + w)                      # what it was made of
    # every link of a chain is made of the pieces it joins (each had the whole word's
    # pieces: " ph" started as the mean of all of " pharmacokinetics"'s rows)
    for a in new.added:
        assert b"".join(new.bytes_of(i) for i in a.parts) == a.bytes, a
    # the chain's intermediate tokens (prefixes such as " pharm") may also merge inside
    # other words: never longer than before, always the same text back; text that holds
    # none of the added tokens' bytes encodes exactly as before
    for text in CORPUS:
        assert len(new.encode(text)) <= len(tok.encode(text))
        assert new.decode(new.encode(text)) == text
    plain = "for x in range(10): print(x)"
    assert not any(a.bytes in plain.encode() for a in new.added)
    assert new.encode(plain) == tok.encode(plain)
    assert len(new.encode(TEXT)) < len(tok.encode(TEXT)) and new.decode(new.encode(TEXT)) == TEXT
    new.save(tmp_path / "t.json")
    again = Tokenizer.load(tmp_path / "t.json")
    assert again.encode(TEXT) == new.encode(TEXT) and again.vocab_hash() == new.vocab_hash()
    assert again.vocab_hash() != tok.vocab_hash()


def test_forms_the_split_regex_cuts_are_skipped_with_a_reason(tok: Tokenizer):
    new, result = extend(tok, ["COVID-19", "def"])
    assert any("COVID-19" in s and "split regex" in s for s in result["skipped"])
    # "def" is one token already (the corpus is Python): nothing to add, nothing skipped
    assert len(tok.encode("def")) == 1 and "def" not in result["added"]
    assert not any("'def'" in s for s in result["skipped"])


@pytest.mark.parametrize("tied", [False, True])
def test_resized_embeddings_keep_old_rows_and_average_new_ones(tok: Tokenizer, tied: bool):
    new, _ = extend(tok, ["pharmacokinetics"])
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, seq_len=64,
                                    vocab_size=tok.vocab_size, tie_embeddings=tied))
    old_embed, old_head = model.embed.weight.clone(), model.head.weight.clone()
    ids = torch.tensor([tok.encode("plain text here")])
    before = model(ids)[0]
    grow_vocab(model, [a.parts for a in sorted(new.added, key=lambda a: a.id)])
    assert model.cfg.vocab_size == new.vocab_size
    assert model.embed.weight.shape[0] == model.cfg.padded_vocab   # still a multiple of 64
    assert not model.embed.weight[new.vocab_size:].any()           # padding rows stay zero
    assert torch.equal(model.embed.weight[:tok.vocab_size], old_embed[:tok.vocab_size])
    for a in new.added:
        assert torch.allclose(model.embed.weight[a.id], old_embed[a.parts].mean(0))
        assert torch.allclose(model.head.weight[a.id], old_head[a.parts].mean(0))
    assert (model.head.weight is model.embed.weight) == tied
    after = model(ids)[0]
    assert after.shape[-1] == new.vocab_size
    assert torch.allclose(after[..., :tok.vocab_size], before)   # old logits unchanged
    # the grown model trains
    _, loss = model(torch.tensor([new.encode(TEXT)[:-1]]), torch.tensor([new.encode(TEXT)[1:]]))
    loss.backward()
    assert model.embed.weight.grad is not None


def test_extended_tokenizer_exports_to_hf_with_the_same_ids(tok: Tokenizer, tmp_path: Path):
    pytest.importorskip("transformers", reason="HF export needs transformers")
    from transformers import PreTrainedTokenizerFast

    new, _ = extend(tok, ["pharmacokinetics", "immunohistochemistry"])
    save_pretrained(new, tmp_path, 1024)
    hf = PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    assert len(hf) == new.vocab_size
    assert hf.convert_tokens_to_ids("<|bos|>") == new.bos_id
    for text in [TEXT, *CORPUS]:
        assert hf(text, add_special_tokens=False)["input_ids"] == new.encode(text)


def test_repeated_and_run_together_domain_words_export_with_the_same_ids(tok: Tokenizer):
    """tiktoken merges any adjacent pair whose bytes are a token; HF only the merges listed:
    an added token must be listed from every pair of tokens it splits into, or "hahaha"
    becomes three "ha" in HF and "haha" + "ha" here."""
    import random

    from pretrain.tokenizer.hf import to_hf
    words = ["haha", "decoder", "🙂🙂", "日本語", "naïve", "isinstance", "aaaa", "abab"]
    new, _ = extend(tok, words)
    hf = to_hf(new)
    rng = random.Random(0)
    pool = [*words, "ha", "de", "code", "r", "🙂", "語", "is", "instance", " ", "\n", "a", "b"]
    for _ in range(400):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 10)))
        assert hf.encode(text, add_special_tokens=False).ids == new.encode(text), text
    # words that overlap each other in every way (prefixes, suffixes, repeats, "abcab"
    # made of "abc" + "ab" or "ab" + "cab"), run together with their letters
    for alphabet in ("ab", "abc", "xyz", "ae") * 10:
        words = ["abcab", "abc", "cab"] if alphabet == "abc" else []
        words += ["".join(rng.choice(alphabet) for _ in range(rng.randint(2, 10)))
                  for _ in range(rng.randint(1, 12))]
        new, _ = extend(tok, words)
        hf = to_hf(new)
        for _ in range(100):
            text = "".join(rng.choice([*words, *alphabet, " "]) for _ in range(rng.randint(1, 8)))
            assert hf.encode(text, add_special_tokens=False).ids == new.encode(text), (words,
                                                                                     text)


def test_the_same_words_added_in_another_order_are_another_tokenizer(tok: Tokenizer):
    """What train.init_from compares: the bytes of every id of text, domain tokens too."""
    from pretrain.tokenizer.files import first_difference, id_bytes
    a, _ = extend(tok, ["pharmacokinetics", "immunohistochemistry"])
    b, _ = extend(tok, ["immunohistochemistry", "pharmacokinetics"])
    again, _ = extend(tok, ["pharmacokinetics", "immunohistochemistry"])
    assert a.vocab_size == b.vocab_size
    assert first_difference(id_bytes(a), id_bytes(b), a.vocab_size) == a.added[0].id
    assert first_difference(id_bytes(a), id_bytes(again), a.vocab_size) is None
    assert first_difference(id_bytes(a), id_bytes(b), tok.vocab_size) is None  # below: the same


def test_an_hf_directory_is_read_for_its_own_tokenizer(tok: Tokenizer, tmp_path: Path):
    """An HF export inside another run's folder: its own tokenizer.json, not the run's."""
    from pretrain.tokenizer.files import id_bytes, model_tokens
    other, _ = extend(tok, ["pharmacokinetics"])
    (tmp_path / "tokenizer").mkdir()
    other.save(tmp_path / "tokenizer" / "tokenizer.json")
    (tmp_path / "hf").mkdir()
    save_pretrained(tok, tmp_path / "hf", 1024)
    assert model_tokens(tmp_path / "hf", ours=False) == id_bytes(tok)
    assert model_tokens(tmp_path / "hf" / "x", ours=True) == id_bytes(other)  # a folder of ours


def test_a_word_holding_a_special_token_is_skipped_and_the_export_keeps_its_ids(tmp_path: Path):
    """A split regex of one's own can leave "<|bos|>" whole: added as a plain token it took
    the special token's name in the export (HF's BOS became another id than ours)."""
    own = bpe.train(iter(CORPUS), TokenizerConfig(vocab_size=600, pattern=r" ?\S+|\s+"))
    new, report = extend(own, ["<|bos|>", "x<|eos|>", "pharmacokinetics"])
    assert report["skipped"] == ["'<|bos|>': holds the special token '<|bos|>'",
                                 "' <|bos|>': holds the special token '<|bos|>'",
                                 "'x<|eos|>': holds the special token '<|eos|>'",
                                 "' x<|eos|>': holds the special token '<|eos|>'"]
    assert report["added"] == ["pharmacokinetics", " pharmacokinetics"]
    pytest.importorskip("transformers", reason="HF export needs transformers")
    from transformers import PreTrainedTokenizerFast
    save_pretrained(new, tmp_path, 1024)
    hf = PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    assert (hf.bos_token_id, hf.eos_token_id, len(hf)) == (new.bos_id, new.eos_id, new.vocab_size)
    assert hf(TEXT, add_special_tokens=False)["input_ids"] == new.encode(TEXT)


def test_an_extended_tokenizer_is_loaded_again_from_our_file_not_its_hf_export(
        tok: Tokenizer, tmp_path: Path):
    """A run's own tokenizer.json (domain tokens included) is a ``tokenizer.pretrained`` for
    the next run; its HF export, whose domain tokens sit after the special tokens, is
    refused with where to look instead (it said "ids are not 0..N without gaps")."""
    from pretrain.config import ConfigError
    from pretrain.tokenizer import pretrained
    new, _ = extend(tok, ["pharmacokinetics", "immunohistochemistry"])
    (tmp_path / "run").mkdir()
    new.save(tmp_path / "run" / "tokenizer.json")
    again = pretrained.load(str(tmp_path / "run"), "", [], "", "")
    assert isinstance(again, Tokenizer) and again.encode(TEXT) == new.encode(TEXT)
    assert (again.vocab_size, again.bos_id, again.eos_id) == (new.vocab_size, new.bos_id, new.eos_id)
    renamed = pretrained.load(str(tmp_path / "run" / "tokenizer.json"), "", [], "", "<|bos|>")
    assert renamed.eos_id == new.bos_id
    pytest.importorskip("transformers", reason="HF export needs transformers")
    save_pretrained(new, tmp_path / "hf", 1024)
    with pytest.raises(ConfigError, match="extended with domain tokens.*run's own tokenizer"):
        pretrained.load(str(tmp_path / "hf"), "", [], "", "")


def _config(tmp_path: Path, name: str, sources: list[tuple[Path, str]], tokenizer: str = "") -> Path:
    """A run config of local jsonl sources (each with its own TOML lines), no near-dedup,
    a 300-token vocabulary and ``tokenizer``'s lines."""
    text = f'name = "{name}"\nruns_dir = "{tmp_path / "runs"}"\n'
    for path, own in sources:
        text += f'[[data.sources]]\ntype = "local"\npaths = ["{path}"]\nquality = "none"\n{own}'
    cfg = tmp_path / "c.toml"
    cfg.write_text(text + "[data.minhash]\nenabled = false\n[tokenizer]\nvocab_size = 300\n" + tokenizer)
    return cfg


def test_mined_domain_words_come_from_training_documents_only(tmp_path: Path):
    """tokenizer.extend_mined took words from the held-out documents (use_for = "val")
    too: a word that only a held-out document repeats became a token."""
    body = "The harbour was quiet that morning, and the boats rocked at anchor. " * 6
    (tmp_path / "train.jsonl").write_text("".join(
        json.dumps({"id": f"t{i}", "text": f"{i}. {body} Xylophonists tune marimbas."}) + "\n"
        for i in range(30)))
    (tmp_path / "held.jsonl").write_text(json.dumps(
        {"id": "h", "text": "Quuxzorbification " * 40 + body}) + "\n")
    cfg = _config(tmp_path, "mined", [(tmp_path / "train.jsonl", 'domain = "web"\n'),
                                       (tmp_path / "held.jsonl", 'domain = "web"\nuse_for = "val"\n')],
                  "extend_mined = 4\n")
    assert main(["data", "-c", str(cfg)]) == 0 and main(["tokenizer", "-c", str(cfg)]) == 0
    added = json.loads((tmp_path / "runs" / "mined" / "tokenizer" / "extension.json").read_text())
    words = json.dumps(added)
    assert "Xylophonists" in words or "marimbas" in words   # mined from the training text
    assert "Quuxzorbification" not in words
    # a word given and mined too is one word (the mined one was ignored, "given again")
    assert main(["tokenizer", "-c", str(cfg),
                 '--tokenizer.extend_words=["Xylophonists", "marimbas"]']) == 0
    added = json.loads((tmp_path / "runs" / "mined" / "tokenizer" / "extension.json").read_text())
    assert added["ignored"] == [] and "Xylophonists" in json.dumps(added)


def test_a_comparison_tokenizer_that_cannot_load_is_said_before_training(tmp_path: Path,
                                                                         monkeypatch, capsys):
    """compare_with = "gpt2" offline: the report went on without it and then read its
    columns (KeyError, the stage failed); a path that is no tokenizer was named as
    tokenizer.pretrained, after the training."""
    body = "The harbour was quiet that morning, and the boats rocked at anchor. " * 6
    (tmp_path / "t.jsonl").write_text("".join(
        json.dumps({"id": f"t{i}", "text": f"{i}. {body}"}) + "\n" for i in range(30)))
    cfg = _config(tmp_path, "cmp", [(tmp_path / "t.jsonl", "")])
    assert main(["data", "-c", str(cfg)]) == 0

    def offline(name):   # urllib3's message runs to a screen
        raise ConnectionError("no network" + " and more" * 100 + "\nTraceback and more")
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    assert main(["tokenizer", "-c", str(cfg), "--tokenizer.compare_with=gpt2"]) == 0
    err = capsys.readouterr().err
    assert "cannot load tiktoken's gpt2" in err and "bytes/token" in err
    assert "(ConnectionError: no network and more" in err and "Traceback" not in err
    assert max(len(line) for line in err.splitlines()) < 400
    report = json.loads((tmp_path / "runs" / "cmp" / "tokenizer" / "report.json").read_text())
    assert report["baseline"] is None
    assert main(["tokenizer", "-c", str(cfg), f"--tokenizer.compare_with={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "tokenizer.compare_with" in err and "tokenizer: vocab" not in err


def test_what_extension_leaves_out_is_listed_and_unused_added_tokens_are_reported(
        tok: Tokenizer):
    """A word already one token, an empty word and a repeated one were dropped without a
    word, and the report counted unused tokens over the original ids only: whether the
    domain tokens ever occur was not said."""
    new, result = extend(tok, ["x", "", "pharmacokinetics", "pharmacokinetics",
                               "immunohistochemistry"])
    assert "x" in result["already_one_token"]
    assert result["ignored"] == ["'': empty", "'pharmacokinetics': given again"]
    rep = report(new, {"med": ["A note on pharmacokinetics and pharmacokinetics."]})
    assert rep["added_tokens"] == len(new.added) > 2
    used = {i for t in ["A note on pharmacokinetics and pharmacokinetics."] for i in new.encode(t)}
    assert rep["unused_added_tokens"] == sum(a.id not in used for a in new.added)
    assert " immunohistochemistry" in rep["unused_added"]
    assert " pharmacokinetics" not in rep["unused_added"]
    assert f"added tokens: {rep['unused_added_tokens']} of {len(new.added)} never used" in table(rep)
