"""Which K layers of an N-layer encoder to remove: CoMFLP's coarse search, verification and metric-greedy baseline.

Layers are 1-based (layer l maps hidden state l-1 to hidden state l). A removed set is scored from a similarity
matrix M [(N+1) x (N+1)] (see edgeprune.scoring.layer_similarity) by its maximal contiguous runs [a, b]:
score = mean over runs of M[a-1][b], the similarity of the state entering the run with the state leaving it.
Higher is better. The candidates are then checked on the task metric (`verify`); the original only logs those
metrics, here the best is selected and all are reported. Evaluate on a validation split, never the test set.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable

import numpy as np

from edgeprune.errors import EdgepruneError

MODES = ("beam", "exhaustive", "greedy", "random")
Evaluate = Callable[[tuple[int, ...]], float]


def _check_k(n: int, k: int) -> None:
    if not 1 <= k < n:
        raise EdgepruneError(f"remove K={k} of N={n} layers: K must be at least 1 and below N")


def _check_matrix(matrix) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise EdgepruneError(f"layer search: expected a square (N+1) x (N+1) matrix, got shape {list(m.shape)}")
    if not np.isfinite(m).all():
        raise EdgepruneError("layer search: the similarity matrix has NaN/inf entries; expected finite scores")
    return m


def _score(m: np.ndarray, removed: tuple[int, ...]) -> float:
    """run_score without validation; `removed` sorted, distinct, within 1..N."""
    runs, start = [], removed[0]
    for prev, cur in itertools.pairwise(removed):
        if cur != prev + 1:
            runs.append(m[start - 1, prev])
            start = cur
    runs.append(m[start - 1, removed[-1]])
    return float(np.mean(runs))


def run_score(matrix: np.ndarray, removed: Iterable[int]) -> float:
    """Score of removing the 1-based layers `removed`: mean over contiguous runs [a, b] of matrix[a-1][b]."""
    m = _check_matrix(matrix)
    layers = tuple(sorted({int(x) for x in removed}))
    if not layers:
        raise EdgepruneError("run_score: the removed set is empty; expected at least one 1-based layer")
    n = m.shape[0] - 1
    if layers[0] < 1 or layers[-1] > n:
        raise EdgepruneError(f"run_score: layers {list(layers)} must lie within 1..{n} (1-based; N={n})")
    return _score(m, layers)


def _best(m: np.ndarray, sets: Iterable[tuple[int, ...]], keep: int) -> list[tuple[tuple[int, ...], float]]:
    # ties go to the smaller tuple, so results do not depend on iteration order
    scored = ((s, _score(m, s)) for s in sets)
    return heapq.nsmallest(keep, scored, key=lambda c: (-c[1], c[0]))


def search(matrix: np.ndarray, k: int, mode: str = "beam", beam: int = 10, top: int = 10, seed: int = 0,
           samples: int | None = None) -> list[tuple[tuple[int, ...], float]]:
    """Candidate sets of k layers to remove, best first: [(sorted 1-based layers, score)], at most `top`.

    "beam": widen by one layer at a time, keeping the `beam` best distinct sets; "greedy" is beam 1 (one
    candidate); "exhaustive": all C(N, k) sets; "random": `samples` (default `top`) distinct random sets drawn
    with `seed`, the best `top` of them returned.
    """
    m = _check_matrix(matrix)
    n = m.shape[0] - 1
    _check_k(n, k)
    if mode not in MODES:
        raise EdgepruneError(f"layer search: unknown mode {mode!r}; expected one of {MODES}")
    if beam < 1 or top < 1:
        raise EdgepruneError(f"layer search: beam={beam} and top={top} must both be at least 1")
    if mode == "exhaustive":
        return _best(m, itertools.combinations(range(1, n + 1), k), top)
    if mode == "random":
        want = min(samples if samples is not None else top, math.comb(n, k))
        if want < 1:
            raise EdgepruneError(f"layer search: samples={samples} must be at least 1")
        rng, drawn = np.random.default_rng(seed), set()
        while len(drawn) < want:
            drawn.add(tuple(sorted(int(x) + 1 for x in rng.choice(n, size=k, replace=False))))
        return _best(m, drawn, top)
    width = 1 if mode == "greedy" else beam
    kept: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
    for _ in range(k):
        grown = {tuple(sorted((*s, layer))) for s, _ in kept for layer in range(1, n + 1) if layer not in s}
        kept = _best(m, grown, width)
    return kept[:top]


def _value(evaluate: Evaluate, removed: tuple[int, ...]) -> float:
    value = float(evaluate(removed))
    if math.isnan(value):
        raise EdgepruneError(f"evaluate returned NaN for removed layers {list(removed)}; expected a number")
    return value


def metric_greedy(n_layers: int, k: int, evaluate: Evaluate, lower_is_better: bool = True,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """The metric-greedy baseline: k rounds, each adding the layer whose removal gives the best `evaluate` value.

    `evaluate(removed)` gets the sorted 1-based set. rounds[i] holds the set after i+1 removals, so a smaller K's
    answer is a prefix of a larger K's run. Costs sum_{i<k} (N - i) evaluations; ties go to the lower layer.
    """
    _check_k(n_layers, k)
    sign = 1.0 if lower_is_better else -1.0
    total = sum(n_layers - i for i in range(k))
    removed: tuple[int, ...] = ()
    rounds, done = [], 0
    for _ in range(k):
        tried: dict[str, float] = {}
        for layer in (x for x in range(1, n_layers + 1) if x not in removed):
            tried[str(layer)] = _value(evaluate, tuple(sorted((*removed, layer))))
            done += 1
            if progress is not None:
                progress(done, total)
        pick = min(tried, key=lambda s: (sign * tried[s], int(s)))
        removed = tuple(sorted((*removed, int(pick))))
        rounds.append({"removed": removed, "value": tried[pick], "tried": tried})
    return {"removed": removed, "rounds": rounds, "evaluations": done}


def verify(candidates: Iterable[tuple[tuple[int, ...], float]], evaluate: Evaluate,
           lower_is_better: bool = True) -> dict:
    """Evaluate every (removed, score) candidate from `search`; the best value wins (ties: the earlier candidate)."""
    rows = []
    for removed, score in candidates:
        layers = tuple(sorted(int(x) for x in removed))
        rows.append({"removed": layers, "score": float(score), "value": _value(evaluate, layers)})
    if not rows:
        raise EdgepruneError("verify: no candidates given; expected the (removed, score) pairs from search")
    sign = 1.0 if lower_is_better else -1.0
    best = min(rows, key=lambda r: sign * r["value"])
    return {"best": best["removed"], "value": best["value"], "all": rows}
