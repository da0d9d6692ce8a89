"""The first-use papercuts of issue 18, each where it can fail: file modes, the hint of a
command run out of order, failed commands leaving run directories behind, typos."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pretrain.cli import main
from pretrain.model import hf, io
from pretrain.model.config import ModelConfig
from pretrain.model.transformer import Transformer
from pretrain.pipeline import run_stages
from pretrain.run_config import load_config

from ..conftest import tiny_overrides


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask, want", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_weights_files_follow_the_umask(tmp_path, umask, want):
    model = Transformer(ModelConfig(d_model=16, n_layers=1, n_heads=2, seq_len=8, vocab_size=40))
    old = os.umask(umask)
    try:
        io.save_weights(model.state_dict(), io.tied_aliases(model), tmp_path / "w.safetensors")
        hf.export(model, tmp_path / "hf")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "w.safetensors") == want
    assert _mode(tmp_path / "hf" / "model.safetensors") == want
    assert _mode(tmp_path / "hf" / "config.json") == want   # as a plain write does


def test_out_of_order_hint_repeats_the_users_options_and_leaves_no_run_dir(tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["train", "-c", "quickstart", f"--runs_dir={runs}", "--name=t",
                 "--train.steps=7"])
    err = capsys.readouterr().err
    assert code == 2
    assert (f"run `pretrain data -c quickstart --runs_dir={runs} --name=t --train.steps=7` or "
            f"`pretrain run -c quickstart --runs_dir={runs} --name=t --train.steps=7` first") in err
    assert not runs.exists()   # neither the run directory nor runs/ it made


def test_a_failed_command_keeps_a_run_directory_that_was_there(tmp_path, capsys):
    (tmp_path / "runs" / "t").mkdir(parents=True)
    (tmp_path / "runs" / "t" / "notes.txt").write_text("mine")
    assert main(["train", f"--runs_dir={tmp_path / 'runs'}", "--name=t"]) == 2
    assert (tmp_path / "runs" / "t" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("argv, hint", [
    (["--train.lrr=1"], "did you mean 'train.lr'?"),
    (["--trian.lr=1"], "did you mean 'train'?"),
    (["--model.arch=lama"], "(did you mean 'llama'?)"),
    (["--train.schedule=cosin"], "(did you mean 'cosine'?)"),
])
def test_a_typo_gets_a_did_you_mean(argv, hint, capsys):
    assert main(["train", "--dry-run", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and hint in err and len(err.strip().splitlines()) == 1


def test_no_suggestion_for_a_key_like_nothing(capsys):
    assert main(["train", "--dry-run", "--train.zzzzqqq=1"]) == 2
    assert "did you mean" not in capsys.readouterr().err


def test_config_validate_says_when_a_valid_configs_inputs_are_missing_here(tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)   # where data/tinyshakespeare/ has not been downloaded
    assert main(["config", "validate", "speedrun-shakespeare"]) == 0   # the config is valid
    out = capsys.readouterr().out
    assert out.startswith("ok ") and "but on this machine: data.sources.0: " \
        f"{tmp_path}/data/tinyshakespeare/input.txt is not here yet; the data stage will " \
        "download it from https://" in out
    assert not (tmp_path / "data").exists()   # validating downloads nothing
    (tmp_path / "data" / "tinyshakespeare").mkdir(parents=True)
    (tmp_path / "data" / "tinyshakespeare" / "input.txt").write_text("To be.\n")
    assert main(["config", "validate", "speedrun-shakespeare"]) == 0
    assert "but on this machine" not in capsys.readouterr().out
    cfg = tmp_path / "mine.toml"   # a local source without a URL: the glob matches nothing
    cfg.write_text('[[data.sources]]\ntype = "local"\npaths = ["corpus/*.txt"]\n')
    assert main(["config", "validate", str(cfg)]) == 0
    assert "but on this machine: data.sources.0: local source: no file matches " \
        f"'{tmp_path}/corpus/*.txt'" in capsys.readouterr().out
    # running it names the source too (it said only "local source: no file matches")
    assert main(["data", "-c", str(cfg)]) == 2
    assert "error: data.sources.0: local source: no file matches " \
        f"'{tmp_path}/corpus/*.txt'" in capsys.readouterr().err


def test_tokenizer_training_and_benchmark_scoring_show_progress(tmp_path, capsys):
    """The quickstart's longest silent stretches were the tokenizer's sample and the
    benchmark tasks; each now reports progress (plain lines when stderr is not a terminal)."""
    empty = tmp_path / "no-benchmarks"
    empty.mkdir()
    cfg = load_config(None, tiny_overrides(tmp_path, train__steps="2", eval__core="true",
                                           eval__tasks='["arc_easy", "piqa"]',
                                           eval__tasks_dir=str(empty),
                                           eval__memorization_docs="0"))
    run_stages(cfg, ("data", "tokenizer", "tokenize", "train", "eval"), force=set())
    err = capsys.readouterr().err
    assert "[tokenizer sample] " in err and " chars " in err
    assert f"merging pairs up to a vocabulary of {cfg.tokenizer.vocab_size}" in err
    assert "[eval benchmarks] 2/2 tasks" in err
    assert "[eval CORE] 22/22 tasks" in err


def test_the_runs_config_toml_names_the_same_files_from_another_directory(tmp_path, monkeypatch,
                                                                           capsys):
    """Relative paths are relative to where the command runs, and the run's config.toml
    records them absolute: rerun with it from elsewhere, the stage is up to date (before,
    its sources were looked for, and a new run made, in the other directory)."""
    proj = tmp_path / "proj"
    (proj / "docs").mkdir(parents=True)
    (proj / "docs" / "a.jsonl").write_text("".join(
        json.dumps({"id": f"d{i}", "text": f"document {i}: " + f"word{i} " * 60}) + "\n"
        for i in range(6)))
    (proj / "c.toml").write_text('name = "r"\n[[data.sources]]\ntype = "local"\n'
                                 'paths = ["docs/*.jsonl"]\nquality = "none"\n')
    monkeypatch.chdir(proj)
    assert main(["data", "-c", "c.toml"]) == 0
    recorded = proj / "runs" / "r" / "config.toml"
    assert f'"{proj / "docs" / "*.jsonl"}"' in recorded.read_text()
    capsys.readouterr()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["data", "-c", str(recorded)]) == 0
    assert "[data] up to date" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []
