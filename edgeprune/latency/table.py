"""A model's latency table on one target: every conv / dense layer timed alone at its real shape as its output
channels (and, where pruning changes it, its input channels) sweep, per precision, plus the whole model's file;
from it the counts where each layer's latency steps, and a prediction of any pruned variant's latency.

Prediction: the whole file's time minus the layers' own time at full width is the rest (pooling, activations,
per-op overhead), held fixed; a layer at (cin, cout) costs out_curve(cout) x in_curve(cin) / full (GEMM time is
a product of the tiles along each dimension). The table says how well that held on the exported files it was
checked against.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

from edgeprune.errors import EdgepruneError
from edgeprune.latency import steps
from edgeprune.latency.layer_grid import Geometry, file_name

MAX_POINTS = 48  # per sweep: wider layers are sampled on a stride (plus their full width)


def sweep(full: int, max_points: int = MAX_POINTS) -> list[int]:
    """The channel counts timed for a layer of `full` channels: all of them up to max_points, else a stride."""
    stride = max(1, math.ceil(full / max_points))
    return sorted(set(range(stride, full + 1, stride)) | {1, full})


def sweep_points(geoms: dict[str, Geometry], out_layers: list[str], in_layers: list[str],
                 max_points: int = MAX_POINTS) -> dict[str, list]:
    """(cin, cout) points per layer: output sweeps at full input for `out_layers` (their channels are pruned),
    input sweeps at full output for `in_layers` (their input is), and every layer at full width."""
    points: dict[str, set[tuple[int, int]]] = {}
    for name, g in geoms.items():
        pts = {(g.cin, g.cout)}
        if name in out_layers:
            pts |= {(g.cin, c) for c in sweep(g.cout, max_points)}
        if name in in_layers:
            pts |= {(c, g.cout) for c in sweep(g.cin, max_points)}
        points[name] = pts
    return {name: sorted(p) for name, p in points.items()}


def assemble(geoms: dict[str, Geometry], timed: dict[str, Any], precisions: tuple[str, ...],
             whole: dict[str, str], device: dict[str, Any], model: str) -> dict[str, Any]:
    """The table from a timed grid (`python -m benchmarks.grid`'s JSON): per precision, per layer, the output and
    input curves {count: ms} and the full-width time; the whole file's time and the rest it leaves."""
    files = timed["files"]
    doc: dict[str, Any] = {"format": 1, "model": model, "device": device, "created": time.strftime("%Y-%m-%d"),
                           "geometry": {n: g.to_json() for n, g in geoms.items()}, "precisions": {}}
    for q in precisions:
        layers = {}
        for name, g in geoms.items():
            def ms(cin: int, cout: int) -> float | None:
                entry = files.get(file_name(name, cin, cout, q))
                return None if entry is None else entry["ms"]

            out_curve = {c: t for c in range(1, g.cout + 1) if (t := ms(g.cin, c)) is not None}
            in_curve = {c: t for c in range(1, g.cin + 1) if (t := ms(c, g.cout)) is not None}
            layers[name] = {"full_ms": ms(g.cin, g.cout), "out": out_curve, "in": in_curve}
        whole_ms = files[whole[q]]["ms"]
        rest = whole_ms - sum(v["full_ms"] for v in layers.values())
        doc["precisions"][q] = {"layers": layers, "whole_ms": whole_ms, "rest_ms": rest}
    return doc


def layer_ms(entry: dict[str, Any], cin: int, cout: int) -> float:
    """One layer's predicted time at (cin, cout): the output curve at cout times the input curve's ratio at cin."""
    full = entry["full_ms"]
    out = steps.interpolate(_ints(entry["out"]), cout) if len(entry["out"]) > 1 else full
    ratio = steps.interpolate(_ints(entry["in"]), cin) / full if len(entry["in"]) > 1 else 1.0
    return out * ratio


def channel_counts(model: Any, framework: str) -> dict[str, tuple[int, int]]:
    """(in, out) channels of every conv and dense layer, from the kernels (either twin; names are shared)."""
    if framework == "torch":
        import torch

        out = {}
        for name, m in model.named_modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)):
                out[name] = (m.in_channels, m.out_channels)
            elif isinstance(m, torch.nn.Linear):
                out[name] = (m.in_features, m.out_features)
        return out
    out = {}
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and type(layer).__name__ in ("Conv1D", "Conv2D", "Dense"):
            shape = tuple(int(d) for d in kernel.shape)
            out[layer.name] = (shape[-2], shape[-1])
    return out


