"""The stages in order, what each reads, and the skip/rerun logic around them.

A stage's key hashes (a) the config sections it uses, (b) the output fingerprints of the
stages it reads and (c) a fingerprint of external inputs (source files). ``pretrain run``
walks the stages in order and skips each one whose completed manifest has the same key.
Single-stage commands do the same for their stage, and refuse to run on an upstream
stage that is missing or out of date with the config.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import distributed
from .config import PretrainError, fingerprint, jsonable, to_toml
from .log import log0
from .run_config import RunConfig
from .rundir import RunDir, StageRun

STAGES = ("data", "tokenizer", "tokenize", "train", "eval", "sample")
UPSTREAM: dict[str, tuple[str, ...]] = {
    "data": (),
    "tokenizer": ("data",),
    "tokenize": ("data", "tokenizer"),
    "train": ("tokenize",),
    "eval": ("data", "tokenizer", "tokenize", "train"),
    "sample": ("tokenizer", "train"),
}


def _config_part(cfg: RunConfig, stage: str) -> dict[str, Any]:
    if stage == "train":
        # resuming or not, and where metrics are sent, give the same model: not in the key
        quiet = replace(cfg.train, resume=True, tensorboard=True, wandb="off",
                        wandb_project="pretrain")
        part: dict[str, Any] = {"model": cfg.model, "train": quiet, "seed": cfg.seed}
        if cfg.train.init_from:
            from .train.checkpoint import fingerprint_files
            part["init_weights"] = fingerprint_files(Path(cfg.train.init_from))
        return part
    if stage == "data":
        return {"data": cfg.data, "sources": [s.fingerprint() for s in cfg.data.sources]}
    if stage == "eval":  # gates judge the results and --harness runs apart: neither changes them
        return {"eval": replace(cfg.eval, gates=[], harness_include="")}
    if stage == "tokenizer" and cfg.tokenizer.pretrained:
        return {"tokenizer": cfg.tokenizer, "files": cfg.tokenizer.fingerprint()}
    return {stage: getattr(cfg, stage)}


# ---- stage bodies: config + inputs -> files in run.out, counts in run.counts -------------

def _data(cfg: RunConfig, run: StageRun) -> None:
    import shutil

    from .data import stage as data_stage
    # per-task results live outside the stage's temporary folder, so that a killed run
    # resumes from them; they are keyed by the stage key and removed once it completes
    work = run.root / ".work" / f"data-{run.key[:16]}"
    data_stage.run(cfg.data, run.out, run.counts, work=work, fresh=run.forced)
    shutil.rmtree(work, ignore_errors=True)


def _domains(data_dir: Path) -> list[str]:
    with open(data_dir / "manifest.json") as f:
        return sorted(json.load(f)["counts"]["docs_kept"])


def _tokenizer(cfg: RunConfig, run: StageRun) -> None:
    from .data.stage import read_docs
    from .tokenizer import bpe
    t0 = time.time()
    chars = 0

    def sample() -> Any:
        nonlocal chars
        for text in bpe.training_sample(read_docs(run.inputs["data"], prefetch=512), cfg.tokenizer,
                                        _domains(run.inputs["data"])):
            chars += len(text)
            yield text

    tok = cfg.tokenizer.build(sample)
    if cfg.tokenizer.pretrained:
        run.counts["pretrained"] = cfg.tokenizer.pretrained
        log0(f"tokenizer: loaded {cfg.tokenizer.pretrained} (vocab {tok.vocab_size})")
    else:
        log0(f"tokenizer: vocab {tok.vocab_size} trained on {chars / 1e6:.1f} M chars "
             f"in {time.time() - t0:.1f}s")
    from .tokenizer import report as rep_mod
    texts: dict[str, list[str]] = {}
    if cfg.tokenizer.report_chars:
        texts = rep_mod.sample_by_domain(read_docs(run.inputs["data"]), cfg.tokenizer.report_chars)
    words = list(cfg.tokenizer.extend_words)
    if cfg.tokenizer.extend_mined:
        words += rep_mod.fragmenting_words(tok, texts, cfg.tokenizer.extend_mined)
    if words:
        from .tokenizer.extend import extend
        tok, ext = extend(tok, words)
        (run.out / "extension.json").write_text(json.dumps(ext, indent=2, ensure_ascii=False))
        run.counts["added_tokens"] = len(tok.added)
    tok.save(run.out / "tokenizer.json")
    run.counts.update({"vocab_size": tok.vocab_size, "train_chars": chars,
                       "vocab_hash": tok.vocab_hash(), "train_s": round(time.time() - t0, 2)})
    if texts:
        from .tokenizer.pretrained import parse_spec
        spec = cfg.tokenizer.compare_with
        kind, path = parse_spec(spec)
        rep = rep_mod.report(tok, texts, _baseline_tokenizer(spec), kind or path.name)
        (run.out / "report.json").write_text(json.dumps(rep, indent=2, ensure_ascii=False))
        run.counts["bytes_per_token"] = {d: r["bytes_per_token"] for d, r in rep["domains"].items()}
        log0(rep_mod.table(rep))


def _baseline_tokenizer(spec: str) -> Any:
    """The report's baseline: tiktoken's GPT-2 by name, or a file `pretrained` accepts."""
    if not spec:
        return None
    from .tokenizer.bpe import GPT2_PATTERN, Tokenizer
    if spec == "gpt2":
        import tiktoken
        try:
            enc = tiktoken.get_encoding("gpt2")  # downloads once into tiktoken's cache
        except Exception as e:  # no network and no cache: the report goes on without it
            log0(f"tokenizer: cannot load tiktoken's gpt2 ({type(e).__name__}: {e}); "
                 "set tokenizer.compare_with to a local GPT-2 folder")
            return None
        ranks = sorted(enc._mergeable_ranks, key=enc._mergeable_ranks.__getitem__)
        return Tokenizer(ranks, GPT2_PATTERN, {"<|endoftext|>": 50256}, "<|endoftext|>",
                         "<|endoftext|>")
    from .tokenizer.pretrained import load
    return load(spec, "", [], "", "")


def _tokenize(cfg: RunConfig, run: StageRun) -> None:
    from .data.stage import read_docs
    from .tokenizer import shards
    from .tokenizer.bpe import Tokenizer
    tok = Tokenizer.load(run.inputs["tokenizer"] / "tokenizer.json")
    with open(run.inputs["data"] / "manifest.json") as f:
        total = json.load(f)["counts"]["docs_total"]
    shards.run(cfg.tokenize, tok, read_docs(run.inputs["data"], prefetch=512),
               _domains(run.inputs["data"]),
               run.out, run.counts, total_docs=total)


def _train(cfg: RunConfig, run: StageRun) -> None:
    from .tokenizer.shards import TokenShards
    from .train.loop import train
    shards = TokenShards(run.inputs["tokenize"], "train")
    vocab = shards.meta["vocab_size"]
    if cfg.model.vocab_size and cfg.model.vocab_size < vocab:
        raise PretrainError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the "
                            f"tokenizer's {vocab}")
    model_cfg = replace(cfg.model, vocab_size=cfg.model.vocab_size or vocab)
    init = None
    if cfg.train.init_from:
        from .train.checkpoint import load_any
        init = load_any(Path(cfg.train.init_from))
        tok = shards.tokenizer()
        if init.cfg.vocab_size < vocab and tok.added:  # extended with domain tokens
            from .tokenizer.extend import resize_embeddings
            try:
                resize_embeddings(init, tok)
            except ValueError as e:
                raise PretrainError(f"train.init_from: cannot grow the checkpoint's vocabulary "
                                    f"to this run's tokenizer: {e}") from None
            log0(f"train: embeddings grown to {vocab} ids (new rows: mean of their pieces)")
        if init.cfg.vocab_size != vocab:
            raise PretrainError(f"train.init_from: the checkpoint has {init.cfg.vocab_size} token "
                                f"ids, the tokenizer of this run {vocab}; continue with the "
                                "checkpoint's tokenizer")
        log0(f"train: continuing from {cfg.train.init_from} ({init.cfg.arch}, "
             f"{init.cfg.num_params() / 1e6:.2f} M params); [model] settings are taken from it")
    ckpt_dir = run.root / "checkpoints" / f"train-{run.key}"
    tb_dir = run.root / "tensorboard" / f"train-{run.key}"
    d = distributed.from_env()
    if run.forced and d.rank == 0:  # --force train means train again from the start
        import shutil
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        shutil.rmtree(tb_dir, ignore_errors=True)
    train(cfg.train, model_cfg, run.inputs["tokenize"], run.out, cfg.seed, run.counts, init,
          ckpt_dir=ckpt_dir, d=d, monitor_dir=tb_dir, run_name=cfg.name)


def load_trained(cfg: RunConfig, train_dir: Path, tokenizer_dir: Path) -> tuple[Any, Any, Any]:
    """(model, tokenizer, device) of a completed train stage, on the configured device."""
    from .tokenizer.bpe import Tokenizer
    from .train import checkpoint
    from .train.loop import resolve_device
    device = resolve_device(cfg.train.device)
    return (checkpoint.load(train_dir, device), Tokenizer.load(tokenizer_dir / "tokenizer.json"),
            device)


def _eval(cfg: RunConfig, run: StageRun) -> None:
    from .eval import loss
    model, tok, device = load_trained(cfg, run.inputs["train"], run.inputs["tokenizer"])
    res: dict[str, Any] = dict(loss.run(model, run.inputs["tokenize"], tok.token_bytes(),
                                        cfg.eval, device))
    if cfg.eval.tasks:
        from .eval import tasks
        res["tasks"] = tasks.run_tasks(model, tok, cfg.eval.tasks, cfg.eval.tasks_dir,
                                       cfg.eval.task_limit, model.cfg.seq_len, device,
                                       cfg.eval.batch_size, cfg.eval.num_fewshot)
        log0("eval: benchmarks (log-likelihood of the choices)\n" + tasks.table(res["tasks"]))
        if cfg.eval.contamination:
            from .data.stage import read_docs
            from .eval import contamination
            funnel = json.loads((run.inputs["data"] / "funnel.json").read_text())
            stats: dict[str, int] = next(
                (r["stats"] for r in funnel if r["step"] == "decontam"), {})
            removed = {k.removeprefix("hits_"): v for k, v in stats.items()}
            res["contamination"] = contamination.report(
                read_docs(run.inputs["data"]), cfg.eval.tasks, cfg.eval.tasks_dir, removed)
            if res["contamination"]:
                log0("eval: contamination of the training data\n"
                     + contamination.table(res["contamination"]))
    if cfg.eval.core:
        from .eval import core
        res["core"] = core.run(model, tok, cfg.eval.tasks_dir, cfg.eval.core_limit,
                               model.cfg.seq_len, device, cfg.eval.batch_size)
        log0("eval: DCLM CORE\n" + core.table(res["core"]))
    if cfg.eval.memorization_docs:
        from .eval import memorization
        res["memorization"] = memorization.probe(
            model, run.inputs["tokenize"], cfg.eval.memorization_docs,
            cfg.eval.memorization_prompt_tokens, cfg.eval.memorization_tokens,
            cfg.eval.batch_size)
        log0(memorization.table(res["memorization"]))
    (run.out / "results.json").write_text(json.dumps(res, indent=2))
    run.counts.update(res)


def _sample(cfg: RunConfig, run: StageRun) -> None:
    from .eval import sample
    model, tok, _ = load_trained(cfg, run.inputs["train"], run.inputs["tokenizer"])
    samples = sample.run(model, tok, cfg.sample)
    (run.out / "samples.json").write_text(json.dumps(samples, indent=2, ensure_ascii=False))
    run.counts["samples"] = samples


BODIES: dict[str, Callable[[RunConfig, StageRun], None]] = {
    "data": _data, "tokenizer": _tokenizer, "tokenize": _tokenize,
    "train": _train, "eval": _eval, "sample": _sample,
}


# ---- orchestration -----------------------------------------------------------------------

def _key(cfg: RunConfig, rd: RunDir, stage: str) -> tuple[str, dict[str, Any]]:
    upstream = {}
    for u in UPSTREAM[stage]:
        m = rd.manifest(u)
        upstream[u] = m["output_fingerprint"] if m else None
    parts = {"config": _config_part(cfg, stage), "upstream": upstream}
    return fingerprint(parts), json.loads(json.dumps(parts, default=jsonable))


def ancestors(stage: str) -> list[str]:
    """Every stage ``stage`` reads from, directly or through others, in pipeline order."""
    found: set[str] = set()
    todo = list(UPSTREAM[stage])
    while todo:
        u = todo.pop()
        if u not in found:
            found.add(u)
            todo += UPSTREAM[u]
    return [s for s in STAGES if s in found]


def _check_current(cfg: RunConfig, rd: RunDir, stage: str) -> None:
    m = rd.manifest(stage)
    if m is None:
        raise PretrainError(f"stage {stage!r} has not completed in {rd.root}; run "
                            f"`pretrain {stage}` or `pretrain run` first")
    if m["key"] != _key(cfg, rd, stage)[0]:
        raise PretrainError(f"stage {stage!r} in {rd.root} is out of date with this config; "
                            f"run `pretrain {stage}` or `pretrain run` first")


def run_stages(cfg: RunConfig, stages: tuple[str, ...] | list[str], force: set[str],
               require_current_upstream: bool = False) -> RunDir:
    """Run ``stages`` in order, skipping completed ones; ``force`` reruns a stage and all after.

    With ``require_current_upstream`` (single-stage commands), every stage the first one
    reads from, transitively, must have completed with the current config.
    """
    d = distributed.from_env()
    if d.enabled:
        return _run_train_distributed(cfg, stages, force, d)
    stray = sorted(force - {"all", *stages})
    if stray:
        raise PretrainError(f"--force {stray[0]} has no effect here: it reruns a stage this "
                            f"command does not run (try `pretrain {stray[0]} --force {stray[0]}` "
                            f"or `pretrain run --force {stray[0]}`)")
    rd = RunDir(cfg.run_dir)
    with rd.lock():
        rd.sweep_tmp()
        if require_current_upstream:
            for u in ancestors(stages[0]):
                _check_current(cfg, rd, u)
        rd.write_config(to_toml(cfg))
        forcing = False
        for stage in stages:
            forcing = forcing or stage in force or "all" in force
            for u in UPSTREAM[stage]:
                if rd.manifest(u) is None:
                    _check_current(cfg, rd, u)  # raises: names the missing stage
            key, parts = _key(cfg, rd, stage)
            m = rd.manifest(stage)
            if m is not None and m["key"] == key and not forcing:
                log0(f"[{stage}] up to date (completed {m['finished_at'][:19]}, "
                     f"{m['wall_s']:.1f}s); skipped. --force {stage} reruns it")
                continue
            why = "forced" if forcing else ("config or inputs changed" if m else "not run yet")
            log0(f"[{stage}] running ({why})")
            inputs = {u: rd.stage_dir(u) for u in UPSTREAM[stage]}
            manifest = rd.execute(stage, key, parts, inputs,
                                  lambda run, s=stage: BODIES[s](cfg, run), forced=forcing)
            log0(f"[{stage}] done in {manifest['wall_s']:.1f}s")
    return rd


def _run_train_distributed(cfg: RunConfig, stages: tuple[str, ...] | list[str], force: set[str],
                           d: distributed.Dist) -> RunDir:
    """``torchrun ... -m pretrain train``: rank 0 keeps the run directory (lock, checks,
    manifest, publish) and tells the others whether to train; they train with it, writing
    their (identical) outputs nowhere."""
    import tempfile
    if tuple(stages) != ("train",):
        raise PretrainError("under torchrun only `pretrain train` runs; run the stages before it "
                            "in one process first (`pretrain tokenize`)")
    rd = RunDir(cfg.run_dir)
    forced = "train" in force or "all" in force
    if d.rank != 0:
        told: dict[str, Any] = distributed.broadcast(None, d)
        if told["error"]:
            raise PretrainError(told["error"])
        if not told["skip"]:
            with tempfile.TemporaryDirectory() as tmp:
                run = StageRun(name="train", out=Path(tmp), key=told["key"], root=rd.root,
                               forced=forced, inputs={u: rd.stage_dir(u) for u in UPSTREAM["train"]})
                BODIES["train"](cfg, run)
        return rd
    with rd.lock():
        decision: dict[str, Any] = {"error": None, "skip": False, "key": ""}
        try:
            rd.sweep_tmp()
            for u in ancestors("train"):
                _check_current(cfg, rd, u)
            rd.write_config(to_toml(cfg))
            key, parts = _key(cfg, rd, "train")
            m = rd.manifest("train")
            decision.update(key=key, skip=m is not None and m["key"] == key and not forced)
        except PretrainError as e:
            decision["error"] = str(e)
        distributed.broadcast(decision, d)
        if decision["error"]:
            raise PretrainError(decision["error"])
        if decision["skip"]:
            log0("[train] up to date; skipped. --force train reruns it")
            return rd
        log0(f"[train] running on {d.world} processes")
        inputs = {u: rd.stage_dir(u) for u in UPSTREAM["train"]}
        manifest = rd.execute("train", key, parts, inputs, lambda run: BODIES["train"](cfg, run),
                              forced=forced)
        log0(f"[train] done in {manifest['wall_s']:.1f}s")
    return rd
