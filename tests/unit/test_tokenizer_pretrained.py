"""Published tokenizers loaded instead of trained: ids must be the published ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pretrain.config import ConfigError
from pretrain.tokenizer import pretrained
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import BOS, EOS, TokenizerConfig
from pretrain.tokenizer.hf import to_hf
from pretrain.tokenizer.stage import unused_settings

from ..conftest import shared_data


def _web_texts(n: int = 40) -> list[str]:
    path = shared_data("webtext/c4_sample.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f, strict=False)]


def _hf_ids(path: Path, texts: list[str]) -> list[list[int]]:
    tokenizers = pytest.importorskip("tokenizers", reason="HF tokenizers (a dev dependency)")
    hf = tokenizers.Tokenizer.from_file(str(path))
    return [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]


def test_gpt2_published_ids():
    tok = pretrained.load(str(shared_data("tokenizers/gpt2")), "", [], "", "")
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.vocab_size == 50257 and tok.bos_id == tok.eos_id == 50256
    texts = _web_texts()
    assert [tok.encode(t) for t in texts] == _hf_ids(shared_data("tokenizers/gpt2/tokenizer.json"), texts)
    # the HF tokenizer.json of GPT-2 loads to the very same ranks
    hf = pretrained.load(str(shared_data("tokenizers/gpt2/tokenizer.json")), "", [], "", "")
    assert hf.ranks == tok.ranks and hf.pattern == tok.pattern and hf.special == tok.special


def test_llama3_published_ids():
    tok = pretrained.load("llama3:" + str(shared_data("tokenizers/llama3/tokenizer.model")), "", [], "", "")
    assert tok.encode("Hello world") == [9906, 1917]
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (128000, 128001, 128256)
    assert tok.special["<|eot_id|>"] == 128009
    assert tok.decode(tok.encode("naïve 東京 🙂")) == "naïve 東京 🙂"


def test_llama3_exports_to_hf_with_the_same_ids():
    """Llama-3 has tokens no merge of lower-ranked tokens makes (b'.:.:', id 100421):
    tiktoken makes them from a whole piece or any two tokens they split into, and so must
    the export (it refused the tokenizer, reported as a failure to write)."""
    from pretrain.tokenizer.hf import to_hf
    tok = pretrained.load("llama3:" + str(shared_data("tokenizers/llama3/tokenizer.model")), "", [], "", "")
    pytest.importorskip("tokenizers", reason="HF tokenizers (a dev dependency)")
    hf = to_hf(tok)
    texts = [*_web_texts(200), ".:.:.:.:", "a.:.:b", Path(json.__file__).read_text()]
    assert [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)] == \
        [tok.encode(t) for t in texts]


def test_olmo_dolma2_published_ids_and_hf_agreement():
    path = shared_data("tokenizers/olmo/allenai_dolma2.json")
    tok = pretrained.load(str(path), "", [], "", "")
    assert tok.encode("Hello world") == [9906, 1917]
    assert tok.eos_id == 100257 and tok.vocab_size == 100278
    assert tok.special["<|extra_id_0|>"] == 100256    # added tokens keep their ids
    assert tok.token_bytes()[100256] == 0 and tok.token_bytes()[9906] == len("Hello")
    texts = _web_texts()
    assert [tok.encode(t) for t in texts] == _hf_ids(path, texts)


def test_unsupported_files_are_refused_with_the_reason(tmp_path: Path):
    with pytest.raises(ConfigError, match="normalizer"):
        pretrained.load(str(shared_data("tokenizers/olmo/allenai_gpt-neox-olmo-dolma-v1_5.json")),
                        "", [], "", "")
    with pytest.raises(ConfigError, match="cannot tell"):
        pretrained.load(str(shared_data("tokenizers/llama2/LICENSE")), "", [], "", "")
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("SGVsbG8= 0\nnot-base64!! 1\n")
    with pytest.raises(ConfigError, match=r"bad.tiktoken:2"):
        pretrained.load(str(bad), "x", ["<|bos|>", "<|eos|>"], "", "")


def test_bos_and_eos_names_are_honoured_or_refused_naming_the_file():
    """``tokenizer.bos_token`` / ``eos_token`` on a GPT-2 folder and on Llama-3 (both were
    ignored: an instruct model's <|eot_id|> silently stayed <|end_of_text|>)."""
    llama3 = "llama3:" + str(shared_data("tokenizers/llama3/tokenizer.model"))
    tok = pretrained.load(llama3, "", [], "", "<|eot_id|>")
    assert (tok.bos_id, tok.eos_id) == (128000, 128009)
    gpt2 = shared_data("tokenizers/gpt2")
    with pytest.raises(ConfigError, match=f"{gpt2}: tokenizer.bos_token = '<\\|nope\\|>' is "
                                          "not one of its special tokens \\(<\\|endoftext"):
        pretrained.load(str(gpt2), "", [], "<|nope|>", "")
    with pytest.raises(ConfigError, match="tokenizer.eos_token = 'x' .*, \\.\\.\\.\\)"):
        pretrained.load(llama3, "", [], "", "x")


def test_a_tiktoken_file_takes_the_configs_special_tokens_and_names_itself(tmp_path: Path):
    """A ``.tiktoken`` file has no special tokens of its own: the config's follow its ranks,
    BOS/EOS one of them; a name that is not one is refused naming the file."""
    import base64
    ranks = tmp_path / "bytes.tiktoken"
    ranks.write_text("".join(f"{base64.b64encode(bytes([i])).decode()} {i}\n" for i in range(256)))
    tok = pretrained.load(str(ranks), r"\S+|\s+", ["<s>", "</s>", "<pad>"], "<s>", "</s>")
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (256, 257, 259)
    assert tok.encode("hi") == [104, 105]
    with pytest.raises(ConfigError, match=f"{ranks}: tokenizer.eos_token = '<eot>' is not one"):
        pretrained.load(str(ranks), r"\S+", ["<s>", "</s>"], "<s>", "<eot>")


def _hf_file(tmp_path: Path) -> dict:
    from pretrain.tokenizer import bpe
    from pretrain.tokenizer.config import TokenizerConfig
    from pretrain.tokenizer.hf import save_pretrained
    pytest.importorskip("transformers", reason="HF export needs transformers")
    tok = bpe.train(iter([Path(json.__file__).read_text()]), TokenizerConfig(vocab_size=300))
    save_pretrained(tok, tmp_path / "hf", 1024)
    return json.loads((tmp_path / "hf" / "tokenizer.json").read_text())


@pytest.mark.parametrize("damage, why", [
    (lambda o: o["model"].pop("merges"), "KeyError: 'merges'"),
    (lambda o: o["model"]["merges"].__setitem__(0, ["a", "b", "c"]), "ValueError: too many"),
    (lambda o: o.__setitem__("pre_tokenizer", "ByteLevel"), "AttributeError"),
    (lambda o: o["added_tokens"][0].pop("content"), "KeyError: 'content'"),
    (lambda o: o["added_tokens"][0].__setitem__("id", "x"), "ValueError: invalid literal"),
])
def test_a_malformed_hf_tokenizer_file_is_one_line_naming_it(tmp_path: Path, damage, why: str):
    """Each of these was a traceback (KeyError, ValueError, AttributeError) out of the CLI."""
    obj = _hf_file(tmp_path)
    damage(obj)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match=f"'{path}': not a well-formed tokenizer file .*{why}"):
        pretrained.load(str(path), "", [], "", "")


