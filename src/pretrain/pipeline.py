"""Running stages: keys, skips, reruns and the run directory, once for one process and for
every process under torchrun.

A stage's key hashes (a) the config sections it is given, (b) the output fingerprints of
the stages it reads and (c) what its registry record says it depends on outside the run
directory (``stages.py``). ``pretrain run`` walks the stages in order and skips each one
whose completed manifest has the same key; ``--force STAGE`` reruns it and every stage
after it. Single-stage commands do the same for their stage, and refuse to run on an
upstream stage that is missing or out of date with the config.

Under torchrun, rank 0 holds the run directory (lock, checks, config, manifest, publish)
and tells the other ranks what it decided; they run the same stage bodies with it (the
collectives need every rank), writing their outputs nowhere. Only stages whose record
says ``torchrun`` may run that way.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from . import distributed, stages
from .config import Preempted, PretrainError, fingerprint, jsonable, said_once, to_toml
from .eval import files as eval_files
from .eval import tasks as eval_tasks
from .log import log0
from .run_config import RunConfig
from .rundir import (
    MANIFEST,
    RunDir,
    StageRun,
    changed_outputs,
    load_manifest,
    other_train_checkpoints,
    remove_work,
    train_checkpoints,
    verify_files,
)
from .train.config import check_layout

T = TypeVar("T")


def _key(cfg: RunConfig, rd: RunDir, stage: stages.Stage) -> tuple[str, dict[str, Any]]:
    upstream = {}
    for u in stage.reads:
        m = rd.manifest(u)
        upstream[u] = m["output_fingerprint"] if m else None
    parts = {"config": stage.key_config(cfg), "upstream": upstream}
    return fingerprint(parts), json.loads(json.dumps(parts, default=jsonable))


def stage_key(cfg: RunConfig, name: str) -> str:
    """The key stage ``name`` of ``cfg`` would complete under now: its config and the
    outputs of the stages it reads."""
    return _key(cfg, RunDir(cfg.run_dir), stages.get(name))[0]


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between a stage's recorded key parts and
    today's (``config.data.decontam...``, ``upstream.tokenize``): a list differs whole."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in sorted(set(old) | set(new), key=str)
                for k in changed_keys(old.get(key), new.get(key),
                                      f"{prefix}.{key}" if prefix else str(key))]
    return [] if old == new else [prefix]


SHARED = ".torchrun-shared"   # rank 0 writes a token there: every rank must read it back


def _what_changed(m: dict[str, Any], parts: dict[str, Any]) -> str:
    """What of the config (its dotted keys) or of the stages read changed since ``m`` was
    written, for a message ("" when the recorded parts say nothing: an older manifest)."""
    if not isinstance(m.get("inputs"), dict):
        return ""
    said = []
    for k in changed_keys(m["inputs"], parts):
        head, _, rest = k.partition(".")
        said.append(f"the {rest} stage's output" if head == "upstream" and rest
                    else "a file it reads (a source, task file or checkpoint edited since)"
                    if head == "config" and rest.split(".")[0] == "external"
                    else rest if head == "config" and rest else "")
    said = list(dict.fromkeys(x for x in said if x))
    if not said:
        return ""
    return ": " + ", ".join(said[:3]) + (f" and {len(said) - 3} more" if len(said) > 3 else "")


def _check_current(cfg: RunConfig, rd: RunDir, name: str, args: str) -> None:
    m = rd.manifest(name)
    changed = changed_outputs(rd.stage_dir(name))
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        raise PretrainError(
            f"stage {name!r} in {rd.root} completed, but its output "
            f"{rd.stage_dir(name) / changed[0]}{more} is missing or not the size it wrote "
            f"(damaged); run `pretrain {name}{args}` or `pretrain run{args}` to make it again")
    if m is None:
        damaged = load_manifest(rd.stage_dir(name))[1]
        why = f" (its manifest is damaged: {damaged})" if damaged else ""
        raise PretrainError(f"stage {name!r} has not completed in {rd.root}{why}; run "
                            f"`pretrain {name}{args}` or `pretrain run{args}` first")
    key, parts = _key(cfg, rd, stages.get(name))
    if m["key"] != key:
        what = _what_changed(m, parts) or (" or the files it reads (a task file, a "
                                           "source edited since)")
        raise PretrainError(f"stage {name!r} in {rd.root} is out of date with this config"
                            f"{what}; run `pretrain {name}{args}` or `pretrain run{args}` "
                            "first")


def _agreed(d: distributed.Dist, decide: Callable[[], T]) -> T:
    """``decide()`` on rank 0, its result (or its error) on every rank."""
    if not d.enabled:
        return decide()
    box: dict[str, Any] = {"error": None, "value": None}
    failed: Exception | None = None
    if d.rank == 0:
        try:
            box["value"] = decide()
        except PretrainError as e:
            box["error"] = str(e)
        except Exception as e:  # a full disk, a file for a folder, a bug: rank 0 raises it
            failed = e          # as it is, and the others stop (they would wait for ever)
            box["error"] = f"{type(e).__name__}: {e}"
    box = distributed.broadcast(box, d)
    if failed is not None:
        raise failed
    if box["error"] is not None:
        raise said_once(PretrainError(box["error"]))
    return box["value"]  # type: ignore[no-any-return]


def _alike(d: distributed.Dist, check: Callable[[], None]) -> None:
    """``check()``, which every process makes alike (from the config and the number of
    processes): its error is printed by rank 0 only."""
    try:
        check()
    except PretrainError as e:
        raise said_once(e) from None


def run_stages(cfg: RunConfig, names: Sequence[str], force: set[str],
               require_current_upstream: bool = False, args: str = "",
               has_force: bool = True) -> RunDir:
    """Run the stages ``names`` in order, skipping completed ones; ``force`` reruns a stage
    and all after it. With ``require_current_upstream`` (single-stage commands), every
    stage the first one reads from, transitively, must have completed with this config.
    ``args``: the user's config options as typed (`` -c X --k=v``), repeated in the hints
    of the commands to run first. ``has_force``: whether the command takes ``--force``
    (a sweep does not: a skipped stage says which folder to delete instead)."""
    todo = [stages.get(n) for n in names]
    d = distributed.from_env()
    rd = RunDir(cfg.run_dir)

    def layout() -> None:   # alike on every rank too
        degrees = cfg.train.parallel.degrees(d.world)
        if not cfg.train.init_from:   # else the checkpoint's model: checked once read
            check_layout(cfg.model, cfg.train, degrees)

    def checks() -> None:   # from the config and the process count only: alike on every rank
        stages.check_force(force, names)
        refused = [s.name for s in todo if d.enabled and not s.torchrun]
        if refused:
            allowed = " or ".join(f"`pretrain {s.name}`" for s in stages.STAGES if s.torchrun)
            raise PretrainError(f"under torchrun only {allowed} runs; run "
                                f"{', '.join(refused)} in one process")
        # a layout the processes cannot make fails now, not after data; but a train stage
        # that completed (under torchrun, tp = 2) may be up to date, the layout not being in
        # its key, and `pretrain run` in one process then goes on to eval and sample: its
        # layout is checked where it is to train (below)
        if "train" in names and rd.manifest("train") is None:
            layout()
        for i, stage in enumerate(todo):   # a device without fp8: said before the data
            forced = "all" in force or any(s.name in force for s in todo[:i + 1])
            m = rd.manifest(stage.name)
            if stage.preflight and (forced or m is None or rd.forced_attempt(stage.name)
                                    or stage.config_changed(cfg, (m.get("inputs") or {})
                                                            .get("config"))):
                stage.check_here(cfg)

    def init_here() -> None:
        """The init_from checkpoint, by each rank that lacks it: on a machine of its own,
        where the others have it, a check said by rank 0 was said by none."""
        if missing := cfg.train.unavailable():
            raise PretrainError(missing + (f" on this machine (rank {d.rank})"
                                           if d.enabled else ""))
        init = os.path.realpath(cfg.train.init_from) if cfg.train.init_from else ""
        run, train = os.path.realpath(rd.root), os.path.realpath(rd.root / "train")
        if init and (init in (run, train) or init.startswith(train + os.sep)):
            # its weights are what this train stage writes: each rerun trained again from
            # the last one's result, and the stage was never up to date (a checkpoint
            # folder of the run stays: the new train stage writes under another key)
            raise said_once(PretrainError(   # the config's and the run's paths: alike
                f"train.init_from: {cfg.train.init_from} is this run's own model "
                f"({rd.root / 'train'}), which its train stage replaces; continue into a run "
                "of another name, or from a checkpoint folder of this run, or copy the "
                "weights out"))

    _alike(d, checks)
    if "train" in names and rd.manifest("train") is None:   # not after the data stages
        init_here()
    # a bad record in a task file of one's own: said first (not after training, nor after
    # `pretrain eval`'s "data is out of date", nor by no one where `pretrain data` reads it
    # for decontamination)
    decontam = cfg.data.decontam
    if "eval" in names or ("data" in names and decontam.enabled and decontam.from_eval):
        eval_tasks.check_own_files(cfg.eval)
    with _process_group(cfg, d):
        with ExitStack() as held:
            def open_run() -> None:  # rank 0: the run directory is ours until we finish
                held.enter_context(rd.lock())
                rd.sweep_tmp()
                if require_current_upstream:
                    for u in stages.ancestors(todo[0].name):
                        _check_current(cfg, rd, u, args)
                rd.write_config(to_toml(cfg))

            def mark_asked(later: list[stages.Stage]) -> None:
                # every stage this command forces is marked until it completes, from when
                # the first of them runs (not for a command refused before): stopped before
                # one (or in it), a plain rerun still runs it (a stage after the one
                # stopped, found up to date, had lost its --force)
                for stage in later:
                    rd.mark_forced(stage.name, _key(cfg, rd, stage)[0], started=False)

            _agreed(d, open_run)
            if d.enabled:
                _same_everywhere(d, cfg, rd)
            forcing = marked = False
            for i, stage in enumerate(todo):
                forcing = forcing or stage.name in force or "all" in force
                plan = _agreed(d, functools.partial(_plan, cfg, rd, stage, forcing, has_force))
                if plan["skip"]:
                    continue
                if stage.name == "train":
                    init_here()
                    _alike(d, layout)
                if forcing and not marked:
                    _agreed(d, functools.partial(mark_asked, todo[i + 1:]))
                    marked = True
                _execute(cfg, rd, stage, plan, d)
    return rd


def _same_everywhere(d: distributed.Dist, cfg: RunConfig, rd: RunDir) -> None:
    """Under torchrun: every process was given the same model, train and seed settings,
    and sees the run directory rank 0 opened (a file rank 0 writes there), said once,
    naming the ranks that differ. A node given another train.lr had trained its replica
    with it, silently; a node with a run directory of its own had kept its shards of
    every checkpoint there, which then read as damaged on rank 0's."""
    settings = json.loads(json.dumps({"model": cfg.model, "train": cfg.train,
                                      "seed": cfg.seed}, default=jsonable))
    settings["train"].pop("init_from", None)   # a path: each machine's own mount, maybe
    token = os.urandom(8).hex()
    if d.rank == 0:
        (rd.root / SHARED).write_text(token, encoding="utf-8")
    token = distributed.broadcast(token, d)
    try:
        seen = (rd.root / SHARED).read_text(encoding="utf-8")
    except OSError:
        seen = ""
    mine = {"settings": settings, "shared": seen == token}
    every = distributed.gather(mine, d)
    apart = [r for r, x in enumerate(every) if not x["shared"]]
    if apart:
        raise said_once(PretrainError(
            f"rank{'s' if len(apart) > 1 else ''} {', '.join(map(str, apart))} of {d.world} "
            f"{'do' if len(apart) > 1 else 'does'} not see the run directory rank 0 opened "
            f"({rd.root}): under torchrun it must "
            "be on a file system every node shares (each rank writes its shards of every "
            "checkpoint there); set runs_dir to such a place on every node"))
    for r, x in enumerate(every):
        if x["settings"] != every[0]["settings"]:
            keys = changed_keys(every[0]["settings"], x["settings"])
            raise said_once(PretrainError(
                f"rank {r} was given other settings than rank 0: {', '.join(keys[:5])}"
                + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
                + "; give every node the same config and options"))


