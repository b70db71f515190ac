"""Does latency follow the cut? The DCASE 2021 1a baseline (Keras twin, as the DCASE table ships it) and its
pruned variants, exported to TFLite float32 and full int8, each timed against the parent in alternating blocks in
one process (1 thread, XNNPACK), beside its MAC cut and the latency table's prediction.

    python -m edgeprune.latency.study --out benchmarks/results/latency_follows_cut

Variants: the seed's C1 (11/16/32) and C1+C2+C3 (11/11/25) counts, and the latency-aware choice for the
C1+C2+C3 MAC budget chosen by `latency.choose.counts_for_macs` from the table's measured steps (conv1, conv2,
conv3) at the precision. Latency does not depend on the weights, so
the parent is the seeded initial model; which channels stay is immaterial here (the DCASE job keeps passive's).
Every file is exported as `edgeprune export` writes it (conv1, over one input channel, folded into a 1x7 conv over
its 7 kernel rows); one more row is the parent exported without that fold, timed against the folded parent.
The findings also give the table's bound: the best predicted latency cut / MAC cut over EVERY combination of counts
within 5 % under the budget, and over every combination within the budget at all (any deeper cut), and a trial of
the export's fold on conv2 (its 7 kernel rows stacked as 7 x C channels, then a 1x7 conv; exact): conv2 alone at
its real shape, folded against plain, paired, at a few input widths.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import checkpoint
from edgeprune.errors import EdgepruneError

UNFOLDED = "baseline (16/16/32), conv1 not folded"
GOAL = 0.8  # the issue's: latency cut at least 0.8 of the MAC cut at the C1+C2+C3 budget
SEED_ROWS = {"baseline (16/16/32)": (16, 16, 32), "C1 (11/16/32)": (11, 16, 32),
             "C1+C2+C3 (11/11/25)": (11, 11, 25)}
LAYERS = ("conv1", "conv2", "conv3")
FOLD_WIDTHS = (4, 8, 16)  # conv2's input channels in the fold trial: a lower tile, one 8-channel block, the parent


def _variant(parent: checkpoint.Checkpoint, counts: tuple[int, ...], out: Path) -> Path:
    from edgeprune.pruning.api import apply_keep
    from edgeprune.pruning.transforms import Transform

    keep = {n: list(range(c)) for n, c in zip(LAYERS, counts)}
    child, _ = apply_keep(parent.model, parent.framework, parent.arch, keep)
    checkpoint.save(out, child, parent.framework, parent.arch, parent.classes, force=True,
                    transforms=[Transform("channels", {"keep": keep}, {"criterion": "first channels (timing)"})])
    return out


def _macs(path: Path) -> int:
    from edgeprune.models.measure import measure

    ckpt = checkpoint.load(path)
    return measure(ckpt.model, ckpt.framework, ckpt.arch)["macs"]


def run(out: Path, rounds: int = 12, block: int = 50) -> str:
    from edgeprune.bench import load_devices
    from edgeprune.latency import build
    from edgeprune.paired import paired_latency
    from edgeprune.latency.choose import counts_for_macs
    from edgeprune.latency.table import channel_counts, predict
    from edgeprune.frameworks import get_adapter
    from edgeprune.models import arch_spec, build as build_model
    from edgeprune.models.registry import task_of
    from edgeprune.results import write_result

    arch = arch_spec("dcase2021_baseline")
    with tempfile.TemporaryDirectory(prefix="edgeprune-study-") as tmp:
        work = Path(tmp)
        get_adapter("keras").seed_everything(0)
        checkpoint.save(work / "parent", build_model(arch, "keras"), "keras", arch, None)
        parent = checkpoint.load(work / "parent")
        runner = load_devices().make_runner("desktop", log=print)
        doc, table_path = build.build(work / "parent", runner, ("fp32", "int8"), layers=list(LAYERS))
        variants = {name: _variant(parent, c, work / name.split(" ")[0]) for name, c in SEED_ROWS.items()}
        budget = _macs(variants["C1+C2+C3 (11/11/25)"])
        bounds = {q: bound(doc, q, parent, budget) for q in ("fp32", "int8")}
        for q in ("fp32", "int8"):
            chosen = counts_for_macs(doc, q, parent.model, parent.framework, parent.arch, list(LAYERS), budget)
            counts = tuple(chosen[n] for n in LAYERS)
            name = f"latency-aware {q} ({'/'.join(map(str, counts))})"
            variants[name] = _variant(parent, counts, work / f"aware-{q}")
        rng = np.random.default_rng(0)
        calib = {f.name: rng.normal(size=(32, *f.shape)).astype(np.float32) for f in task_of(arch).inputs}
        files = {name: _exported(path, work / "export", path.name, calib)
                 for name, path in {"parent": work / "parent", **variants}.items()}
        files[UNFOLDED] = _exported(work / "parent", work / "export", "parent-unfolded", calib, fold_convs=False)
        variants = {UNFOLDED: work / "parent", **variants}
        parent_macs = _macs(work / "parent")
        rows = []
        for name, path in variants.items():
            ckpt = checkpoint.load(path)
            counts = channel_counts(ckpt.model, ckpt.framework)
            macs = _macs(path)
            row: dict[str, Any] = {"model": name, "macs_cut": round(1 - macs / parent_macs, 4)}
            for q in ("fp32", "int8"):
                if name.startswith("latency-aware") and q not in name:
                    continue
                timed = paired_latency(str(files["parent"][q]), str(files[name][q]), rounds=rounds, block=block)
                predicted = None if name == UNFOLDED else predict(doc, q, counts)
                row[f"{q}_ms"] = round(timed["pruned_ms"], 3)
                row[f"{q}_parent_ms"] = round(timed["parent_ms"], 3)
                row[f"{q}_latency_cut"] = round(1 - timed["ratio"], 4)
                row[f"{q}_cut_over_mac_cut"] = round((1 - timed["ratio"]) / row["macs_cut"], 3) \
                    if row["macs_cut"] > 0.01 else None
                if predicted is not None:
                    row[f"{q}_predicted_ms"] = round(predicted, 3)
                    row[f"{q}_prediction_error"] = round(predicted / timed["pruned_ms"] - 1, 4)
            rows.append(row)
        trial = fold_trial(doc["geometry"]["conv2"], FOLD_WIDTHS, work / "fold", rounds, block)
        steps = {q: {n: doc["precisions"][q]["layers"][n]["out"] for n in LAYERS} for q in ("fp32", "int8")}
        method = (f"paired_latency: {rounds} rounds of {block} invokes alternating with the parent's file, 1 thread, "
                  f"XNNPACK; latency table {table_path.name} (conv1..3 out curves, ms: {steps})")
        columns = ["model", "macs_cut"] + [f"{q}_{k}" for q in ("fp32", "int8")
                                          for k in ("ms", "latency_cut", "cut_over_mac_cut", "predicted_ms",
                                                    "prediction_error")]
        return write_result(out, "Latency against the cut: DCASE baseline variants, float32 and full int8",
                            f"python -m edgeprune.latency.study --out {out}", method, rows, columns,
                            findings(rows, doc, bounds, trial))


def _exported(path: Path, out: Path, name: str, calib: dict[str, np.ndarray], fold_convs: bool = True
              ) -> dict[str, Path]:
    """Export a checkpoint's fp32 and int8 .tflite to out/name; the files, those parity rejected included (random
    inputs: parity may reject; a rejected file still times as shipped)."""
    from edgeprune.export import export

    try:
        export(path, out, formats="tflite", quant="fp32,int8", calib=calib, eval_x=calib, force=True,
               progress=False, name=name, fold_convs=fold_convs)
    except EdgepruneError as exc:
        if getattr(exc, "manifest", None) is None:
            raise
    bundle = out / name
    return {q: next(p for p in (bundle / f"model_{q}.tflite", bundle / "rejected" / f"model_{q}.tflite")
                    if p.exists()) for q in ("fp32", "int8")}


def fold_trial(geometry: dict[str, Any], widths: tuple[int, ...], work: Path, rounds: int, block: int
               ) -> list[dict[str, Any]]:
    """A conv alone at its real shape and `widths` input channels, plain and with its kernel rows folded as
    channels (`keras_rewrite.folded_layer`), ReLU after it (a stride-1 conv whose padding keeps the size, as
    Keras 'same'), as float32 and full int8 files timed against each other;
    per width and precision: both times (ms) and the median per-round ratio folded / plain. The float32 files must
    compute the same function (what the fold promises), or the trial stops."""
    import keras
    from keras import layers as L

    from edgeprune.export.keras_path import keras_to_tflite
    from edgeprune.export.keras_rewrite import folded_layer
    from edgeprune.export.parity import run_tflite
    from edgeprune.latency.layer_grid import Geometry
    from edgeprune.paired import paired_latency

    g = Geometry(**{k: tuple(v) if isinstance(v, list) else v for k, v in geometry.items()})
    if g.kind != "conv2d" or any(s != 1 for s in g.stride + g.dilation) or \
            any(2 * p != k - 1 for p, k in zip(g.padding, g.kernel)):
        raise EdgepruneError(f"{g.name}: the fold trial takes a stride-1 2-D conv whose padding keeps the size")
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for cin in widths:
        conv = L.Conv2D(g.cout, g.kernel, padding="same")
        conv.build((None, *g.spatial, cin))
        x = inputs = keras.Input((*g.spatial, cin))
        plain = keras.Model(inputs, L.ReLU()(conv(x)))
        folded = keras.Model(inputs, L.ReLU()(folded_layer(conv)(x)))
        calib = [rng.normal(size=(8, *g.spatial, cin)).astype(np.float32)]
        plain_files, _ = keras_to_tflite(plain, work, calib, {"fp32", "int8"}, True)
        folded_files, _ = keras_to_tflite(folded, work, calib, {"fp32", "int8"}, True)
        want, got = (run_tflite(f["fp32"], [calib[0][:2]], ["x"]) for f in (plain_files, folded_files))
        if not np.allclose(got, want, atol=1e-4, rtol=1e-4):
            raise EdgepruneError(f"{g.name} folded at {cin} input channels computes another function "
                                 f"(largest difference {np.abs(got - want).max():.3g})")
        for q in ("fp32", "int8"):
            t = paired_latency(str(plain_files[q]), str(folded_files[q]), rounds=rounds, block=block)
            out.append({"cin": cin, "precision": q, "plain_ms": round(t["parent_ms"], 3),
                        "folded_ms": round(t["pruned_ms"], 3), "ratio": round(t["ratio"], 3)})
    return out


def bound(doc: dict[str, Any], precision: str, parent: checkpoint.Checkpoint, budget: float,
          slack: float = 0.05, tolerance: float = 0.05) -> dict[str, Any]:
    """The best predicted latency cut / MAC cut any counts of conv1..3 reach: among those within `slack` under the
    budget (`band`) and among all within it (`deeper`), each with its counts; every combination is priced."""
    import itertools

    from edgeprune.latency.choose import Pricer

    priced = Pricer(doc, precision, parent.model, parent.framework, parent.arch, list(LAYERS), tolerance)
    base_macs, base_ms = priced({n: priced.full[n][1] for n in LAYERS})
    best: dict[str, tuple[float, tuple[int, ...]]] = {}
    for combo in itertools.product(*(range(1, priced.full[n][1] + 1) for n in LAYERS)):
        macs, ms = priced(dict(zip(LAYERS, combo)))
        if macs > budget:
            continue
        ratio = (1 - ms / base_ms) / (1 - macs / base_macs)
        for key, inside in (("band", macs >= (1 - slack) * budget), ("deeper", True)):
            if inside and ratio > best.get(key, (-np.inf,))[0]:
                best[key] = (ratio, combo)
    return {k: {"ratio": round(float(r), 3), "counts": list(c)} for k, (r, c) in best.items()}


def findings(rows: list[dict[str, Any]], doc: dict[str, Any], bounds: dict[str, Any] | None = None,
             trial: list[dict[str, Any]] | None = None) -> str:
    """What the rows say about the goal and the fold, in numbers read from them, from the table, from its
    `bound` per precision and from the `fold_trial` on conv2."""
    by = {r["model"]: r for r in rows}
    lines = []
    unfolded = by.get(UNFOLDED)
    if unfolded:
        lines.append("The fold, paired against the unfolded parent: " + ", ".join(
            f"{q} {unfolded[f'{q}_ms']} -> {unfolded[f'{q}_parent_ms']} ms" for q in ("fp32", "int8")
            if f"{q}_ms" in unfolded) + ".")
    budget = by["C1+C2+C3 (11/11/25)"]["macs_cut"]
    for q in ("fp32", "int8"):
        best = max((r for r in rows if r.get(f"{q}_cut_over_mac_cut") is not None and r["model"] != UNFOLDED
                    and r["macs_cut"] >= budget - 0.02), key=lambda r: r[f"{q}_cut_over_mac_cut"])
        ratio = best[f"{q}_cut_over_mac_cut"]
        lines.append(f"{q}: at the C1+C2+C3 budget the best latency cut / MAC cut is {ratio} ({best['model']}); goal "
                     f"{GOAL}: {'met' if ratio >= GOAL else 'NOT met'}.")
        b = (bounds or {}).get(q)
        if b:
            band, deeper = b["band"], b["deeper"]
            lines.append(f"{q}: the table's bound: over every combination of counts within 5 % under that budget, the "
                         f"best predicted latency cut / MAC cut is {band['ratio']} "
                         f"({'/'.join(map(str, band['counts']))}); cutting deeper, at most {deeper['ratio']} "
                         f"({'/'.join(map(str, deeper['counts']))}).")
    curves = doc["precisions"]["int8"]["layers"].get("conv2", {}).get("in")
    if curves:
        points = {int(k): v for k, v in curves.items()}
        lines.append("int8 conv2 alone by input channels (conv1's count), ms: " + ", ".join(
            f"{c}: {points[c]:.3f}" for c in sorted(points) if c in (1, 4, 8, 9, 12, 16)) + ".")
    for q in ("fp32", "int8"):
        points = [t for t in trial or [] if t["precision"] == q]
        if points:
            faster = [t["cin"] for t in points if t["ratio"] < 1]
            lines.append(f"{q} conv2 alone, kernel rows folded as channels against plain (paired, ms): " + ", ".join(
                f"{t['cin']} in: {t['folded_ms']} vs {t['plain_ms']} ({t['ratio']})" for t in points)
                + f"; the fold is faster at {', '.join(map(str, faster)) + ' input channels' if faster else 'none'}.")
    return "\n".join(f"- {line}" for line in lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench-host/latency_follows_cut")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--block", type=int, default=50)
    args = p.parse_args(argv)
    print(run(Path(args.out), args.rounds, args.block))


if __name__ == "__main__":
    main()