def test_a_json_file_that_is_no_tokenizer_says_so(tmp_path: Path):
    """GPT-2's encoder.json named itself was "not a well-formed tokenizer file
    (AttributeError: 'int' object has no attribute 'get')"."""
    enc = tmp_path / "encoder.json"
    enc.write_text(json.dumps({"!": 0, "a": 1, "model": 19849}))   # "model" is a GPT-2 token
    with pytest.raises(ConfigError, match="encoder.json: not a tokenizer.json: no \"model\" "
                       "object .*give the folder holding it and vocab.bpe"):
        pretrained.load(str(enc), "", [], "", "")
    other = tmp_path / "list.json"
    other.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="list.json: not a tokenizer.json: no \"model\" object$"):
        pretrained.load(str(other), "", [], "", "")


def test_special_tokens_before_the_bpe_ids_are_refused_saying_so(tmp_path: Path):
    """StarCoder's layout (<|endoftext|> = 0, the BPE after): it was "ids are not 0..N"."""
    obj = _hf_file(tmp_path)
    names = {t["content"] for t in obj["added_tokens"]}
    n = len(names)
    vocab = {k: v + n for k, v in obj["model"]["vocab"].items() if k not in names}
    for i, t in enumerate(obj["added_tokens"]):
        t["id"] = vocab[t["content"]] = i
    obj["model"]["vocab"] = vocab
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match=r"tokenizer.json: its added tokens come before the "
                                          r"BPE's ids \('<\|bos\|>' = 0"):
        pretrained.load(str(path), "", [], "", "")


