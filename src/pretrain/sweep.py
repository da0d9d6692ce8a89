"""``pretrain sweep``: a ladder of small models on the user's own data and tokenizer, a
scaling law fitted to them, and a check of what it predicts.

For each compute budget C (``--budgets``), ``--sizes`` models of the config's family from a
quarter to four times Chinchilla's N for C (20 tokens per parameter), each trained on the
D = C / FLOPs-per-token tokens that budget buys (an isoFLOP ladder), with the config's
learning rate and schedule (warmup at most a tenth of the run). Every point is an
ordinary run directory, ``runs/<name>/sweep/<point>/``, whose data, tokenizer and token
shards are links to the base run's (``runs/<name>/``, run first): a point reruns only when
its own config changes (a point that diverged is remembered as such, not retrained), and
a killed sweep resumes point by point.

The fit (``plan/laws.py``): per budget a parabola of held-out loss in log N, its minimum
the budget's optimal N and D; power laws N_opt ~ C**a, D_opt ~ C**b across budgets; and
the parametric L(N, D) = E + A / N**alpha + B / D**beta (Huber, L-BFGS from a grid,
bootstrap intervals). N here is the matmul parameters a token passes through (the head
included, the embedding lookup not): the N of C = 6 N D. Written to
``runs/<name>/sweep/fit.json`` with plots (``isoflop.png``, ``fit.png``); ``pretrain plan``
then uses the fitted law. ``--predict``: the law's optimal model for the next budget up
(the ladder's ratio once more) is predicted, then trained, and the error reported.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from . import stages
from .config import ConfigError, Diverged, PretrainError
from .log import log0
from .pipeline import run_stages, stage_key
from .plan.laws import (
    Law,
    bootstrap,
    chinchilla_rule,
    fit_law,
    isoflop_optimum,
    loose,
    power_law,
    read_fit,
)
from .plan.report import ladder, suggest
from .run_config import RunConfig

SHARED = ("data", "tokenizer", "tokenize")
MIN_STEPS = 20
DIVERGED = "diverged.json"   # in a point's run directory: it diverged under this train key


def budget_name(c: float) -> str:
    """A budget as few digits as tell it apart: ``1e+11``, ``1.0004e+11`` (3 digits had
    named both 1e11 and 1.0004e11 ``1e11``, and the second reused the first's points)."""
    short = f"{c:.3g}"
    return short if float(short) == c else f"{c:.12g}"


def _points(cfg: RunConfig, budgets: list[float], sizes: int) -> list[tuple[float, RunConfig]]:
    """(budget, the point's run config) for every size of every budget."""
    vocab = _vocab(cfg)
    model = replace(cfg.model, vocab_size=vocab)
    tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * model.seq_len
    out = []
    for c in budgets:
        n20 = chinchilla_rule(c)[0]
        targets = [n20 * 4 ** (2 * k / max(1, sizes - 1) - 1) for k in range(sizes)]  # n20/4 .. 4 n20
        shapes = ladder(model, targets)
        low, high = (shapes[0].matmul_params(), shapes[-1].matmul_params()) if shapes else (0, 0)
        if shapes and (low > 2 * targets[0] or high < targets[-1] / 2):
            log0(f"sweep: C={budget_name(c)}: the ladder's targets ({targets[0]:,.0f} to "
                 f"{targets[-1]:,.0f} parameters) reach past the family's models: it trains "
                 f"{low:,} to {high:,}, so this budget's optimum may be only a bound; "
                 + ("raise --budgets" if low > 2 * targets[0] else "lower --budgets"))
        for shape in shapes:
            steps = round(c / shape.flops_per_token() / tokens_per_step)
            if steps < MIN_STEPS:
                log0(f"sweep: C={budget_name(c)} N={shape.matmul_params():,}: {steps} steps, skipped")
                continue
            name = f"c{budget_name(c)}-d{shape.d_model}-l{shape.n_layers}".replace("+", "")
            point = replace(cfg, name=name, runs_dir=str(cfg.run_dir / "sweep"), model=shape,
                            train=replace(cfg.train, steps=steps, eval_every=max(steps, 1),
                                          warmup_steps=min(cfg.train.warmup_steps, steps // 10),
                                          time_budget_s=0.0, checkpoint_every=0),
                            eval=replace(cfg.eval, tasks=[], core=False, harness=[],
                                         contamination=False, memorization_docs=0, gates=[]))
            # the base's data stage, which the point reads: decontaminated against the
            # base's tasks, not the point's none
            point.data = cfg.data
            out.append((c, point))
    return out


def _vocab(cfg: RunConfig) -> int:
    """The vocabulary size of the base run's token shards."""
    meta = cfg.run_dir / "tokenize" / "meta.json"
    return int(json.loads(meta.read_text(encoding="utf-8"))["vocab_size"])


def _link_shared(base: Path, point: Path) -> None:
    point.mkdir(parents=True, exist_ok=True)
    for stage in SHARED:
        link = point / stage
        if not link.exists():
            os.symlink(os.path.relpath(base / stage, point), link)


def _train_point(point: RunConfig, base: Path) -> dict[str, Any]:
    _link_shared(base, point.run_dir)
    tokens = point.train.steps * point.train.batch_size * point.train.grad_accum \
        * point.model.seq_len
    marker = point.run_dir / DIVERGED
    key = stage_key(point, "train")   # what a completed train stage would be keyed by
    try:
        before = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = {}
    if before.get("key") == key:   # diverges again, deterministically: not retrained
        log0(f"sweep: {point.name} diverged before with this config, left out of the fit: "
             f"{before['error']} (delete {marker} to train it again)")
        return {"name": point.name, "N": point.model.matmul_params(), "D": tokens,
                "loss": math.nan, "diverged": before["error"]}
    try:
        rd = run_stages(point, ["train", "eval"], set(), require_current_upstream=True,
                        has_force=False)
    except Diverged as e:   # the point's loss is no point of the law: left out, named
        log0(f"sweep: {point.name} diverged, left out of the fit: {e}")
        tmp = marker.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"key": key, "error": str(e)}) + "\n", encoding="utf-8")
        tmp.replace(marker)
        return {"name": point.name, "N": point.model.matmul_params(), "D": tokens,
                "loss": math.nan, "diverged": str(e)}
    marker.unlink(missing_ok=True)
    loss = (rd.manifest("eval") or {})["counts"]["all"]["loss"]
    return {"name": point.name, "N": point.model.matmul_params(), "D": tokens, "loss": loss}


