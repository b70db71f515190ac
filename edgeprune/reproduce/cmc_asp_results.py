"""The CMC-ASP comparison table: criteria at the same MAC reductions, before and after fine-tuning, with either
microphone dropped, after export and on devices; the claims checked with their numbers. MD, CSV, JSON and a PNG."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.machine import machine_description
from edgeprune.results import save_png, write_stem
from edgeprune.tables import markdown_table

CRITERIA = ("cmc_asp", "l1", "activation_l1", "random")


def _m(d: dict[str, Any] | None, drop: str, key: str) -> float | None:
    v = ((d or {}).get(drop) or {}).get(key)
    return None if v is None else round(float(v), 3)


def _spread(values: list[float]) -> dict[str, float]:
    a = np.asarray([v for v in values if v is not None], dtype=float)
    return {"mean": round(float(a.mean()), 3), "min": round(float(a.min()), 3), "max": round(float(a.max()), 3),
            "n": int(a.size)} if a.size else {}


def build(settings, data_info: dict[str, Any], parent: dict[str, Any], cost: dict[str, Any],
          results: dict[str, Any], exports: dict[str, Any], benches: dict[str, Any], seconds: dict[str, float],
          wall_seconds: float, command: str) -> dict[str, Any]:
    """The results document."""
    desktop = next((b for b in benches.values() if not b["emulated"]), None)
    emulated = [b for b in benches.values() if b["emulated"]]

    def row_of(name: str, reduction: float | None, criterion: str, r: dict[str, Any] | None) -> dict[str, Any]:
        after = parent if r is None else r["after"]
        row = {"row": name, "reduction": reduction, "criterion": criterion,
               "macs_kept": 1.0 if r is None else r["pruning"]["macs_kept"],
               "params": after["params"], "si_sdri_before": None if r is None else _m(r["before"], "both", "si_sdri")}
        for drop in ("both", "no_bone", "no_air"):
            for key in ("si_sdri", "stoi", "pesq"):
                row[f"{key}_{drop}"] = _m(after, drop, key)
        ex = exports.get(name)
        if ex:
            for file, art in ex["artifacts"].items():
                row[f"si_sdri_{art['format']}_{art['precision']}"] = None if art["si_sdri"] is None \
                    else round(art["si_sdri"], 3)
                row[f"kb_{art['format']}_{art['precision']}"] = round(art["size_bytes"] / 1024, 1)
                if desktop is not None:
                    res = desktop["results"].get(f"{name}/{file}", {})
                    row[f"ms_{art['format']}_{art['precision']}"] = None if res.get("median_ms") is None \
                        else round(res["median_ms"], 3)
        return row

    rows = [row_of("parent", None, "unpruned", None)]
    for name, r in results.items():
        rows.append(row_of(name, r["reduction"], r["criterion"], r))
    # the 50 % row: every criterion's training seeds (random: its ranking seeds), mean and spread
    seeds = {}
    for criterion in CRITERIA:
        members = [r for r in results.values() if r["reduction"] == 0.5 and r["criterion"] == criterion]
        if members:
            seeds[criterion] = {f"{key}_{drop}": _spread([_m(r["after"], drop, key) for r in members])
                                for drop in ("both", "no_bone", "no_air") for key in ("si_sdri", "stoi", "pesq")}
    checks = _checks(settings, rows, seeds, cost, results, benches, emulated)
    return {"title": f"CMC-ASP on se-crn ({settings.fusion} fusion, {settings.framework}), {settings.profile} "
                     "profile, synthetic air + bone speech (espeak-ng)",
            "settings": settings.to_json(), "data": data_info, "machine": machine_description(), "command": command,
            "parent": parent, "scoring_cost": cost, "rows": rows, "seeds_50": seeds, "checks": checks,
            "devices": {d: {"emulated": b["emulated"], "results_file": b["file"],
                            "agreement": b.get("agreement")} for d, b in benches.items()},
            "step_seconds": seconds, "wall_seconds": wall_seconds}


def _checks(settings, rows, seeds, cost, results, benches, emulated) -> list[dict[str, Any]]:
    """The claims, each with the numbers that decide it."""
    out = []
    if "cmc_asp" in seeds and "l1" in seeds:
        for drop, label in (("both", "both microphones"), ("no_bone", "bone dropped"), ("no_air", "air dropped")):
            a, b = seeds["cmc_asp"][f"si_sdri_{drop}"], seeds["l1"][f"si_sdri_{drop}"]
            out.append({"claim": f"cmc_asp at or above l1 on SI-SDRi at 50 % MACs, {label}",
                        "holds": a["mean"] >= b["mean"],
                        "detail": f"cmc_asp {a['mean']:.2f} dB [{a['min']:.2f}, {a['max']:.2f}] vs l1 "
                                  f"{b['mean']:.2f} dB [{b['min']:.2f}, {b['max']:.2f}] over {a['n']} seeds"})
    off = [f"{r['row']} {r['macs_kept']:.3f}" for r in rows if r["reduction"] is not None
           and abs(r["macs_kept"] - (1 - r["reduction"])) > 0.01]
    out.append({"claim": "every MAC budget met within one percentage point", "holds": not off,
                "detail": ", ".join(off) or "all rows"})
    out.append({"claim": "cmc_asp scoring costs at most 10 % more than three plain inference passes",
                "holds": cost["overhead"] <= 0.10,
                "detail": f"{cost['cmc_asp_s']:.3f} s vs {cost['three_passes_s']:.3f} s on {cost['samples']} samples "
                          f"({100 * cost['overhead']:+.1f} %)"})
    gaps = []
    for r in rows:
        for fmt in ("tflite", "onnx"):
            f32, i8 = r.get(f"si_sdri_{fmt}_fp32"), r.get(f"si_sdri_{fmt}_int8")
            if f32 is not None and i8 is not None:
                gaps.append((abs(i8 - f32), f"{r['row']} {fmt}"))
    if gaps:
        worst = max(gaps)
        out.append({"claim": "full-integer int8 SI-SDRi within 0.5 dB of float32 for every exported model",
                    "holds": worst[0] <= 0.5, "detail": f"largest gap {worst[0]:.3f} dB ({worst[1]})"})
    for b in emulated:
        agreement = b.get("agreement") or {}
        bad = [k for k, v in agreement.items() if not v.get("ok")]
        out.append({"claim": f"{b['device']}: outputs agree with the desktop's", "holds": bool(agreement) and not bad,
                    "detail": f"{len(agreement) - len(bad)} of {len(agreement)} files agree"
                              + (f"; not: {', '.join(bad)}" if bad else "")})
    return out


COLUMNS = ["row", "macs_kept", "params", "si_sdri_before", "si_sdri_both", "stoi_both", "pesq_both",
           "si_sdri_no_bone", "stoi_no_bone", "si_sdri_no_air", "stoi_no_air", "si_sdri_tflite_fp32",
           "si_sdri_tflite_int8", "kb_tflite_int8", "ms_tflite_fp32", "ms_tflite_int8"]
HEADERS = ["row", "MACs kept", "params", "SI-SDRi before FT", "SI-SDRi", "STOI", "PESQ", "SI-SDRi no bone",
           "STOI no bone", "SI-SDRi no air", "STOI no air", "SI-SDRi fp32 TFLite", "SI-SDRi int8 TFLite",
           "KB int8", "ms fp32", "ms int8"]


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    main = [r for r in doc["rows"] if r["row"] == "parent" or not r["row"].split("-")[-1].startswith(("s1", "s2"))]
    lines = [f"# {doc['title']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}.",
             f"Command: `{doc['command']}` ({sum(doc['step_seconds'].values()) / 60:.1f} min of steps).", "",
             "Every pruned model is pruned from the same parent to the same share of its MACs, fine-tuned with the "
             f"same recipe ({doc['settings']['finetune_epochs']} epochs, the enhancement loss, best validation "
             "SI-SDRi), and evaluated on the test split: SI-SDR improvement over the noisy microphone (dB), STOI and "
             "wide-band PESQ of the enhanced speech, with both microphones, with the bone input dropped and with the "
             "air input dropped (the input replaced by exact zeros, as the method's masking does). Rows `30-*` keep "
             "70 % of the MACs, `50-*` half; `random-rK` is a seeded random ranking.", "",
             markdown_table(main, [c for c in COLUMNS if any(r.get(c) is not None for r in main)],
                            [h for c, h in zip(COLUMNS, HEADERS) if any(r.get(c) is not None for r in main)]), ""]
    if doc["seeds_50"]:
        lines += ["## Half the MACs: mean [min, max] over seeds", "",
                  "cmc_asp, l1 and activation_l1 fine-tuned with three training seeds; random: three ranking seeds.",
                  ""]
        seed_rows = []
        for criterion, stats in doc["seeds_50"].items():
            row = {"criterion": criterion}
            for key in ("si_sdri_both", "stoi_both", "pesq_both", "si_sdri_no_bone", "si_sdri_no_air"):
                s = stats.get(key) or {}
                row[key] = f"{s['mean']:.3f} [{s['min']:.3f}, {s['max']:.3f}]" if s else None
            seed_rows.append(row)
        lines += [markdown_table(seed_rows, ["criterion", "si_sdri_both", "stoi_both", "pesq_both",
                                             "si_sdri_no_bone", "si_sdri_no_air"],
                                 ["criterion", "SI-SDRi", "STOI", "PESQ", "SI-SDRi no bone", "SI-SDRi no air"]), ""]
    lines += ["## Claims", ""]
    lines += [f"- {'holds' if c['holds'] else 'DOES NOT HOLD'}: {c['claim']} ({c['detail']})" for c in doc["checks"]]
    p = doc["parent"]
    lines += ["", f"Parent: {p['params']:,} parameters, {p['macs'] / 1e6:.1f} M MACs per 2 s clip; noisy input "
                  f"SI-SDR {p['both']['si_sdr_noisy']:.2f} dB, STOI {p['both']['stoi_noisy']:.3f}"
                  + (f", PESQ {p['both']['pesq_noisy']:.2f}." if p["both"].get("pesq_noisy") else "."),
              "", "Wall time per step (s):", "",
              markdown_table([{"step": k, "seconds": v} for k, v in doc["step_seconds"].items()], ["step", "seconds"])]
    return "\n".join(lines) + "\n"


def csv_text(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    keys = sorted({k for r in doc["rows"] for k in r})
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(doc["rows"])
    return buf.getvalue()


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=False)
    markers = {"cmc_asp": "o", "l1": "s", "activation_l1": "^", "random": "x", "unpruned": "*"}
    for ax, drop, title in zip(axes, ("both", "no_bone", "no_air"),
                               ("both microphones", "bone input dropped", "air input dropped")):
        for criterion, marker in markers.items():
            pts = [(r["macs_kept"], r[f"si_sdri_{drop}"]) for r in doc["rows"]
                   if r["criterion"] == criterion and r.get(f"si_sdri_{drop}") is not None]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, label=criterion)
        ax.set_title(title)
        ax.set_xlabel("MACs kept (share of the parent)")
        ax.set_ylabel("SI-SDR improvement (dB)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(doc["title"], fontsize=9)
    save_png(fig, path, dpi=100)


def write(doc: dict[str, Any], stem: Path) -> None:
    """STEM.json, STEM.md, STEM.csv and STEM.png, each written atomically."""
    write_stem(stem, doc, markdown(doc), csv_text(doc), plot)
