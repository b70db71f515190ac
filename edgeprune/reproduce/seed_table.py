"""The published DCASE 2021 1a quantization table (Singh and Plumbley, passive filter pruning, Interspeech 2022)
and the checks that put ours beside it.

Figures are copied from the seed project's README (shared/seeds/002_60bad1d87840eebe.txt); the kept filter counts
are those of the authors' stored importance indices (shared/reference/methods.md, section 3).
"""

from __future__ import annotations

from typing import Any

# The table's rows, in its order: name -> the conv layers pruned.
ROWS: list[tuple[str, tuple[str, ...]]] = [
    ("C1", ("conv1",)),
    ("C2", ("conv2",)),
    ("C3", ("conv3",)),
    ("C1+C2", ("conv1", "conv2")),
    ("C2+C3", ("conv2", "conv3")),
    ("C1+C2+C3", ("conv1", "conv2", "conv3")),
]
LAYERS = ("conv1", "conv2", "conv3")

# Accuracy in %, size in KB; "uint8" in the seed is dynamic-range int8 (int8 weights, float activations).
SEED = {
    "C1": {"acc_fp32": 48.31, "acc_fp16": 48.28, "acc_dynamic": 48.42, "kb_fp32": 164, "kb_fp16": 87, "kb_dynamic": 50},
    "C2": {"acc_fp32": 47.61, "acc_fp16": 47.64, "acc_dynamic": 47.30, "kb_fp32": 135, "kb_fp16": 72, "kb_dynamic": 43},
    "C3": {"acc_fp32": 47.78, "acc_fp16": 47.84, "acc_dynamic": 47.74, "kb_fp32": 143, "kb_fp16": 76, "kb_dynamic": 45},
    "C1+C2": {"acc_fp32": 46.93, "acc_fp16": 46.93, "acc_dynamic": 46.69, "kb_fp32": 124, "kb_fp16": 67, "kb_dynamic": 40},
    "C2+C3": {"acc_fp32": 45.35, "acc_fp16": 45.38, "acc_dynamic": 45.42, "kb_fp32": 107, "kb_fp16": 58, "kb_dynamic": 36},
    "C1+C2+C3": {"acc_fp32": 45.01, "acc_fp16": 44.98, "acc_dynamic": 44.81, "kb_fp32": 96, "kb_fp16": 53, "kb_dynamic": 33},
}
SEED_BASELINE = {"accuracy": 48.58, "log_loss": 1.425}
SEED_KEPT = {"conv1": 11, "conv2": 11, "conv3": 22}
FULL_WIDTH = {"conv1": 16, "conv2": 16, "conv3": 32}

SIZE_TOLERANCE = 0.10  # the issue: explain any size more than 10 % away from the seed's


def seed_counts(row: str) -> dict[str, int]:
    """Filters per conv layer in the authors' model for a table row."""
    pruned = dict(ROWS)[row]
    return {layer: SEED_KEPT[layer] if layer in pruned else FULL_WIDTH[layer] for layer in LAYERS}