@pytest.mark.parametrize("damage, why", [
    (lambda o: o.pop("ranks"), "KeyError: 'ranks'"),
    (lambda o: o["ranks"].__setitem__(3, "not base64!"), "Error: "),
    (lambda o: o.__setitem__("bos", "<|nope|>"), "'<\\|nope\\|>' is not one of the special"),
    (lambda o: o.__setitem__("pattern", "(["), r"the split pattern '\(\[' is not a valid regex"),
    # id 201 could never come out of the encoder: a silent loss before
    (lambda o: o["ranks"].__setitem__(201, o["ranks"][200]), "token ids 200 and 201 are the "
                                                             "same bytes"),
])
def test_a_damaged_tokenizer_of_ours_is_one_line_naming_it(tmp_path: Path, damage, why: str):
    from pretrain.tokenizer import bpe
    from pretrain.tokenizer.config import TokenizerConfig
    bpe.train(iter([Path(json.__file__).read_text()]), TokenizerConfig(vocab_size=300)).save(
        tmp_path / "ours.json")
    obj = json.loads((tmp_path / "ours.json").read_text())
    damage(obj)
    (tmp_path / "ours.json").write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match=f"{tmp_path / 'ours.json'}: .*{why}"):
        Tokenizer.load(tmp_path / "ours.json")


def test_a_gpt2_merges_file_without_its_version_header_loads(tmp_path: Path):
    src = shared_data("tokenizers/gpt2")
    (tmp_path / "encoder.json").write_bytes((src / "encoder.json").read_bytes())
    lines = (src / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    assert lines[0].startswith("#version")
    (tmp_path / "vocab.bpe").write_text("\n".join(lines[1:]), encoding="utf-8")
    assert pretrained.load(str(tmp_path), "", [], "", "").encode("Hello world") == [15496, 995]


def test_merge_order_that_ranks_cannot_express_is_refused(tmp_path: Path):
    from pretrain.tokenizer.bytelevel import byte_to_unicode
    table = byte_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    vocab.update({"ab": 256, "bc": 257, "<|endoftext|>": 259})  # id 258 unused
    obj = {"model": {"type": "BPE", "vocab": vocab, "merges": ["b c", "a b"]},
           "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "use_regex": True},
           "added_tokens": [{"id": 259, "content": "<|endoftext|>", "special": True}]}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match="merge 0 .* makes id 257, not 256"):
        pretrained.load(str(path), "", [], "", "")
    obj["model"]["merges"] = ["a b", "b c"]
    path.write_text(json.dumps(obj))
    tok = pretrained.load(str(path), "", [], "", "")
    assert tok.encode("abc") == [256, ord("c")] and tok.bos == "<|endoftext|>"
    assert tok.vocab_size == 260 and tok.token_bytes()[257:] == [2, 0, 0]


