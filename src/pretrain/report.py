"""The run report: ``runs/<name>/report.md``, one page from what the stages wrote.

Sections: the stages (status, wall time, commit), the data funnel, the tokenizer's
compression, training (counts, stability events, the loss curve), the plan (size, FLOPs
used, MFU, where the run sits against the compute-optimal frontier, the sweep's law and
plots when the run has one), evaluation (held-out
loss and bits per byte per domain, benchmarks, CORE, contamination, memorization, the
configured gates and whether they pass) and the samples. Every number is read from the
stage outputs; the tables are the ones the stages print. The loss plot
(``report/loss.png``) needs matplotlib (the ``[report]`` extra); without it the report says
so and keeps the rest. ``pretrain report RUN`` rebuilds it; ``pretrain run`` writes it at
the end. A stage that has not run is reported as such, not guessed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

from . import stages
from .config import ConfigError, PretrainError, build, jsonable
from .data.audit import FAILED
from .data.funnel import format_funnel
from .eval import baselines, contamination, core, memorization, tasks
from .eval.gates import check, load_results
from .log import log0
from .model.config import ModelConfig
from .plan.laws import read_fit
from .plan.report import duration, frontier, size
from .run_config import RunConfig, load_config
from .rundir import (
    FORCED,
    RunDir,
    changed_upstream,
    drop,
    load_manifest,
    read_manifest,
    sound_manifest,
    upstream,
    write_failure,
)
from .tokenizer.report import table as tokenizer_table
from .train import state
from .train.config import TrainConfig


def _json(path: Path) -> Any:
    """The file's JSON; None when it is missing or unreadable (a stage folder damaged by
    hand: `pretrain verify` names it; the report shows what it can)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _missing(root: Path, stage: str, name: str) -> str:
    """What a section says without its file: not run; that the file is damaged or gone,
    where the stage's manifest records it; else that the stage wrote none (a setting
    turned it off: ``tokenizer.report_chars = 0``)."""
    m = sound_manifest(root / stage)
    if m is None:
        return "Not run.\n"
    if name not in (m.get("outputs") or {}):
        return f"The stage wrote no `{name}` (its config turned it off).\n"
    return (f"Damaged: `{stage}/{name}` is missing or cannot be read (`pretrain verify RUN` "
            f"names what changed; `--force {stage}` makes it again).\n")


