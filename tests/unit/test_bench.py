"""The benchmarks in bench/ are scripts nothing else imports: each must at least load and
parse its arguments, so that a change to a module they share (train_vs_reference.py) or to
the package cannot break one unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))  # _common: shared


def test_there_are_benchmarks():
    assert len(SCRIPTS) >= 8


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_loads_and_answers_help(script):
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                         timeout=120, cwd=BENCH)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage:" in res.stdout


@pytest.mark.parametrize("script, args, message", [
    # were timed as something else: "compiled" is not "compile", and an unknown mode was
    # dropped, so both ran eager fp32 under the labels given
    ("train_vs_reference.py", ["--loops", "llama+compiled"], "unknown mode 'compiled'"),
    ("train_vs_reference.py", ["--loops", "llama+eager+bf61"], "unknown mode 'bf61'"),
    ("train_vs_reference.py", ["--loops", "foo"], "'foo' is not ref, ref-llama, gpt2, llama"),
    ("train_vs_reference.py", ["--loops", "ref+fp8"], "unknown mode 'fp8'; known: compile, bf16"),
    ("train_vs_reference.py", ["--shapes", "huge"], "--shapes: unknown 'huge'; known: tiny"),
    # ran compiled, or fp8 with the bf16 peak's MFU
    ("train_vs_reference.py", ["--loops", "llama+eager+compile"], "at most one of eager, compile"),
    ("train_vs_reference.py", ["--loops", "gpt2+fp8+bf16"], "at most one of fp8, bf16, fp32"),
    ("data_scale.py", ["--parts", "bogus,stage"], "--parts: unknown 'bogus'"),  # ran mixture
    # tracebacks after the measurement (no median of nothing; a failure reported), or a
    # size of 0 measured as one
    ("many_files.py", ["--repeats", "0"], "--repeats: expected an int >= 1, got '0'"),
    ("gzip_check.py", ["--copies", "-1"], "--copies: expected an int >= 1, got '-1'"),
    ("memorization_scale.py", ["--tokens", "nan"], "--tokens: expected a float >= 1"),
    ("train_vs_reference.py", ["--steps", "2", "--skip", "3"], "leaves no step to time"),
    ("train_vs_reference.py", ["--profile-dir", "x"], "--profile-dir keeps the profiles of"),
])
def test_a_benchmark_refuses_names_it_does_not_know(script, args, message):
    res = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                         text=True, timeout=120, cwd=BENCH)
    assert res.returncode == 2 and message in res.stderr, res.stderr[-2000:]
