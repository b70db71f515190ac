"""Channel counts chosen by the latency table for a MAC budget: every pruned layer at the END of one of its
measured stairs (no channels paid for and left unused) or anywhere on its lowest stair (all those counts cost the
same); among the combinations within `slack` (5 %) of the most MACs the budget allows, the one with the lowest
predicted latency. Minimising latency alone would cut to one channel wherever that is a step cheaper; the budget
is the user's statement of how much compute the task needs, so the choice spends it. Stair ends alone can be too
coarse for that: on this x86 at int8 the DCASE conv1's ends are 1, 8 and 16, and 8/16/16 is just over the
C1+C2+C3 budget, so ends alone gave 1/16/32 (a quarter of the budget)."""

from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.latency.layer_grid import Geometry
from edgeprune.latency.steps import stairs
from edgeprune.latency.table import channel_counts, steps_of


def _stair_levels(curve: dict[Any, float], tolerance: float) -> dict[int, float]:
    """Every measured count mapped to its stair's level (median time); a drop starts a stair too, so a wider count
    that runs faster is priced as it runs."""
    c = {int(k): float(v) for k, v in curve.items()}
    if len(c) < 2:
        return c
    out = {}
    for first, last, level in stairs(c, tolerance, drops=True):
        out.update({n: level for n in c if first <= n <= last})
    return out


def _level(levels: dict[int, float], count: float) -> float:
    """The stair level at a count: that of the smallest measured count at or above it (a count between two
    measured ones runs on the upper one's tiles)."""
    above = [n for n in sorted(levels) if n >= count]
    return levels[above[0]] if above else levels[max(levels)]


