"""`pretrain verify RUN` through the real CLI: a run as written verifies; then each kind of
damage (same-size change, truncation, deletion, a file slipped in, a damaged checkpoint
shard, an unreadable manifest) is named, file by file, and the exit status is 1."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain.cli import main
from pretrain.pipeline import run_stages
from pretrain.run_config import load_config

from ..conftest import tiny_overrides


def _verify(run: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pretrain", "verify", str(run)],
                          capture_output=True, text=True, timeout=120)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("verify")
    cfg = load_config(None, tiny_overrides(root, train__steps="12", train__checkpoint_every="4",
                                           device="cpu"))
    run_stages(cfg, ("data", "tokenizer", "tokenize", "train"), force=set())
    return root / "runs" / "tiny"


def test_an_untouched_run_verifies(run):
    res = _verify(run)
    assert res.returncode == 0, res.stdout + res.stderr
    checked = int(res.stdout.split("verify: ")[1].split()[0])
    assert checked > 10 and "all match their records" in res.stdout


def test_every_damaged_file_is_named(run, tmp_path):
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    ckpt = sorted((copy / "checkpoints").glob("*/step-*"))[-1]
    docs = sorted((copy / "data").glob("docs-*.jsonl"))[0]
    damaged = {
        copy / "train" / "model.safetensors": "sha256 differs",  # same size
        docs: "sha256 differs",
        copy / "tokenizer" / "tokenizer.json": "bytes,",          # truncated
        next(ckpt.glob("*.distcp")): "sha256 differs",
    }
    _flip(copy / "train" / "model.safetensors")
    _flip(docs)
    tok = copy / "tokenizer" / "tokenizer.json"
    tok.write_bytes(tok.read_bytes()[:-10])
    _flip(next(ckpt.glob("*.distcp")))
    gone = sorted((copy / "tokenize").rglob("*.bin"))[0]
    gone.unlink()
    (copy / "data" / "stray.txt").write_text("not written by the stage")
    (ckpt / "__9_0.distcp").write_text("slipped into a checkpoint")
    (ckpt / "sub").mkdir()   # named as a record file, one folder down: a stray all the same
    (ckpt / "sub" / "checksums.json").write_text("{}")
    (copy / "sample").mkdir()
    (copy / "sample" / "samples.json").write_text("[]")   # a stage folder without manifest
    res = _verify(copy)
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    for path, what in damaged.items():
        assert any(line.startswith(f"{path}:") and what in line for line in lines), path
    assert f"{gone}: missing" in lines
    assert f"{copy / 'data' / 'stray.txt'}: not in the manifest" in lines
    assert f"{ckpt / '__9_0.distcp'}: not in checksums.json" in lines
    assert f"{ckpt / 'sub' / 'checksums.json'}: not in checksums.json" in lines
    assert any(line.startswith(f"{copy / 'sample'}: no manifest.json (1 files") for line in lines)
    assert lines[-1].endswith("9 problems")


def test_a_removed_stage_that_later_stages_were_made_from_is_named(run, tmp_path):
    """`rm -rf tokenizer` verified as "all match": what is left is intact, but what the
    tokens were encoded with is gone."""
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "tokenizer")
    res = _verify(copy)
    assert res.returncode == 1
    assert res.stdout.splitlines()[:-1] == [
        f"{copy / 'tokenizer'}: missing (or its manifest.json), though tokenize was made from "
        "it; rerun it: `pretrain run` (it runs what has no manifest, then what changed)"]


def test_a_truncated_output_is_named_as_damaged_and_made_again(run, tmp_path, capsys):
    """A truncated model.safetensors read "stage 'train' has not completed": it had, and
    its weights were damaged afterwards. Training again rewrites them from the last-step
    checkpoint."""
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    args = ["-c", str(copy / "config.toml"), f"--runs_dir={tmp_path}"]
    weights = copy / "train" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    assert main(["sample", *args]) == 2
    err = capsys.readouterr().err
    assert f"stage 'train' in {copy} completed, but its output {weights} is missing or " \
           "not the size it wrote (damaged); run `pretrain train -c " in err
    assert "has not completed" not in err
    assert main(["train", *args]) == 0
    err = capsys.readouterr().err
    assert "train: resumed from " in err and "(step 12)" in err and "step 10/12" not in err
    assert main(["sample", *args]) == 0


def test_an_unreadable_manifest_or_a_folder_that_is_no_run(run, tmp_path):
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    (copy / "eval").mkdir(exist_ok=True)
    (copy / "eval" / "manifest.json").write_text("{")
    res = _verify(copy)
    assert res.returncode == 1 and f"{copy / 'eval' / 'manifest.json'}: unreadable" in res.stdout
    res = _verify(tmp_path / "nothing")
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "not a run" in res.stderr


@pytest.mark.parametrize("text, said", [
    ("[1]", "a JSON list, not a stage's manifest"),
    ('{"status": "complete", "outputs": 5}', "its outputs are not a record of files"),
    ('{"status": "complete", "outputs": {"meta.json": 12}}', "its outputs are not a record"),
    ('{"status": "complete", "outputs": {}}', "complete, but without the key"),
    (b"{\"stage\": \"\xff\"}", "unreadable (UnicodeDecodeError"),
])
def test_a_manifest_not_of_a_stages_shape_is_named_by_each_command(run, tmp_path, capsys,
                                                                   text, said):
    """verify, a stage that reads it and the report each name the damaged manifest (an
    AttributeError traceback in verify before; "has not completed" alone, or "?", in the
    others)."""
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    manifest = copy / "tokenize" / "manifest.json"
    manifest.write_bytes(text if isinstance(text, bytes) else text.encode())
    line = f"{manifest}: {said}"
    res = _verify(copy)
    assert res.returncode == 1 and line in res.stdout, res.stdout + res.stderr
    args = ["-c", str(copy / "config.toml"), f"--runs_dir={tmp_path}"]
    assert main(["sample", *args]) == 2
    err = capsys.readouterr().err
    assert f"stage 'tokenize' has not completed in {copy} (its manifest is damaged: {line}"\
        in err, err
    assert main(["report", str(copy)]) == 0
    assert f"| tokenize | damaged: {line}" in (copy / "report.md").read_text()


def test_plan_and_the_audit_read_past_or_name_a_damaged_manifest(run, tmp_path, capsys):
    """plan measured its MFU from the train manifest and the audit its counts from the
    data manifest: a JSON list in either was an AttributeError traceback."""
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    for stage in ("train", "data"):
        (copy / stage / "manifest.json").write_text("[1]")
    args = ["-c", str(copy / "config.toml"), f"--runs_dir={tmp_path}"]
    assert main(["plan", *args, "--budget", "1e15"]) == 0
    assert "MFU 40% assumed" in capsys.readouterr().out
    assert main(["data", "inspect", str(copy)]) == 2
    assert f"{copy / 'data' / 'manifest.json'}: not the manifest a data stage writes" in \
        capsys.readouterr().err


def test_a_stage_refuses_inputs_changed_after_they_were_written(run, tmp_path, capsys):
    """A same-size change keeps a stage complete (sizes match), so the next stage re-hashes
    what it reads before it runs: it names the file and the stage to rerun."""
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    args = ["-c", str(copy / "config.toml"), f"--runs_dir={tmp_path}"]
    shard = sorted((copy / "tokenize").glob("train-*.bin"))[0]
    _flip(shard)
    assert main(["train", *args, "--force", "train"]) == 2
    err = capsys.readouterr().err
    assert f"{shard}: sha256 differs from the one recorded" in err
    assert "`pretrain run --force tokenize`" in err
    _flip(shard)   # restored: the stage runs
    weights = copy / "train" / "model.safetensors"
    _flip(weights)
    assert main(["sample", *args]) == 2
    err = capsys.readouterr().err
    assert f"{weights}: sha256 differs" in err and "`pretrain run --force train`" in err
    # export and init_from read a model folder outside the stages: checked the same way,
    # a checkpoint against its checksums
    assert main(["export", str(copy), str(tmp_path / "hf")]) == 2
    assert f"{weights}: sha256 differs" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()
    init = [*args, f"--train.init_from={copy}", "--name=second", "--train.steps=2"]
    assert main(["run", *init]) == 2
    assert f"train.init_from: {copy / 'train'} does not match" in capsys.readouterr().err
    _flip(weights)
    assert main(["sample", *args]) == 0
    # the device is where a model trains, not what it is: another one samples it as it is
    assert main(["sample", *args, "--device=auto"]) == 0
    ckpt = sorted((copy / "checkpoints").glob("*/step-*"))[-1]
    _flip(next(ckpt.glob("*.distcp")))
    assert main(["export", str(ckpt), str(tmp_path / "hf")]) == 2
    assert "sha256 differs" in capsys.readouterr().err


def test_the_report_shows_what_the_model_was_trained_with(run, tmp_path, capsys):
    """Every command rewrites config.toml, also one that reruns nothing: the report's
    hyperparameters come from the train stage's manifest, and it says where they differ."""
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    args = ["-c", str(copy / "config.toml"), f"--runs_dir={tmp_path}"]
    assert main(["tokenizer", *args, "--train.lr=0.7", "--model.n_layers=9"]) == 0
    assert "lr = 0.7" in (copy / "config.toml").read_text()
    assert main(["report", str(copy)]) == 0
    report = (copy / "report.md").read_text()
    assert "llama, d_model 64, 2 layers" in report and "adamw, lr 0.005," in report
    assert "| precision, compile | fp32 (auto), off |" in report   # what "auto" ran as
    assert "differs from what the model was trained with in `model.n_layers`, `train.lr`" \
        in report
    (copy / "eval").mkdir()
    (copy / "eval" / "results.json").write_text("{junk")   # damaged by hand: no traceback
    assert main(["report", str(copy)]) == 0
    assert "Damaged: `eval/results.json` cannot be read" in (copy / "report.md").read_text()
    # a completed stage's file gone is damage, not a stage that never ran (it said "Not run.")
    (copy / "tokenizer" / "report.json").unlink()
    (copy / "data" / "funnel.json").write_text("[junk")
    assert main(["report", str(copy)]) == 0
    report = (copy / "report.md").read_text()
    assert "Damaged: `tokenizer/report.json` is missing or cannot be read" in report
    assert "Damaged: `data/funnel.json` is missing or cannot be read" in report
    assert "## Samples\n\nNot run." in report   # no sample stage in this run
    # one the stage never wrote (tokenizer.report_chars = 0) is no damage
    manifest = copy / "tokenizer" / "manifest.json"
    m = json.loads(manifest.read_text())
    del m["outputs"]["report.json"]
    manifest.write_text(json.dumps(m))
    assert main(["report", str(copy)]) == 0
    assert "The stage wrote no `report.json`" in (copy / "report.md").read_text()
    # valid JSON of another shape in a log record (a traceback in the plot), the sample
    # stage's file another shape; the train stage's model config and log gone ("Not run.")
    log = copy / "train" / "log.jsonl"
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    log.write_text("".join(json.dumps({**r, "val": 5, "loss": "x"}) + "\n" for r in recs))
    (copy / "sample").mkdir(exist_ok=True)
    (copy / "sample" / "samples.json").write_text('{"x": 1}')
    assert main(["report", str(copy)]) == 0
    (copy / "train" / "model_config.json").unlink()
    log.unlink()
    assert main(["report", str(copy)]) == 0
    report = (copy / "report.md").read_text()
    assert "Damaged: `train/model_config.json` is missing" in report
    assert "Damaged: `train/log.jsonl` is missing" in report
    capsys.readouterr()


