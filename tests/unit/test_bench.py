"""The benchmarks in bench/ are scripts nothing else imports: each must at least load and
parse its arguments, so that a change to a module they share (train_vs_reference.py) or to
the package cannot break one unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))


def test_there_are_benchmarks():
    assert len(SCRIPTS) >= 8


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_loads_and_answers_help(script):
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                         timeout=120, cwd=BENCH)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage:" in res.stdout
