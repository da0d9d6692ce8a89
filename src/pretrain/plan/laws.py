"""Compute-optimal sizes and scaling laws.

The parametric law is Hoffmann et al. (2022)'s ``L(N, D) = E + A / N**alpha + B / D**beta``
(N parameters, D training tokens). Seed 002's ``estimate_performance`` writes
``(A / N)**alpha``, which is a different function: with Hoffmann's constants it gives a 7B
and a 70B model trained on 1T tokens 1.696 and 1.694, model size almost irrelevant; the
paper's form gives 2.052 and 1.953 (``tests/unit/test_plan.py``). Two published fits:

- Hoffmann et al. 2022 (approach 3): E = 1.69, A = 406.4, B = 410.7, alpha = 0.34,
  beta = 0.28;
- Besiroglu et al. 2024's replication of it: E = 1.82, A = 482.01, B = 2085.43,
  alpha = 0.3478, beta = 0.3658.

Training compute is C = 6 N D (plus attention, which ``ModelConfig.flops_per_token``
adds). Minimising L under C = 6 N D gives N_opt = G (C / 6)**(beta / (alpha + beta)) and
D_opt = (C / 6)**(alpha / (alpha + beta)) / G with G = (alpha A / (beta B))**(1 / (alpha +
beta)); the rule of thumb is D = 20 N.

Fits from the user's own runs (``pretrain sweep``): (a) per compute budget a parabola of
loss in log N through the runs of that budget, its minimum the optimal N, then power laws
N_opt ~ C**a and D_opt ~ C**b over the budgets (Hoffmann's approach 2); (b) the parametric
law itself, by minimising the Huber loss (delta 1e-3) between log L and
log(exp(e) + exp(a - alpha log N) + exp(b - beta log D)) with L-BFGS from a grid of
starting points (approach 3), with bootstrap intervals over the runs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Law:
    """``L(N, D) = E + A / N**alpha + B / D**beta``."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str = ""

    def loss(self, n: float, d: float) -> float:
        return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

    def optimum(self, flops: float) -> tuple[float, float]:
        """(N, D) minimising the loss for ``flops = 6 N D``."""
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1 / (a + b))
        return g * (flops / 6) ** (b / (a + b)), (flops / 6) ** (a / (a + b)) / g

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "") -> Law:
        """The law of a fit.json's ``law`` (its other keys, the intervals, left out)."""
        return cls(float(d["E"]), float(d["A"]), float(d["B"]), float(d["alpha"]),
                   float(d["beta"]), source)

    @property
    def degenerate(self) -> bool:
        """A fit that does not depend on both N and D (too few or too noisy runs), or whose
        constants are not all finite. An exponent under 1e-3 is none: N**1e-3 moves 2% over
        a billion-fold range (a plan from beta = 1e-9 asked for a 1,024-layer model)."""
        values = (self.E, self.A, self.B, self.alpha, self.beta)
        return not all(map(math.isfinite, values)) or min(values[1:3]) <= 0 \
            or min(values[3:]) < 1e-3


def read_fit(fit: Any, path: str, source: str) -> tuple[Law | None, str]:
    """The law of a sweep's ``fit.json`` (``fit``: its parsed JSON, None if it could not be
    read), or None and why it cannot be used: not a fit, a law fitted from fewer than 2
    budgets of 3 sizes, or one that does not depend on both N and D."""
    try:
        law = Law.from_dict(fit["law"], source=source)
        budgets = len(fit.get("isoflop") or [])
    except (TypeError, KeyError, ValueError, AttributeError):
        return None, (f"{path} is not a fit written by `pretrain sweep` (unreadable, or no "
                      "law with E, A, B, alpha and beta)")
    flat = fit["law"].get("flat_in")
    if budgets < 2:
        why = f"it was fitted from {budgets} budget{'s' * (budgets != 1)} of 3 sizes or more, 2 needed"
    elif flat or law.degenerate:
        names = " or ".join(map(str, flat)) if isinstance(flat, list) else "both N and D"
        why = (f"it does not depend on {names}" if flat else
               "its constants are not all finite and positive, or an exponent is ~0") \
            + " (the runs too few or too noisy to tell)"
    else:
        return law, ""
    return None, f"{path}: {why}; rerun `pretrain sweep` with more budgets or sizes"


