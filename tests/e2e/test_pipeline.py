"""The whole pipeline on a tiny config: corpus -> tokenizer -> shards -> steps -> eval -> sample."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pretrain import stages
from pretrain.cli import main
from pretrain.config import PretrainError, to_toml
from pretrain.eval import tasks
from pretrain.model import io
from pretrain.model.generate import generate
from pretrain.pipeline import run_stages
from pretrain.run_config import load_config
from pretrain.rundir import RunDir, file_sha256
from pretrain.tokenizer.bpe import Tokenizer

from ..conftest import tiny_overrides


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, list[tuple[str, str]]]:
    tmp = tmp_path_factory.mktemp("e2e")
    overrides = tiny_overrides(tmp)
    args = [f"--{k}={v}" for k, v in overrides]
    assert main(["run", *args]) == 0
    return tmp / "runs" / "tiny", overrides


def _manifests(root: Path) -> dict[str, dict]:
    return {s: json.loads((root / s / "manifest.json").read_text()) for s in stages.names()}


def test_every_stage_completed_with_a_manifest(tiny_run):
    root, _ = tiny_run
    assert (root / "config.toml").is_file()
    for stage, m in _manifests(root).items():
        assert m["status"] == "complete" and m["stage"] == stage
        assert m["wall_s"] >= 0 and m["versions"]["torch"]
        assert "git_commit" in m
        for rel, info in m["outputs"].items():  # the fingerprints describe the files on disk
            assert file_sha256(root / stage / rel) == info["sha256"]
    assert not list(root.glob(".tmp-*"))


def test_loss_is_finite_and_falls(tiny_run):
    root, _ = tiny_run
    counts = _manifests(root)["train"]["counts"]
    first, last = counts["val_loss_initial"], counts["val_loss_final"]
    assert math.isfinite(first) and math.isfinite(last)
    assert first == pytest.approx(math.log(512), abs=0.5)  # untrained: about ln(vocab)
    assert last < first - 0.5
    ev = json.loads((root / "eval" / "results.json").read_text())
    assert set(ev) == {"code", "prose", "all", "tasks", "contamination", "memorization", "core",
                       "baselines"}
    for order in ("unigram", "bigram", "trigram"):   # the same held-out tokens as the model
        for d in ("code", "prose", "all"):
            b = ev["baselines"][order][d]
            assert (b["tokens"], b["bytes"]) == (ev[d]["tokens"], ev[d]["bytes"]), (order, d)
            assert 0 < b["bpb"] < 20
    assert ev["baselines"]["bigram"]["all"]["bpb"] < ev["baselines"]["unigram"]["all"]["bpb"]
    gens = [json.loads(x) for x in (root / "train" / "generations.jsonl").open()]
    assert {(g["step"], g["domain"]) for g in gens} == {
        (s, d) for s in (0, 20, 40) for d in ("code", "prose")}  # every eval, every domain
    mem = ev["memorization"]
    assert mem["train"]["docs"] > 0 and 0 <= mem["train"]["exact_rate"] <= 1
    # the quickstart's benchmarks: scored where ../shared/data is, a logged skip elsewhere
    for name, r in ev["tasks"].items():
        if "skipped" in r:
            continue
        if r.get("kind") == "perplexity":  # WikiText-2: 40 windows of seq_len tokens
            assert r["tokens"] == 40 * 64 and math.isfinite(r["bpb"]), name
        else:  # accuracies are counts over the 40 items, centred on the task's chance
            assert r["items"] == 40, name
            for metric in ("acc", "acc_norm"):
                assert r[metric] * 40 == pytest.approx(round(r[metric] * 40), abs=1e-3), name
            chosen = r[tasks.BUILTIN[name][3]]  # the metric CORE centres for this task
            assert r["centered"] == pytest.approx((chosen - r["chance"]) / (1 - r["chance"]),
                                                  abs=1e-4), name
            # a 40-second model knows nothing of these tasks: within 4 standard errors of chance
            assert abs(r["acc"] - r["chance"]) < 4 * (r["chance"] * (1 - r["chance"]) / 40) ** 0.5 + 0.01, name
    # CORE over the task files found (none without ../shared/data), 12 items each
    assert all(r["items"] == 12 and -2 < r["centered"] <= 1 for r in ev["core"]["tasks"].values())
    assert len(ev["core"]["tasks"]) + len(ev["core"]["missing"]) == 22
    assert ev["all"]["loss"] < first
    assert 0 < ev["all"]["bpb"] < 8
    # MFU against the matmul peak measured at the start (a number, not a speed assertion)
    assert counts["peak_gflops"] > 0 and 0 < counts["mfu_median"] < 10


def test_data_stage_counts_domains_and_audits_drops(tiny_run):
    root, _ = tiny_run
    c = _manifests(root)["data"]["counts"]
    assert set(c["docs_kept"]) == {"code", "prose"}
    kept = sum(1 for shard in (root / "data").glob("docs-*.jsonl") for _ in shard.open())
    assert kept == c["docs_total"] == sum(c["docs_kept"].values())
    dropped = [json.loads(x) for x in (root / "data" / "dropped.jsonl").open()]
    assert len(dropped) == sum(c["dropped"].values())  # every drop is in the audit log
    assert all(d["reason"] for d in dropped)


def test_samples_are_stored(tiny_run):
    root, _ = tiny_run
    samples = json.loads((root / "sample" / "samples.json").read_text())
    assert [s["prompt"] for s in samples] == ["def", "The"]


def test_rerun_skips_every_stage(tiny_run):
    root, overrides = tiny_run
    before = {s: m["finished_at"] + m["key"] for s, m in _manifests(root).items()}
    mtimes = {s: (root / s / "manifest.json").stat().st_mtime_ns for s in stages.names()}
    run_stages(load_config(None, overrides), stages.names(), force=set())
    after = _manifests(root)
    assert {s: m["finished_at"] + m["key"] for s, m in after.items()} == before
    assert {s: (root / s / "manifest.json").stat().st_mtime_ns for s in stages.names()} == mtimes


@pytest.mark.slow
def test_changed_config_reruns_that_stage_and_later_ones(tiny_run, tmp_path):
    root, overrides = tiny_run
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(root, copy)
    overrides = [(k, str(tmp_path / "runs")) if k == "runs_dir" else (k, v) for k, v in overrides]
    old = _manifests(copy)
    cfg = load_config(None, [*overrides, ("train.steps", "30")])
    run_stages(cfg, stages.names(), force=set())
    new = _manifests(copy)
    for s in ("data", "tokenizer", "tokenize"):
        assert new[s]["finished_at"] == old[s]["finished_at"], s
    for s in ("train", "eval", "sample"):
        assert new[s]["key"] != old[s]["key"], s
    # --force on an upstream stage reruns it and everything after it
    run_stages(cfg, stages.names(), force={"tokenize"})
    forced = _manifests(copy)
    assert forced["tokenizer"]["finished_at"] == new["tokenizer"]["finished_at"]
    for s in ("tokenize", "train", "eval", "sample"):
        assert forced[s]["started_at"] > new[s]["finished_at"], s  # microsecond timestamps


def crash(run, *sections):
    """A train stage killed after writing half its output."""
    (run.out / "model.safetensors").write_bytes(b"half a checkpoint")
    raise RuntimeError("killed mid-stage")


def test_failed_stage_leaves_previous_output_intact(tiny_run, tmp_path, monkeypatch):
    root, overrides = tiny_run
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(root, copy)
    overrides = [(k, str(tmp_path / "runs")) if k == "runs_dir" else (k, v) for k, v in overrides]
    before = _manifests(copy)["train"]

    crashing = tuple(replace(s, body=f"{__name__}:crash") if s.name == "train" else s
                     for s in stages.STAGES)
    monkeypatch.setattr(stages, "STAGES", crashing)
    with pytest.raises(RuntimeError, match="killed mid-stage"):
        run_stages(load_config(None, overrides), stages.names(), force={"train"})
    assert _manifests(copy)["train"] == before
    assert file_sha256(copy / "train" / "model.safetensors") == \
        before["outputs"]["model.safetensors"]["sha256"]
    assert not list(copy.glob(".tmp-*"))


def test_leftover_tmp_folder_from_a_killed_process_is_swept(tmp_path):
    rd = RunDir(tmp_path)
    stale = tmp_path / ".tmp-train-99999"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"partial")
    assert rd.manifest("train") is None
    rd.sweep_tmp()
    assert not stale.exists()


def _copy(tiny_run, tmp_path) -> tuple[Path, list[tuple[str, str]]]:
    root, overrides = tiny_run
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(root, copy)
    return copy, [(k, str(tmp_path / "runs")) if k == "runs_dir" else (k, v) for k, v in overrides]


@pytest.mark.parametrize("stage, change, stale", [
    ("tokenize", ("tokenizer.vocab_size", "600"), "tokenizer"),
    ("train", ("data.clean.min_chars", "900"), "data"),          # not a direct upstream
    ("sample", ("tokenize.val_fraction", "0.5"), "tokenize"),
])
def test_single_stage_refuses_any_out_of_date_upstream(tiny_run, tmp_path, stage, change, stale):
    copy, overrides = _copy(tiny_run, tmp_path)
    config_before = (copy / "config.toml").read_text()
    cfg = load_config(None, [*overrides, change])
    # named, with the setting that changed (it said "this config or the files it reads")
    with pytest.raises(PretrainError, match=f"stage '{stale}' .* is out of date with this "
                                            f"config: {stale}.{change[0].split('.', 1)[1]};"):
        run_stages(cfg, (stage,), force={stage}, require_current_upstream=True)
    assert (copy / "config.toml").read_text() == config_before  # still describes the outputs


@pytest.mark.parametrize("delta", [-1, 100])
def test_a_model_vocabulary_other_than_the_tokenizers_is_refused(tiny_run, tmp_path, delta):
    """Larger, its extra ids were sampled by the probe and the sample stage (KeyError in
    the tokenizer's decode) and never trained."""
    copy, overrides = _copy(tiny_run, tmp_path)
    vocab = json.loads((copy / "tokenize" / "meta.json").read_text())["vocab_size"]
    cfg = load_config(None, [*overrides, ("model.vocab_size", str(vocab + delta))])
    with pytest.raises(PretrainError, match=f"model.vocab_size={vocab + delta} is not the "
                                            f"tokenizer's {vocab}"):
        run_stages(cfg, ("train",), force={"train"}, require_current_upstream=True)


def test_force_naming_a_stage_the_command_does_not_run_is_an_error(tiny_run, tmp_path):
    copy, overrides = _copy(tiny_run, tmp_path)
    with pytest.raises(PretrainError, match="--force data has no effect"):
        run_stages(load_config(None, overrides), ("tokenize",), force={"data"},
                   require_current_upstream=True)


def test_a_second_process_on_the_same_run_directory_is_refused(tiny_run, tmp_path):
    copy, overrides = _copy(tiny_run, tmp_path)
    with RunDir(copy).lock():
        with pytest.raises(PretrainError, match="is in use by pid"):
            run_stages(load_config(None, overrides), stages.names(), force=set())


def test_an_identical_retrain_leaves_eval_and_sample_current(tiny_run, tmp_path):
    """The train log's tokens/s was in the stage's output fingerprint: a retrain to the
    same model changed the eval and sample keys, and both reran."""
    copy, overrides = _copy(tiny_run, tmp_path)
    done = {s: RunDir(copy).manifest(s)["finished_at"] for s in ("eval", "sample")}
    weights = file_sha256(copy / "train" / "model.safetensors")
    cfg = load_config(None, overrides)
    run_stages(cfg, ("train",), force={"train"}, require_current_upstream=True)
    assert file_sha256(copy / "train" / "model.safetensors") == weights
    run_stages(cfg, stages.names(), force=set())
    assert {s: RunDir(copy).manifest(s)["finished_at"] for s in ("eval", "sample")} == done


def test_missing_output_file_makes_the_stage_incomplete(tiny_run, tmp_path, capsys):
    copy, overrides = _copy(tiny_run, tmp_path)
    (copy / "tokenize" / "val-00000.bin").unlink()
    assert RunDir(copy).manifest("tokenize") is None
    run_stages(load_config(None, overrides), stages.names(), force=set())  # reruns tokenize and after
    assert RunDir(copy).manifest("tokenize") is not None
    # said as what it is (it said "not run yet")
    assert "[tokenize] running (an output is missing or changed size)" in capsys.readouterr().err


def test_kill_between_the_two_renames_of_a_publish_is_recovered(tiny_run, tmp_path):
    copy, _ = _copy(tiny_run, tmp_path)
    # the state a kill between os.replace(final, old) and os.replace(tmp, final) leaves
    shutil.copytree(copy / "eval", copy / ".tmp-eval-123")
    new_manifest = json.loads((copy / ".tmp-eval-123" / "manifest.json").read_text())
    new_manifest["finished_at"] = "the new one"
    (copy / ".tmp-eval-123" / "manifest.json").write_text(json.dumps(new_manifest))
    os.replace(copy / "eval", copy / ".old-eval-123")
    RunDir(copy).sweep_tmp()
    assert RunDir(copy).manifest("eval")["finished_at"] == "the new one"  # the new output wins
    assert not list(copy.glob(".tmp-*")) and not list(copy.glob(".old-*"))


def test_exported_run_generates_in_plain_transformers(tiny_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    root, _ = tiny_run
    out = tmp_path / "hf"
    assert main(["export", str(root), str(out)]) == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    enc = tok("def main():", return_tensors="pt")
    assert set(enc) == {"input_ids", "attention_mask"}  # no token_type_ids: generate() rejects them
    ids = enc["input_ids"]
    # the padding token is the model's too (generate took EOS for it, with a warning)
    assert model.generation_config.pad_token_id == tok.pad_token_id is not None
    gen = model.generate(ids, max_new_tokens=10, do_sample=False)
    ours_tok = Tokenizer.load(root / "tokenizer" / "tokenizer.json")
    assert ids[0].tolist() == [ours_tok.bos_id, *ours_tok.encode("def main():")]
    ours = generate(io.load(root / "train"), [ids[0].tolist()], 10, temperature=0.0,
                    stop_ids=(ours_tok.eos_id,))[0]
    assert gen[0, ids.shape[1]:].tolist()[:len(ours)] == ours
    assert isinstance(tok.decode(gen[0]), str)
    assert main(["export", str(root), str(out)]) == 2  # never overwrites


def _continued(tiny_run, tmp_path, name: str, *more: tuple[str, str]) -> tuple[Path, RunDir]:
    """The tiny run exported to Hugging Face, and a run of 5 steps from that export (its
    own runs directory; ``more``: further settings)."""
    root, overrides = tiny_run
    hf_dir = tmp_path / "hf"
    if not hf_dir.exists():
        assert main(["export", str(root), str(hf_dir)]) == 0
    cont = [(k, str(tmp_path / "runs")) if k == "runs_dir" else (k, v) for k, v in overrides]
    cfg = load_config(None, [*cont, ("name", name), ("train.steps", "5"),
                             ("train.init_from", str(hf_dir)), ("train.lr", "1e-4"), *more])
    return hf_dir, run_stages(cfg, stages.names()[:4], force=set())


def test_continued_pretraining_from_an_hf_export(tiny_run, tmp_path):
    hf_dir, rd = _continued(tiny_run, tmp_path, "cont", ("model.n_layers", "5"))
    final = _manifests(tiny_run[0])["train"]["counts"]["val_loss_final"]
    counts = rd.manifest("train")["counts"]
    # it starts where the first run ended (same data, same deterministic tokenizer), not at ln V
    assert counts["val_loss_initial"] == pytest.approx(final, abs=1e-3)
    assert counts["val_loss_final"] < counts["val_loss_initial"]
    # the report shows the model trained, the checkpoint's (2 layers; the config's 5 are not
    # used: it showed them), and where it started from (it read as trained from scratch)
    from pretrain.report import write_report
    report = write_report(rd.root).read_text()
    assert "| model | llama, d_model 64, 2 layers," in report and "5 layers" not in report
    assert f"| started from | `{hf_dir}` (train.init_from: its weights and model" in report
    # continued from its own weights, or a checkpoint of its own: each rerun trained again
    # from the last one's result and the stage was never up to date; refused
    root, overrides = tiny_run
    cont = [(k, str(tmp_path / "runs")) if k == "runs_dir" else (k, v) for k, v in overrides]
    for own in (rd.root, rd.root / "train"):
        cfg = load_config(None, [*cont, ("name", "cont"), ("train.steps", "5"),
                                 ("train.init_from", str(own)), ("train.lr", "1e-4")])
        with pytest.raises(PretrainError, match="is this run's own model"):
            run_stages(cfg, stages.names()[:4], force=set())
    assert rd.manifest("train")["counts"] == counts   # untouched


@pytest.mark.slow
def test_continued_pretraining_grows_the_vocabulary_or_refuses_another(tiny_run, tmp_path):
    root, overrides = tiny_run
    hf_dir, rd = _continued(tiny_run, tmp_path, "cont")
    final = _manifests(root)["train"]["counts"]["val_loss_final"]
    counts = rd.manifest("train")["counts"]
    cont = [(k, str(tmp_path / "runs")) if k == "runs_dir" else (k, v) for k, v in overrides]
    # the same tokenizer extended with domain tokens: the checkpoint's embeddings grow
    _, rd = _continued(tiny_run, tmp_path, "ext",
                       ("tokenizer.extend_words", '["tokenization", "interpreter"]'))
    added = rd.manifest("tokenizer")["counts"]["added_tokens"]
    grown = rd.manifest("train")["counts"]
    assert added > 0 and grown["params"] > counts["params"]
    # it starts near where the first run ended, far below a fresh model's ln V
    assert grown["val_loss_initial"] < final + 0.3 < math.log(512 + added) - 0.5
    # a different vocabulary is refused with a clear message
    bad = load_config(None, [*cont, ("name", "bad"), ("train.init_from", str(hf_dir)),
                             ("tokenizer.vocab_size", "600")])
    with pytest.raises(PretrainError, match="token ids"):
        run_stages(bad, stages.names()[:4], force=set())
    # another tokenizer of the same size (its ids stand for other tokens): refused too, from
    # the HF export (its tokenizer.json) and from the run directory (the run's tokenizer)
    other = [*cont, ("name", "other"), ("train.steps", "5"), ("tokenizer.pattern", "gpt2")]
    for source in (hf_dir, root):
        cfg = load_config(None, [*other, ("train.init_from", str(source))])
        with pytest.raises(PretrainError, match="trained with another tokenizer: id"):
            run_stages(cfg, stages.names()[:4], force=set())


def test_gates_pass_or_fail_with_status_3_without_rerunning_eval(tiny_run, capsys):
    root, overrides = tiny_run
    args = [f"--{k}={v}" for k, v in overrides]
    before = (root / "eval" / "manifest.json").read_text()
    assert main(["eval", "--gate", *args, '--eval.gates=["all.bpb <= 100"]']) == 0
    assert "gates passed: 1" in capsys.readouterr().out
    code = main(["eval", "--gate", *args,
                 '--eval.gates=["all.bpb <= 0.01", "tasks.nope.acc > 0", "all.loss > 0"]'])
    err = capsys.readouterr().err
    assert code == 3 and "gate failed: all.bpb <= 0.01: got" in err
    assert "tasks.nope.acc > 0: no value" in err and "all.loss > 0" not in err
    # without --gate the gates are said, the status stays 0 (they had gone unmentioned)
    assert main(["eval", *args, '--eval.gates=["all.bpb <= 0.01", "all.loss > 0"]']) == 0
    err = capsys.readouterr().err
    assert "gate failed: all.bpb <= 0.01: got" in err and "gates: 1 of 2 failed" in err
    assert (root / "eval" / "manifest.json").read_text() == before  # gates are not in the key
    # results edited since the stage wrote them (same size, so the stage looks complete)
    # are refused, not gated: a gate had passed on them, and eval printed the recorded ones
    results = root / "eval" / "results.json"
    kept = results.read_bytes()
    try:
        results.write_bytes(re.sub(rb'"bpb": (\d)', lambda m: b'"bpb": ' + bytes(
            [48 + (int(m[1]) + 1) % 10]), kept, count=1))
        assert results.read_bytes() != kept and len(results.read_bytes()) == len(kept)
        assert main(["eval", "--gate", *args, '--eval.gates=["all.bpb <= 100"]']) == 2
        err = capsys.readouterr().err
        assert "gates: the eval results changed after the eval stage wrote them" in err
        assert f"{results}: sha256 differs" in err
    finally:
        results.write_bytes(kept)


@pytest.mark.slow
def test_harness_tasks_run_in_the_eval_stage(tiny_run, tmp_path, capsys, monkeypatch):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness (the [eval] extra) is not installed")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = tmp_path / "mini.jsonl"
    data.write_text("".join(json.dumps({"query": f"Is {i} even?", "choices": ["yes", "no"],
                                        "gold": i % 2}) + "\n" for i in range(8)))
    (tmp_path / "mini.yaml").write_text(
        f"task: mini\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{query}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{gold}}'\nmetric_list:\n  - metric: acc\n")
    copy, overrides = _copy(tiny_run, tmp_path)
    args = [f"--{k}={v}" for k, v in overrides]
    before = json.loads((copy / "eval" / "results.json").read_text())
    assert main(["eval", *args, '--eval.harness=["mini"]', f"--eval.harness_include={tmp_path}"]) == 0
    m = RunDir(copy).manifest("eval")
    res = json.loads((copy / "eval" / "harness.json").read_text())
    assert 0 <= res["mini"]["acc"] <= 1 and res["mini"]["sample_len"] == 8
    assert m["counts"]["harness"] == res and "harness.json" in m["outputs"]  # the stage's output
    after = json.loads((copy / "eval" / "results.json").read_text())
    assert after["all"] == before["all"] and "harness" not in after
    assert not (copy / "harness.json").exists()


def test_run_writes_a_report_from_the_stage_outputs(tiny_run):
    root, _ = tiny_run
    text = (root / "report.md").read_text()
    for section in ("## Stages", "## Data", "## Tokenizer", "## Training", "## Plan",
                    "## Evaluation", "## Samples"):
        assert section in text
    counts = _manifests(root)["train"]["counts"]
    assert f"{counts['tokens_seen']:,} tokens" in text and "tokens per parameter" in text
    assert "not run" not in text.lower()
    counts = _manifests(root)["train"]["counts"]
    assert f"| parameters | {counts['params']:,} |" in text
    funnel = json.loads((root / "data" / "funnel.json").read_text())
    assert f"{funnel[-1]['docs_out']:,} kept" in text
    ev = json.loads((root / "eval" / "results.json").read_text())
    assert f"| all | {ev['all']['loss']:.4f} |" in text
    png = root / "report" / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "](report/loss.png)" in text
    # step 0's evaluation of each domain, kept where the report's curves start from
    assert set(counts["val_initial"]) == set(counts["val_final"]) and len(counts["val_final"]) > 1
    cfg = load_config(str(root / "config.toml"))   # the hyperparameters, as resolved
    assert (f"| model | {cfg.model.arch}, d_model {cfg.model.d_model}, {cfg.model.n_layers} "
            "layers") in text
    assert f"lr {cfg.train.lr:g}, betas" in text and f"| seed | {cfg.seed} |" in text
    # the MFU's denominator says where it came from, and the measured matmul stands beside it
    assert (f"| MFU's peak | {counts['peak_gflops']:,.1f} GFLOP/s ({counts['peak_source']})"
            if "peak_gflops" in counts else "| MFU's peak | n/a; fp32 matmul measured at") in text
    if counts.get("matmul_gflops") not in (None, counts.get("peak_gflops")):
        assert (f"; {counts['precision']} matmul measured at {counts['matmul_gflops']:,.1f} "
                "GFLOP/s |") in text
    if "mfu" in counts:   # one format for MFU: a percentage, as the training log prints
        assert (f"| MFU, over the timed steps / median of the log records | "
                f"{counts['mfu']:.1%} / {counts['mfu_median']:.1%} |") in text


def test_report_of_a_partial_run_names_what_did_not_run_and_checks_gates(tiny_run, tmp_path):
    root, _ = tiny_run
    part = tmp_path / "partial"
    shutil.copytree(root / "data", part / "data")
    cfg = load_config(str(root / "config.toml"))
    cfg.eval.gates = ["all.bpb <= 100", "all.bpb <= 0.01"]
    (part / "config.toml").write_text(to_toml(cfg))
    assert main(["report", str(part)]) == 0
    text = (part / "report.md").read_text()
    assert "| train | not run |" in text and "## Training\n\nNot run." in text
    assert "## Evaluation\n\nNot run." in text and "## Plan\n\nNot run." in text
    shutil.copytree(root / "eval", part / "eval")  # now the run's own gates are checked
    assert main(["report", str(part)]) == 0
    text = (part / "report.md").read_text()
    assert "- all.bpb <= 100: passed" in text and "- all.bpb <= 0.01: got " in text
    assert main(["report", str(tmp_path / "nothing")]) == 2
