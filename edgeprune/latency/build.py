"""`edgeprune latency-table`: build a model's latency table on a target, cached per device and model.

Here: the layer geometry (PyTorch twin), the single-layer grid and the whole model's files (every precision).
On the target (`devices/` runners: this machine, or a board over ssh): `python -m benchmarks.grid` times them.
Here again: the table, saved under runs/latency/<device>/<model>.json, where a second call finds it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeprune import checkpoint
from edgeprune.errors import EdgepruneError
from edgeprune.latency import table as tables
from edgeprune.latency.layer_grid import GRID_PRECISIONS, build_grid, geometry

CACHE = Path("runs") / "latency"
# 3: layers built as the export writes them (one-channel fold, padding in the conv); older tables are not reused
GRID_VERSION = 3


def model_key(spec: dict[str, Any]) -> str:
    """The model's architecture and transforms (what sets its shapes), hashed: weights do not change latency."""
    text = json.dumps({"arch": spec["arch"], "transforms": [t.get("params") for t in spec.get("transforms", [])],
                       "grid": GRID_VERSION}, sort_keys=True, default=str)
    return f"{spec['arch']['model']}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def device_key(fingerprint: dict[str, Any]) -> str:
    """What makes two timings comparable: the CPU, its architecture, core count and the runtime versions."""
    text = json.dumps({k: fingerprint.get(k) for k in ("cpu", "machine", "cores", "runtimes")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def feeds(ckpt: checkpoint.Checkpoint, prunable: list[str]) -> dict[str, dict[str, float]]:
    """For each prunable layer, the layers its output feeds (their input width changes when it alone is cut) and
    how many input channels of theirs each of its channels is (1, or the positions a flatten spreads it over)."""
    from edgeprune.latency.table import channel_counts
    from edgeprune.pruning.api import apply_keep

    full = channel_counts(ckpt.model, "torch")
    out: dict[str, dict[str, float]] = {}
    for n in prunable:
        child, _ = apply_keep(ckpt.model, "torch", ckpt.arch, {n: list(range(max(1, full[n][1] // 2)))})
        out[n] = {c: full[c][0] / full[n][1] for c, (cin, _) in channel_counts(child, "torch").items()
                  if c != n and cin != full[c][0]}
    return out


def build(checkpoint_path: Path, runner: Any, precisions: tuple[str, ...] = ("fp32", "int8"), rounds: int = 8,
          block: int = 30, cache: Path = CACHE, force: bool = False, log: Callable[[str], None] = print,
          layers: list[str] | None = None, max_points: int = tables.MAX_POINTS) -> tuple[dict[str, Any], Path]:
    """The latency table of a checkpoint on the runner's target; from the cache when it holds one for this
    device and model (the device is known once the grid has run there: the cache is keyed by the fingerprint).
    `layers`: sweep only these prunable layers (default all); `max_points`: counts per sweep (a stride above)."""
    from edgeprune.export import export
    from edgeprune.models.registry import input_specs, task_of
    from edgeprune.pruning.api import prunable_channels

    bad = sorted(set(precisions) - set(GRID_PRECISIONS))
    if bad:
        raise EdgepruneError(f"precisions {bad}: the latency grid has {', '.join(GRID_PRECISIONS)}")
    spec = checkpoint.read_spec(Path(checkpoint_path))
    key = model_key(spec)
    if layers is not None or max_points != tables.MAX_POINTS:  # a partial or coarser table is another table
        key += "-" + hashlib.sha256(json.dumps([sorted(layers or []), max_points]).encode()).hexdigest()[:6]
    index = cache / "index.json"  # target name -> device key, so a cached table is found before any timing
    known = json.loads(index.read_text()) if index.is_file() else {}
    if not force and runner.target in known:
        path = cache / known[runner.target] / f"{key}.json"
        if path.is_file():
            table = tables.load(path)
            if set(precisions) <= set(table["precisions"]):
                log(f"[latency] cached: {path}")
                return table, path
    ckpt = checkpoint.load(Path(checkpoint_path), framework="torch")
    shapes = [s.shape for s in input_specs(ckpt.arch, "torch")]
    geoms = geometry(ckpt.model, shapes)
    prunable = [n for n in prunable_channels(ckpt.model, "torch", ckpt.arch) if n in geoms]
    if layers is not None:
        unknown = sorted(set(layers) - set(prunable))
        if unknown:
            raise EdgepruneError(f"layers {unknown} are not prunable layers of this model ({', '.join(prunable)})")
        prunable = [n for n in prunable if n in layers]
    fed = feeds(ckpt, prunable)
    points = tables.sweep_points(geoms, prunable, sorted({c for f in fed.values() for c in f}), max_points)
    log(f"[latency] {sum(len(p) for p in points.values())} single-layer shapes x {len(precisions)} precisions")
    with tempfile.TemporaryDirectory(prefix="edgeprune-latency-") as tmp:
        grid = Path(tmp) / "grid"
        build_grid(geoms, points, grid, precisions, progress=False)
        rng = np.random.default_rng(0)
        calib = {f.name: rng.normal(size=(16, *f.shape)).astype(np.float32) for f in task_of(ckpt.arch).inputs}
        try:  # random inputs: a file that fails parity on them still times like the shipped one
            manifest = export(Path(checkpoint_path), Path(tmp) / "whole", formats="tflite",
                              quant=",".join(precisions), calib=calib, eval_x=calib, force=True, progress=False,
                              name="model")  # the checkpoint's twin, as `edgeprune export` ships it
        except EdgepruneError as exc:
            manifest = getattr(exc, "manifest", None)
            if manifest is None:
                raise
        whole = {}
        for a in manifest["artifacts"]:
            whole[a["precision"]] = f"whole__{a['precision']}.tflite"
            bundle = Path(tmp) / "whole" / "model"
            source = next(p for p in (bundle / a["file"], bundle / "rejected" / a["file"]) if p.exists())
            shutil.copy(source, grid / whole[a["precision"]])
        log(f"[latency] timing {len(list(grid.glob('*.tflite')))} files on {runner.target}")
        timed = runner.time_grid(grid, Path(tmp) / "grid.json", rounds=rounds, block=block)
    table = tables.assemble(geoms, timed, precisions, whole, timed["device"], key)
    table["target"] = runner.target
    table["feeds"] = fed
    dev = device_key(timed["device"])
    path = tables.save(table, cache / dev / f"{key}.json")
    known[runner.target] = dev
    from edgeprune.fileio import write_json

    write_json(index, known, force=True)
    return table, path
