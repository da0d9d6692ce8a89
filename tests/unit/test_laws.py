"""The scaling laws: Chinchilla's facts by hand, the fit of known constants, the sweep's
fit and what it flags, and `pretrain plan` taking a fit file only when it is usable."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pretrain import stages
from pretrain.cli import main
from pretrain.hardware import get
from pretrain.plan.laws import (
    BESIROGLU,
    GRID,
    HOFFMANN,
    Law,
    bootstrap,
    chinchilla_rule,
    fit_law,
    isoflop_optimum,
    loose,
    read_fit,
)
from pretrain.plan.report import time_and_cost
from pretrain.run_config import load_config


def test_the_laws_facts_checked_by_hand():
    # the paper's form: model size matters (the seed's (A/N)**alpha form made 7B ~ 70B)
    assert HOFFMANN.loss(7e9, 1e12) == pytest.approx(2.052, abs=1e-3)
    assert HOFFMANN.loss(70e9, 1e12) == pytest.approx(1.953, abs=1e-3)

    def seed_form(n: float, d: float) -> float:
        return 1.69 + (406.4 / n) ** 0.34 + (410.7 / d) ** 0.28
    assert abs(seed_form(7e9, 1e12) - seed_form(70e9, 1e12)) < 0.003
    # 70B x 2T tokens = 8.4e23 FLOPs: 3,240 days at 3e15 FLOP/s, ~85 years on one A100
    flops = 6 * 70e9 * 2e12
    assert flops == pytest.approx(8.4e23)
    assert flops / 3e15 / 86400 == pytest.approx(3240, rel=0.01)
    assert "85.4 years" in time_and_cost(flops, get("a100"), 1, 1.0, "bf16", None)
    # the optimum minimises the law along 6 N D = C, and 20 tokens per parameter
    for law in (HOFFMANN, BESIROGLU):
        c = 1e21
        n_opt, d_opt = law.optimum(c)
        assert 6 * n_opt * d_opt == pytest.approx(c)
        scan = [law.loss(n, c / 6 / n) for n in np.geomspace(n_opt / 3, n_opt * 3, 61)]
        assert int(np.argmin(scan)) == 30
    n, d = chinchilla_rule(5.76e23)
    assert d == pytest.approx(20 * n) and 6 * n * d == pytest.approx(5.76e23)


def test_the_fit_recovers_known_constants_from_noisy_losses():
    rng = np.random.default_rng(0)
    true = Law(1.9, 300.0, 900.0, 0.32, 0.30)
    ns, ds, ls = [], [], []
    for n in np.geomspace(2e6, 2e8, 6):
        for d in np.geomspace(4e7, 4e9, 5):
            ns.append(n)
            ds.append(d)
            ls.append(true.loss(n, d) * math.exp(rng.normal(0, 0.003)))  # 0.3% noise
    # every 10th start of the grid (the fit of 2000 starts lands within 1e-4 of it, 10x
    # slower; the sweep's tests fit from the whole grid)
    fit = fit_law(ns, ds, ls, starts=GRID[::10])
    assert fit.alpha == pytest.approx(true.alpha, abs=0.02)
    assert fit.beta == pytest.approx(true.beta, abs=0.02)
    assert fit.E == pytest.approx(true.E, abs=0.1)
    for n, d in ((1e9, 2e10), (1e7, 1e8)):  # and it predicts outside the grid
        assert fit.loss(n, d) == pytest.approx(true.loss(n, d), rel=0.01)
    # an isoFLOP parabola finds the minimum of a budget's runs
    budget = 1e17
    sizes = np.geomspace(1e6, 1e8, 7)
    n_opt, _ = isoflop_optimum(sizes, [true.loss(n, budget / 6 / n) for n in sizes])
    assert n_opt == pytest.approx(true.optimum(budget)[0], rel=0.15)


def test_plan_leaves_out_a_law_fitted_from_too_few_runs(tmp_path, capsys):
    """A fit.json of fewer than 2 isoFLOP optima (or whose law ignores N or D) is not used:
    the default one is passed over with a note, one named by --fit is an error."""
    fit = tmp_path / "fit.json"
    law = {"E": 1.0, "A": 400.0, "B": 400.0, "alpha": 2.54, "beta": 0.3}
    fit.write_text(json.dumps({"runs": [], "isoflop": [{"C": 1e9}], "law": law}))
    assert main(["plan", "--budget", "1e18", "--fit", str(fit)]) == 2
    assert "fitted from 1 budget of 3 sizes or more, 2 needed" in capsys.readouterr().err
    few = fit.read_text()
    # which of the reasons it is, not "fewer than 2 budgets ... or does not depend on both"
    fit.write_text(json.dumps({"isoflop": [{"C": 1e9}, {"C": 1e10}],
                               "law": {**law, "flat_in": ["N"]}}))
    assert main(["plan", "--budget", "1e18", "--fit", str(fit)]) == 2
    err = capsys.readouterr().err
    assert "it does not depend on N (the runs too few or too noisy to tell)" in err
    fit.write_text(json.dumps({"isoflop": [{"C": 1e9}, {"C": 1e10}],   # edited by hand
                               "law": {**law, "flat_in": True}}))
    assert main(["plan", "--budget", "1e18", "--fit", str(fit)]) == 2
    assert "it does not depend on both N and D" in capsys.readouterr().err
    assert "budget" not in err.split("; rerun")[0]
    # an exponent of ~0 (the fit's bounds allow 0): the plan asked for d_model 32768 x 1024
    # layers and blamed the budget ("buys 0 tokens")
    fit.write_text(json.dumps({"isoflop": [{"C": 1e9}, {"C": 1e10}], "law": {**law, "beta": 1e-9}}))
    assert main(["plan", "--budget", "2e11", "--fit", str(fit)]) == 2
    assert "or an exponent is ~0" in capsys.readouterr().err
    run = tmp_path / "runs" / "quickstart" / "sweep"
    run.mkdir(parents=True)
    (run / "fit.json").write_text(few)
    assert main(["plan", "--budget", "1e18", f"--runs_dir={tmp_path / 'runs'}"]) == 0
    out = capsys.readouterr()
    assert "plan: not using the run's own fit: " in out.err and "fitted (" not in out.out
    assert f"fit: {run / 'fit.json'}: it was fitted from 1 budget" in out.err


def test_a_law_fitted_for_another_corpus_or_tokenizer_is_not_taken_for_this_one(tmp_path,
                                                                                capsys):
    """fit.json recorded nothing of the config it was fitted under: after a new tokenizer,
    architecture or seq_len, plan used the old law, its losses in other units."""
    runs = tmp_path / "runs"
    cfg = load_config(None, [("runs_dir", str(runs))])
    law = {"E": 1.8, "A": 400.0, "B": 400.0, "alpha": 0.3, "beta": 0.3}
    fit = {"isoflop": [{"C": 1e9}, {"C": 1e10}], "law": law, "fitted_on": stages.law_key(cfg)}
    (runs / "quickstart" / "sweep").mkdir(parents=True)
    (runs / "quickstart" / "sweep" / "fit.json").write_text(json.dumps(fit))
    assert main(["plan", "--budget", "1e18", f"--runs_dir={runs}"]) == 0
    assert "fitted (" in capsys.readouterr().out
    for change in ("--tokenizer.vocab_size=1024", "--model.arch=gpt2", "--model.seq_len=512"):
        assert main(["plan", "--budget", "1e18", f"--runs_dir={runs}", change]) == 0
        out = capsys.readouterr()
        assert "fitted (" not in out.out and "with another corpus, tokenizer" in out.err, change
    # named on purpose with --fit: used, with the note
    path = runs / "quickstart" / "sweep" / "fit.json"
    assert main(["plan", "--budget", "1e18", "--fit", str(path), "--model.seq_len=512"]) == 0
    out = capsys.readouterr()
    assert "fitted (" in out.out and "plan: note:" in out.err


def test_plan_says_what_a_usable_fit_leaves_uncertain(tmp_path, capsys):
    """A sweep whose every budget's best run was clipped, alpha loose, planned 7 orders of
    magnitude past its runs: plan sized the model from it without a word."""
    law = {"E": 1.8, "A": 400.0, "B": 400.0, "alpha": 0.3, "beta": 0.3, "loose": ["alpha"]}
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps({"isoflop": [{"C": 1e9, "clipped": True},
                                           {"C": 1e10, "clipped": True}], "law": law}))
    assert main(["plan", "--budget", "1e18", "--fit", str(fit)]) == 0
    out = capsys.readouterr().out
    assert "note: every budget's best run is at an end of the sizes swept (clipped)" in out
    assert "note: the runs do not pin down alpha (loose" in out
    assert "note: this budget is 1e+08x the sweep's largest (1e+10 FLOPs): the law is " \
        "carried 8.0 orders of magnitude past its runs" in out
    fit.write_text(json.dumps({"isoflop": [{"C": 1e9, "clipped": True}, {"C": 1e10}],
                               "law": {**law, "loose": []}}))
    assert main(["plan", "--budget", "1e11", "--fit", str(fit)]) == 0
    out = capsys.readouterr().out
    assert "note: 1 of 2 budgets' best runs are at an end" in out
    assert "loose" not in out and "orders of magnitude" not in out   # 10x: within reach


@pytest.mark.parametrize("text", ["{}", '{"law": {"E": 1.7, "A"',
                                  json.dumps({"isoflop": [{"C": 1e9}, {"C": 1e10}], "law": {
                                      "E": float("nan"), "A": 1.0, "B": 1.0, "alpha": 0.3,
                                      "beta": 0.3}}),
                                  # a law, but isoflop no list (a traceback), and no object
                                  json.dumps({"isoflop": 5, "law": {
                                      "E": 1, "A": 1, "B": 1, "alpha": 0.3, "beta": 0.3}}),
                                  "[1, 2]"])
def test_a_fit_file_that_is_no_usable_fit_is_refused_in_one_line(text, tmp_path, capsys):
    fit = tmp_path / "fit.json"
    fit.write_text(text)
    assert main(["plan", "--budget", "1e18", "--fit", str(fit)]) == 2
    err = capsys.readouterr().err
    assert str(fit) in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow   # a fit from the whole grid of starts and the plots, ~25-30 s
def test_the_sweep_fit_leaves_out_diverged_runs_and_counts_attention_in_d_opt(tmp_path):
    """A run whose held-out loss is NaN is named in ``excluded``, not fitted; a budget's
    D_opt is the tokens C buys at N_opt with the runs' FLOPs per token (here 1.2 x 6 N),
    not C / 6 N. A skipped prediction (degenerate law) is left out of the plots."""
    from pretrain.sweep import _plots, fit_results
    results = []
    for c in (1e15, 1e16):
        for n in np.geomspace(2e5, 2e7, 5):
            d = c / (6 * n * 1.2)
            results.append({"C": c, "name": f"c{c:g}-n{n:.0f}", "N": n, "D": d,
                             "loss": HOFFMANN.loss(n, d)})
    results.append({"C": 1e16, "name": "diverged", "N": 1e6, "D": 1e9, "loss": float("nan")})
    fit = fit_results(results)
    assert fit["excluded"] == ["diverged"] and len(fit["runs"]) == 10
    assert len(fit["isoflop"]) == 2
    for o in fit["isoflop"]:
        assert o["D_opt"] == pytest.approx(o["C"] / (6 * o["N_opt"] * 1.2))
    assert not Law.from_dict(fit["law"]).degenerate
    if importlib.util.find_spec("matplotlib"):
        _plots({**fit, "prediction": {"C": 1e17, "skipped": "degenerate fit"}}, tmp_path)
        assert (tmp_path / "fit.png").is_file()


def test_a_sweep_that_ends_without_a_usable_fit_says_so(capsys):
    """One budget left with an optimum (a run of another left out): the sweep wrote its
    fit.json and exited 0, and only `pretrain plan` said the fit would not do."""
    from pretrain.sweep import say_unusable
    law = {"E": 1.7, "A": 400.0, "B": 400.0, "alpha": 0.34, "beta": 0.28}
    say_unusable({"isoflop": [{"C": 1e11}], "law": law}, Path("fit.json"))
    assert "sweep: warning: fit.json: it was fitted from 1 budget of 3 sizes or more, 2 " \
        "needed; rerun `pretrain sweep` with more budgets or sizes; `pretrain plan` will not " \
        "use this fit" in capsys.readouterr().err
    say_unusable({"isoflop": [{"C": 1e11}, {"C": 3e11}], "law": law}, Path("fit.json"))
    assert "warning" not in capsys.readouterr().err


@pytest.mark.slow   # three fits from the whole grid of starts, ~90 s
def test_the_sweep_fit_flags_what_it_cannot_trust(capsys):
    """A finite but diverged run (loss ~ ln vocab) moved its budget's optimum 2.3x without
    a word; a budget whose best run is the ladder's smallest fed that bound to the power
    laws as an optimum; a law with no N dependence (every run the same N: A = 1, alpha = 1,
    the grid's start) was used by `plan` and `--predict` (N_opt = 57 parameters)."""
    from pretrain.sweep import fit_results
    results = []
    for c in (1e15, 1e16, 1e17):
        for n in np.geomspace(2e5, 2e7, 5) if c > 1e15 else np.geomspace(2e7, 2e9, 5):
            d = c / (6 * n)
            results.append({"C": c, "name": f"c{c:g}-n{n:.0f}", "N": n, "D": d,
                            "loss": HOFFMANN.loss(n, d)})
    results[7]["loss"] *= 1.5   # diverged, finite
    # degenerate: log(0) had raised ZeroDivisionError
    results.append({"C": 1e17, "name": "zero", "N": 1e6, "D": 1e17 / 6e6, "loss": 0.0})
    fit = fit_results(results)
    err = capsys.readouterr().err
    assert fit["excluded"] == ["zero"]
    assert "1 run(s) more than 10% off the fitted law: c1e+16-n2000000" in err
    assert [o.get("clipped", False) for o in fit["isoflop"]] == [True, False, False]
    assert "C=1e+15: the lowest loss is at the ladder's smallest model" in err
    law, _ = read_fit(fit, "fit.json", "fitted")
    assert law is not None and "flat_in" not in fit["law"]
    assert "from_bounds" not in fit["power_laws"]   # two budgets bracket theirs
    # every budget's lowest loss at its smallest model: power laws through bounds, said
    lowest = [{**r, "loss": 3 + math.log(r["N"]) / 100} for r in results]
    bounds = fit_results(lowest)
    assert all(o.get("clipped") for o in bounds["isoflop"])
    assert bounds["power_laws"]["from_bounds"] is True
    assert "only 0 budget(s) bracket their optimum" in capsys.readouterr().err
    # a budget left with 2 sizes by the runs left out: said (its optimum was dropped silently)
    fit = fit_results([r if r["name"] not in ("c1e+17-n2000000", "c1e+17-n6324555",
                                              "c1e+17-n20000000") else
                       {**r, "loss": float("nan")} for r in results[:-1]])
    assert len(fit["isoflop"]) == 2
    assert "C=1e+17 has 2 size(s) left after the runs left out" in capsys.readouterr().err
    same_n = [{**r, "N": 1e6, "D": r["C"] / 6e6} for r in results]
    fit = fit_results(same_n)
    assert "N" in fit["law"].get("flat_in", []) or Law.from_dict(fit["law"]).degenerate
    assert read_fit(fit, "fit.json", "fitted")[0] is None
    # a family clipped to 1.8x of N still fits its law (a 2x span rule had thrown it away)
    clipped = [{"C": c, "name": f"c{c:g}-{n:g}", "N": n, "D": c / (6 * n),
                "loss": HOFFMANN.loss(n, c / (6 * n))}
               for c in (1e15, 1e16, 1e17) for n in (1e6, 1.35e6, 1.8e6)]
    fit = fit_results(clipped)
    assert "flat_in" not in fit["law"] and read_fit(fit, "fit.json", "fitted")[0] is not None


def test_a_budget_given_twice_is_refused_before_any_run(capsys):
    """Its runs were trained once and counted twice in the fit (the law moved)."""
    assert main(["sweep", "-c", "sweep-quickstart", "--budgets", "1e11,3e11,3e11"]) == 2
    assert "--budgets gives 3e+11 more than once" in capsys.readouterr().err


def test_intervals_that_reach_the_fits_bounds_or_miss_its_value_are_said_loose():
    """A sweep's fit.json held alpha 0.541 with the interval [0.686, 3.0]: the resampled
    fits stopped at the bound 3.0, and the interval left out the fitted value."""
    law = Law(1.8, 400.0, 400.0, 0.541, 0.3)
    iv = {"E": (1.7, 1.9), "A": (300.0, 500.0), "B": (350.0, 450.0), "alpha": (0.686, 3.0),
          "beta": (0.25, 0.35)}
    assert loose(law, iv) == ["alpha"]
    assert loose(law, {**iv, "alpha": (0.4, 0.7)}) == []
    assert loose(law, {**iv, "alpha": (0.4, 0.7), "beta": (0.0, 0.35)}) == ["beta"]   # at 0
    assert loose(law, {**iv, "alpha": (0.4, 0.7), "E": (1.81, 2.0)}) == ["E"]   # misses 1.8
    assert loose(law, {**iv, "alpha": (0.4, 0.7), "A": (300.0, math.exp(50.0))}) == ["A"]
    # an interval of one point (every resample agreeing), off by rounding: not loose
    assert loose(law, {**iv, "alpha": (0.4, 0.7), "E": (1.8000000000000003,) * 2}) == []
    # runs that pin the law down: no constant loose
    rng = np.random.default_rng(1)
    true = Law(1.9, 300.0, 900.0, 0.32, 0.30)
    grid = [(n, d) for n in np.geomspace(2e6, 2e8, 5) for d in np.geomspace(4e7, 4e9, 4)]
    ns, ds = zip(*grid, strict=True)
    ls = [true.loss(n, d) * math.exp(rng.normal(0, 0.002)) for n, d in grid]
    fit = fit_law(ns, ds, ls, starts=GRID[::50])   # a few starts: seconds, not half a minute
    assert fit.alpha == pytest.approx(true.alpha, abs=0.03)
    assert loose(fit, bootstrap(ns, ds, ls, fit, samples=10)) == []