def run(cfg: RunConfig, budgets: list[float], sizes: int, predict: bool) -> Path:
    """The sweep of ``cfg`` (its data stages run first); returns the fit file."""
    if len(budgets) < 2 or sizes < 3:
        raise ConfigError("a sweep needs at least 2 budgets and 3 sizes per budget")
    # what refuses training on this machine (fp8 on a CPU, compile without a compiler):
    # said now, not at the first point, after the data stages
    stages.get("train").check_here(cfg)
    run_stages(cfg, list(SHARED), set(), has_force=False)
    results = []
    points = _points(cfg, sorted(budgets), sizes)
    per_budget = {c: sum(1 for b, _ in points if b == c) for c in budgets}
    enough = [c for c, n in per_budget.items() if n >= 3]
    if len(enough) < 2:
        raise ConfigError(
            f"a sweep needs at least 2 budgets with 3 sizes each of {MIN_STEPS} steps or more; "
            "sizes left per budget: " + ", ".join(f"C={budget_name(c)}: {n}" for c, n in per_budget.items())
            + "; raise --budgets (or lower train.batch_size or model.seq_len)")
    for i, (c, point) in enumerate(points, 1):
        log0(f"sweep: point {i}/{len(points)}: C={budget_name(c)}, {point.model.matmul_params():,} "
             f"parameters, {point.train.steps:,} steps")
        results.append({"C": c, **_train_point(point, cfg.run_dir)})
    fit = fit_results(results)
    fit["fitted_on"] = stages.law_key(cfg)   # plan and the report use the law for it only
    out = cfg.run_dir / "sweep"
    path = out / "fit.json"
    if predict:
        fit["prediction"] = _predict(cfg, fit, sorted(budgets))
    else:   # a rerun without --predict keeps the prediction of the same runs
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        if isinstance(old, dict) and "prediction" in old and old.get("runs") == fit["runs"] \
                and old.get("fitted_on") == fit["fitted_on"]:
            fit["prediction"] = old["prediction"]
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(fit, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    _plots(fit, out)
    if not predict:   # with --predict, said there
        say_unusable(fit, path)
    return path


def say_unusable(fit: dict[str, Any], path: Path) -> None:
    """Warn when ``plan`` would refuse the fit just written (too few budgets left with
    an optimum, a law flat in N or D): the sweep ended without a law to plan with."""
    law, why = read_fit(fit, str(path), "fitted")
    if law is None:
        log0(f"sweep: warning: {why}; `pretrain plan` will not use this fit")


def fit_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """isoFLOP optima, their power laws and the parametric law of the sweep's runs. A run
    whose held-out loss is not finite (it diverged) is left out of the fits, named in
    ``excluded``. A budget's D_opt is the tokens its C buys at N_opt: C / (6 N_opt) over
    the runs' ratio of their FLOPs per token to 6 N (attention's share), interpolated in
    log N."""
    def usable(r: dict[str, Any]) -> bool:   # a law of log-losses: above 0 and finite
        return math.isfinite(r["loss"]) and r["loss"] > 0
    excluded = [r["name"] for r in results if not usable(r)]
    if excluded:
        log0(f"sweep: {len(excluded)} run(s) with a non-finite (or zero) held-out loss left "
             f"out of the fit: {', '.join(excluded)}")
    results = [r for r in results if usable(r)]
    if not results:
        raise PretrainError("every run of the sweep ended with a non-finite held-out loss: "
                            "lower train.lr or check the data")
    optima = []
    for c in sorted({r["C"] for r in results}):
        runs = sorted((r for r in results if r["C"] == c), key=lambda r: r["N"])
        sizes = len({r["N"] for r in runs})
        if sizes < 3:   # a parabola needs 3 sizes
            log0(f"sweep: C={c:.3g} has {sizes} size(s) left after the runs left out: no "
                 "isoFLOP optimum for it")
        else:
            n_opt, loss = isoflop_optimum([r["N"] for r in runs], [r["loss"] for r in runs])
            # at the ladder's end: the budget's optimum is not bracketed, only bounded
            edge = next((end for end, r in (("smallest", runs[0]), ("largest", runs[-1]))
                         if math.isclose(n_opt, r["N"], rel_tol=1e-9)), "")
            optima.append({"C": c, "N_opt": n_opt, "D_opt": _tokens(c, n_opt, runs),
                           "loss": loss, **({"clipped": True} if edge else {})})
            if edge:
                log0(f"sweep: C={c:.3g}: the lowest loss is at the ladder's {edge} model, so its "
                     "optimum is a bound, not a minimum (marked clipped; the power laws "
                     "leave it out when 2 budgets or more bracket theirs)")
    out: dict[str, Any] = {"runs": results, "excluded": excluded, "isoflop": optima}
    bracketed = [o for o in optima if not o.get("clipped")]
    laws_of = bracketed if len(bracketed) >= 2 else optima
    if len(laws_of) >= 2:
        kn, a = power_law([o["C"] for o in laws_of], [o["N_opt"] for o in laws_of])
        kd, b = power_law([o["C"] for o in laws_of], [o["D_opt"] for o in laws_of])
        out["power_laws"] = {"N_opt": {"k": kn, "exponent": a}, "D_opt": {"k": kd, "exponent": b}}
        if laws_of is not bracketed:
            out["power_laws"]["from_bounds"] = True
            log0(f"sweep: only {len(bracketed)} budget(s) bracket their optimum: the power "
                 "laws are fitted through bounds, not minima (from_bounds in fit.json); "
                 "move --budgets so that each ladder's lowest loss is inside it")
    ns, ds, ls = ([r[k] for r in results] for k in ("N", "D", "loss"))
    # minutes on a busy CPU, in one call each: said, so the sweep is not taken for hung
    log0(f"sweep: fitting the law to {len(ls)} runs (L-BFGS from a grid of starting points, "
         "then 20 bootstrap refits; a few minutes)")
    law = fit_law(ns, ds, ls)
    intervals = bootstrap(ns, ds, ls, law, samples=20)
    out["law"] = {**law.as_dict(), "intervals": intervals}
    if wide := loose(law, intervals):
        out["law"]["loose"] = wide
        log0(f"sweep: the bootstrap intervals of {', '.join(wide)} say little (they reach "
             "the fit's bounds or leave out the fitted value): too few or too noisy runs "
             "to pin them down (loose in fit.json)")
    # a term worth under 0.1% of every run's loss: the law does not depend on it
    # or runs that do not vary it (within 10%): a constant term, which E or the term took
    # depending on where the optimizer went (scipy 1.17 gave every run's N of 1e6 an
    # A / N^alpha of 4.3); a span of 1.35x still fits alpha (0.338 for 0.34)
    flat = [name for name, term in (("N", lambda r: law.A / r["N"] ** law.alpha),
                                    ("D", lambda r: law.B / r["D"] ** law.beta))
            if max(term(r) / r["loss"] for r in results) < 1e-3
            or max(r[name] for r in results) < 1.1 * min(r[name] for r in results)]
    if flat:
        out["law"]["flat_in"] = flat
    out["residuals"] = [round(law.loss(r["N"], r["D"]) / r["loss"] - 1, 5) for r in results]
    off = [f"{r['name']} ({res:+.0%})" for r, res in zip(results, out["residuals"], strict=True)
           if abs(res) > 0.1]
    if off:   # a run far above the law: diverged or undertrained, though its loss is finite
        log0(f"sweep: {len(off)} run(s) more than 10% off the fitted law: {', '.join(off)}; "
             "check their training logs (a diverged run pulls its budget's optimum)")
    return out


def _tokens(c: float, n: float, runs: list[dict[str, Any]]) -> float:
    """The tokens budget ``c`` buys a model of ``n`` matmul parameters: C / 6N over the
    ratio of a token's FLOPs to 6N (attention's share), interpolated in log N between the
    budget's ``runs`` (sorted by N), each of which spent C on its D tokens."""
    share = np.interp(math.log(n), [math.log(r["N"]) for r in runs],
                      [c / (6 * r["N"] * r["D"]) for r in runs])
    return c / (6 * n * float(share))


def _predict(cfg: RunConfig, fit: dict[str, Any], budgets: list[float]) -> dict[str, Any]:
    """The fitted law's optimal model for the next budget up, predicted then trained."""
    law, why = read_fit(fit, "the sweep's fit", "fitted")
    c = budgets[-1] * budgets[-1] / budgets[-2]
    if law is None:   # what `pretrain plan` would refuse too
        log0(f"sweep: no prediction: {why}")
        return {"C": c, "skipped": "degenerate fit"}
    vocab = _vocab(cfg)
    model = replace(cfg.model, vocab_size=vocab)
    shape, tokens = suggest(model, c, law, params=law.optimum(c)[0], count="matmul")
    tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * model.seq_len
    steps = max(MIN_STEPS, round(tokens / tokens_per_step))
    point = replace(cfg, name=f"predict-c{c:.3g}".replace("+", ""), runs_dir=str(cfg.run_dir / "sweep"),
                    model=shape, train=replace(cfg.train, steps=steps, eval_every=steps,
                                               warmup_steps=min(cfg.train.warmup_steps, steps // 10),
                                               time_budget_s=0.0, checkpoint_every=0),
                    eval=replace(cfg.eval, tasks=[], core=False, harness=[], contamination=False,
                                 memorization_docs=0, gates=[]))
    d = steps * tokens_per_step
    predicted = law.loss(shape.matmul_params(), d)
    log0(f"sweep: predicting C={budget_name(c)}: {shape.matmul_params():,} parameters, {d:,} tokens, "
         f"loss {predicted:.4f}; training it")
    measured = _train_point(point, cfg.run_dir)["loss"]
    err = measured / predicted - 1
    log0(f"sweep: predicted {predicted:.4f}, measured {measured:.4f} ({err:+.2%})")
    return {"C": c, "N": shape.matmul_params(), "D": d, "predicted": predicted,
            "measured": measured, "error": err}


def _plots(fit: dict[str, Any], out: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log0("sweep: no plots (matplotlib is not installed: pip install 'pretrain[report]')")
        return
    law = Law.from_dict(fit["law"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for c in sorted({r["C"] for r in fit["runs"]}):
        runs = sorted((r for r in fit["runs"] if r["C"] == c), key=lambda r: r["N"])
        line = ax.plot([r["N"] for r in runs], [r["loss"] for r in runs], "o", label=f"C = {budget_name(c)}")
        ns = [runs[0]["N"] * (runs[-1]["N"] / runs[0]["N"]) ** (i / 40) for i in range(41)]
        ax.plot(ns, [law.loss(n, _tokens(c, n, runs)) for n in ns], "-",
                color=line[0].get_color(), lw=1)
    for o in fit["isoflop"]:
        ax.plot([o["N_opt"]], [o["loss"]], "k*", ms=10)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N (matmul)")
    ax.set_ylabel("held-out loss")
    ax.set_title("isoFLOP curves: runs, fitted law, optima (*)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "isoflop.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 5))
    measured = [r["loss"] for r in fit["runs"]]
    ax.plot(measured, [law.loss(r["N"], r["D"]) for r in fit["runs"]], "o", label="sweep")
    if "measured" in fit.get("prediction", {}):   # not when the prediction was skipped
        p = fit["prediction"]
        ax.plot([p["measured"]], [p["predicted"]], "r*", ms=12, label="predicted run")
    lo, hi = min(measured) * 0.98, max(measured) * 1.02
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("measured loss")
    ax.set_ylabel("fitted law")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fit.png", dpi=100)
    plt.close(fig)