def _plan(cfg: RunConfig, rd: RunDir, stage: stages.Stage, forcing: bool,
          has_force: bool = True) -> dict[str, Any]:
    decontam = cfg.data.decontam
    # said whether the stage runs or not: a missing file is not in the stage's key, so
    # naming a task whose file is missing does not rerun it
    if stage.name == "data" and decontam.enabled and decontam.from_eval \
            and (missing := eval_files.missing_benchmarks(cfg.eval)):
        log0(f"[data] warning: {len(missing)} of eval.tasks' files not found, so not "
             f"decontaminated against: {', '.join(missing[:4])}"
             + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
             + f" (relative paths are read from {Path.cwd()}; set eval.tasks_dir)")
    for u in stage.reads:
        if rd.manifest(u) is None:
            _check_current(cfg, rd, u, "")  # raises: names the missing stage
    key, parts = _key(cfg, rd, stage)
    m = rd.manifest(stage.name)
    pending = None if forcing else rd.forced_attempt(stage.name)
    resumed = pending is not None and pending[0] == key
    if m is not None and m["key"] == key and not forcing and not resumed:
        log0(f"[{stage.name}] up to date (completed {m['finished_at'][:19]}, "
             f"{m['wall_s']:.1f}s); skipped. "
             + (f"--force {stage.name} reruns it" if has_force
                else f"Delete {rd.stage_dir(stage.name)} to rerun it"))
        if stage.name == "data":   # a killed --force data attempt's work: of no more use
            # (another data config's stays: a rerun of that config resumes from it)
            for folder in remove_work(rd.data_work(key).parent, rd.data_work(key).name):
                log0(f"[data] removed {folder}, the unfinished work of an interrupted attempt")
        if stage.name == "train" and cfg.train.remove_other_checkpoints:
            # what the train stage does when it runs, done though it does not (the flag is
            # not in its key: the hint to set it, followed after a completed run, did nothing)
            for other in other_train_checkpoints(rd.checkpoints(key)):
                shutil.rmtree(other)
                log0(f"[train] removed {other} (train.remove_other_checkpoints)")
        return {"skip": True}
    _check_inputs(rd, stage)
    ran = (rd.stage_dir(stage.name) / MANIFEST).is_file()   # but its outputs are damaged
    started = resumed and pending is not None and pending[1]
    if started and stage.name == "train" and not train_checkpoints(
            rd.checkpoints(key)):
        started = False   # stopped before its first checkpoint: started over, as forced (an
        #                   earlier config's checkpoint is no place to continue it from)
    why = "forced" if forcing else (
        f"resuming the --force {stage.name} that was stopped" if started else
        f"--force {stage.name}, pending from a command that stopped" if resumed else
        f"config or inputs changed{_what_changed(m, parts)}" if m else
                                    "an output is missing or changed size" if ran
                                    else _unfinished(cfg, rd, stage.name, key))
    return {"skip": False, "key": key, "parts": parts, "why": why,
            "forced": forcing or (resumed and not started)}


