"""The cma-fsmc job's results: one document (JSON), its Markdown and CSV, and a figure (test accuracy against the
number of samples, one line per method with its spread over seeds, the parent as the ceiling)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.machine import machine_description
from edgeprune.results import save_png, write_stem
from edgeprune.tables import markdown_table

TITLE = "CMa-FSMC few-sample compression of resnet-kws (keywords) against MiR, PRACTISE and L1, at equal MACs cut"
SUMMARY_COLUMNS = ["method", "samples", "accuracy_mean", "accuracy_std", "seeds", "macs_reduction",
                   "params_reduction", "recovery_s"]
EDGE_COLUMNS = ["model", "macs_reduction", "kb_fp32", "kb_int8", "accuracy_int8", "top1_int8", "ms_fp32", "ms_int8",
                "latency_over_mac_cut_fp32", "latency_over_mac_cut_int8"]


def build(settings, data_info: dict[str, Any], trained: dict[str, Any], parent: dict[str, Any],
          plan: dict[str, Any], choices: dict[str, Any], rows: list[dict[str, Any]], exports: dict[str, Any],
          latency: dict[str, Any], step_seconds: dict[str, float], wall_s: float, command: str) -> dict[str, Any]:
    summary = []
    for method in dict.fromkeys(r["method"] for r in rows):
        for n in settings.samples:
            sel = [r for r in rows if r["method"] == method and r["samples"] == n]
            acc = np.array([r["accuracy"] for r in sel])
            summary.append({"method": method, "samples": n, "accuracy_mean": round(float(acc.mean()), 4),
                            "accuracy_std": round(float(acc.std(ddof=1)) if len(acc) > 1 else 0.0, 4),
                            "seeds": len(sel), "macs_reduction": sel[0]["macs_reduction"],
                            "params_reduction": sel[0]["params_reduction"],
                            "recovery_s": round(float(np.mean([r["seconds"] for r in sel])), 1)})
    by_method = {r["method"]: r for r in rows if r["samples"] == settings.samples[0] and r["seed"] == 0}
    edge = []
    for name, e in exports.items():
        method = name if name == "parent" else name.rsplit("-", 2)[0]
        mac_cut = 0.0 if name == "parent" else by_method[method]["macs_reduction"]
        row: dict[str, Any] = {"model": name, "macs_reduction": mac_cut}
        for q in ("fp32", "int8"):
            a = e["artifacts"].get(f"model_{q}.tflite")
            if a:
                row[f"kb_{q}"] = round(a["size_bytes"] / 1024, 1)
                row[f"accuracy_{q}"] = None if a["accuracy"] is None else round(a["accuracy"], 4)
                row[f"top1_{q}"] = None if a["top1_agreement"] is None else round(a["top1_agreement"], 4)
                row[f"passed_{q}"] = a["passed"]
            lat = (latency.get(name) or {}).get(q)
            if lat:
                row[f"ms_{q}"] = round(lat["pruned_ms"], 3)
                row[f"parent_ms_{q}"] = round(lat["parent_ms"], 3)
                row[f"latency_cut_{q}"] = round(1 - lat["ratio"], 4)
                row[f"latency_over_mac_cut_{q}"] = round((1 - lat["ratio"]) / mac_cut, 3) if mac_cut > 0.01 else None
        edge.append(row)
    doc = {"title": TITLE, "command": command, "machine": machine_description(), "data": data_info,
           "settings": settings.to_json(), "parent": {**parent, **trained}, "plan": plan, "summary": summary,
           "searches": [{"samples_seed": tag, "cma_drops": ", ".join(c["drop"]),
                         "doc": ", ".join(f"{b} {v}" for b, v in c["doc"].items()),
                         "rates": ", ".join(f"{r:.2f}" for r in c["rates"].values()),
                         "widths": ", ".join(str(w) for w in c["widths"].values()),
                         "macs_cut": c["measured"]["macs"], "de_s": c["seconds"]} for tag, c in choices.items()],
           "choices": choices,
           "edge": edge, "rows": rows, "exports": exports, "latency": latency, "step_seconds": step_seconds,
           "wall_s": wall_s}
    doc["checks"] = _checks(doc, settings)
    return doc


def _checks(doc: dict[str, Any], settings) -> list[dict[str, Any]]:
    n = settings.samples[0]
    mean = {(s["method"], s["samples"]): s for s in doc["summary"]}
    checks = []
    for cma in ("cma-block", "cma-filter"):
        for base in ("mir", "practise"):
            a, b = mean[(cma, n)], mean[(base, n)]
            checks.append({"claim": f"{cma} at or above {base} at {n} samples, equal MACs cut",
                           "holds": a["accuracy_mean"] >= b["accuracy_mean"],
                           "value": f"{a['accuracy_mean']:.4f} +/- {a['accuracy_std']:.4f} vs "
                                    f"{b['accuracy_mean']:.4f} +/- {b['accuracy_std']:.4f}"})
    a, b = mean[("cma-filter", n)], mean[("cma-filter-nomix", n)]
    checks.append({"claim": f"CMaMix helps cma-filter at {n} samples", "holds": a["accuracy_mean"] > b["accuracy_mean"],
                   "value": f"{a['accuracy_mean']:.4f} vs {b['accuracy_mean']:.4f} without"})
    searched = [r for r in doc["rows"] if r["method"] == "cma-filter"]
    worst = max(abs(r["macs_reduction"] - doc["plan"]["target"]["macs"]) for r in searched)
    checks.append({"claim": "the DE search meets the MACs target within 4e-4 on the really pruned model",
                   "holds": worst <= 4e-4, "value": f"largest miss {worst:.2e} over {len(searched)} searches"})
    blocks = next((e for e in doc["edge"] if e["model"].startswith("cma-block")), {})
    for q in ("fp32", "int8"):
        v = blocks.get(f"latency_over_mac_cut_{q}")
        checks.append({"claim": f"block removal turns into latency at {q} (latency cut / MAC cut >= 0.9)",
                       "holds": None if v is None else v >= 0.9, "value": v})
    return checks


def markdown(doc: dict[str, Any]) -> str:
    m, s, p, plan = doc["machine"], doc["settings"], doc["parent"], doc["plan"]
    lines = [f"# {doc['title']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}.",
             f"Command: `{doc['command']}` ({sum(doc['step_seconds'].values()) / 60:.1f} min of steps).", "",
             (f"Parent: resnet-kws, {s['blocks']} blocks x {s['channels']} channels, {p['params']:,} parameters, "
              f"{p['macs'] / 1e6:.1f} M MACs, trained {p['epochs']} epochs on all {p['train_samples']} training "
              f"clips: test accuracy {p['accuracy']:.4f} (the ceiling). Budget: removing {s['drop']} blocks cuts "
              f"MACs by {plan['target']['macs']:.4f} and parameters by {plan['target']['params']:.4f}; every method "
              f"meets that MACs cut (MiR and L1: width {plan['mir_width']} in every block, rate "
              f"{plan['mir_rate']:.3f}). Recovery: {s['steps']} steps of {s['batch_size']} samples, SGD lr 0.02, "
              "momentum 0.9, wd 1e-4, x0.1 every 40 % of the steps; feature mimicking (MSE on the pre-pooling map, "
              "teacher and classifier frozen) for all but l1 (cross-entropy, all layers). Samples drawn from the "
              f"training split by seed, stratified by class; {s['seeds']} seeds; concept-mask threshold "
              f"{s['threshold']}; DE population {s['population']}, {s['iterations']} iterations "
              f"({np.mean([doc['step_seconds'].get(k, 0) for k in doc['step_seconds'] if k.startswith('score')]):.1f}"
              " s per score step including DoC and the real-surgery check)."), "",
             "## Test accuracy (mean and standard deviation over seeds)", "",
             markdown_table(doc["summary"], SUMMARY_COLUMNS), "",
             "## Edge files (first seed, smallest sample count) against the parent", "",
             markdown_table(doc["edge"], EDGE_COLUMNS), "",
             ("kb: .tflite size. accuracy_int8 / top1_int8: test accuracy of the int8 file and its top-1 agreement "
              "with the PyTorch model. ms: median per-clip time (LiteRT, 1 thread, XNNPACK), paired with the "
              "parent's file in alternating blocks in one process. latency_over_mac_cut: latency cut / MAC cut."),
             "", "## Searches (per sample count and seed)", "",
             markdown_table(doc["searches"], ["samples_seed", "cma_drops", "doc", "rates", "widths", "macs_cut",
                                              "de_s"]), "",
             ("doc: each block's degree of change of the concept masks on the samples (smaller: easier to remove). "
              "rates / widths: the DE's per-block pruning rates and the kept widths of each block's inner conv. "
              "macs_cut: measured on the really pruned model. de_s: the search's wall time."), "",
             "## Claims", ""]
    verdict = {True: "holds", False: "DOES NOT HOLD", None: "not measured"}
    lines += [f"- {verdict[c['holds']]}: {c['claim']}: {c['value']}" for c in doc["checks"]]
    return "\n".join(lines) + "\n"


def csv_text(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    keys = [k for k in doc["rows"][0] if k != "loss"]
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(doc["rows"])
    return buf.getvalue()


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(s["method"] for s in doc["summary"]):
        pts = [s for s in doc["summary"] if s["method"] == method]
        ax.errorbar([s["samples"] for s in pts], [s["accuracy_mean"] for s in pts],
                    yerr=[s["accuracy_std"] for s in pts], marker="o", capsize=3, label=method)
    ax.axhline(doc["parent"]["accuracy"], color="k", ls="--", label="parent (all data)")
    ax.set_xscale("log")
    ax.set_xlabel("training samples")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(doc["title"], fontsize=8)
    save_png(fig, path, dpi=90)


def write(doc: dict[str, Any], stem: Path) -> None:
    """STEM.json, STEM.md, STEM.csv and STEM.png, each written atomically."""
    write_stem(stem, doc, markdown(doc), csv_text(doc), plot)
