"""The command line: its surface (frozen here: changing it is a decision, made in this file),
one-line user errors, dry runs, config commands, and that reading configs imports no torch."""

import argparse
import os
import signal
import subprocess
import sys
import time
import tomllib

import pytest

from pretrain import cli, stages
from pretrain.cli import EXIT_PREEMPTED, build_parser, main
from pretrain.config import Preempted, to_toml
from pretrain.run_config import load_config

STAGE_OPTIONS = ["--config", "--dry-run", "--force", "--help", "--plain", "-c", "-h"]
SURFACE = {
    "pretrain": ["--help", "-h"],
    "run": sorted([*STAGE_OPTIONS, "--gate"]),
    "data": STAGE_OPTIONS,
    "tokenizer": STAGE_OPTIONS,
    "tokenize": STAGE_OPTIONS,
    "train": STAGE_OPTIONS,
    "eval": sorted([*STAGE_OPTIONS, "--gate"]),
    "sample": STAGE_OPTIONS,
    "export": ["--help", "-h", "out", "source"],
    "plan": ["--budget", "--config", "--dollars", "--fit", "--gpu", "--gpu-hours", "--gpus",
             "--help", "--mfu", "--price", "-c", "-h"],
    "report": ["--help", "-h", "run"],
    "verify": ["--help", "-h", "run"],
    "sweep": ["--budgets", "--config", "--help", "--plain", "--predict", "--sizes", "-c", "-h"],
    "config": ["--help", "-h"],
    "config show": ["--config", "--help", "-c", "-h", "name"],
    "config validate": ["--help", "-h", "configs"],
}


def _surface(p: argparse.ArgumentParser, prefix: str = "") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                out.update(_surface(sub, f"{prefix}{name} "))
    out[prefix.strip() or "pretrain"] = sorted(
        o for a in p._actions if not isinstance(a, argparse._SubParsersAction)
        for o in (a.option_strings or [a.dest]))
    return out


def test_the_cli_surface_is_what_this_file_says():
    """Every command and its options. A new stage in the registry is a new command with
    the stage options; anything else that changes here is a deliberate change."""
    assert _surface(build_parser()) == SURFACE
    assert [c for c in SURFACE if c in stages.names()] == stages.names()