def test_export_pairs_the_model_with_the_tokenizer_it_was_trained_with(run, tmp_path, capsys,
                                                                      monkeypatch):
    """A tokenizer stage rerun after training (another vocabulary) is not exported beside
    the model; once the shards are rewritten too, the export is refused."""
    pytest.importorskip("transformers")
    from transformers import PreTrainedTokenizerFast
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    args = ["-c", str(copy / "config.toml"), f"--runs_dir={tmp_path}"]
    assert main(["tokenizer", *args, "--tokenizer.vocab_size=640"]) == 0
    (tmp_path / "hf.tmp").mkdir()   # the user's, beside the export: left alone
    (tmp_path / "hf.tmp" / "notes.txt").write_text("mine")
    assert main(["export", str(copy), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf.tmp" / "notes.txt").read_text() == "mine"
    # a folder made for it beforehand is taken while empty (it had been refused), not after
    (tmp_path / "made").mkdir()
    assert main(["export", str(copy), str(tmp_path / "made")]) == 0
    assert (tmp_path / "made" / "config.json").is_file()
    assert main(["export", str(copy), str(tmp_path / "made")]) == 2
    assert "made exists and is not an empty folder" in capsys.readouterr().err
    # the current folder ("." had no name to put a temporary one beside), and a link to an
    # empty folder (a folder cannot be renamed onto a link), keep what they are
    (tmp_path / "here").mkdir()
    (tmp_path / "there").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "there")
    monkeypatch.chdir(tmp_path / "here")
    assert main(["export", str(copy), "."]) == 0
    assert main(["export", str(copy), str(tmp_path / "link")]) == 0, capsys.readouterr().err
    assert (tmp_path / "link").is_symlink()
    for out in ("here", "there"):
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == sorted(
            p.name for p in (tmp_path / "made").iterdir())
    exported = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "hf"))
    trained = json.loads((copy / "train" / "model_config.json").read_text())["vocab_size"]
    assert len(exported) <= trained < 640
    assert main(["report", str(copy)]) == 0   # the model's vocabulary, not the tokenizer's now
    row = next(x for x in (copy / "report.md").read_text().splitlines()
               if x.startswith("| context, vocabulary |"))
    assert row.endswith(f", {trained:,} |"), row
    assert main(["tokenize", *args, "--tokenizer.vocab_size=640"]) == 0
    assert main(["export", str(copy), str(tmp_path / "hf2")]) == 2
    assert "was rewritten after" in capsys.readouterr().err
    # the report shows the model as out of date, where it lists the stages and its results
    assert main(["report", str(copy)]) == 0
    report = (copy / "report.md").read_text()
    assert "| train | complete, out of date (tokenize changed since) |" in report
    assert "**Out of date:** tokenize changed after this stage ran" in report
    assert "| tokenize | complete |" in report