def fit_caveats(fit: dict[str, Any], budget: float) -> list[str]:
    """What a usable ``fit.json`` (``read_fit`` took it) leaves uncertain for a plan at
    ``budget`` FLOPs (0: none): budgets whose best run ended the ladder (an optimum
    that is a bound), constants the runs do not pin down, and how far past the sweep's
    largest budget the law is carried."""
    out = []
    iso = [b for b in fit.get("isoflop") or [] if isinstance(b, dict)]
    clipped = sum(bool(b.get("clipped")) for b in iso)
    if clipped:
        which = "every budget's best run is" if clipped == len(iso) else \
            f"{clipped} of {len(iso)} budgets' best runs are"
        out.append(f"{which} at an end of the sizes swept (clipped): the optimal N there is "
                   "a bound, not found; sweep sizes that bracket it")
    loose = fit.get("law", {}).get("loose") or []
    if loose:
        out.append(f"the runs do not pin down {', '.join(map(str, loose))} (loose: its "
                   "bootstrap interval reaches the fit's bounds or leaves out its value)")
    largest = max((float(b.get("C", 0)) for b in iso), default=0.0)
    if budget and largest and budget > 100 * largest:
        out.append(f"this budget is {budget / largest:.2g}x the sweep's largest "
                   f"({largest:.3g} FLOPs): the law is carried "
                   f"{math.log10(budget / largest):.1f} orders of magnitude past its runs")
    return out


HOFFMANN = Law(1.69, 406.4, 410.7, 0.34, 0.28, "Hoffmann et al. 2022")
BESIROGLU = Law(1.82, 482.01, 2085.43, 0.3478, 0.3658, "Besiroglu et al. 2024")
TOKENS_PER_PARAM = 20  # Chinchilla's rule of thumb


def chinchilla_rule(flops: float) -> tuple[float, float]:
    """(N, D) with D = 20 N and 6 N D = ``flops``."""
    n = math.sqrt(flops / (6 * TOKENS_PER_PARAM))
    return n, TOKENS_PER_PARAM * n


# ---- fits ----------------------------------------------------------------------------------

def isoflop_optimum(ns: Sequence[float] | Any, losses: Sequence[float] | Any) -> tuple[float, float]:
    """A parabola of loss in log N through one budget's runs: (N at its minimum, the loss
    there). Needs 3 runs or more; the minimum is clipped to the runs' range when the
    parabola opens downwards or its vertex falls outside."""
    x, y = np.log(np.asarray(ns, float)), np.asarray(losses, float)
    c2, c1, c0 = np.polyfit(x, y, 2)
    if c2 <= 0:
        i = int(np.argmin(y))
        return float(ns[i]), float(y[i])
    xm = float(np.clip(-c1 / (2 * c2), x.min(), x.max()))
    return math.exp(xm), float(c2 * xm * xm + c1 * xm + c0)


def power_law(xs: Sequence[float] | Any, ys: Sequence[float] | Any) -> tuple[float, float]:
    """(k, exponent) of ``y = k x**exponent``, least squares in log-log."""
    slope, intercept = np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)
    return float(math.exp(intercept)), float(slope)


# a, b, e, alpha, beta: exponents that keep the law a decreasing power law (a fit to few or
# noisy runs otherwise wanders to negative exponents that underflow)
BOUNDS = [(-10.0, 50.0), (-10.0, 50.0), (-5.0, 5.0), (0.0, 3.0), (0.0, 3.0)]
GRID = list(itertools.product((0, 5, 10, 15, 20), (0, 5, 10, 15, 20), (-1, -0.5, 0, 0.5, 1),
                              (0, 0.5, 1, 1.5), (0, 0.5, 1, 1.5)))  # a, b, e, alpha, beta


