import os
import subprocess
import sys

import pytest

from pretrain.cli import STAGE_HELP, main

COMMANDS = ["run", *STAGE_HELP, "config"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_for_every_command(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"pretrain {command}" in out
    if command != "config":
        assert "--config" in out and "--dry-run" in out and "--force" in out
        assert "--section.key=value" in out


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("argv, message", [
    (["train", "--model.d_model=abc"], "error: model.d_model: expected int, got 'abc'"),
    (["run", "--nope=1"], "error: unknown config key 'nope'"),
    (["eval", "stray"], "error: unexpected argument 'stray'"),
])
def test_user_errors_are_one_line_without_traceback(argv, message):
    # a real subprocess: what a user sees, including `python -m pretrain`
    res = subprocess.run([sys.executable, "-m", "pretrain", *argv], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 2
    assert res.stderr.strip().startswith(message)
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr


def test_dry_run_prints_resolved_config_and_runs_nothing(tmp_path, capsys):
    rc = main(["run", "--dry-run", f"--runs_dir={tmp_path}", "--train.steps=3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "[train]\nsteps = 3" in out
    assert list(tmp_path.iterdir()) == []


def test_config_show_applies_file_and_overrides(capsys):
    assert main(["config", "show", "fineweb-edu-debug", "--model.n_layers=2"]) == 0
    out = capsys.readouterr().out
    assert 'name = "HuggingFaceFW/fineweb-edu"' in out
    assert "n_layers = 2" in out


def test_space_separated_override_is_not_taken_for_the_config(capsys):
    assert main(["config", "show", "--model.d_model", "256"]) == 0
    assert "d_model = 256" in capsys.readouterr().out


def test_runs_dir_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("")
    assert main(["data", f"--runs_dir={f}"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_config_validate_reports_each_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nn_layers = 'four'\n")
    assert main(["config", "validate", "quickstart", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "ok      " in out and "quickstart.toml" in out
    assert f"invalid {bad}: model.n_layers: expected int, got 'four'" in out


def test_stage_without_upstream_says_what_to_run(tmp_path, capsys):
    assert main(["train", f"--runs_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "stage 'data' has not completed" in err and "pretrain run" in err


def test_multi_process_launch_runs_only_the_train_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", f"--runs_dir={tmp_path}"]) == 2
    assert "under torchrun only `pretrain train` runs" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