def test_the_report_marks_what_an_earlier_stage_rerun_left_behind_and_skips_damage(
        run, tmp_path, capsys):
    """The data stage rerun on its own (other data): every stage after it is out of date,
    also those that read it only through another stage (the model trained on tokens of the
    earlier data), and the tokenizer's section says so too. A damaged log line is skipped
    and named; a sweep law that cannot be used is named, not divided by."""
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    args = ["-c", str(copy / "config.toml"), f"--runs_dir={tmp_path}"]
    assert main(["data", *args, "--data.sources.0.max_bytes=400000"]) == 0
    with open(copy / "train" / "log.jsonl", "a") as f:
        f.write('{"step": 13, "lo')                    # a crash mid-write
    with open(copy / "train" / "events.jsonl", "a") as f:
        f.write('{"step": 99}\n')                      # a record short of its fields
    (copy / "sweep").mkdir()
    law = {"E": 1.6, "A": 131.0, "B": 1.46, "alpha": 0.74, "beta": 0.0}   # loss ignores D
    (copy / "sweep" / "fit.json").write_text(json.dumps(
        {"runs": [], "isoflop": [{"C": 1e12}, {"C": 3e12}], "law": law}))
    capsys.readouterr()
    assert main(["report", str(copy)]) == 0
    err = capsys.readouterr().err
    assert "train/log.jsonl: 1 damaged line(s) skipped (line " in err
    assert "train/events.jsonl: 1 damaged line(s) skipped (line " in err
    report = (copy / "report.md").read_text()
    for stage in ("tokenizer", "tokenize"):
        assert f"| {stage} | complete, out of date (data changed since) |" in report, stage
    # its log and events files were written to by hand: damaged, as the pipeline sees them
    assert "| train | damaged: an output file is missing or changed (`pretrain verify RUN`), " \
        "out of date (data changed since) |" in report
    tokenizer_section = report.split("## Tokenizer")[1].split("## Training")[0]
    assert "**Out of date:** data changed after this stage ran" in tokenizer_section
    # the training tokens per licence are the tokenize stage's, and the plan the train's
    data_section = report.split("## Data")[1].split("## Tokenizer")[0]
    assert "**Out of date:** data changed" in data_section.split("| license | train tokens")[0]
    assert "**Out of date:** data changed" in report.split("## Plan")[1].split("## Evaluation")[0]
    assert "the sweep's law is not used: sweep/fit.json" in report