def fit_law(ns: Sequence[float] | Any, ds: Sequence[float] | Any, losses: Sequence[float] | Any,
            delta: float = 1e-3, starts: Sequence[Sequence[float] | Any] | None = None) -> Law:
    """Hoffmann's approach 3 on ``(N, D, L)`` triples: the Huber loss (``delta``) between log
    L and log(exp(e) + exp(a - alpha log N) + exp(b - beta log D)), minimised by L-BFGS from
    every point of a grid (or from ``starts``) within ``BOUNDS``, the best minimum kept.
    Analytic gradients."""
    from scipy.optimize import minimize
    log_n, log_d = np.log(np.asarray(ns, float)), np.log(np.asarray(ds, float))
    log_l = np.log(np.asarray(losses, float))

    def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
        a, b, e, alpha, beta = p
        terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
        top = terms.max(axis=0)
        w = np.exp(terms - top)
        pred = top + np.log(w.sum(axis=0))
        w /= w.sum(axis=0)                       # d pred / d term
        r = pred - log_l
        g = np.clip(r, -delta, delta)            # d huber / d r
        value = np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
        grad = np.array([(g * w[0]).sum(), (g * w[1]).sum(), (g * w[2]).sum(),
                         -(g * w[0] * log_n).sum(), -(g * w[1] * log_d).sum()])
        return float(value.sum()), grad

    best = None
    for start in starts or GRID:
        res = minimize(objective, np.asarray(start, float), jac=True, method="L-BFGS-B",
                       bounds=BOUNDS)
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    a, b, e, alpha, beta = best.x
    return Law(math.exp(e), math.exp(a), math.exp(b), float(alpha), float(beta), "fitted")


def loose(law: Law, intervals: dict[str, tuple[float, float]]) -> list[str]:
    """The constants whose bootstrap interval says little: it reaches a bound of the fit
    (``BOUNDS``: resampled fits stopped there, not at a minimum) or leaves out the value
    fitted to all the runs. Too few or too noisy runs to pin them down."""
    edges = dict(zip(("A", "B", "E", "alpha", "beta"),
                     [(math.exp(lo), math.exp(hi)) for lo, hi in BOUNDS[:3]] + BOUNDS[3:],
                     strict=True))
    def near(a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)

    out = []
    for k, (lo, hi) in intervals.items():
        value, (low, high) = getattr(law, k), edges[k]
        at_edge = any(near(v, edge) for v in (lo, hi) for edge in (low, high))
        inside = lo <= value <= hi or near(value, lo) or near(value, hi)
        if at_edge or not inside:
            out.append(k)
    return out


def law_params(law: Law) -> list[float]:
    """``fit_law``'s parametrisation (a, b, e, alpha, beta) of a law: a start for another fit."""
    return [math.log(max(v, 1e-300)) for v in (law.A, law.B, law.E)] + [law.alpha, law.beta]


def bootstrap(ns: Sequence[float] | Any, ds: Sequence[float] | Any, losses: Sequence[float] | Any, fit: Law,
              samples: int = 40, seed: int = 0) -> dict[str, tuple[float, float]]:
    """5-95% intervals of the fitted constants over ``samples`` resamplings of the runs
    (each refit from the full fit and a few points of the grid); empty when the runs are
    too few to resample (fewer than 5 distinct ones)."""
    rng = np.random.default_rng(seed)
    starts = [law_params(fit), *GRID[::97]]
    n, d, loss = (np.asarray(v, float) for v in (ns, ds, losses))
    fits = []
    for _ in range(samples):
        i = rng.integers(0, len(n), len(n))
        if len(set(zip(n[i], d[i], strict=True))) < 5:  # too few distinct runs to fit 5 constants
            continue
        fits.append(fit_law(n[i], d[i], loss[i], starts=starts))
    out: dict[str, tuple[float, float]] = {}
    if not fits:
        return out
    for k in ("E", "A", "B", "alpha", "beta"):
        vals = np.array([getattr(f, k) for f in fits])
        out[k] = (float(np.percentile(vals, 5)), float(np.percentile(vals, 95)))
    return out
