"""A user whose locale is not UTF-8 (LC_ALL=C with Python's UTF-8 mode and locale coercion
off: an ASCII locale; a Latin-1 one fails the same way). Every file the run writes is UTF-8,
whatever the locale: a non-ASCII prompt made config.toml unwritable there (a traceback at
the start), a Latin-1 one wrote a config.toml that `pretrain run -c` could not read back, the
tokenizer's report crashed on any non-ASCII text, and `pretrain report` lost the samples of
a run made under UTF-8. Printing what the terminal cannot show escapes it instead of
crashing halfway through a listing."""

from __future__ import annotations

import ast
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import tiny_overrides

ASCII = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
         "PYTHONIOENCODING": "", "PYTHONWARNINGS": "ignore"}
PROMPT = "Füße → 日本"


def _pretrain(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pretrain", *argv], env=ASCII,
                          capture_output=True, timeout=600)


@pytest.mark.slow
def test_a_run_under_an_ascii_locale_writes_utf8_and_prints_escaped(tmp_path: Path):
    probe = subprocess.run([sys.executable, "-c", "import locale; print(locale.getencoding())"],
                           env=ASCII, capture_output=True, text=True)
    if probe.stdout.strip().lower() not in ("ascii", "ansi_x3.4-1968"):
        pytest.skip(f"LC_ALL=C gives the locale encoding {probe.stdout.strip()!r} here")
    corpus = tmp_path / "corpus.jsonl"
    words = ("Die Straße führt über Brücken nach Köln 日本語の テキスト naïve café — the of and "
             "a to in is that for it with as was on be by at this had not are but from or "
             "have an they which one you were her all she there would their").split()
    rng = random.Random(0)
    with corpus.open("w", encoding="utf-8") as f:
        for i in range(300):
            f.write(json.dumps({"id": str(i), "text": " ".join(rng.choices(words, k=120))}) + "\n")
        f.write(json.dumps({"id": "short", "text": "Straße → 日本"}) + "\n")   # dropped
    overrides = [(k, v) for k, v in tiny_overrides(tmp_path) if not k.startswith("data.")]
    args = [f"--{k}={v}" for k, v in overrides] + [
        f"--sample.prompts={json.dumps([PROMPT])}", "--eval.tasks=[]", "--eval.core=false",
        "--data.sources=[{type = 'local', quality = 'none', paths = ['" + str(corpus)
        + "']}]",
        "--tokenizer.max_chars=100000"]
    res = _pretrain("run", *args)
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")[-3000:]
    root = tmp_path / "runs" / "tiny"
    assert PROMPT in (root / "config.toml").read_text(encoding="utf-8")
    samples = json.loads((root / "sample" / "samples.json").read_text(encoding="utf-8"))
    assert PROMPT in json.dumps(samples, ensure_ascii=False)
    json.loads((root / "tokenizer" / "report.json").read_text(encoding="utf-8"))
    # the report, made again under this locale, still reads the samples
    assert _pretrain("report", str(root)).returncode == 0
    assert PROMPT in (root / "report.md").read_text(encoding="utf-8")
    # the written config reads back (`pretrain run -c RUN/config.toml`: every stage current)
    again = _pretrain("run", "-c", str(root / "config.toml"), "--dry-run")
    assert again.returncode == 0, again.stderr.decode("utf-8", "replace")[-2000:]
    # a listing of non-ASCII documents into an ASCII pipe: escaped, complete
    inspect = _pretrain("data", "inspect", str(root), "--reason", "too_short")
    assert inspect.returncode == 0, inspect.stderr.decode("utf-8", "replace")[-2000:]
    assert b"Stra\\xdfe \\u2192 \\u65e5\\u672c" in inspect.stdout


def _text_mode(call: ast.Call, mode_at: int) -> bool:
    modes = [a.value for a in call.args[mode_at:mode_at + 1] if isinstance(a, ast.Constant)]
    modes += [k.value.value for k in call.keywords
              if k.arg == "mode" and isinstance(k.value, ast.Constant)]
    return not any("b" in str(m) for m in modes)


def test_every_text_file_the_package_opens_names_its_encoding():
    """The rule the test above checks at one run, over the whole package: a text-mode
    ``open``, ``Path.open``, ``read_text`` or ``write_text`` without ``encoding=`` reads and
    writes in the locale's encoding (ruff's PLW1514 sees only the calls whose receiver it
    can type, not ``path.read_text()``)."""
    src = Path(__file__).resolve().parents[2] / "src" / "pretrain"
    missing = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or any(k.arg in ("encoding", None)
                                                     for k in node.keywords):
                continue
            f = node.func
            text_io = (isinstance(f, ast.Attribute) and f.attr in ("read_text", "write_text")
                       or isinstance(f, ast.Name) and f.id == "open" and _text_mode(node, 1)
                       or isinstance(f, ast.Attribute) and f.attr == "open"
                       and not (isinstance(f.value, ast.Name) and f.value.id in NOT_TEXT)
                       and _text_mode(node, 0))
            if text_io:
                missing.append(f"{path.relative_to(src)}:{node.lineno}")
    assert not missing, missing


# modules whose open() is not a text file's: file descriptors, compressed or binary streams
NOT_TEXT = {"os", "gzip", "bz2", "lzma", "zstandard", "tarfile", "zipfile", "fsspec", "io",
            "pq", "Image"}