def test_a_checkpoint_carries_the_tokenizer_it_was_trained_with(run, tmp_path, capsys):
    """The run's tokenizer replaced after training by another of the same size (trained on
    less text): a checkpoint still exports with its own tokenizer, and `train.init_from` of
    it in the changed run is refused (its ids mean other tokens there); both had read the
    run's new tokenizer."""
    pytest.importorskip("transformers")
    from transformers import PreTrainedTokenizerFast

    from pretrain.tokenizer.files import load_tokenizer
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    ckpt = sorted(copy.glob("checkpoints/*/step-*"))[-1]
    shutil.copyfile(copy / "tokenize" / "tokenizer.json", tmp_path / "trained.json")
    args = ["-c", str(copy / "config.toml"), f"--runs_dir={tmp_path}",
            "--tokenizer.max_chars=150000"]
    assert main(["tokenizer", *args]) == 0 and main(["tokenize", *args]) == 0
    text = "The little dog ran to the park, and then it was time for dinner."
    trained, now = (load_tokenizer(p) for p in (tmp_path / "trained.json",
                                                copy / "tokenize" / "tokenizer.json"))
    assert trained.vocab_size == now.vocab_size and trained.encode(text) != now.encode(text)
    assert main(["export", str(ckpt), str(tmp_path / "hf")]) == 0
    exported = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "hf"))
    assert exported.encode(text, add_special_tokens=False) == trained.encode(text)
    capsys.readouterr()
    assert main(["train", *args, f"--train.init_from={ckpt}", "--train.steps=2"]) != 0
    assert "was trained with another tokenizer" in capsys.readouterr().err


