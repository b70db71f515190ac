"""From scores to keep-lists: how much of each layer stays.

Targets: explicit keep-lists; one ratio for every scored layer; a ratio per layer; the criterion's own keep rule
(passive); or a budget, a fraction of the parent's parameters or MACs to keep, met within a tolerance of one
percentage point of the parent (e.g. params=0.5 gives 49-51 % of the parent's parameters).
`round_to` keeps channel counts a multiple of N (SIMD widths). Ratios count channels removed, as Torch-Pruning's
do; the per-layer table that `prune` prints shows what that means in parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.scoring import Scores, ranked_keep


@dataclass
class Target:
    """What to prune to; exactly one of keep / ratio / layer_ratios / rule / budget is set."""

    keep: dict[str, list[int]] | None = None
    ratio: float | None = None
    layer_ratios: dict[str, float] = field(default_factory=dict)
    rule: bool = False
    budget: tuple[str, float] | None = None  # ("params" | "macs" | "latency", fraction of the parent to keep)
    round_to: int = 1
    # --round-to auto: the counts where the target's latency steps, per group name, or a function of a coupled
    # group's members (prune() asks it once the groups are known; members share one count)
    steps: dict[str, list[int]] | Callable[[tuple[str, ...]], list[int] | None] | None = None
    # what a latency budget predicts with: (predict(model, framework) -> ms, what it is, e.g. "int8 on desktop")
    latency: tuple[Callable[[Any, str], float], str] | None = None
    tolerance: float = 0.01
    global_ranking: bool = False  # with `ratio`: one ranking over every scored channel instead of per layer

    def describe(self) -> str:
        if self.keep is not None:
            return "explicit keep-lists"
        if self.ratio is not None:
            return f"ratio {self.ratio} " + ("over all scored channels (global ranking)" if self.global_ranking
                                             else "per layer")
        if self.layer_ratios:
            return "per-layer ratios " + ", ".join(f"{k}={v}" for k, v in self.layer_ratios.items())
        if self.rule:
            return "the criterion's own keep rule"
        extra = f" (predicted, {self.latency[1]})" if self.budget[0] == "latency" and self.latency else ""
        return f"budget {self.budget[0]}={self.budget[1]}{extra}"


def _check_ratio(r: float, where: str) -> float:
    if not 0 <= r < 1:
        raise EdgepruneError(f"{where}: ratio {r} is outside [0, 1)")
    return float(r)


def parse_budget(text: str) -> tuple[str, float]:
    """'params=0.5', 'macs=0.6' or 'latency=0.5' -> (kind, fraction kept)."""
    kind, _, value = text.partition("=")
    if kind not in ("params", "macs", "latency") or not value:
        raise EdgepruneError(f"budget '{text}': expected params=F, macs=F or latency=F with F the fraction to keep, "
                             "e.g. params=0.6")
    try:
        fraction = float(value)
    except ValueError as exc:
        raise EdgepruneError(f"budget '{text}': '{value}' is not a number") from exc
    if not 0 < fraction < 1:
        raise EdgepruneError(f"budget '{text}': the fraction to keep must be in (0, 1)")
    return kind, fraction


def _next_step(count: int, steps: list[int], channels: int) -> int:
    """The smallest count worth keeping at or above `count` (the end of its latency stair), at most `channels`."""
    above = [s for s in sorted(steps) if count <= s <= channels]
    return above[0] if above else channels


def _round_keep(keep: list[int], order: np.ndarray, channels: int, round_to: int,
                steps: list[int] | None = None) -> list[int]:
    """Grow a keep-list to a multiple of round_to, or to the next of `steps` (counts where the target's latency
    steps), with the next-best channels (order: best first)."""
    if steps:
        want = _next_step(len(keep), steps, channels)
    else:
        want = min(channels, int(np.ceil(len(keep) / round_to) * round_to))
    extra = [int(i) for i in order if int(i) not in set(keep)][: want - len(keep)]
    return sorted(keep + extra)


def resolve(target: Target, scores: Scores | None, channels: dict[str, int],
            measure: Callable[[dict[str, list[int]]], dict[str, float]] | None = None) -> dict[str, list[int]]:
    """Keep-lists per layer for `target`. `measure(keep)` -> {"params", "macs"} (and "latency", predicted, for a
    latency budget) is needed for budgets. With `target.steps`, every count is then grown to the target's next
    latency step with the next-best channels (the same time, more channels)."""
    keep = _resolve(target, scores, channels, measure)
    if not target.steps or target.keep is not None:
        return keep
    return {n: _round_keep(k, np.argsort(-scores.layers[n].scores, kind="stable"), channels[n], 1,
                           target.steps.get(n)) for n, k in keep.items()}


def _resolve(target: Target, scores: Scores | None, channels: dict[str, int],
             measure: Callable[[dict[str, list[int]]], dict[str, float]] | None = None) -> dict[str, list[int]]:
    if target.keep is not None:
        for layer, keep in target.keep.items():
            if layer not in channels:
                raise EdgepruneError(f"layer '{layer}' not found; prunable layers: {', '.join(channels)}")
        return {k: sorted(int(i) for i in v) for k, v in target.keep.items()}
    if scores is None:
        raise EdgepruneError(f"pruning to {target.describe()} needs scores (--scores FILE or --criterion NAME)")
    for layer in scores.layers:
        if layer not in channels:
            raise EdgepruneError(f"scores name layer '{layer}', which the model does not have ({', '.join(channels)})")
    if target.rule:
        missing = [n for n, s in scores.layers.items() if s.keep is None]
        if missing:
            raise EdgepruneError(f"criterion '{scores.criterion}' has no keep rule of its own; give --ratio or --budget")
        return {n: _round_keep(list(s.keep), np.argsort(-s.scores, kind="stable"), len(s.scores), target.round_to)
                for n, s in scores.layers.items()}
    if target.ratio is not None and target.global_ranking:
        if target.layer_ratios:
            raise EdgepruneError("a global ranking takes one ratio, not per-layer ratios")
        return _global_keep(scores, _check_ratio(target.ratio, "global"), target.round_to)
    if target.ratio is not None or target.layer_ratios:
        for layer in target.layer_ratios:
            if layer not in scores.layers:
                raise EdgepruneError(f"layer '{layer}' has no scores; scored layers: {', '.join(scores.layers)}")
        out = {}
        for name, s in scores.layers.items():
            r = target.layer_ratios.get(name, target.ratio)
            if r is None:
                continue
            out[name] = ranked_keep(s.scores, _check_ratio(r, name), target.round_to)
        return out
    if target.budget is not None:
        if measure is None:
            raise EdgepruneError("a budget target needs a way to measure the pruned model")
        if target.budget[0] == "latency":
            if target.latency is None:
                raise EdgepruneError("a latency budget needs the target's latency table (give --device)")
            return _meet_latency(target, scores, measure)
        return _meet_budget(target, scores, measure)
    raise EdgepruneError("no pruning target: give --ratio, --layer-ratio, --rule, --keep or --budget")


def _global_keep(scores: Scores, ratio: float, round_to: int) -> dict[str, list[int]]:
    """Remove the floor(ratio * total) lowest-scored channels across every scored layer (scores must be comparable
    across layers, as CMC-ASP's ratios are), never a layer's last channel; NaN scores go first; ties by layer order
    then index."""
    names = list(scores.layers)
    items = [(float(v) if np.isfinite(v) else -np.inf, li, ci)
             for li, name in enumerate(names) for ci, v in enumerate(scores.layers[name].scores)]
    remove = int(np.floor(ratio * len(items) + 1e-9))
    left = {name: scores.layers[name].channels for name in names}
    removed: dict[str, set[int]] = {name: set() for name in names}
    for _, li, ci in sorted(items):
        if remove == 0:
            break
        if left[names[li]] > 1:
            removed[names[li]].add(ci)
            left[names[li]] -= 1
            remove -= 1
    keep = {}
    for name in names:
        kept = [i for i in range(scores.layers[name].channels) if i not in removed[name]]
        keep[name] = _round_keep(kept, np.argsort(-scores.layers[name].scores, kind="stable"),
                                 scores.layers[name].channels, round_to)
    return keep


def _top(scores: np.ndarray, k: int) -> list[int]:
    return sorted(int(i) for i in np.argsort(-scores, kind="stable")[:k])


def _meet_budget(target: Target, scores: Scores, measure) -> dict[str, list[int]]:
    """Per-layer counts (best channels by score) whose params or MACs are within `tolerance` (absolute, as a
    fraction of the parent) of the budget: a uniform ratio by bisection, then a local search over +-1 moves."""
    kind, fraction = target.budget
    sizes = {n: len(s.scores) for n, s in scores.layers.items()}
    cache: dict[tuple[int, ...], float] = {}

    def value(counts: tuple[int, ...]) -> float:
        if counts not in cache:
            keep = {n: _top(scores.layers[n].scores, c) for n, c in zip(sizes, counts)}
            cache[counts] = measure(keep)[kind]
        return cache[counts]

    full = value(tuple(sizes.values()))
    goal, band = fraction * full, target.tolerance * full
    floor = value(tuple(1 for _ in sizes))
    if floor > goal + band:
        raise EdgepruneError(
            f"budget {kind}={fraction} cannot be met: one channel per scored layer still leaves "
            f"{floor / full:.1%} of the {kind}; score more layers or ask for less"
        )

    def uniform(r: float) -> tuple[int, ...]:
        return tuple(max(1, int(round(c * (1 - r)))) for c in sizes.values())

    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if value(uniform(mid)) >= goal else (lo, mid)
    best = uniform(lo)
    n = len(sizes)
    moves = [tuple(d if j == i else 0 for j in range(n)) for i in range(n) for d in (-1, 1)]
    moves += [tuple(1 if j == i else -1 if j == k else 0 for j in range(n)) for i in range(n) for k in range(n) if i != k]
    while abs(value(best) - goal) > band:
        options = [tuple(c + d for c, d in zip(best, m)) for m in moves]
        options = [o for o in options if all(1 <= c <= s for c, s in zip(o, sizes.values()))]
        nxt = min(options, key=lambda o: abs(value(o) - goal), default=best)
        if abs(value(nxt) - goal) >= abs(value(best) - goal):
            break
        best = nxt
    if abs(value(best) - goal) > band:
        raise EdgepruneError(
            f"budget {kind}={fraction} cannot be met within {target.tolerance:.0%}: the closest is "
            f"{value(best) / full:.2%} of the parent; add a finer-grained layer (e.g. a dense layer) to the scores"
        )
    keep = {name: _top(scores.layers[name].scores, c) for name, c in zip(sizes, best)}
    if target.round_to > 1:
        keep = {name: _round_keep(k, np.argsort(-scores.layers[name].scores, kind="stable"), sizes[name], target.round_to)
                for name, k in keep.items()}
    return keep


def _meet_latency(target: Target, scores: Scores, measure) -> dict[str, list[int]]:
    """The most channels (best by score; counts on the target's latency steps when known) whose PREDICTED latency
    is at most the budget's fraction of the parent's: one uniform ratio, by bisection. The prediction is checked
    afterwards by timing the exported file; here it is only what the table says."""
    _, fraction = target.budget
    sizes = {n: len(s.scores) for n, s in scores.layers.items()}
    steps = target.steps or {}

    def counts(r: float) -> tuple[int, ...]:
        out = []
        for n, c in sizes.items():
            k = max(1, int(np.ceil(c * (1 - r) - 1e-9)))
            out.append(_next_step(k, steps[n], c) if steps.get(n) else k)
        return tuple(out)

    cache: dict[tuple[int, ...], float] = {}

    def value(cs: tuple[int, ...]) -> float:
        if cs not in cache:
            cache[cs] = measure({n: _top(scores.layers[n].scores, c) for n, c in zip(sizes, cs)})["latency"]
        return cache[cs]

    full = value(tuple(sizes.values()))
    goal = fraction * full
    fewest = value(counts(1.0))
    if fewest > goal:
        raise EdgepruneError(f"budget latency={fraction} cannot be met: the fewest channels the target's steps allow "
                             f"still take {fewest / full:.1%} of the parent's predicted latency "
                             f"({fewest:.3f} of {full:.3f} ms); score more layers or ask for less")
    lo, hi = 0.0, 1.0  # value(counts(hi)) <= goal always
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if value(counts(mid)) <= goal else (mid, hi)
    return {name: _top(scores.layers[name].scores, c) for name, c in zip(sizes, counts(hi))}
