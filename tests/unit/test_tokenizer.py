import json
import json.decoder
import re
import textwrap
from pathlib import Path
from pydoc_data.topics import topics as pydoc_topics

import numpy as np
import pytest

from pretrain.config import ConfigError
from pretrain.tokenizer import bpe, shards
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import (
    BOS,
    EOS,
    GPT2_PATTERN,
    GPT4_PATTERN,
    TokenizeConfig,
    TokenizerConfig,
)
from pretrain.tokenizer.report import sample_by_domain

# real text that every Python installation has: two modules' sources and a help topic
CORPUS = [
    Path(textwrap.__file__).read_text(),
    Path(json.decoder.__file__).read_text(),
    pydoc_topics["if"] * 5,
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return bpe.train(iter(CORPUS), TokenizerConfig(vocab_size=400))


def test_vocab_size_and_special_ids(tok):
    assert tok.vocab_size == 400
    assert len(tok.ranks) == 397
    assert tok.bos_id == 397 and tok.eos_id == 398
    assert tok.ranks[:256] == [bytes([i]) for i in range(256)]  # byte-level base


def test_tiny_corpus_stops_early_with_a_smaller_vocab():
    small = bpe.train(iter(["abab abab"]), TokenizerConfig(vocab_size=400))
    assert 256 + 3 < small.vocab_size < 400
    assert small.decode(small.encode("abab baba")) == "abab baba"


def test_roundtrip_including_unseen_unicode(tok):
    for text in [*CORPUS, "naïve café — 東京 🙂", "", "   \n\t"]:
        assert tok.decode(tok.encode(text)) == text


def test_merges_compress_the_training_text(tok):
    text = CORPUS[0]
    assert len(tok.encode(text)) < len(text.encode()) / 1.8  # 141 merges: ~2 bytes/token


def test_special_token_text_in_documents_is_plain_text(tok):
    ids = tok.encode(f"a {BOS} b {EOS}")
    assert tok.bos_id not in ids and tok.eos_id not in ids
    assert tok.decode(ids) == f"a {BOS} b {EOS}"


def test_save_load_gives_identical_ids(tok, tmp_path: Path):
    tok.save(tmp_path / "t.json")
    again = Tokenizer.load(tmp_path / "t.json")
    assert again.vocab_hash() == tok.vocab_hash()
    for text in CORPUS:
        assert again.encode(text) == tok.encode(text)


def test_load_rejects_other_files(tmp_path: Path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ConfigError, match="unknown tokenizer format"):
        Tokenizer.load(p)


def test_pattern_names_and_custom_regex():
    assert TokenizerConfig(pattern="gpt2").regex() == GPT2_PATTERN
    assert TokenizerConfig(pattern=r"\w+|\s+|\W").regex() == r"\w+|\s+|\W"
    # one that leaves text between its matches: tiktoken kept only the matches, and every
    # document lost its punctuation and line breaks without a word
    letters = r" ?\p{L}+| ?\p{N}+"
    with pytest.raises(ConfigError, match=re.escape(f"tokenizer.pattern {letters!r} leaves ',' "
                                                    "between its matches")):
        TokenizerConfig(pattern=letters)
    for pattern in (r"\w+|\s+", r"[a-z]+|\s+|\d"):
        with pytest.raises(ConfigError, match="between its matches"):
            TokenizerConfig(pattern=pattern)
    # one that Python's regex takes and the Rust engine that trains and encodes does not
    # (a traceback in the tokenizer stage)
    with pytest.raises(ConfigError, match=re.escape(f"tokenizer.pattern {chr(92) + 'X'!r}: ")
                       + ".*Invalid escape.*fancy-regex"):
        TokenizerConfig(pattern=r"\X")
    # bos_token and eos_token name a loaded tokenizer's: a trained one's were ignored
    with pytest.raises(ConfigError, match="tokenizer.bos_token and eos_token name a loaded"):
        TokenizerConfig(bos_token="<|pad|>")
    with pytest.raises(ConfigError, match="must include <\\|bos\\|>"):
        TokenizerConfig(special_tokens=["<|eos|>"])


def test_training_sample_is_balanced_and_capped():
    docs = [{"domain": "a", "text": "x" * 100}] * 10 + [{"domain": "b", "text": "y" * 100}] * 10
    cfg = TokenizerConfig(max_chars=300, doc_cap_chars=40)
    pieces = list(bpe.training_sample(iter(docs), cfg, ["a", "b"]))
    assert sum(len(p) for p in pieces if p[0] == "x") == 150
    assert sum(len(p) for p in pieces if p[0] == "y") == 150
    assert max(len(p) for p in pieces) == 40
    # the read stops once every domain has its share (it read the whole corpus, twice:
    # for the sample, then the report's)
    read = []

    def corpus():
        for d in docs[:10] + docs[10:] + [{"domain": "a", "text": "z" * 100}] * 1000:
            read.append(d)
            yield d
    assert list(bpe.training_sample(corpus(), cfg, ["a", "b"])) == pieces and len(read) == 14
    read.clear()
    texts = sample_by_domain(corpus(), 150, ["a", "b"])
    assert [len(t) for t in texts["a"]] == [100, 50] and len(read) == 12
    # a share of 0 characters: an empty sample read the whole corpus and "ran out of pairs"
    with pytest.raises(ConfigError, match="max_chars = 1 is below one character for each "
                                          "of the 2 domains"):
        next(bpe.training_sample(corpus(), TokenizerConfig(max_chars=1), ["a", "b"]))


def test_shards_are_byte_identical_for_any_thread_count(tok, tmp_path: Path):
    docs = [{"id": f"d{i}", "domain": "code" if i % 3 else "prose",
             "text": CORPUS[i % 3][i * 7:] + f" {i}"} for i in range(90)]
    files = {}
    for threads, batch in ((1, 512), (2, 7), (4, 1)):
        out = tmp_path / f"t{threads}"
        out.mkdir()
        cfg = TokenizeConfig(val_fraction=0.2, shard_tokens=3000, num_threads=threads,
                                    batch_docs=batch)
        shards.run(cfg, tok, iter(docs), ["code", "prose"], out, {})
        files[threads] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert len(files[1]) > 6  # several shards per split
    assert files[1] == files[2] == files[4]


def test_report_compression_usage_and_fragmenting_words(tok):
    from pretrain.tokenizer.report import report, table
    texts = {"code": CORPUS[:2], "prose": [CORPUS[2], "Floccinaucinihilipilification " * 3]}
    byte_level = Tokenizer([bytes([i]) for i in range(256)], GPT4_PATTERN, [BOS, EOS])
    rep = report(tok, texts, byte_level, "bytes")
    for domain, ts in texts.items():
        r = rep["domains"][domain]
        n_bytes = sum(len(t.encode()) for t in ts)
        n_tokens = sum(len(tok.encode(t)) for t in ts)
        assert r["bytes"] == n_bytes and r["tokens"] == n_tokens
        assert r["bytes_per_token"] == pytest.approx(n_bytes / n_tokens, rel=1e-3)
        assert r["baseline_bytes_per_token"] == pytest.approx(1.0)  # one byte per token
        assert r["tokens_vs_baseline"] == pytest.approx(n_tokens / n_bytes, rel=1e-3)
    frag = rep["domains"]["prose"]["fragmenting_words"]
    assert frag[0]["word"] == "Floccinaucinihilipilification"    # seen 3 times, never merged whole
    assert "".join(frag[0]["pieces"]) == " Floccinaucinihilipilification"
    assert [f["tokens"] for f in frag] == sorted((f["tokens"] for f in frag), reverse=True)
    used = {i for ts in texts.values() for t in ts for i in tok.encode(t)}
    assert rep["unused_tokens"] == len(tok.ranks) - len(used)
    assert rep["longest_tokens"][0]["bytes"] == max(len(r) for r in tok.ranks)
    assert "most fragmented: Floccinaucinihilipilification" in table(rep)
    # the share and its "of" count the same tokens: the ordinary ones (the vocabulary's
    # size, specials included, had stood beside a share of the ordinary ones)
    assert f"unused tokens: {rep['unused_tokens']:,} of {len(tok.ranks):,} ordinary (" \
        f"{rep['unused_tokens'] / len(tok.ranks):.1%})" in table(rep)
    # what tokenizer.extend_mined takes: the same words without the rest of the report
    from pretrain.tokenizer.report import fragmenting_words
    assert fragmenting_words(tok, texts, 20) == [
        w["word"] for d in ("code", "prose") for w in rep["domains"][d]["fragmenting_words"]]


def test_mined_words_are_pieces_the_split_makes_so_their_tokens_are_used(tok):
    """Words were runs of letters wherever they stood and were encoded after a space: a
    piece the split keeps with the character before it (``ershades`` of ``o'ershades``,
    ``ll`` of ``I'll``, ``hearted`` of ``kind-hearted``) ranked among the most fragmented,
    and the tokens mined from them went unused (29 of 35 on a Shakespeare sample). A word
    counts where the split makes it a piece, with the space before it or, at a line's start,
    without; every mined word's token is then used on the text it was mined from."""
    from pretrain.tokenizer.extend import extend
    from pretrain.tokenizer.report import fragmenting_words, report
    line = ("Thou o'ershades the vale; I'll plead, kind-hearted Xiomarra.\n"
            "Plead thy case, Trynnadon, o'ershades and all.\n")
    texts = {"prose": [line * 4]}
    mined = fragmenting_words(tok, texts, 50)
    assert "Xiomarra" in mined and "Trynnadon" in mined and "Plead" in mined
    assert not {"ershades", "ll", "hearted"} & set(mined)
    extended, _ = extend(tok, mined)   # each word in both forms, alone and after a space
    used = {extended.bytes_of(i) for i in extended.encode(texts["prose"][0])}
    for word in mined:   # in the form it occurs in: after a space, or at a line's start
        assert (" " + word).encode() in used or word.encode() in used, word
    assert b"Plead" in used and b" Xiomarra" in used
    plead = next(w for w in report(tok, texts)["domains"]["prose"]["fragmenting_words"]
                 if w["word"] == "Plead")
    assert plead["count"] == 4 and "".join(plead["pieces"]) == "Plead"   # as it occurs


def test_shards_roundtrip_with_domains_and_split(tok, tmp_path: Path):
    docs = [{"id": f"d{i}", "domain": "code" if i % 2 else "prose", "text": CORPUS[i % 3]}
            for i in range(40)]
    cfg = TokenizeConfig(val_fraction=0.2, shard_tokens=500, min_val_docs=1)
    counts: dict = {}
    shards.run(cfg, tok, iter(docs), ["code", "prose"], tmp_path, counts, total_docs=40)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 400
    assert len(meta["splits"]["train"]["shards"]) > 1  # rolled over at shard_tokens
    seen = {}
    for split in ("train", "val"):
        ts = shards.TokenShards(tmp_path, split)
        for toks, domain in ts.documents():
            assert toks[0] == tok.bos_id and toks[-1] == tok.eos_id
            seen.setdefault(split, set()).add(domain)
            body = tok.decode(np.asarray(toks[1:-1]).tolist())
            assert body in CORPUS
        assert ts.n_tokens == counts[split]["tokens"]
    assert seen["val"] == {"code", "prose"}
    assert counts["train"]["docs"] + counts["val"]["docs"] == 40


def test_split_is_a_function_of_the_id_only():
    ids = [f"doc-{i}" for i in range(5000)]
    val = [i for i in ids if shards.is_val(i, 0.1)]
    assert 400 < len(val) < 600
    assert val == [i for i in reversed(ids) if shards.is_val(i, 0.1)][::-1]


def test_vocab_over_65536_writes_uint32_shards(tmp_path: Path):
    # 256 bytes + every byte pair, pairs starting with \x00 ranked last (ids >= 65536)
    pairs = [bytes([a, b]) for a in [*range(1, 256), 0] for b in range(256)]
    big = Tokenizer([bytes([i]) for i in range(256)] + pairs, r"[\s\S]+", [BOS, EOS])
    assert big.vocab_size == 65794
    assert big.encode("\x00A") == [256 + 255 * 256 + 65]
    docs = [{"id": f"d{i}", "domain": "x", "text": "\x00A"} for i in range(6)]
    counts: dict = {}
    shards.run(TokenizeConfig(val_fraction=0.3), big, iter(docs), ["x"], tmp_path, counts)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["dtype"] == "uint32"
    stored = [toks.tolist() for split in ("train", "val")
              for toks, _ in shards.TokenShards(tmp_path, split).documents()]
    assert stored == [[big.bos_id, 65601, big.eos_id]] * 6


def test_empty_documents_are_bos_eos_and_specials_never_come_from_text(tok, tmp_path: Path):
    docs = [{"id": "e", "domain": "x", "text": ""},
            {"id": "s", "domain": "x", "text": f"{BOS}{EOS}<|pad|> plain"}]
    # the first document is held out (min_val_docs), the other one trained on
    shards.run(TokenizeConfig(val_fraction=1e-9, min_val_docs=1), tok, iter(docs), ["x"],
               tmp_path, {})
    stored = {tok.decode(t[1:-1].tolist()): t.tolist() for split in ("train", "val")
              for t, _ in shards.TokenShards(tmp_path, split).documents()}
    assert stored[""] == [tok.bos_id, tok.eos_id]
    body = stored[f"{BOS}{EOS}<|pad|> plain"][1:-1]
    assert not set(body) & set(tok.special.values())


def test_decode_after_gives_a_character_split_at_the_prompt_to_the_continuation():
    """Probe prompts are cut at any token: a prompt ending inside "é" decodes to U+FFFD
    alone; the continuation is "é est", not a second U+FFFD and " est"."""
    tok = bpe.Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    ids = tok.encode("café est")
    cut = 4   # "caf" and the first of the two bytes of "é"
    assert tok.decode_after(ids[:cut], ids[cut:]) == "é est"
    assert tok.decode_after(ids[:3], ids[3:]) == "é est"   # at a character boundary too


def test_a_split_pattern_with_groups_is_cut_by_its_whole_matches():
    """``findall`` of a pattern with capturing groups gives the groups, not the pieces the
    encoders cut: the report crashed after training (two groups) or mined nothing (one),
    and extension measured its forms against the groups."""
    from pretrain.tokenizer.extend import extend
    from pretrain.tokenizer.report import fragmenting_words
    grouped = r"( ?\p{L}+)|( ?\p{N}+)| ?([^\s\p{L}\p{N}])+|\s+(?!\S)|\s+"
    plain = r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
    texts = {"prose": ["Xiomarra met Trynnadon, 42 times; Xiomarra and Trynnadon!\n" * 3]}
    mined = {}
    for pattern in (grouped, plain):
        tok = bpe.train(iter(CORPUS), TokenizerConfig(vocab_size=300, pattern=pattern))
        mined[pattern] = fragmenting_words(tok, texts, 5)
        _, result = extend(tok, ["Xiomarra"])
        assert result["added"] == ["Xiomarra", " Xiomarra"], result
    assert mined[grouped] == mined[plain] and "Xiomarra" in mined[plain]
