"""`pretrain sweep` on a micro ladder (2 budgets x 3 sizes of tiny models on the tiny
config's data): the fit, the plots, the prediction, resuming point by point, and `pretrain
plan` using the fit."""

from __future__ import annotations

import json

import pytest

from pretrain.cli import main
from pretrain.rundir import RunDir
from pretrain.sweep import DIVERGED, budget_name

from ..conftest import tiny_overrides


@pytest.mark.slow
def test_a_micro_sweep_fits_predicts_resumes_and_feeds_plan(tmp_path, capsys):
    args = [f"--{k}={v}" for k, v in tiny_overrides(tmp_path)]
    sweep = ["sweep", *args, "--budgets", "1e10,3e10", "--sizes", "3", "--predict", "--plain"]
    assert main(sweep) == 0
    root = tmp_path / "runs" / "tiny"
    fit = json.loads((root / "sweep" / "fit.json").read_text())
    assert len(fit["runs"]) == 6 and len(fit["isoflop"]) == 2 and "power_laws" in fit
    assert {r["C"] for r in fit["runs"]} == {1e10, 3e10}
    optima = sorted(fit["isoflop"], key=lambda o: o["C"])
    assert [o["loss"] for o in optima] == sorted((o["loss"] for o in optima), reverse=True)
    for r in fit["runs"]:  # C = 6 N D, within the attention term and whole steps
        assert 6 * r["N"] * r["D"] == pytest.approx(r["C"], rel=0.35)
    law = fit["law"]
    assert law["source"] == "fitted" and all(law[k] > 0 for k in ("E", "A", "B"))
    assert max(abs(x) for x in fit["residuals"]) < 0.1  # the law goes through its runs
    pred = fit["prediction"]
    assert pred["C"] == pytest.approx(3e10 * 3) and abs(pred["error"]) < 0.25
    for point in (root / "sweep").iterdir():  # every point an ordinary run directory
        if point.is_dir():
            rd = RunDir(point)
            assert rd.manifest("train") and rd.manifest("eval") and rd.manifest("data"), point
            assert (point / "data").is_symlink()   # the base run's data, not a copy
    pytest.importorskip("matplotlib")
    assert (root / "sweep" / "isoflop.png").stat().st_size > 0
    assert (root / "sweep" / "fit.png").stat().st_size > 0
    capsys.readouterr()
    assert main(sweep) == 0                         # resumed: nothing trains again
    err = capsys.readouterr().err
    assert err.count("[train] up to date") == 7 and "[train] running" not in err
    assert "--force" not in err and f"Delete {root / 'sweep'}" in err   # sweep has none
    assert main([a for a in sweep if a != "--predict"]) == 0   # the same runs: kept
    assert json.loads((root / "sweep" / "fit.json").read_text())["prediction"] == pred
    assert main(["plan", *args]) == 0               # the plan uses the sweep's law
    assert "fitted (" in capsys.readouterr().out


def test_a_sweep_whose_budgets_leave_too_few_sizes_trains_nothing(tmp_path, capsys):
    """Budgets so small that most sizes would take fewer than 20 steps: refused before any
    point trains (it had fitted a law from the 2 points left, which `plan` then used)."""
    args = [f"--{k}={v}" for k, v in tiny_overrides(tmp_path)]
    assert main(["sweep", *args, "--budgets", "1e3,2e3", "--sizes", "3", "--plain"]) == 2
    err = capsys.readouterr().err
    assert "at least 2 budgets with 3 sizes each of 20 steps" in err
    assert "C=1e+03: 0, C=2e+03: 0" in err
    assert not (tmp_path / "runs" / "tiny" / "sweep" / "fit.json").exists()


def test_a_sweep_this_machine_cannot_train_is_refused_before_its_data_stages(tmp_path, capsys):
    """fp8 on a CPU: said at the first point, after data, tokenizer and tokenize had run."""
    args = [f"--{k}={v}" for k, v in tiny_overrides(tmp_path)]
    assert main(["sweep", *args, "--device=cpu", "--train.precision=fp8", "--plain"]) == 2
    assert "'fp8' needs a Hopper GPU or newer" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "tiny" / "data").exists()


@pytest.mark.slow
def test_a_point_that_diverges_is_left_out_not_the_end_of_the_sweep(tmp_path, capsys):
    """Sweep points keep no checkpoint to roll back to: a point diverging ended the whole
    sweep with no fit. Here every point diverges (lr 1e4): each is named and left out, and
    the end says why there is no law. Rerun, they are not trained again (they had been,
    to diverge again), unless their config changes."""
    args = [f"--{k}={v}" for k, v in tiny_overrides(tmp_path)]
    sweep = ["sweep", *args, "--budgets", "1e10,3e10", "--sizes", "3", "--plain",
             "--train.lr=1e4", "--train.warmup_steps=0"]
    assert main(sweep) == 2
    err = capsys.readouterr().err
    assert err.count("diverged, left out of the fit: training diverged at step") == 6
    assert "error: every run of the sweep ended with a non-finite held-out loss" in err
    assert main(sweep) == 2
    err = capsys.readouterr().err
    assert "[train] running" not in err
    assert err.count("diverged before with this config, left out of the fit: training "
                     "diverged at step") == 6
    assert "error: every run of the sweep ended with a non-finite held-out loss" in err
    markers = sorted((tmp_path / "runs" / "tiny" / "sweep").glob(f"*/{DIVERGED}"))
    assert len(markers) == 6
    markers[0].unlink()                               # as the message advises: trained again
    assert main(sweep) == 2
    err = capsys.readouterr().err
    assert err.count("[train] running") == 1 and err.count("diverged before") == 5
    assert markers[0].is_file()


def test_budgets_are_named_with_the_digits_that_tell_them_apart():
    """1e11 and 1.0004e11 were both `c1e11-...`: the second budget reused the first's runs."""
    assert [budget_name(c) for c in (1e10, 3e10, 1.5e12, 1e11, 1.0004e11, 1 / 3 * 1e11)] == [
        "1e+10", "3e+10", "1.5e+12", "1e+11", "100040000000", "33333333333.3"]