def _unfinished(cfg: RunConfig, rd: RunDir, name: str, key: str) -> str:
    """Why a stage without a manifest runs: never run, or (train) an earlier attempt of
    this key left checkpoints, which it resumes from."""
    if name == "train" and cfg.train.resume and train_checkpoints(
            rd.checkpoints(key)):
        return "not complete: an earlier attempt's checkpoints are there to resume from"
    return "not run yet"


def _check_inputs(rd: RunDir, stage: stages.Stage) -> None:
    """Re-hash the outputs of the stages ``stage`` reads against their manifests before it
    runs: a file changed in place (same size: a flipped byte, an edit) would otherwise go
    into it unnoticed (a changed size or a missing file makes the stage incomplete)."""
    started = time.perf_counter()
    recorded = {u: m["outputs"] for u in stage.reads if (m := rd.manifest(u)) is not None}
    found = {u: verify_files(rd.stage_dir(u), outputs) for u, outputs in recorded.items()}
    took = time.perf_counter() - started
    if took > 5:   # ~1 GB/s: worth saying for a large corpus
        nbytes = sum(f["bytes"] for outputs in recorded.values() for f in outputs.values())
        log0(f"[{stage.name}] re-hashed its inputs ({nbytes / 1e9:.1f} GB) in {took:.0f}s")
    problems = [line for lines in found.values() for line in lines]
    if problems:
        # the earliest stage that wrote one: --force reruns it and every stage after it
        owner = next(u for u, lines in found.items() if lines)
        raise PretrainError(
            f"[{stage.name}] its inputs changed after they were written: "
            + "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3
                                         else "")
            + f". Rerun the stage that wrote them (`pretrain run --force {owner}`) or restore "
            "them")