class Pricer:
    """MACs and stair-read predicted latency (ms) of any counts of `layers` (the others kept whole), without surgery:
    widths follow from the layers' geometry and how each pruned layer feeds the next (one real cut per layer finds
    that when the table was built without it)."""

    def __init__(self, table: dict[str, Any], precision: str, model: Any, framework: str, arch: dict[str, Any],
                 layers: list[str], tolerance: float = 0.05) -> None:
        from edgeprune.models.measure import measure
        from edgeprune.pruning.api import apply_keep

        self.t = table["precisions"][precision]
        self.geoms = {n: Geometry(**{**g, **{k: tuple(v) for k, v in g.items() if isinstance(v, list)}})
                      for n, g in table["geometry"].items()}
        self.full = full = channel_counts(model, framework)
        self.feeds: dict[str, tuple[str, float]] = {}  # consumer -> (pruned layer feeding it, inputs per channel)
        for n in layers:
            fed = (table.get("feeds") or {}).get(n)
            if fed is None:  # a table built without them: one real cut tells
                child, _ = apply_keep(model, framework, arch, {n: list(range(max(1, full[n][1] // 2)))})
                fed = {c: full[c][0] / full[n][1] for c, (cin, _) in channel_counts(child, framework).items()
                       if c != n and cin != full[c][0]}
            self.feeds.update({consumer: (n, per) for consumer, per in fed.items()})
        self.levels = {n: (_stair_levels(e["out"], tolerance), _stair_levels(e["in"], tolerance), e["full_ms"])
                       for n, e in self.t["layers"].items()}
        base_macs = sum(g.macs(g.cin, g.cout) for g in self.geoms.values())
        self.offset = measure(model, framework, arch)["macs"] - base_macs  # MACs outside the grid's layers

    def widths(self, counts: dict[str, int]) -> dict[str, tuple[int, int]]:
        out = {}
        for name, (cin, cout) in self.full.items():
            if name in self.feeds:
                src, per = self.feeds[name]
                cin = int(round(counts.get(src, self.full[src][1]) * per))
            out[name] = (cin, counts.get(name, cout))
        return out

    def __call__(self, counts: dict[str, int]) -> tuple[float, float]:
        """(MACs, predicted ms) of the model cut to `counts`."""
        w = self.widths(counts)
        macs = self.offset + sum(g.macs(*w[n]) for n, g in self.geoms.items())
        ms = self.t["rest_ms"]
        for n, (out_lv, in_lv, full_ms) in self.levels.items():
            cin, cout = w[n]
            out_ms = _level(out_lv, cout) if len(out_lv) > 1 else full_ms
            ms += out_ms * (_level(in_lv, cin) / full_ms if len(in_lv) > 1 else 1.0)
        return macs, ms


def _fits(priced: Callable[[dict[str, int]], tuple[float, float]], layers: list[str], options: list[list[int]],
          macs_budget: float, limit: int) -> list[tuple[float, float, tuple[int, ...]]]:
    """(MACs, predicted ms, counts) of every combination of `options` within the budget."""
    if np.prod([len(o) for o in options], dtype=np.int64) > limit:
        raise EdgepruneError(f"too many count combinations for {layers} (at most {limit})")
    fits = []
    for combo in itertools.product(*options):
        macs, ms = priced(dict(zip(layers, combo)))
        if macs <= macs_budget:
            fits.append((macs, ms, combo))
    return fits


def best_within(priced: Callable[[dict[str, int]], tuple[float, float]], layers: list[str],
                options: list[list[int]], macs_budget: float, slack: float = 0.05, limit: int = 200_000,
                floor_macs: float | None = None) -> dict[str, int] | None:
    """Among the combinations of `options` (one list of counts per layer) within the budget and within `slack` of
    the most MACs they allow (or at least `floor_macs`), the lowest predicted latency (ties: more MACs, then more
    channels); None if none fit."""
    return _pick(_fits(priced, layers, options, macs_budget, limit), layers, slack, floor_macs)


def _pick(fits: list[tuple[float, float, tuple[int, ...]]], layers: list[str], slack: float,
          floor_macs: float | None) -> dict[str, int] | None:
    """`best_within`'s choice among priced combinations (`_fits`)."""
    if not fits:
        return None
    floor = (1 - slack) * max(f[0] for f in fits) if floor_macs is None else floor_macs
    band = [f for f in fits if f[0] >= floor]
    if not band:
        return None
    _, _, combo = min(band, key=lambda f: (round(f[1], 9), -f[0], -sum(f[2])))
    return dict(zip(layers, combo))


def coupled_groups(model: Any, framework: str, arch: dict[str, Any]) -> list[tuple[str, ...]]:
    """The layers that must keep one output count (members of a residual add), found on the model."""
    from edgeprune.pruning.api import example_inputs
    from edgeprune.pruning.groups import find_groups

    examples = example_inputs(framework, arch) if framework == "torch" else None
    return [tuple(g.members) for g in find_groups(model, framework, examples).groups if len(g.members) > 1]


def counts_for_macs(table: dict[str, Any], precision: str, model: Any, framework: str, arch: dict[str, Any],
                    layers: list[str], macs_budget: float, tolerance: float = 0.05, slack: float = 0.05,
                    limit: int = 200_000) -> dict[str, int]:
    """Counts of `layers` (the others kept whole), each at the end of one of its measured stairs or on its lowest
    stair, within the budget and within `slack` of the most MACs it allows: the lowest stair-read predicted latency
    (ties: more MACs, then more channels); when no such combination lands within `slack` of the most MACs any
    counts take under the budget, any counts. A layer coupled to others (a residual add) is chosen with them, on
    the group's stairs, and every member gets its count. Every combination is priced without surgery (`Pricer`); the
    choice is then cut for real and its MACs checked."""
    from edgeprune.models.measure import measure
    from edgeprune.pruning.api import apply_keep

    t = table["precisions"][precision]
    groups = coupled_groups(model, framework, arch)
    units: list[tuple[str, ...]] = []
    for n in layers:
        if not any(n in u for u in units):
            units.append(next((g for g in groups if n in g), (n,)))
    members = [m for u in units for m in u]
    priced = Pricer(table, precision, model, framework, arch, members, tolerance)
    full = priced.full

    def options(unit: tuple[str, ...]) -> list[int]:
        if not any(len(t["layers"].get(m, {}).get("out", {})) > 1 for m in unit):
            return list(range(1, full[unit[0]][1] + 1))
        ends = sorted(set(steps_of(table, precision, unit, tolerance)) | {full[unit[0]][1]})
        return sorted(set(ends) | set(range(1, ends[0] + 1)))

    def spread(chosen: dict[str, int]) -> dict[str, int]:
        return {m: chosen[u[0]] for u in units for m in u}

    leaders = [u[0] for u in units]
    price = lambda c: priced(spread(c))  # noqa: E731
    every = [list(range(1, full[u[0]][1] + 1)) for u in units]
    anywhere = []  # every combination of ANY counts within the budget, when few enough to price them all
    if np.prod([len(o) for o in every], dtype=np.int64) <= limit:
        anywhere = _fits(price, leaders, every, macs_budget, limit)
    floor = (1 - slack) * max(f[0] for f in anywhere) if anywhere else None
    chosen = best_within(price, leaders, [options(u) for u in units], macs_budget, slack, limit, floor)
    if chosen is None:  # no stair end lands near the budget (a lowest stair of one count): any counts
        chosen = _pick(anywhere, leaders, slack, None)
    if chosen is None:
        raise EdgepruneError(f"no counts of {layers} on the measured stairs fit {macs_budget:,.0f} MACs")
    counts = spread(chosen)
    child, _ = apply_keep(model, framework, arch, {n: list(range(c)) for n, c in counts.items()})
    real = measure(child, framework, arch)["macs"]
    if real > macs_budget:
        raise EdgepruneError(f"the chosen counts {counts} take {real:,} MACs, over the budget {macs_budget:,.0f} "
                             "(the geometry's MAC count disagrees with the model's)")
    return counts