def test_loaded_tokenizer_survives_our_format_and_hf_export(tmp_path: Path):
    tok = pretrained.load(str(shared_data("tokenizers/olmo/allenai_dolma2.json")), "", [], "", "")
    tok.save(tmp_path / "t.json")
    again = Tokenizer.load(tmp_path / "t.json")
    texts = _web_texts(10)
    assert [again.encode(t) for t in texts] == [tok.encode(t) for t in texts]
    assert (again.bos_id, again.eos_id, again.vocab_size) == (tok.bos_id, tok.eos_id, tok.vocab_size)
    pytest.importorskip("transformers", reason="HF export needs transformers")
    from transformers import PreTrainedTokenizerFast

    from pretrain.tokenizer.hf import save_pretrained
    save_pretrained(tok, tmp_path, 1024)
    hf = PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    assert hf("Hello world", add_special_tokens=False)["input_ids"] == [9906, 1917]
    assert hf.convert_tokens_to_ids("<|endoftext|>") == 100257 and len(hf) == 100278
    assert [hf(t, add_special_tokens=False)["input_ids"] for t in texts] == [tok.encode(t) for t in texts]
    # and our export (Split(regex, Isolated) + ByteLevel) loads back as a published one
    back = pretrained.load(str(tmp_path / "tokenizer.json"), "", [], "", "<|endoftext|>")
    assert back.ranks == tok.ranks and back.pattern == tok.pattern
    assert [back.encode(t) for t in texts] == [tok.encode(t) for t in texts]


@pytest.mark.parametrize("change, why", [
    (lambda o: o["pre_tokenizer"].update(add_prefix_space=True), "add_prefix_space"),
    (lambda o: o["model"].update(end_of_word_suffix="</w>"), "end_of_word_suffix"),
    (lambda o: o["model"].update(dropout=0.5), "dropout"),
    # HF keeps the text between an Isolated pattern's matches, tiktoken's encoder drops it
    # ("Hello, world!" decoded "Hello world")
    *[(lambda o, invert=invert: o.__setitem__("pre_tokenizer", {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r" ?\p{L}+| ?\p{N}+"}, "behavior": "Isolated",
         "invert": invert},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}),
       "its Split pattern leaves text between its matches") for invert in (False, True)],
])
def test_settings_that_change_the_ids_are_refused(tmp_path: Path, change, why: str):
    """GPT-2's tokenizer.json with a setting that makes HF give other ids ("Hello world":
    18435 995 with a prefix space, not 15496 995): refused, not loaded as if plain."""
    obj = json.loads(shared_data("tokenizers/gpt2/tokenizer.json").read_text())
    change(obj)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match=why):
        pretrained.load(str(path), "", [], "", "")


def test_a_run_tokenizer_is_found_from_a_relative_model_folder(tmp_path, monkeypatch):
    """`pretrain export . OUT` inside a run's train/ (or a checkpoint) finds the run's
    tokenizer as the absolute path does (Path(".").parents is empty)."""
    from pretrain.tokenizer.files import run_tokenizer
    ckpt = tmp_path / "run" / "checkpoints" / "train-k" / "step-0000010"
    ckpt.mkdir(parents=True)
    (tmp_path / "run" / "train").mkdir()
    (tmp_path / "run" / "tokenizer").mkdir()
    want = tmp_path / "run" / "tokenizer" / "tokenizer.json"
    want.write_text("{}")
    for folder in (tmp_path / "run" / "train", ckpt):
        monkeypatch.chdir(folder)
        assert run_tokenizer(Path(".")) == want


