"""Every benchmark in bench/ runs to its end on a small setting and prints its ratio.

The benches are not imported by anything else, so nothing but running them notices when a
change to the package breaks one (train_vs_reference failed with a KeyError on every loop for
a whole session after the first step stopped reporting tokens/s). Numbers are not checked
here: only that each finishes, exits 0 and prints the comparison it exists for."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import shared_data

ROOT = Path(__file__).resolve().parents[2]

# name -> (arguments, shared data it reads, a pattern its report must contain)
BENCHES = {
    "train_vs_reference": (
        ["--shapes", "tiny", "--rounds", "1", "--steps", "4", "--skip", "1",
         "--loops", "ref,ref+bf16,llama+eager,llama+eager+bf16"],
        ["tinyshakespeare/input.txt"], r"\d\.\d+x"),
    "attention_variants": (
        ["--repeats", "1", "--d-model", "64", "--layers", "1", "--heads", "4",
         "--prompt", "8", "--new", "4", "--train-batch", "2"], [], r"\d\.\d+x"),
    "data_scale": (["--n", "400"], [], r"mixture\s+400\s"),
    "decontam_planted": (
        ["--per-benchmark", "3", "--repeats", "1", "--min-words", "8"],
        ["eval/llm-foundry", "eval/hellaswag", "webtext/c4_sample.jsonl"], r"\d+(\.\d+)?%"),
    "pii_planted": (["--per-kind", "5", "--rounds", "1"], ["webtext/c4_sample.jsonl"],
                    r"\d\.\d+x"),
    "tokenizer_vs_reference": (["--vocab", "300", "--rounds", "1", "--max-mb", "0.2"], [],
                               r"\d\.\d+x"),
    "data_split": (["--copies", "1", "--rounds", "1", "--part-mb", "0.5"],
                   ["webtext/c4_sample.jsonl"], r"parts/whole speed \d\.\d+x"),
    "data_vs_datatrove": (["--rounds", "1", "--copies", "1"], ["webtext/c4_sample.jsonl"],
                          r"\d\.\d+x"),
    "many_files": (["--files", "60", "--repeats", "1"], [],
                   r"grouped: \d+\.\d+x the time of one file"),
    "gzip_check": (["--copies", "1", "--repeats", "1"], ["webtext/c4_sample.jsonl"],
                   r"checked / unchecked reader: \d\.\d+x"),
    "warc_read": (["--copies", "2", "--repeats", "1"], ["webtext/dolma_sample-0000.warc.gz"],
                  r"ours / fastwarc \d+\.\d+x"),
    "eval_memory": (["--vocab", "4096", "--seq", "128", "--batch", "4"], [],
                    r"held-out: \+\d+\.\d+ GB peak RSS, \d\.\d+x the training step's"),
    "memorization_scale": (["--tokens", "2e6", "--rounds", "1"], [],
                           r"= \d+\.\dx the read"),
    "contamination_scale": (["--mb", "1", "--rounds", "1", "--docs-per-file", "200"],
                            ["eval/llm-foundry", "eval/hellaswag", "webtext/c4_sample.jsonl",
                             "tinystories/tinystories-valid-sample.txt"],
                            r"2 processes.*\d\.\d+x the before"),
    "speedrun_shakespeare": (["--budgets", "3", "--ref-steps", "20"],
                             ["tinyshakespeare/input.txt"], r"bpb"),
}
# the default tier runs the quick ones; these run in the slow tier (`make test-slow`, and CI)
SLOW = {"speedrun_shakespeare", "data_vs_datatrove", "decontam_planted", "train_vs_reference",
        "tokenizer_vs_reference", "data_scale", "data_split", "contamination_scale"}


def test_every_bench_is_listed():
    on_disk = {p.stem for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_")}
    # memory_vs_estimate's comparison is the one tests/unit/test_plan.py makes
    assert on_disk - {"memory_vs_estimate"} == set(BENCHES)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in BENCHES])
def test_bench_runs(name, tmp_path):
    args, needs, pattern = BENCHES[name]
    for rel in needs:
        shared_data(rel)
    if name == "data_vs_datatrove":
        pytest.importorskip("datatrove", reason="the reference it measures against")
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, f"bench/{name}.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert re.search(pattern, proc.stdout), out[-3000:]
    # how to get the figures again, and how busy the machine was
    assert f"$ python bench/{name}.py {' '.join(args)}\n" in proc.stdout, out[:3000]
    assert re.search(r"\d+ cores, load average \d+\.\d+", proc.stdout), out[:3000]
    assert "Traceback" not in out and "failed" not in proc.stdout.lower(), out[-3000:]