def relations(rows: list[dict[str, Any]], n_clips: int | None = None) -> list[dict[str, Any]]:
    """The relations the seed's table shows, checked on ours. Each: {"relation", "holds", "detail"}.

    `rows` are our table rows (the six pruned rows; a baseline row, if present, is ignored), with acc_* in % and
    kb_* in KB. With `n_clips` (the test split's size) an accuracy gap is also given in clips: on 600 clips one
    clip is 0.17 points, so "within 0.2 points" allows a single clip.
    """
    ours = {r["row"]: r for r in rows if r["row"] in SEED}
    out = []

    def gap(name: str, r: dict[str, Any], q: str) -> str:
        d = r[f"acc_{q}"] - r["acc_fp32"]
        return f"{name}: {d:+.2f}" + (f" ({round(abs(d) * n_clips / 100)} of {n_clips} clips)" if n_clips else "")

    def check(relation: str, failures: list[str]) -> None:
        out.append({"relation": relation, "holds": not failures, "detail": "; ".join(failures) or "every row"})

    check("float16 accuracy within 0.2 points of float32",
          [gap(n, r, "fp16") for n, r in ours.items()
           if abs(r["acc_fp16"] - r["acc_fp32"]) > 0.2 + 1e-9])
    check("dynamic-range int8 accuracy within 1 point of float32",
          [gap(n, r, "dynamic") for n, r in ours.items()
           if abs(r["acc_dynamic"] - r["acc_fp32"]) > 1.0 + 1e-9])
    check("sizes ordered float32 > float16 > dynamic-range int8",
          [f"{n}: {r['kb_fp32']:.1f} / {r['kb_fp16']:.1f} / {r['kb_dynamic']:.1f} KB" for n, r in ours.items()
           if not r["kb_fp32"] > r["kb_fp16"] > r["kb_dynamic"]])
    # "Size falls as more layers are pruned": a row whose pruned layers contain another row's is smaller, as in
    # the seed (C1+C2 < C1 and C2; C2+C3 < C2 and C3; C1+C2+C3 < all).
    fails = []
    for q in ("fp32", "fp16", "dynamic"):
        for big, big_layers in ROWS:
            for small, small_layers in ROWS:
                if big in ours and small in ours and set(small_layers) < set(big_layers):
                    if not ours[big][f"kb_{q}"] < ours[small][f"kb_{q}"]:
                        fails.append(f"{q}: {big} {ours[big][f'kb_{q}']:.1f} KB not below {small} "
                                     f"{ours[small][f'kb_{q}']:.1f} KB")
    check("size falls as more layers are pruned (row by row, as in the seed)", fails)
    return out


def size_comparison(rows: list[dict[str, Any]], seed_params: dict[str, int]) -> list[dict[str, Any]]:
    """Our float32 / float16 / dynamic-range sizes beside the seed's, with the difference in % and, where it is
    over 10 %, the reason read off the figures: kept counts (parameters) or bytes per parameter (converter)."""
    out = []
    for r in rows:
        name = r["row"]
        if name not in SEED:
            continue
        for q in ("fp32", "fp16", "dynamic"):
            ours_kb, seed_kb = r[f"kb_{q}"], SEED[name][f"kb_{q}"]
            diff = ours_kb / seed_kb - 1
            ours_bpp = ours_kb * 1024 / r["params"]
            seed_bpp = seed_kb * 1024 / seed_params[name]
            reason = ""
            if abs(diff) > SIZE_TOLERANCE:
                params_diff = r["params"] / seed_params[name] - 1
                bpp_diff = ours_bpp / seed_bpp - 1
                parts = []
                if abs(params_diff) > 0.02:
                    kept = ", ".join(f"{k} {r['kept'][k]} vs {seed_counts(name)[k]}" for k in LAYERS
                                     if r["kept"][k] != seed_counts(name)[k])
                    parts.append(f"kept counts differ ({kept}): {r['params']:,} vs {seed_params[name]:,} "
                                 f"parameters ({params_diff:+.0%})")
                if abs(bpp_diff) > 0.02:
                    folded = (f", the ops of {', '.join(r['folded'])} folded for TFLite (one input channel: "
                              "kernel rows as channels)") if r.get("folded") else ""
                    parts.append(f"{ours_bpp:.2f} vs {seed_bpp:.2f} bytes per parameter ({bpp_diff:+.0%}): "
                                 "converter version and what it stores beside the weights (metadata"
                                 f"{folded}, float biases and scales, the signature)")
                reason = "; ".join(parts) or "no single cause above 2 %"
            out.append({"row": name, "precision": q, "ours_kb": round(ours_kb, 1), "seed_kb": seed_kb,
                        "diff_pct": round(100 * diff, 1), "ours_params": r["params"],
                        "seed_params": seed_params[name], "ours_bytes_per_param": round(ours_bpp, 3),
                        "seed_bytes_per_param": round(seed_bpp, 3), "explanation": reason})
    return out