def predict(table: dict[str, Any], precision: str, counts: dict[str, tuple[int, int]]) -> float:
    """A variant's predicted time (ms) from its layers' real (in, out) channel counts (`channel_counts`)."""
    if precision not in table["precisions"]:
        raise EdgepruneError(f"the latency table has no {precision} (it has {', '.join(table['precisions'])})")
    t = table["precisions"][precision]
    missing = sorted(set(t["layers"]) - set(counts))
    if missing:
        raise EdgepruneError(f"the model has no layers {missing} of the latency table; build the table for it")
    return t["rest_ms"] + sum(layer_ms(entry, *counts[n]) for n, entry in t["layers"].items())


def count_curve(table: dict[str, Any], precision: str, layers: str | Sequence[str]) -> dict[int, float]:
    """What a layer's output count costs on the target, count by count: its own output curve plus the input curves
    of the layers it feeds (a conv's count is the next conv's input width, often where the time steps). `layers`
    may be a coupled group (members of a residual add keep one count): every member's own curve, plus each layer
    any member feeds, once."""
    t = table["precisions"][precision]["layers"]
    names = [layers] if isinstance(layers, str) else list(layers)
    members = [n for n in names if n in t]
    if not members:
        raise EdgepruneError(f"layer '{names[0]}' is not in the latency table" if len(names) == 1 else
                             f"none of the coupled layers {', '.join(names)} is in the latency table")
    owns = {n: _ints(t[n]["out"]) for n in members}
    swept = next((own for own in owns.values() if len(own) > 1), None)
    counts = sorted(swept) if swept else [int(max(next(iter(owns.values())) or {1: 0}))]
    curve = {k: 0.0 for k in counts}
    for n, own in owns.items():
        curve = {k: v + (steps.interpolate(own, k) if len(own) > 1 else t[n]["full_ms"]) for k, v in curve.items()}
    consumers: dict[str, float] = {}
    for n in members:
        for consumer, per in (table.get("feeds") or {}).get(n, {}).items():
            if consumer not in names:
                consumers.setdefault(consumer, per)
    for consumer, per in consumers.items():
        inc = _ints(t[consumer]["in"]) if consumer in t else {}
        if len(inc) > 1:
            curve = {k: v + steps.interpolate(inc, k * per) for k, v in curve.items()}
    return curve


MIN_STEP = 0.01  # of the whole file's time: a smaller rise is not a step worth a channel count


def steps_of(table: dict[str, Any], precision: str, layer: str | Sequence[str], tolerance: float = 0.05
             ) -> list[int]:
    """The output counts worth keeping for a layer (or a coupled group) on this target: the last count of each
    stair of `count_curve` (its own time and that of the layers it feeds); a rise under 1 % of the whole file's
    time is noise, not a step."""
    curve = count_curve(table, precision, layer)
    min_ms = MIN_STEP * table["precisions"][precision].get("whole_ms", 0.0)
    return steps.step_counts(curve, tolerance, min_ms) if len(curve) > 1 else sorted(curve)


def _ints(curve: dict[Any, float]) -> dict[int, float]:
    return {int(k): float(v) for k, v in curve.items()}


def save(table: dict[str, Any], path: Path) -> Path:
    from edgeprune.fileio import write_json

    write_json(Path(path), table, force=True)
    return Path(path)


def load(path: Path) -> dict[str, Any]:
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise EdgepruneError(f"{path}: not a latency table ({str(exc).splitlines()[0]})") from None
    if not isinstance(table, dict) or table.get("format") != 1 or "precisions" not in table:
        raise EdgepruneError(f"{path}: not a latency table (edgeprune latency-table writes them)")
    return table
