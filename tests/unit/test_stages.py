"""The stage registry: a stage is one module with its body and one registry line; the CLI,
the orchestration and the report pick it up from there."""

from __future__ import annotations

import importlib
import json
import tomllib
from pathlib import Path

import pytest

from pretrain import stages
from pretrain.cli import main
from pretrain.config import PretrainError
from pretrain.pipeline import run_stages
from pretrain.run_config import load_config
from pretrain.rundir import RunDir, StageRun
from pretrain.stages import Stage


def toy(run: StageRun, seed: int) -> None:
    """The toy stage's body: writes what it was given."""
    (run.out / "toy.txt").write_text(f"seed {seed}\n")
    run.counts["seed"] = seed


def test_a_stage_is_one_module_and_one_registry_line(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(stages, "STAGES", (
        *stages.STAGES,
        Stage("toy", "write the seed", reads=(), sections=("seed",), body=f"{__name__}:toy"),
    ))
    runs = f"--runs_dir={tmp_path}"
    assert main(["toy", runs]) == 0                      # a command of its own
    root = tmp_path / "quickstart"
    m = RunDir(root).manifest("toy")
    assert m["counts"] == {"seed": 1337} and (root / "toy" / "toy.txt").read_text() == "seed 1337\n"
    assert m["inputs"]["config"] == {"seed": 1337}       # keyed by exactly its sections
    capsys.readouterr()
    assert main(["toy", runs]) == 0
    assert "[toy] up to date" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["toy", runs, "--seed=7"]) == 0          # its section changed: it reruns
    assert "[toy] running (config or inputs changed: seed)" in capsys.readouterr().err
    assert json.loads((root / "toy" / "manifest.json").read_text())["counts"] == {"seed": 7}
    capsys.readouterr()
    assert main(["toy", runs, "--seed=7", "--train.steps=3"]) == 0  # not its section: skipped
    assert "[toy] up to date" in capsys.readouterr().err
    assert main(["report", str(root)]) == 0              # the report lists it
    assert "| toy | complete |" in (root / "report.md").read_text()


def test_the_registry_is_ordered_and_reads_only_earlier_stages():
    names = stages.names()
    assert names == ["data", "tokenizer", "tokenize", "train", "eval", "sample"]
    for i, s in enumerate(stages.STAGES):
        assert all(names.index(u) < i for u in s.reads), s.name
        module, _, fn = s.body.partition(":")
        assert module.startswith("pretrain.") and fn
    assert stages.ancestors("eval") == ["data", "tokenizer", "tokenize", "train"]
    assert stages.ancestors("sample") == ["data", "tokenizer", "tokenize", "train"]
    with pytest.raises(PretrainError, match="no stage 'nope'"):
        stages.get("nope")