def test_the_report_of_a_training_stopped_with_checkpoints_says_so(run, tmp_path):
    """Killed before its manifest was written: the train stage is reported as not complete
    with its latest checkpoint, not as never run."""
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    (folder,) = copy.glob("checkpoints/*")   # where a stopped run leaves its logs
    shutil.copy(copy / "train" / "log.jsonl", folder / "log.jsonl")
    shutil.rmtree(copy / "train")
    latest = max(int(c.name.split("-")[1]) for c in copy.glob("checkpoints/*/step-*"))
    assert main(["report", str(copy)]) == 0
    report = (copy / "report.md").read_text()
    assert f"| train | not complete (checkpoints up to step {latest}; a rerun resumes) |" in report
    # its logs are shown (the section said "Not run.")
    training = report.split("## Training")[1].split("## Plan")[0]
    assert training.lstrip().startswith(f"**Not complete**: logged up to step 12 (checkpoints up to "
                               f"step {latest}: a rerun resumes); its logs, from "
                               f"`checkpoints/{folder.name}/`")
    assert "loss" in training
    # its plot starts at step 0's evaluation, of each domain too, kept with the checkpoints
    from pretrain.report import _initial_eval
    counts = json.loads((run / "train" / "manifest.json").read_text())["counts"]
    assert _initial_eval(folder) == {"val_loss": counts["val_loss_initial"],
                                     "val_bpb": counts["val_bpb_initial"],
                                     **({"val": counts["val_initial"]} if "val_initial" in counts
                                        else {})}


def test_the_report_shows_a_damaged_stage_as_the_pipeline_sees_it(run, tmp_path, monkeypatch):
    """A stage whose output file is gone is not completed for the pipeline (`pretrain eval`
    refuses it); the report said "complete". And `pretrain report .` named no run."""
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    (copy / "train" / "model.safetensors").unlink()
    monkeypatch.chdir(copy)
    assert main(["report", "."]) == 0
    report = (copy / "report.md").read_text()
    assert report.startswith("# Run report: tiny\n")
    assert "| train | damaged: an output file is missing or changed (`pretrain verify RUN`) |" \
        in report
    assert "| tokenize | complete |" in report


def test_a_report_block_holds_text_with_backticks():
    """A sample holding ``` closed the report's plain fence; the rest became markdown."""
    from pretrain.report import _block
    text = "def f():\n    '''doc ```code``` ````x````'''"
    block = _block(text)
    assert block == f"`````\n{text}\n`````\n" and _block("plain") == "```\nplain\n```\n"