@pytest.mark.parametrize("command", ["run", *stages.names()])
def test_stage_help_names_the_command_and_overrides(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"pretrain {command}" in out and "--section.key=value" in out
    if command != "run":
        assert stages.get(command).help[1:40] in " ".join(out.split())  # capitalised


@pytest.mark.parametrize("argv, message", [
    (["train", "--model.d_model=abc"], "error: model.d_model: expected int, got 'abc'"),
    (["run", "--nope=1"], "error: unknown config key 'nope'"),
    (["eval", "stray"], "error: unexpected argument 'stray'"),
    (["train", "--resume"], "error: --resume is not an option of this command; as a config "
                            "override it needs a value"),
    (["run", "--predict"], "error: --predict is not an option of this command"),  # sweep's
    # a misspelled flag before -c took "-c" for its value ("unexpected argument 'my.toml'")
    (["train", "--dryrun", "-c", "quickstart"], "error: --dryrun is not an option of this "
                                                 "command"),
])
def test_user_errors_are_one_line_without_traceback(argv, message):
    # a real subprocess: what a user sees, including `python -m pretrain`
    res = subprocess.run([sys.executable, "-m", "pretrain", *argv], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 2
    assert res.stderr.strip().startswith(message)
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("argv", [["config", "show"], ["config", "show", "-c", "speedrun-shakespeare"],
                                  ["train", "--dry-run"], ["config", "validate"],
                                  ["plan", "--gpus", "8"]])
def test_reading_configs_imports_no_torch(argv):
    code = ("import sys; from pretrain.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr


def test_dry_run_prints_resolved_config_and_runs_nothing(tmp_path, capsys):
    rc = main(["run", "--dry-run", f"--runs_dir={tmp_path}", "--train.steps=3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "[train]\nsteps = 3" in out
    assert list(tmp_path.iterdir()) == []
    # the default's steps are a cap its time budget ends first: the token count says so
    assert main(["run", "--dry-run", f"--runs_dir={tmp_path}"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "# training:" in x)
    assert "at most: train.time_budget_s = 120 s" in line
    assert main(["run", "--dry-run", f"--runs_dir={tmp_path}", "--train.time_budget_s=0"]) == 0
    assert "at most" not in capsys.readouterr().out
    # a layout for torchrun is sized on its processes (it was an error: "there are 1"),
    # and plan, which plans one device unless told, says how to plan it
    assert main(["train", "--dry-run", "--train.parallel.tp=2"]) == 0
    assert "memory per device, 2 processes (fp32)" in capsys.readouterr().out
    assert main(["plan", "--train.parallel.tp=2", "--train.parallel.dp_shard=2"]) == 2
    assert "(plan this layout with --gpus 4)" in capsys.readouterr().err
    # a --force the command would refuse, its dry run refuses too (it printed and said 0)
    assert main(["data", "--dry-run", "--force", "train"]) == 2
    assert "--force train has no effect here" in capsys.readouterr().err
    assert main(["train", "--dry-run", "--force", "train"]) == 0


def test_dry_run_memory_follows_the_loss_path(capsys):
    """train.loss = "full" keeps the whole logits and their gradient: the estimate says so."""
    totals = {}
    for loss in ("auto", "full"):
        assert main(["train", "--dry-run", f"--train.loss={loss}"]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if "memory per device" in x)
        totals[loss] = float(line.split("total ")[1].split()[0])
    assert totals["full"] > totals["auto"] * 1.2


@pytest.mark.parametrize("how", [["fineweb-edu-debug"], ["-c", "fineweb-edu-debug"],
                                 ["--config=fineweb-edu-debug"]])
def test_config_show_applies_file_and_overrides(how, capsys):
    assert main(["config", "show", *how, "--model.n_layers=2"]) == 0
    out = capsys.readouterr().out
    assert 'name = "HuggingFaceFW/fineweb-edu"' in out
    assert "n_layers = 2" in out


def test_config_show_refuses_two_configs(capsys):
    assert main(["config", "show", "quickstart", "-c", "webtext"]) == 2
    assert "give the config once" in capsys.readouterr().err


def test_space_separated_override_is_not_taken_for_the_config(capsys):
    assert main(["config", "show", "--model.d_model", "256"]) == 0
    assert "d_model = 256" in capsys.readouterr().out
    # a value with a space in it (argparse takes such an argument for a positional one),
    # joined or given as the next argument, with and without a config
    for argv in (["-c", "quickstart", '--sample.prompts=["Once upon a time"]'],
                 ['--sample.prompts=["Once upon a time"]'],
                 ["quickstart", "--sample.prompts", '["Once upon a time", "b c"]']):
        assert main(["config", "show", *argv]) == 0, argv
        assert '    "Once upon a time",\n' in capsys.readouterr().out


def test_a_missing_init_from_fails_before_the_first_stage(tmp_path, capsys):
    """It passed validate and ran the data, tokenizer and tokenize stages first (hours on
    real data), then said "/x: no such folder" without the key."""
    gone = tmp_path / "no-such-run"
    assert main(["run", f"--runs_dir={tmp_path}", f"--train.init_from={gone}"]) == 2
    assert f"error: train.init_from: {gone} does not exist\n" in capsys.readouterr().err
    assert not (tmp_path / "quickstart").exists()
    assert main(["config", "validate", f"--train.init_from={gone}"]) == 0   # valid, not here
    assert f"but on this machine: train.init_from: {gone} does not exist" in capsys.readouterr().out


def test_a_layout_one_process_cannot_make_fails_before_the_first_stage(tmp_path, capsys):
    assert main(["run", f"--runs_dir={tmp_path}", "--train.parallel.tp=2"]) == 2
    assert "tp 2 = 2 processes, but there are 1" in capsys.readouterr().err
    assert not (tmp_path / "quickstart").exists()


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
    # a file that is not there is one line of the list; the others are still checked
    assert main(["config", "validate", str(tmp_path / "none.toml"), "quickstart"]) == 1
    out = capsys.readouterr().out
    assert f"invalid {tmp_path / 'none.toml'}: config" in out and "ok      " in out


def test_a_negative_list_index_in_an_override_keeps_its_sign(capsys):
    assert main(["config", "show", "--data.sources.-1.max_bytes=7",
                 "--train.grad-accum=3"]) == 0
    out = capsys.readouterr().out
    assert out.count("max_bytes = 7") == 1 and "grad_accum = 3" in out
    last = out.rindex("[[data.sources]]")
    assert "max_bytes = 7" in out[last:]


def test_stage_without_upstream_says_what_to_run(tmp_path, capsys):
    assert main(["train", f"--runs_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "stage 'data' has not completed" in err and "pretrain run" in err


def test_multi_process_launch_runs_only_the_train_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", f"--runs_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "under torchrun only `pretrain train` runs; run data, tokenizer, tokenize, eval, " \
           "sample in one process" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rank, said", [("0", 1), ("1", 0)])
def test_a_preempted_run_says_so_once_for_all_ranks(rank, said, monkeypatch, capsys):
    """Every rank stops at the step they agreed on; each printed the same line under
    torchrun (8 lines on 8 GPUs). Rank 0's speaks for all; every rank exits 75."""
    def stopped(args, overrides):
        raise Preempted("stopped by a signal at step 7, checkpoint step-0000007 written")
    monkeypatch.setattr(cli, "_run", stopped)
    monkeypatch.setenv("RANK", rank)
    assert main(["train"]) == EXIT_PREEMPTED == 75
    assert capsys.readouterr().err.count("preempted: stopped by a signal at step 7") == said


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """`pretrain ... | head`: the reader gone, the command printed "error: [Errno 32] Broken
    pipe" and exited 2."""
    proc = subprocess.Popen([sys.executable, "-m", "pretrain", "config", "show"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()   # before it writes: its first write finds no reader
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""


@pytest.mark.parametrize("n", ["0", "-1", "x"])
def test_inspect_takes_a_positive_number_of_examples(n, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "inspect", str(tmp_path), "-n", n])
    assert e.value.code == 2 and "argument -n" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["verify", "runs/x"], ["report", "runs/x"], ["config", "show"],
                                  ["plan", "--budget", "1e18"], ["data", "inspect", "runs/x"]])
def test_commands_that_are_not_stages_are_refused_under_torchrun_said_once(argv, monkeypatch,
                                                                          capsys):
    """Each rank ran them: `report` wrote its report twice at once, every line came twice."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(argv) == 2
    assert f"`pretrain {' '.join(argv[:2]) if argv[0] == 'data' else argv[0]}` runs in one " \
        "process, not under torchrun" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "1")
    slept: list[float] = []
    monkeypatch.setattr(cli.time, "sleep", slept.append)
    assert main(argv) == 2 and capsys.readouterr().err == ""
    # the quiet rank waits for rank 0's line: its exit came first, torchrun stopped rank 0,
    # and the line was lost (2 of 8 tries)
    assert slept == [cli.QUIET_EXIT_S]


@pytest.mark.parametrize("argv, said, by_each", [
    (["train", "--model.d_model=abc"], "error: model.d_model: expected int, got 'abc'\n", False),
    (["train", "--model.d_model"], "error: --model.d_model is not an option of this command", False),
    # a file only some machines may have: said by each rank without it (said by rank 0
    # alone, one that has it would wait for the others, and nobody say why)
    (["train", "-c", "no-such.toml"], "error: config 'no-such.toml' is neither", True),
    (["train", "--train.init_from=/no/such/run"], "error: train.init_from: /no/such/run does "
                                                  "not exist on this machine (rank ", True)])
def test_a_config_error_under_torchrun_is_said_once(argv, said, by_each, tmp_path, monkeypatch,
                                                    capsys):
    """Every rank printed it (twice on 2 processes)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(cli.time, "sleep", lambda s: None)
    for rank, n in (("0", 1), ("1", int(by_each))):
        monkeypatch.setenv("RANK", rank)
        assert main([*argv, f"--runs_dir={tmp_path}"]) == 2
        assert capsys.readouterr().err.count(said) == n, rank
    # RANK alone (left in the environment, or a pod's) is no torchrun: said
    monkeypatch.delenv("WORLD_SIZE")
    assert main([*argv, f"--runs_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err.count(said.split(" on this machine")[0]) == 1


def test_config_show_says_the_model_values_not_in_use(capsys):
    """gpt2 ties its embeddings whatever tie_embeddings says, and reads neither n_kv_heads
    nor rope_theta: `config show` printed `tie_embeddings = false` for it without a word."""
    assert main(["config", "show", "--model.arch=gpt2", "--model.d_model=64"]) == 0
    out = capsys.readouterr().out
    for line in ("tie_embeddings = false   # in use: true\n", "ffn_hidden = 0   # in use: 256\n",
                 'rope_theta = 10000.0   # not used by arch = "gpt2"\n',
                 "vocab_size = 0   # the tokenizer's size\n", "n_layers = 2\n", 'bias = true\n'):
        assert line in out, line
    assert tomllib.loads(out) == tomllib.loads(to_toml(load_config("quickstart", [
        ("model.arch", "gpt2"), ("model.d_model", "64")])))   # comments only
    assert main(["config", "show", "--model.ffn_hidden=96"]) == 0
    out = capsys.readouterr().out
    assert "multiple_of = 32   # not used: ffn_hidden is given\n" in out
    assert 'bias = true   # not used by arch = "llama"\n' in out
    assert "ffn_hidden = 96\n" in out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_preemption_notice_outside_training_exits_75(sig, tmp_path, monkeypatch, capsys):
    """In the data stage it killed the process (143, no word): a scheduler that requeues
    on 75 did not requeue the job. Now the stage stops as at Ctrl-C, and the exit is 75."""
    from pretrain import pipeline

    def execute(*args, **kw):
        os.kill(os.getpid(), sig)
        time.sleep(10)
        raise AssertionError("the signal did not stop the stage")
    monkeypatch.setattr(pipeline, "_execute", execute)
    before = signal.getsignal(sig)
    assert main(["data", f"--runs_dir={tmp_path}"]) == EXIT_PREEMPTED
    assert (f"preempted: {sig.name} outside training: completed stages are kept, the "
            "interrupted one reruns with the same command\n") in capsys.readouterr().err
    assert signal.getsignal(sig) is before   # the process's own handler again
