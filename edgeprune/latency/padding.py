"""Which pruned layers to pad back with zero channels on a target, read off the parent's latency table.

A pruned count can sit on a slower stair than a wider one: on the project's x86, XNNPACK's float32 conv takes
0.21 ms at 17 to 31 output channels and 0.16 ms at 32, so the DCASE seed's conv3 = 26 made its float32 file slower
than the parent's. Padding (`pruning.pad`) keeps the function and buys the faster width with zeros. Per precision,
the widths between each pruned count and the parent's with the lowest predicted time (ties: fewer channels) are
chosen, and kept only when they save at least `MIN_STEP` of the whole file's time (less is inside the timing
noise, and costs bytes for nothing).
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeprune.latency.choose import Pricer, coupled_groups
from edgeprune.latency.layer_grid import GRID_PRECISIONS
from edgeprune.latency.table import MIN_STEP

LIMIT = 200_000  # combinations priced one by one; beyond, one unit at a time


def pad_widths(table: dict[str, Any], precision: str, parent: Any, framework: str, arch: dict[str, Any],
               counts: dict[str, int], groups: Sequence[Sequence[str]] = ()) -> dict[str, int]:
    """Per pruned layer (`counts`: its pruned output count), the width to pad it to on this table's target at this
    precision; only layers that change, and nothing when the predicted saving is under MIN_STEP of the file's
    time. `parent`: the unpruned model (its widths bound the padding); `groups`: layers that keep one count."""
    t = table["precisions"][precision]
    if not any(n in t["layers"] for n in counts):
        return {}
    priced = Pricer(table, precision, parent, framework, arch, list(counts))
    units: list[list[str]] = []
    for n in counts:
        if not any(n in u for u in units):
            units.append(next(([m for m in g if m in counts] for g in groups if n in g), [n]))
    options = [list(range(counts[u[0]], priced.full[u[0]][1] + 1)) for u in units]

    def ms(combo: Sequence[int]) -> float:
        return priced({m: c for u, c in zip(units, combo) for m in u})[1]

    def key(combo: Sequence[int]) -> tuple[float, int]:
        return round(ms(combo), 9), sum(combo)

    start = tuple(o[0] for o in options)
    if np.prod([len(o) for o in options], dtype=np.int64) <= LIMIT:
        best = min(itertools.product(*options), key=key)
    else:  # one unit at a time, the others where the last pass left them, until nothing moves
        best = start
        for _ in range(len(units)):
            moved = False
            for i, opts in enumerate(options):
                trial = min((best[:i] + (c,) + best[i + 1:] for c in opts), key=key)
                moved |= trial != best
                best = trial
            if not moved:
                break
    if ms(start) - ms(best) < MIN_STEP * t.get("whole_ms", 0.0):
        return {}
    return {m: c for u, c, c0 in zip(units, best, start) if c != c0 for m in u}


def pad_plan(checkpoint_path: Path, runner: Any, precisions: Sequence[str], framework: str | None = None,
             log: Callable[[str], None] = print) -> dict[str, dict[str, int]]:
    """For a pruned checkpoint, the widths to pad its layers to per precision (fp32, fp16, int8: those the latency
    grid has) on the runner's target, from the PARENT's latency table (built there once, then cached)."""
    from edgeprune import checkpoint
    from edgeprune.latency import build
    from edgeprune.models import build as build_model
    from edgeprune.pruning.pad import parent_keep

    spec = checkpoint.read_spec(Path(checkpoint_path))
    qs = tuple(q for q in precisions if q in GRID_PRECISIONS)
    if not parent_keep(spec) or not qs:
        return {}
    fw = framework or spec["framework"]
    parent = build_model(spec["arch"], fw)
    with tempfile.TemporaryDirectory(prefix="edgeprune-pad-") as tmp:
        checkpoint.save(Path(tmp) / "parent", parent, fw, spec["arch"], spec.get("classes"))
        table, _ = build.build(Path(tmp) / "parent", runner, qs, log=log)
    return plan_from_table(table, spec, parent, fw, qs)  # a cached table may hold more precisions


def plan_from_table(table: dict[str, Any], spec: dict[str, Any], parent: Any, framework: str,
                    precisions: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
    """The widths to pad a pruned checkpoint's layers to (`spec`: its spec), per precision of the parent's `table`
    (or those of `precisions`); `parent`: the unpruned model in `framework`. Coupled layers are found on it and
    keep one width."""
    from edgeprune.latency.table import channel_counts
    from edgeprune.pruning.pad import parent_keep

    groups = coupled_groups(parent, framework, spec["arch"])
    full = channel_counts(parent, framework)
    counts = {n: len(k) for n, k in parent_keep(spec).items() if n in full}
    return {q: w for q in (precisions or table["precisions"])
            if (w := pad_widths(table, q, parent, framework, spec["arch"], counts, groups))}