def test_a_report_on_a_read_only_file_system_says_so_in_one_line(run, tmp_path, monkeypatch,
                                                                 capsys):
    """On a read-only file system unlink() fails with EROFS even of a file that is not
    there: the cleanup of the temporary file raised it in place of the failure being
    handled (a bare "[Errno 30]", neither the plot's note nor the report's own line).
    Writes fail here as such a file system fails them: with EROFS."""
    import errno
    import importlib.util
    import pathlib
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    for name in ("write_text", "write_bytes", "replace", "unlink", "touch"):
        monkeypatch.setattr(pathlib.Path, name, read_only)
    if importlib.util.find_spec("matplotlib"):   # the plot (the report extra)
        monkeypatch.setattr("matplotlib.figure.Figure.savefig", read_only)
    assert main(["report", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "the run's stages are intact: rerun `pretrain report" in err, err
    assert "[Errno 30]" not in err.splitlines()[-1][:20]
    # two reports at once each write their own temporary file (one took the other's away:
    # "No such file or directory: report.md.tmp -> report.md")
    monkeypatch.undo()
    from pretrain.report import write_report
    # those a killed report left (its process gone) are removed; a live one's stay
    proc = subprocess.Popen(["sleep", "30"])
    try:
        orphan = copy / "report" / f".loss.png.tmp-{_dead_pid()}"
        live = copy / f"report.md.tmp-{proc.pid}"
        for f in (orphan, live):
            f.parent.mkdir(exist_ok=True)
            f.write_text("half")
        assert write_report(copy).is_file()
        assert not orphan.exists() and live.exists()
    finally:
        proc.kill()
        proc.wait()
    live.unlink()
    assert not [p.name for p in copy.rglob("*.tmp*")]


def _dead_pid() -> int:
    """The id of a process that has ended (reaped, so no process holds it now)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_moved_runs_own_config_says_it_names_the_old_place(run, tmp_path, capsys):
    """A run's config.toml keeps the absolute runs_dir it was written with: a command given
    a moved copy's config quietly worked on the old place."""
    copy = tmp_path / "moved" / "tiny"
    shutil.copytree(run, copy)
    assert main(["tokenize", "-c", str(copy / "config.toml")]) == 0
    err = capsys.readouterr().err
    assert f"note: {copy / 'config.toml'} is the config of the run directory {copy}, but " \
        f"names {run}" in err and f"add --runs_dir={copy.parent} --name=tiny" in err
    assert main(["tokenize", "-c", str(copy / "config")]) == 0   # named without .toml
    assert f"is the config of the run directory {copy}" in capsys.readouterr().err
    # another name alone still puts the run under the old runs_dir: said too
    assert main(["tokenize", "-c", str(copy / "config.toml"), "--name=other"]) == 2
    assert f"but names {run.parent / 'other'}" in capsys.readouterr().err
    shutil.rmtree(run.parent / "other", ignore_errors=True)   # the shared run's neighbour
    # with the note's settings the copy is up to date, and its config.toml names it again
    assert main(["tokenize", "-c", str(copy / "config.toml"), f"--runs_dir={copy.parent}"]) == 0
    err = capsys.readouterr().err
    assert "note:" not in err and "[tokenize] up to date" in err
    assert main(["tokenize", "-c", str(run / "config.toml")]) == 0   # its own place: quiet
    assert "note:" not in capsys.readouterr().err


def test_a_model_config_of_another_version_leaves_the_report_written(run, tmp_path, capsys):
    """A key this version lacks in train/model_config.json stopped the whole report
    ("unknown config key"), naming no file."""
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    conf = copy / "train" / "model_config.json"
    conf.write_text(json.dumps({**json.loads(conf.read_text()), "future_key": 1}))
    assert main(["report", str(copy)]) == 0
    report = (copy / "report.md").read_text()
    assert "`train/model_config.json` is not one this version reads (unknown config key " \
        "'future_key'" in report and "## Evaluation" in report


def test_a_train_folder_without_its_manifest_is_neither_exported_nor_continued(run, tmp_path,
                                                                               capsys):
    """Nothing vouched for a run's train/ folder without its manifest (damaged, or a
    stage's leftover), yet export wrote it out, beside whatever tokenizer the run now
    has, and init_from trained on from it, both without a word."""
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    (copy / "train" / "manifest.json").unlink()
    assert main(["export", str(copy), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert f"{copy / 'train' / 'manifest.json'}: missing (nothing vouches" in err, err
    assert not (tmp_path / "hf").exists()
    args = ["-c", str(copy / "config.toml"), f"--runs_dir={tmp_path}", "--name=next",
            f"--train.init_from={copy}"]
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert "train.init_from: " in err and "manifest.json: missing (nothing vouches" in err, err
