"""CMa-FSMC's filter-level search: per-block pruning rates by differential evolution under Deb's feasibility rules.

Each candidate x holds one pruning rate per block. Its objective is how far the rates' shape strays from the
blocks' scores (`allocation_objective`); its violation is how far the achieved FLOPs / parameter reductions miss
their targets beyond a 4e-4 tolerance (`violation`). A candidate with less violation always wins; among equal
violations (e.g. both feasible) the lower objective wins.

DE/rand/1/bin is written here by hand, not taken from scipy.optimize.differential_evolution, because the
authors' rules decide the result: scipy re-draws a component that leaves the bounds (we clip it onto the bound,
as the authors do, so rates at the bound are reachable exactly) and sizes its population as a multiple of the
dimension (here it is given directly). As in the authors' code, a trial that wins replaces its parent at once,
so later members of the same generation already mutate from it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgeprune.errors import EdgepruneError

TOLERANCE = 4e-4  # the authors' slack on each reduction target


def _vector(v, what: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 1 or a.size == 0 or not np.isfinite(a).all():
        raise EdgepruneError(f"allocation_objective: {what} must be a non-empty 1-D array of finite values, "
                             f"got shape {list(a.shape)}")
    if a.sum() == 0:
        raise EdgepruneError(f"allocation_objective: {what} sum to 0; expected a non-zero sum to normalise by")
    return a


def allocation_objective(scores: np.ndarray, rates: np.ndarray) -> float:
    """sum_k | s_k / sum(s) - x_k / sum(x) |: 0 when the rates are proportional to the scores, at most 2."""
    s, x = _vector(scores, "scores"), _vector(rates, "rates")
    if s.shape != x.shape:
        raise EdgepruneError(f"allocation_objective: scores {list(s.shape)} and rates {list(x.shape)} differ; "
                             f"expected one rate per score")
    return float(np.abs(s / s.sum() - x / x.sum()).sum())


def violation(achieved: dict[str, float], targets: dict[str, float], tolerance: float = TOLERANCE) -> float:
    """sum over targets of max(0, |target - achieved| - tolerance); a target of 0 or None is not constrained."""
    if not tolerance >= 0:
        raise EdgepruneError(f"violation: tolerance must be >= 0, got {tolerance}")
    total = 0.0
    for key, target in targets.items():
        if target is None or target == 0:
            continue
        if key not in achieved:
            raise EdgepruneError(f"violation: target {key!r} has no achieved value; expected one of "
                                 f"{sorted(achieved)}")
        total += max(0.0, abs(float(target) - float(achieved[key])) - tolerance)
    return total


def better(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Deb's rules on (violation, objective): does a beat b? Lower violation wins, then lower objective; ties lose."""
    if a[0] != b[0]:
        return a[0] < b[0]
    return a[1] < b[1]


@dataclass
class SearchResult:
    """The best member found; history holds the best (violation, objective) after each generation."""

    x: np.ndarray
    objective: float
    violation: float
    feasible: bool
    evaluations: int
    seconds: float
    history: list[tuple[float, float]] = field(default_factory=list)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check(dim: int, bounds, population: int, iterations: int, f: float, cr: float) -> tuple[float, float]:
    if not _is_int(dim) or dim < 1:
        raise EdgepruneError(f"differential_evolution: dim must be a positive integer, got {dim!r}")
    if not _is_int(population) or population < 4:
        # each member needs three other, distinct members to mutate from
        raise EdgepruneError(f"differential_evolution: population must be an integer >= 4, got {population!r}")
    if not _is_int(iterations) or iterations < 0:
        raise EdgepruneError(f"differential_evolution: iterations must be an integer >= 0, got {iterations!r}")
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise EdgepruneError(f"differential_evolution: bounds must be finite (low, high) with low < high, "
                             f"got {bounds!r}")
    if not 0 < f <= 2:
        raise EdgepruneError(f"differential_evolution: f (the mutation scale) must be in (0, 2], got {f}")
    if not 0 <= cr <= 1:
        raise EdgepruneError(f"differential_evolution: cr (the crossover rate) must be in [0, 1], got {cr}")
    return low, high


def _score(evaluate: Callable[[np.ndarray], tuple[float, float]], x: np.ndarray, count: int) -> tuple[float, float]:
    out = evaluate(x.copy())  # a copy: the callback must not be able to edit the population
    try:
        v, o = (float(t) for t in out)
    except (TypeError, ValueError):
        raise EdgepruneError(f"differential_evolution: evaluation {count} returned {out!r}; expected "
                             f"(violation, objective)") from None
    # a NaN would never win nor lose a comparison and would silently freeze its member
    if not (math.isfinite(v) and math.isfinite(o) and v >= 0):
        raise EdgepruneError(f"differential_evolution: evaluation {count} returned (violation={v}, objective={o}); "
                             f"expected a finite violation >= 0 and a finite objective")
    return v, o


def _best(fits: list[tuple[float, float]]) -> int:
    best = 0
    for j in range(1, len(fits)):
        if better(fits[j], fits[best]):
            best = j
    return best


def differential_evolution(evaluate: Callable[[np.ndarray], tuple[float, float]], dim: int,
                           bounds: tuple[float, float] = (0.1, 0.9), population: int = 50, iterations: int = 100,
                           f: float = 0.5, cr: float = 0.9, seed: int = 0,
                           progress: Callable[[int, tuple[float, float]], None] | None = None) -> SearchResult:
    """Minimise under Deb's rules: evaluate(x) -> (violation, objective), x in [low, high]^dim.

    DE/rand/1/bin: for member i, r1, r2, r3 distinct and != i; mutant x_r1 + f (x_r2 - x_r3) clipped to the
    bounds; each component taken from the mutant with probability cr, one random component always; the trial
    replaces member i if it is better. Deterministic for a given seed. progress(generation, best) after each
    generation, generations counted from 1.
    """
    low, high = _check(dim, bounds, population, iterations, f, cr)
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    pop = rng.uniform(low, high, (population, dim))
    fits = [_score(evaluate, pop[i], i + 1) for i in range(population)]
    count = population
    history = []
    for generation in range(1, iterations + 1):
        for i in range(population):
            others = np.delete(np.arange(population), i)
            r1, r2, r3 = rng.choice(others, 3, replace=False)
            mutant = np.clip(pop[r1] + f * (pop[r2] - pop[r3]), low, high)
            cross = rng.random(dim) < cr
            # textbook j_rand: one component always from the mutant (the authors force one only when none crossed)
            cross[rng.integers(dim)] = True
            trial = np.where(cross, mutant, pop[i])
            count += 1
            fit = _score(evaluate, trial, count)
            if better(fit, fits[i]):
                pop[i], fits[i] = trial, fit
        best = fits[_best(fits)]
        history.append(best)
        if progress is not None:
            progress(generation, best)
    b = _best(fits)
    return SearchResult(x=pop[b].copy(), objective=fits[b][1], violation=fits[b][0], feasible=fits[b][0] == 0,
                        evaluations=count, seconds=time.perf_counter() - start, history=history)