def test_the_registrys_imports_by_name_keep_the_layers():
    """A body or preflight is imported by name (so that reading configs never imports
    torch), which import-linter cannot see: each must sit in a layer below the registry's,
    as an import it could see would have to."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("no pyproject.toml beside the tests (an installed copy)")
    contracts = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["id"] == "layers"]
    where = {m.strip(): i for i, layer in enumerate(layers) for m in layer.split("|")}
    for s in stages.STAGES:
        for named in filter(None, (s.body, s.preflight)):
            module = named.partition(":")[0]
            package = ".".join(module.split(".")[:2])
            assert where[package] > where["pretrain.stages"], named
            assert callable(getattr(importlib.import_module(module), named.partition(":")[2]))


def test_a_body_sees_only_its_keyed_sections(tmp_path: Path):
    """The key hashes the sections a stage is given and nothing else: a field a config
    marks UNKEYED (how a stage runs or reports) changes neither."""
    base = load_config(None, [("runs_dir", str(tmp_path))])
    train = stages.get("train")
    gated = load_config(None, [("runs_dir", str(tmp_path)), ("eval.gates", '["all.bpb <= 3"]')])
    assert stages.get("eval").key_config(gated) == stages.get("eval").key_config(base)
    for harmless in (("train.tensorboard", "false"), ("train.log_every", "1"),
                     ("train.threads", "1"), ("train.eval_every", "7"),
                     ("train.checkpoint_every", "3"), ("train.parallel.dp_shard", "-1"),
                     ("device", "cpu")):   # where it trains, not what
        quiet = load_config(None, [("runs_dir", str(tmp_path)), harmless])
        assert train.key_config(quiet) == train.key_config(base), harmless
    data = stages.get("data")
    for harmless in (("data.workers", "3"), ("data.executor", "ray"),
                     ("data.ray_address", "auto")):
        other = load_config(None, [("runs_dir", str(tmp_path)), harmless])
        assert data.key_config(other) == data.key_config(base), harmless
    stricter = load_config(None, [("runs_dir", str(tmp_path)), ("data.clean.min_chars", "7")])
    assert data.key_config(stricter) != data.key_config(base)
    longer = load_config(None, [("runs_dir", str(tmp_path)), ("train.steps", "9")])
    assert train.key_config(longer) != train.key_config(base)
    assert set(train.key_config(base)) == {"model", "train", "seed", "external"}
    on_cpu = load_config(None, [("runs_dir", str(tmp_path)), ("device", "cpu")])
    assert stages.get("eval").key_config(on_cpu) != stages.get("eval").key_config(base)


def test_the_eval_key_follows_the_benchmark_files(tmp_path: Path):
    """A task file that appears (or changes) reruns the evaluation: before, an eval run
    without the files stayed 'up to date' once they were added."""
    cfg = load_config(None, [("runs_dir", str(tmp_path)), ("eval.tasks", '["arc_easy"]'),
                             ("eval.tasks_dir", str(tmp_path / "eval")), ("eval.core", "false")])
    stage = stages.get("eval")
    missing = stage.key_config(cfg)
    path = tmp_path / "eval" / "llm-foundry" / "arc_easy.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('{"query": "q", "choices": ["a", "b"], "gold": 0}\n')
    present = stage.key_config(cfg)
    assert present != missing and present["external"][0][0] == str(path)
    path.write_text('{"query": "q", "choices": ["a", "b"], "gold": 1}\n')
    assert stage.key_config(cfg) != present


def test_the_data_key_follows_the_filters_lists(tmp_path: Path):
    """An edited domain blocklist or words list left the data stage 'up to date' with the
    documents it now blocks; a config without such files keeps the key it had."""
    block, words = tmp_path / "domains", tmp_path / "words"
    block.write_text("bad.example\n")
    words.write_text("badword\n")
    base = load_config(None, [("runs_dir", str(tmp_path))])
    cfg = load_config(None, [("runs_dir", str(tmp_path)), ("data.url.block_domains_file", str(block)),
                             ("data.unsafe.enabled", "true"), ("data.unsafe.words_file", str(words))])
    data = stages.get("data")
    assert data.key_config(base)["external"] == [s.fingerprint() for s in base.data.sources] \
        + base.data.decontam.fingerprint()
    first = data.key_config(cfg)
    block.write_text("bad.example\nworse.example\n")
    second = data.key_config(cfg)
    assert second != first
    words.write_text("badword\nworseword\n")
    assert data.key_config(cfg) != second



def test_a_sweep_point_reads_the_base_runs_data_stage_as_it_is(tmp_path: Path):
    """With eval.tasks set (the quickstart sets them), every sweep point stopped at "stage
    'data' is out of date": the point's eval has no tasks, so its decontamination set, a
    part of the data key, was empty; and the base config's own set was emptied with it
    (replace() shared the object that __post_init__ then rewrote)."""
    from pretrain.sweep import _points
    arc = tmp_path / "eval" / "llm-foundry" / "arc_easy.jsonl"
    arc.parent.mkdir(parents=True)
    arc.write_text('{"query": "q", "choices": ["a", "b"], "gold": 0}\n')
    cfg = load_config(None, [("runs_dir", str(tmp_path)), ("eval.tasks", '["arc_easy"]'),
                             ("eval.tasks_dir", str(tmp_path / "eval")), ("eval.core", "false")])
    assert cfg.data.decontam.eval_benchmarks == [str(arc)]
    (cfg.run_dir / "tokenize").mkdir(parents=True)   # what the points read of the base run
    (cfg.run_dir / "tokenize" / "meta.json").write_text('{"vocab_size": 512}')
    data = stages.get("data")
    base_key = data.key_config(cfg)
    points = _points(cfg, [1e10, 3e10], 3)
    assert points and all(data.key_config(p) == base_key for _, p in points)
    assert all(p.eval.tasks == [] for _, p in points)
    assert cfg.data.decontam.eval_benchmarks == [str(arc)]


def test_activation_checkpointing_keeps_the_train_key_and_its_lineage(tmp_path: Path):
    """Turned on after an out-of-memory error, it retrained from step 0 (its checkpoints
    were "another config"); the key still holds its default, so runs keyed before it left
    the key keep theirs."""
    from pretrain.train.stage import lineage_of
    base = load_config(None, [("runs_dir", str(tmp_path))])
    ac = load_config(None, [("runs_dir", str(tmp_path)), ("train.activation_checkpointing", "true")])
    train = stages.get("train")
    assert train.key_config(ac) == train.key_config(base)
    assert train.key_config(base)["train"]["activation_checkpointing"] is False
    assert lineage_of({"config": train.key_config(ac)}) == lineage_of({"config": train.key_config(base)})
    other = load_config(None, [("runs_dir", str(tmp_path)), ("train.compile", "true")])
    assert train.key_config(other) != train.key_config(base)   # keyed fields still count



def stopped_when_forced(run: StageRun, seed: int) -> None:
    """A stage whose forced rerun is interrupted (Ctrl-C)."""
    if run.forced:   # the mark is there while it runs: what a kill (SIGKILL) leaves
        (run.root / "mark seen").write_text(str(RunDir(run.root).forced_attempt("toy")))
        raise KeyboardInterrupt
    toy(run, seed)


def test_an_interrupted_forced_stage_is_resumed_by_a_plain_rerun(tmp_path: Path, monkeypatch,
                                                                  capsys):
    """``--force STAGE`` interrupted: the rerun the message asked for (without --force)
    found the stage up to date and the forced attempt was lost (a retrain preempted at
    step 5,000 resumed nowhere); with --force it starts over. The earlier output stays in
    use meanwhile. A stage after the stopped one, which the command forced too, is run by
    the plain rerun (found up to date, it had lost its --force), and a forced stage that
    failed stays pending as well."""
    registry = stages.STAGES
    monkeypatch.setattr(stages, "STAGES", (
        *registry,
        Stage("toy", "write the seed", reads=(), sections=("seed",),
              body=f"{__name__}:stopped_when_forced"),
        Stage("toy2", "copy the toy's file", reads=("toy",), sections=(), body=f"{__name__}:copy"),
    ))
    cfg = load_config(None, [("runs_dir", str(tmp_path)), ("name", "toys")])
    root = tmp_path / "toys"
    run_stages(cfg, ("toy", "toy2"), force=set())
    before = RunDir(root).manifest("toy")
    with pytest.raises(KeyboardInterrupt):
        run_stages(cfg, ("toy", "toy2"), force={"toy"})
    assert RunDir(root).manifest("toy") == before          # still complete, still in use
    assert (root / "mark seen").read_text() == str((before["key"], True))
    assert RunDir(root).forced_attempt("toy2") is not None   # asked, not reached
    assert main(["report", str(root)]) == 0                  # and the report says so
    assert "| toy2 | complete, a --force rerun pending (`pretrain run` does it" \
        in (root / "report.md").read_text()
    capsys.readouterr()
    run_stages(cfg, ("toy", "toy2"), force=set())
    err = capsys.readouterr().err
    assert "[toy] running (resuming the --force toy that was stopped)" in err
    assert "[toy2] running (--force toy2, pending from a command that stopped)" in err
    assert RunDir(root).forced_attempt("toy") is None is RunDir(root).forced_attempt("toy2")
    run_stages(cfg, ("toy", "toy2"), force=set())
    assert "[toy] up to date" in capsys.readouterr().err
    # from the CLI: the line of a Ctrl-C says how to go on
    runs = [f"--runs_dir={tmp_path}", "--name=toys"]
    assert main(["toy", *runs, "--force", "toy"]) == 130
    assert "rerun without --force to resume it; with --force it starts over" \
        in capsys.readouterr().err
    assert main(["toy", *runs]) == 0 and RunDir(root).forced_attempt("toy") is None
    # a forced rerun that fails stays pending too: the plain rerun runs it again
    monkeypatch.setattr(stages, "STAGES", (
        *registry,
        Stage("toy", "write the seed", reads=(), sections=("seed",), body=f"{__name__}:failing"),
    ))
    capsys.readouterr()
    assert main(["toy", *runs, "--force", "toy"]) == 2
    assert RunDir(root).forced_attempt("toy") == (before["key"], True)
    assert main(["toy", *runs]) == 2
    assert "[toy] running (resuming the --force toy that was stopped)" in capsys.readouterr().err


def failing(run: StageRun, seed: int) -> None:
    raise PretrainError("the stage's own refusal")


def copy(run: StageRun) -> None:
    (run.out / "copy.txt").write_text((run.inputs["toy"] / "toy.txt").read_text())


def test_what_changed_names_settings_upstream_outputs_and_read_files():
    from pretrain.pipeline import _what_changed
    old = {"inputs": {"config": {"data": {"clean": {"min_chars": 200}, "sources": [1]},
                                 "external": {"a.jsonl": "sha-1"}},
                      "upstream": {"data": "fp-1"}}}
    now = {"config": {"data": {"clean": {"min_chars": 900}, "sources": [1]},
                      "external": {"a.jsonl": "sha-2"}}, "upstream": {"data": "fp-2"}}
    assert _what_changed(old, now) == (": data.clean.min_chars, a file it reads (a source, task "
                                       "file or checkpoint edited since), the data stage's "
                                       "output")
    assert _what_changed({}, now) == "" == _what_changed({"inputs": now}, now)


LACKING: list[str] = []   # what the "machine" of the preflight test lacks


def picky_preflight(train) -> None:
    if LACKING:
        raise PretrainError(f"this machine lacks {LACKING[0]}")


def test_what_the_machine_cannot_run_is_said_before_the_first_stage(tmp_path: Path, monkeypatch,
                                                                     capsys):
    """fp8 on a CPU was refused by the train stage, after `pretrain run` had cleaned and
    tokenized the corpus. A stage's preflight is asked when the command starts, where the
    stage is to run: never run, forced, or its config changed; not where it is up to date
    (a model trained on a GPU box, evaluated with `pretrain run` on a CPU one)."""
    monkeypatch.setattr(stages, "STAGES", (
        *stages.STAGES,
        Stage("toy", "write the seed", reads=(), sections=("seed",), body=f"{__name__}:toy"),
        Stage("picky", "copy, on machines that can", reads=("toy",), sections=("train",),
              body=f"{__name__}:copy_any", preflight=f"{__name__}:picky_preflight"),
    ))
    root = tmp_path / "toys"

    def run(*options: tuple[str, str], force: frozenset[str] = frozenset()) -> None:
        cfg = load_config(None, [("runs_dir", str(tmp_path)), ("name", "toys"), *options])
        run_stages(cfg, ("toy", "picky"), force=set(force))

    monkeypatch.setattr(f"{__name__}.LACKING", ["fp8"])
    with pytest.raises(PretrainError, match="this machine lacks fp8"):
        run()
    assert RunDir(root).manifest("toy") is None           # nothing ran before the refusal
    monkeypatch.setattr(f"{__name__}.LACKING", [])
    run()
    done, toy_done = RunDir(root).manifest("picky"), RunDir(root).manifest("toy")
    monkeypatch.setattr(f"{__name__}.LACKING", ["fp8"])
    run()                                                  # up to date: nothing to refuse
    assert RunDir(root).manifest("picky") == done
    for options, force in (((("train.steps", "3"),), frozenset()), ((), frozenset({"toy"})),
                           ((), frozenset({"all"}))):
        with pytest.raises(PretrainError, match="this machine lacks fp8"):
            run(*options, force=force)
    assert RunDir(root).manifest("toy") == toy_done        # the refused commands ran nothing,
    assert RunDir(root).manifest("picky") == done          # the forced toy included
    # the train stage's own: fp8 on a CPU, before the data stage
    capsys.readouterr()
    assert main(["run", f"--runs_dir={tmp_path}", "--device=cpu", "--train.precision=fp8"]) == 2
    assert "'fp8' needs a Hopper GPU or newer" in capsys.readouterr().err
    assert RunDir(tmp_path / "quickstart").manifest("data") is None


def copy_any(run: StageRun, train) -> None:
    (run.out / "copy.txt").write_text((run.inputs["toy"] / "toy.txt").read_text())