def _execute(cfg: RunConfig, rd: RunDir, stage: stages.Stage, plan: dict[str, Any],
             d: distributed.Dist) -> None:
    inputs = {u: rd.stage_dir(u) for u in stage.reads}
    if d.rank != 0:  # the same body, for its collectives; the output is rank 0's
        with tempfile.TemporaryDirectory() as tmp:
            stage.run(cfg, StageRun(name=stage.name, out=Path(tmp), inputs=inputs,
                                    key=plan["key"], key_parts=plan["parts"], root=rd.root,
                                    forced=plan["forced"]))
        return
    on = f" on {d.world} processes" if d.enabled else ""
    log0(f"[{stage.name}] running{on} ({plan['why']})")
    manifest = rd.execute(stage.name, plan["key"], plan["parts"], inputs,
                          lambda run: stage.run(cfg, run), forced=plan["forced"])
    log0(f"[{stage.name}] done in {manifest['wall_s']:.1f}s")


@contextmanager
def _process_group(cfg: RunConfig, d: distributed.Dist) -> Iterator[None]:
    """The process group torchrun set up, joined for the stages and left after them
    (nothing for one process)."""
    if not d.enabled:
        yield
        return
    distributed.init(distributed.resolve_device(cfg.device).type)
    try:
        yield
    except Preempted:
        # every rank stops at the same step; none exits (and has torchrun stop the others,
        # mid-cleanup) before all have closed their files
        distributed.barrier(d)
        raise
    finally:
        distributed.shutdown()