def test_a_special_token_that_is_also_a_learned_token_is_refused_by_the_export():
    """Its id replaced the learned token's in the exported vocabulary: text holding those
    bytes lost them (a special token "a" read "banana" back as "bnn")."""
    pytest.importorskip("tokenizers")
    learned = [b"<|", b"<|e", b"<|eo", b"<|eos", b"<|eos|", b"<|eos|>"]
    tok = Tokenizer([bytes([i]) for i in range(256)] + learned, r"[\s\S]+", [BOS, EOS])
    with pytest.raises(ValueError, match=r"special token '<\|eos\|>' is also a learned token "
                                         r"of the vocabulary \(id 261\)"):
        to_hf(tok)
    to_hf(Tokenizer([bytes([i]) for i in range(256)] + learned[:-1], r"[\s\S]+", [BOS, EOS]))


def test_training_settings_a_loaded_tokenizer_does_not_take_are_said():
    """``--tokenizer.pretrained=gpt2`` over a config training 32,768 tokens was silent."""
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]+", [BOS, EOS])
    cfg = TokenizerConfig(pretrained="/x/tokenizer.json", vocab_size=32768, pattern="gpt2")
    assert unused_settings(cfg, tok) == [
        "tokenizer.vocab_size = 32768 is not used: the loaded tokenizer has 258 tokens",
        "tokenizer.pattern = 'gpt2' is not used: a loaded tokenizer keeps its own"]
    # a .tiktoken file takes the config's special tokens and pattern; defaults say nothing
    assert unused_settings(TokenizerConfig(pretrained="/x/a.tiktoken", pattern="gpt2"), tok) == []
    assert unused_settings(TokenizerConfig(pretrained="/x/tokenizer.json"), tok) == []


@pytest.mark.parametrize("spec, marks", [
    ("", 1),                                            # GPT-2: <|endoftext|> is BOS and EOS
    ("llama3:", 2),                                     # Llama-3: its own BOS and EOS
])
def test_shards_put_one_mark_between_documents_when_bos_is_eos(tmp_path: Path, spec: str,
                                                               marks: int):
    """GPT-2 was trained on documents joined by one <|endoftext|>; BOS ... EOS of one id
    wrote it twice at every boundary, a token the model learns to predict for nothing."""
    import numpy as np

    from pretrain.tokenizer import shards
    from pretrain.tokenizer.config import TokenizeConfig
    where = {"": "tokenizers/gpt2", "llama3:": "tokenizers/llama3/tokenizer.model"}[spec]
    tok = pretrained.load(spec + str(shared_data(where)), "", [], "", "")
    texts = _web_texts(12)
    docs = [{"id": f"d{i}", "domain": "web", "text": t} for i, t in enumerate(texts)]
    counts: dict = {}
    shards.run(TokenizeConfig(val_fraction=0.01, min_val_docs=2), tok, iter(docs), ["web"],
               tmp_path, counts)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["doc_layout"] == ("bos,text" if marks == 1 else "bos,text,eos")
    for split in ("train", "val"):
        ts = shards.TokenShards(tmp_path, split)
        stream = np.concatenate([np.asarray(a) for a in ts.shards]).tolist()
        specials = {tok.bos_id, tok.eos_id}
        # every boundary is `marks` special ids; none is ever doubled beyond that
        runs, n = [], 0
        for t in stream:
            if t in specials:
                n += 1
            elif n:
                runs.append(n)
                n = 0
        assert runs[0] == 1 and set(runs[1:]) == {marks}   # the stream's BOS, then boundaries
        for toks, _ in ts.documents():   # each document starts with BOS: what eval expects
            assert toks[0] == tok.bos_id
            body = np.asarray(toks[1:len(toks) - (marks - 1)]).tolist()
            assert tok.decode(body) in texts and tok.bos_id not in body
        assert ts.n_tokens == counts[split]["tokens"] == len(stream)
        assert sum(counts[split]["tokens_per_domain"].values()) == len(stream)