def _jsonl(path: Path, needs: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The file's records; a damaged line (a crash mid-write, an edit by hand, a record
    without one of the keys ``needs``) is skipped, counted and logged with its number."""
    if not path.is_file():
        return []
    out, bad = [], []
    with path.open(errors="replace", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                rec = json.loads(line) if line.strip() else None
            except ValueError:
                rec = None
                bad.append(i)
            if isinstance(rec, dict) and all(k in rec for k in needs):
                out.append(rec)
            elif rec is not None:
                bad.append(i)
    if bad:
        log0(f"report: {path}: {len(bad)} damaged line(s) skipped (line "
             f"{', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''})")
    return out


def _block(text: str) -> str:
    """``text`` in a code fence longer than any run of backticks in it (a sample with ```
    closed a plain fence and the rest became markdown)."""
    fence = "`" * max(3, 1 + max((len(r) for r in re.findall("`+", text)), default=0))
    return f"{fence}\n{text}\n{fence}\n"


def _stale(root: Path) -> dict[str, list[str]]:
    """Completed stages whose inputs were rewritten since they ran (a stage before them
    rerun on its own), each with the stages that changed: their outputs describe an older
    model or data, and the report says so where it shows them. Transitive: a stage that
    read an out-of-date stage's outputs is out of date for the same reasons (the model
    trained on tokens of the earlier data)."""
    out: dict[str, list[str]] = {}
    for s in stages.names():   # in pipeline order: upstream stages first
        m = sound_manifest(root / s)
        changed = changed_upstream(m, lambda u: sound_manifest(root / u))
        changed += [c for u in upstream(m) if u in out for c in out[u]]
        if changed:
            out[s] = list(dict.fromkeys(changed))
    return out


def _stale_note(old: dict[str, list[str]], stage: str) -> str:
    changed = old.get(stage)
    return (f"**Out of date:** {', '.join(changed)} changed after this stage ran; these "
            f"results are of the earlier {', '.join(changed)} (`pretrain run` reruns it).\n\n"
            if changed else "")


def _stages(root: Path, old: dict[str, list[str]]) -> str:
    lines = ["| stage | status | wall | finished | commit |", "|---|---|---|---|---|"]
    for s in stages.names():
        m, damaged = load_manifest(root / s)
        if damaged:
            lines.append(f"| {s} | damaged: {damaged} (`pretrain run` makes it again) | | | |")
            continue
        if m is None:
            why = _unfinished(root) if s == "train" else (
                f"failed (its audit trail in {FAILED}/: `pretrain data inspect RUN`)"
                if s == "data" and (root / FAILED).is_dir() else "not run")
            lines.append(f"| {s} | {why} | | | |")
            continue
        status = m.get("status", "?")
        if status == "complete" and read_manifest(root / s) is None:   # as the pipeline reads it
            status = "damaged: an output file is missing or changed (`pretrain verify RUN`)"
        status += f", out of date ({', '.join(old[s])} changed since)" if s in old else ""
        if RunDir(root).forced_attempt(s):   # a --force of it stopped: the next run redoes it
            status += f", a --force rerun pending (`pretrain run` does it; {FORCED}{s} marks it)"
        lines.append(f"| {s} | {status} | {m.get('wall_s', 0):.1f} s | "
                     f"{m.get('finished_at', '')} | {str(m.get('git_commit') or '')[:10]} |")
    return "\n".join(lines) + "\n"


def _unfinished(root: Path) -> str:
    """A train stage without a manifest: not run, or stopped with checkpoints kept (a rerun
    of the same config resumes from the latest)."""
    folder = _last_training(root)
    latest = _latest_checkpoint(folder) if folder else None
    stop = _stopped(folder, latest) if folder else None
    if stop:   # a divergence or a streak of bad steps it could not roll back from
        kept = f"checkpoints up to step {latest:,}" if latest is not None else "no checkpoint"
        return f"stopped at step {stop['step']:,}: {stop['reason']} ({kept}; see Training)"
    if latest is not None:
        return f"not complete (checkpoints up to step {latest:,}; a rerun resumes)"
    ran = folder is not None and any((folder / f).is_file() for f in ("log.jsonl",
                                                                      "events.jsonl"))
    return "not complete (no checkpoint: a rerun starts over)" if ran else "not run"


def _stopped(folder: Path, latest: int | None) -> dict[str, Any] | None:
    """The stability event that stopped the run training in ``folder``, if one did (and
    no later attempt got past it, to checkpoint ``latest``: a rerun killed further on
    leaves the old events)."""
    events = _jsonl(folder / "events.jsonl", ("step", "reason", "action"))
    if not events or events[-1]["action"] != "stopped":
        return None
    return events[-1] if latest is None or latest < events[-1]["step"] else None


def _last_training(root: Path) -> Path | None:
    """The checkpoint folder (one train config's) written to last: its checkpoints and
    logs are the stopped run's, not those of another config kept beside them."""
    folders = [f for f in root.glob("checkpoints/*") if f.is_dir()]
    return max(folders, key=lambda f: max((q.stat().st_mtime for q in f.iterdir()),
                                          default=f.stat().st_mtime), default=None)


def _latest_checkpoint(folder: Path) -> int | None:
    return max((state.step_of(c) for c in state.complete(folder)), default=None)


def _initial_eval(folder: Path) -> dict[str, Any]:
    """Step 0's evaluation (``val_loss``, and each domain's) as the latest checkpoint in
    ``folder`` keeps it; {} where none does (one written before it was kept)."""
    latest = max(state.complete(folder), key=state.step_of, default=None)
    saved = _json(latest / state.STATE) if latest else None
    first = saved.get("val_initial") if isinstance(saved, dict) else None
    return first if isinstance(first, dict) and isinstance(first.get("val_loss"), float) else {}


def _data(root: Path, old: dict[str, list[str]]) -> str:
    folder, failed = "data", ""
    funnel = _json(root / folder / "funnel.json")
    if not funnel and (root / FAILED).is_dir():
        folder = FAILED
        funnel = _json(root / folder / "funnel.json")
        failed = ("**The data stage failed** (it kept no documents, or too few): its funnel, "
                  "from `data-failed/`.\n\n")
    if not funnel:
        return _missing(root, "data", "funnel.json")
    first, last = funnel[0], funnel[-1]
    return failed + (f"{first['docs_in']:,} documents read, {last['docs_out']:,} kept "
            f"({last['docs_out'] / max(first['docs_in'], 1):.1%}); every drop with its reason "
            f"is in `{folder}/dropped.jsonl` (`pretrain data inspect RUN`).\n\n"
            + _block(format_funnel(funnel)) + _licenses(root, old))


def _licenses(root: Path, old: dict[str, list[str]]) -> str:
    """Sources with their licence fields, and training tokens per licence."""
    counts = (sound_manifest(root / "data") or {}).get("counts", {})
    sources = counts.get("sources")
    if sources is None:
        return ""
    lines = ["\n| source | license | terms | source URL | notes |", "|---|---|---|---|---|"]
    for label, g in sources.items():
        lines.append(f"| {label} | {g.get('license') or '**none**'} | {g.get('terms_url', '')} "
                     f"| {g.get('source_url', '')} | {g.get('notes', '')} |")
    meta = _json(root / "tokenize" / "meta.json")
    per = (meta or {}).get("splits", {}).get("train", {}).get("tokens_per_license")
    if per:
        total = max(1, sum(per.values()))
        lines += ["", _stale_note(old, "tokenize").rstrip("\n"),
                  "| license | train tokens | share |", "|---|---|---|"]
        lines += [f"| {lic or '**none**'} | {n:,} | {n / total:.1%} |"
                  for lic, n in sorted(per.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines) + "\n"


def _tokenizer(root: Path) -> str:
    rep = _json(root / "tokenizer" / "report.json")
    return _block(tokenizer_table(rep)) if rep else _missing(root, "tokenizer", "report.json")


def _plot(log: list[dict[str, Any]], out: Path) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return "(no loss plot: matplotlib is not installed; `pip install pretrain[report]`)\n"
    fig, ax = plt.subplots(figsize=(7, 4))
    def num(x: Any) -> bool:   # an edited record may hold anything under a known key
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    def per_domain(r: dict[str, Any]) -> dict[str, float]:
        v = r.get("val")
        return {d: x["loss"] for d, x in v.items() if isinstance(x, dict) and num(x.get("loss"))
                } if isinstance(v, dict) else {}

    log = [r for r in log if num(r.get("step"))]
    train = [r for r in log if num(r.get("loss"))]   # a record may hold only an evaluation
    # a marker where a series may have one point (a run of one step, one evaluation at its
    # end): a line of one point is not drawn
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1,
            marker="o" if len(train) == 1 else None, ms=3)
    val = [r for r in log if num(r.get("val_loss"))]
    ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val loss")
    by_domain = [(r["step"], per_domain(r)) for r in val]
    for d in sorted({d for _, losses in by_domain for d in losses}):
        pts = [(step, losses[d]) for step, losses in by_domain if d in losses]
        ax.plot(*zip(*pts, strict=True), "o--", lw=1, ms=3, label=f"val loss, {d}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # steps: no 0.2, 0.4 on a short run
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")   # as report.md: never half a picture
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(tmp, dpi=100, format="png")
        tmp.replace(out)
    except OSError as e:   # the plot is optional: the report is written without it
        drop(tmp)
        return f"(no loss plot: {write_failure(out, e)})\n"
    finally:
        plt.close(fig)
    return f"![loss]({out.parent.name}/{out.name})\n"


NOT_RUN = "Not run.\n"


def _num(v: Any, fmt: str) -> str:
    return "n/a" if v is None else fmt.format(v)


def _as_trained(root: Path, cfg: RunConfig) -> tuple[RunConfig, list[str]]:
    """``cfg`` with the model, train and seed settings the train stage's manifest recorded
    (and the tokenizer's vocabulary its manifest recorded): ``config.toml`` is rewritten by
    every command, also one that reran nothing. And the keys where the two differ."""
    recorded = ((sound_manifest(root / "train") or {}).get("inputs") or {}) \
        .get("config") or {}
    now = json.loads(json.dumps(stages.get("train").key_config(cfg), default=jsonable))
    changed = [f"{section}.{k}" for section in ("model", "train")
               for k, v in (recorded.get(section) or {}).items() if now[section].get(k) != v]
    changed += ["seed"] if recorded.get("seed", now["seed"]) != now["seed"] else []
    try:
        if "model" in recorded:
            cfg = dataclasses.replace(cfg, model=build(ModelConfig, recorded["model"], "model"))
        if "train" in recorded:
            cfg = dataclasses.replace(cfg, train=build(
                TrainConfig, {**dataclasses.asdict(cfg.train), **recorded["train"]}, "train"))
        if "seed" in recorded:
            cfg = dataclasses.replace(cfg, seed=recorded["seed"])
        tok = ((sound_manifest(root / "tokenizer") or {}).get("inputs") or {}) \
            .get("config", {}).get("tokenizer", {})
        if "vocab_size" in tok:
            cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(
                cfg.tokenizer, vocab_size=tok["vocab_size"]))
        # the model's own: the tokenizer's vocabulary, and under train.init_from the whole
        # model of the checkpoint it started from (the config's model settings not used)
        trained = _json(root / "train" / "model_config.json")
        if isinstance(trained, dict):
            try:
                cfg = dataclasses.replace(cfg, model=build(ModelConfig, trained, "model"))
            except ConfigError:   # written by another version: its vocabulary at least
                if isinstance(trained.get("vocab_size"), int):
                    cfg = dataclasses.replace(cfg, model=dataclasses.replace(
                        cfg.model, vocab_size=trained["vocab_size"]))
    except (ConfigError, TypeError):   # recorded by another version: config.toml's values
        return cfg, []
    return cfg, changed


def _hyperparameters(cfg: RunConfig | None, changed: list[str], ran: str | None = None) -> str:
    """The settings that shape the model and its optimisation, as the run trained with them
    (``_as_trained``); ``ran``: the precision it ran in (the manifest's), where the config
    says "auto"."""
    if cfg is None:
        return ""
    m, t = cfg.model, cfg.train
    heads = f"{m.n_heads}" + (f" (kv {m.n_kv_heads})" if m.arch == "llama"
                               and m.n_kv_heads != m.n_heads else "")
    sched = f"{t.schedule}, warmup {t.warmup_steps}, min lr x{t.min_lr_ratio:g}" + (
        f", decay {t.decay_frac:.0%}" if t.schedule == "wsd" else "")
    budget = f"{t.steps:,} steps" + (f" or {t.time_budget_s:g} s" if t.time_budget_s else "")
    rows = [("model", f"{m.arch}, d_model {m.d_model}, {m.n_layers} layers, {heads} heads"),
            ("context, vocabulary", f"{m.seq_len}, {m.vocab_size or cfg.tokenizer.vocab_size:,}"),
            ("batch", f"{t.batch_size} x {t.grad_accum} accumulation x {m.seq_len} tokens"),
            ("optimizer", f"{t.optimizer}, lr {t.lr:g}, betas ({t.beta1:g}, {t.beta2:g}), "
                          f"weight decay {t.weight_decay:g}, clip {t.grad_clip:g}"),
            ("schedule", sched), ("length", budget),
            ("precision, compile", (f"{ran} ({t.precision})" if ran and ran != t.precision
                                    else t.precision) + f", {'on' if t.compile else 'off'}"),
            ("seed", f"{cfg.seed}")]
    if t.init_from:   # continued pretraining: not from scratch, and the model is the source's
        rows.insert(0, ("started from", f"`{t.init_from}` (train.init_from: its weights and "
                                        "model settings)"))
    note = (f"\n`config.toml` now differs from what the model was trained with in "
            f"{', '.join(f'`{k}`' for k in changed)} (a later command rewrote it; no train stage "
            "has completed with it since): the table shows what it was trained with.\n"
            if changed else "")
    return ("Hyperparameters (as trained, from the train stage's manifest):\n\n| | |\n"
            "|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows) + note
            + "\nResults:\n\n")


def _train(root: Path) -> str:
    m = sound_manifest(root / "train")
    if m is None:   # a stopped or failed run leaves its logs with its checkpoints
        folder = _last_training(root)
        log = _jsonl(folder / "log.jsonl", ("step",)) if folder else []
        # a run stopped before its first log record still has its events
        if not folder or not (log or (folder / "events.jsonl").is_file()):
            return NOT_RUN
        latest = _latest_checkpoint(folder)
        stop = _stopped(folder, latest)
        kept = f"checkpoints up to step {latest:,}" + ("" if stop else ": a rerun resumes") \
            if latest is not None else "no checkpoint" + ("" if stop else ": a rerun starts over")
        logged = f"logged up to step {log[-1]['step']:,}" if log else "nothing logged"
        head = (f"**Stopped** at step {stop['step']:,} ({stop['reason']}): {logged}"
                if stop else f"**Not complete**: {logged}")
        first = _initial_eval(folder)   # step 0's evaluation, kept with the checkpoints
        if log and first:
            log = [{"step": 0, **first}, *log]
        return (f"{head} ({kept}); its logs, from `{folder.relative_to(root)}/`:\n\n"
                + _train_logs(folder, log, root))
    c = m.get("counts") or {}
    rows = [("parameters", f"{c.get('params', 0):,}"),
            ("steps", f"{c['steps']:,}" if isinstance(c.get("steps"), int) else c.get("steps")),
            ("tokens seen", f"{c.get('tokens_seen', 0):,}"),
            ("val loss, start -> end", f"{c.get('val_loss_initial')} -> {c.get('val_loss_final')}"),
            ("val bits per byte, end", c.get("val_bpb_final")),
            ("train loss, end", c.get("train_loss_final")),
            ("tokens/s", _num(c.get("tok_per_s"), "{:,.0f}")),
            ("MFU, over the timed steps / median of the log records",
             f"{_num(c.get('mfu'), '{:.1%}')} / {_num(c.get('mfu_median'), '{:.1%}')}"),
            ("MFU's peak", _num(c.get("peak_gflops"), "{:,.1f} GFLOP/s")
             + (f" ({c['peak_source']})" if c.get("peak_gflops") and c.get("peak_source") else "")
             # on a GPU the matmul measured beside the table's peak is a bf16 one
             + (f"; {'bf16' if str(c.get('device', '')).startswith('cuda') else c.get('precision', '')}"
                f" matmul measured at {c['matmul_gflops']:,.1f} GFLOP/s"
                if isinstance(c.get("matmul_gflops"), (int, float))
                and c.get("matmul_gflops") != c.get("peak_gflops") else "")),
            ("passes over each domain", ", ".join(f"{d} {e:.2f}" for d, e in
                                                   c.get("epochs", {}).items()) or None),
            ("skipped steps / rollbacks", f"{c.get('skipped_steps')} / {c.get('rollbacks')}"),
            ("device, processes", f"{c.get('device')}, {c.get('processes')}")]
    out = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    if not (root / "train" / "log.jsonl").is_file():
        out += ["", _missing(root, "train", "log.jsonl").rstrip("\n")]
    log = _jsonl(root / "train" / "log.jsonl")
    if log and c.get("val_loss_initial") is not None:   # step 0's evaluation starts the val curves
        log = [{"step": 0, "val_loss": c["val_loss_initial"], "val": c.get("val_initial")}, *log]
    return "\n".join(out) + "\n\n" + _train_logs(root / "train", log, root)


def _train_logs(folder: Path, log: list[dict[str, Any]], root: Path) -> str:
    """The loss plot of ``log``, and the stability events and last probe generations of
    ``folder`` (a completed train stage's, or a stopped run's checkpoint folder)."""
    text = _plot(log, root / "report" / "loss.png") if log else ""
    events = _jsonl(folder / "events.jsonl", ("step", "reason", "loss", "action"))
    if events:
        text += "\nStability events:\n\n" + "\n".join(
            f"- step {e['step']}: {e['reason']}, loss "
            f"{'NaN' if e['loss'] is None else format(e['loss'], '.4g')}: {e['action']}"
            for e in events) + "\n"
    gens = _jsonl(folder / "generations.jsonl", ("step", "domain", "prompt", "completion"))
    if gens:
        last = max(g["step"] for g in gens)
        text += (f"\nProbe generations at step {last} (every step's in "
                 f"`{folder.relative_to(root)}/generations.jsonl`):\n\n")
        text += "\n".join(_block(f"[{g['domain']}] {g['prompt']}|{g['completion']}").rstrip()
                          for g in gens if g["step"] == last) + "\n"
    return text


def _eval(root: Path, gates: list[str]) -> str:
    try:
        res = load_results(root / "eval")
    except (OSError, ValueError):   # a damaged file: the report says what it can
        return ("Damaged: `eval/results.json` cannot be read (`pretrain verify RUN`; "
                "`pretrain eval --force eval` rewrites it).\n")
    if res is None:   # a completed stage whose file is gone is not a stage never run
        return _missing(root, "eval", "results.json")
    lines = ["| held-out | loss | perplexity | bits per byte | tokens |", "|---|---|---|---|---|"]
    for d, r in res.items():
        if isinstance(r, dict) and "loss" in r and "ppl" in r:
            lines.append(f"| {d} | {r['loss']:.4f} | {r['ppl']:.2f} | {r.get('bpb', float('nan')):.4f} "
                         f"| {r.get('tokens', 0):,} |")
    text = "\n".join(lines) + "\n" + _unscored(root, res)
    if res.get("baselines"):
        b = res["baselines"]
        text += (f"\nN-gram baselines (counted on {b['train_tokens']:,} training tokens, "
                 "scored on the same held-out tokens):\n\n" + _block(baselines.table(res, b)))
    if res.get("tasks"):
        text += "\nBenchmarks (log-likelihood of the choices):\n\n" + _block(tasks.table(res["tasks"]))
    if res.get("core"):
        text += "\nDCLM CORE:\n\n" + _block(core.table(res["core"]))
    if res.get("contamination"):
        text += "\nContamination of the training data:\n\n" + _block(
            contamination.table(res["contamination"]))
    if res.get("memorization"):
        text += "\n" + _block(memorization.table(res["memorization"]))
    if gates:
        text += "\nGates (`eval.gates`):\n\n"
        for g in gates:
            failed = check([g], res)
            text += f"- {failed[0]}: FAILED\n" if failed else f"- {g}: passed\n"
    return text


def _unscored(root: Path, res: dict[str, Any]) -> str:
    """A line naming the domains trained on that the table leaves out: the tokenize
    stage held out none of their documents, so nothing scores them."""
    meta = _json(root / "tokenize" / "meta.json")
    try:
        trained = meta["splits"]["train"]["tokens_per_domain"]
        held = meta["splits"]["val"]["tokens_per_domain"]
        missing = [d for d, n in trained.items() if n and not held.get(d) and d not in res]
    except (TypeError, KeyError, AttributeError):   # no shards, or written before the counts
        return ""
    return (f"\nNot scored: {', '.join(missing)} (train documents, none held out: a source "
            "with use_for = \"train\" holds none out; give the domain one with \"auto\" or "
            "\"val\", or, if its sources are \"auto\", raise tokenize.min_val_docs).\n"
            ) if missing else ""


def _samples(root: Path) -> str:
    samples = _json(root / "sample" / "samples.json")
    if not samples or not isinstance(samples, list) or not all(   # valid JSON, other shape
            isinstance(s, dict) and isinstance(s.get("prompt"), str)
            and isinstance(s.get("completion"), str) for s in samples):
        return _missing(root, "sample", "samples.json")
    return "\n".join(_block(s["prompt"] + s["completion"]).rstrip() for s in samples) + "\n"


def _plan(root: Path, cfg: RunConfig | None) -> str:
    """Size, compute used, time and MFU, and where the run sits against the compute-optimal
    frontier (with the sweep's fitted law, if fitted for ``cfg``, and plots when the run
    has one)."""
    m = sound_manifest(root / "train")
    model_json = _json(root / "train" / "model_config.json")
    if m is None:
        return "Not run.\n"
    if not isinstance(model_json, dict):
        return _missing(root, "train", "model_config.json")
    try:
        model = build(ModelConfig, model_json)
    except ConfigError as e:   # written by another version (a key this one lacks)
        return f"`train/model_config.json` is not one this version reads ({e}).\n"
    c = m.get("counts") or {}
    tokens = c.get("tokens_seen", 0)
    flops = model.flops_per_token() * tokens
    text = _block(size(model)) + (
        f"\n{tokens:,} tokens, {flops:.3g} FLOPs in {duration(c.get('train_time_s', 0))} of steps "
        f"on {c.get('device')} x {c.get('processes', 1)}"
        + (f" (MFU {c['mfu']:.1%} of {c.get('peak_gflops')} GFLOP/s over the timed steps)"
           if c.get("mfu") else "")
        + ".\n\n")
    fit_path = root / "sweep" / "fit.json"
    fit = None
    if fit_path.is_file():
        raw = _json(fit_path)
        fit, why = read_fit(raw, "sweep/fit.json", source="this run's sweep")
        if fit is not None and cfg is not None and (
                other := stages.fit_mismatch(raw, cfg, "sweep/fit.json")):
            fit, why = None, other
        text += f"(the sweep's law is not used: {why})\n\n" if fit is None else ""
    text += _block(frontier(model, tokens, flops, fit)) if tokens else ""
    for plot in ("isoflop.png", "fit.png"):
        if (root / "sweep" / plot).is_file():
            text += f"\n![{plot}](sweep/{plot})\n"
    return text


def _drop_orphans(root: Path) -> None:
    """Remove the temporary files of reports whose process is gone (killed mid-write):
    each report writes its own, named by its process id, which no later one reuses."""
    for tmp in [*root.glob("report.md.tmp-*"), *(root / "report").glob(".*.tmp-*")]:
        try:
            os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)
        except ValueError:
            continue   # not one of ours
        except ProcessLookupError:
            drop(tmp)
        except OSError:
            pass   # alive, another user's


def write_report(root: Path) -> Path:
    """Build ``root/report.md`` (and ``root/report/loss.png``); returns its path. The gates
    are those of the run's own ``config.toml``."""
    if not (root / "config.toml").is_file():
        raise ConfigError(f"{root} is not a run directory (no config.toml)")
    cfg: RunConfig | None = None
    try:
        cfg = load_config(str(root / "config.toml"))
        gates, gate_note = cfg.eval.gates, ""
    except ConfigError as e:  # written by another version of pretrain
        gates, gate_note = [], f"(gates not checked: {root / 'config.toml'}: {e})\n"
    train = _train(root)
    trained_m = sound_manifest(root / "train")
    if trained_m is not None:   # a stopped run's: its logs only
        trained, changed = _as_trained(root, cfg) if cfg is not None else (None, [])
        ran = (trained_m.get("counts") or {}).get("precision")
        train = _hyperparameters(trained, changed, ran) + train
    old = _stale(root)
    parts = [f"# Run report: {root.resolve().name}\n", "## Stages\n", _stages(root, old),
             "## Data\n", _data(root, old), "## Tokenizer\n",
             _stale_note(old, "tokenizer") + _tokenizer(root),
             "## Training\n", _stale_note(old, "train") + train,
             "## Plan\n", _stale_note(old, "train") + _plan(root, cfg),
             "## Evaluation\n", _stale_note(old, "eval") + _eval(root, gates) + gate_note,
             "## Samples\n", _stale_note(old, "sample") + _samples(root)]
    out = root / "report.md"
    tmp = out.with_suffix(f".md.tmp-{os.getpid()}")   # two reports at once: each its own
    _drop_orphans(root)
    try:
        tmp.write_text("\n".join(parts), encoding="utf-8")
        tmp.replace(out)  # a crash never leaves half a report
    except OSError as e:
        drop(tmp)
        raise PretrainError(f"{write_failure(out, e)}; the run's stages are intact: rerun "
                            f"`pretrain report {root}` once it can be written") from None
    return out
