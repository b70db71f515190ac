"""The comflp job's results: one document (JSON), its Markdown and CSV, and a figure (the correlation matrices and
search time against depth)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.machine import machine_description
from edgeprune.results import save_png, write_stem
from edgeprune.tables import markdown_table

TITLE = "CoMFLP: correlation-based layer-pruning search on speech-encoder (phones, PER), against metric-greedy"


def build(settings, data_info: dict[str, Any], n_layers: int, ks: list[int], parent: dict[str, Any],
          mats: dict[str, Any], searches: dict[str, Any], greedy: dict[str, Any], randoms: dict[int, Any],
          chosen: dict[str, tuple[int, ...]], tuned: dict[str, Any], best: str, exports: dict[str, Any],
          latency: dict[str, Any], benches: dict[str, Any], scaling: dict[str, Any], step_seconds: dict[str, float],
          wall_s: float, command: str) -> dict[str, Any]:
    def tuned_of(k: int, drop: list[int]) -> dict[str, Any]:
        return next(t for lb, t in tuned.items() if lb.endswith(f"K={k}") and list(chosen[lb]) == list(drop))

    rows = []
    for k in ks:
        for name in settings.measures:
            s = searches[f"{name} K={k}"]
            t = tuned_of(k, s["removed"])
            coarse = tuned_of(k, s["coarse"]) if k == ks[0] else None
            rows.append({"K": k, "method": name, "removed": _set(s["removed"]), "coarse_best": _set(s["coarse"]),
                         "coarse_test_per_after": coarse and coarse["test_per"],
                         "validation_per_no_retrain": s["validation_per"], "test_per_before": t["test_per_before"],
                         "test_per_after": t["test_per"], "matrix_s": s["matrix_s"], "search_s": s["search_s"],
                         "verify_s": s["verify_s"], "total_s": s["total_s"], "evaluations": s["evaluations"]})
        g = greedy["rounds"][k - 1]
        t = tuned_of(k, g["removed"])
        rows.append({"K": k, "method": "metric-greedy", "removed": _set(g["removed"]), "coarse_best": None,
                     "coarse_test_per_after": None,
                     "validation_per_no_retrain": g["validation_per"], "test_per_before": t["test_per_before"],
                     "test_per_after": t["test_per"], "matrix_s": None, "search_s": None, "verify_s": None,
                     "total_s": g["seconds"], "evaluations": sum(n_layers - i for i in range(k))})
        r = randoms[k]
        rows.append({"K": k, "method": f"random ({len(r['sets'])} sets)", "removed": None, "coarse_best": None,
                     "validation_per_no_retrain": float(np.median([x["validation_per"] for x in r["sets"]])),
                     "test_per_before": r["test_per_median"], "test_per_after": None, "coarse_test_per_after": None,
                     "matrix_s": None,
                     "search_s": None, "verify_s": None, "total_s": None, "evaluations": None,
                     "test_per_range": [r["test_per_min"], r["test_per_max"]]})
    doc = {"title": TITLE, "command": command, "machine": machine_description(), "data": data_info,
           "settings": settings.to_json(), "parent": parent, "layers": n_layers, "remove": ks, "rows": rows,
           "matrices": mats, "greedy": greedy, "random": randoms, "finetuned": tuned, "exported_model": best,
           "exports": exports, "latency": latency, "benchmarks": benches, "scaling": scaling,
           "step_seconds": step_seconds, "wall_s": wall_s}
    doc["checks"] = _checks(doc, settings, ks, n_layers)
    return doc


def _set(drop: list[int] | tuple[int, ...]) -> str:
    return "{" + ", ".join(map(str, drop)) + "}"


def _checks(doc: dict[str, Any], settings, ks: list[int], n_layers: int) -> list[dict[str, Any]]:
    k = ks[0]
    rows = [r for r in doc["rows"] if r["K"] == k]
    greedy = next(r for r in rows if r["method"] == "metric-greedy")
    checks = []
    for r in rows:
        if r["method"] in settings.measures:
            speed = greedy["total_s"] / r["total_s"]
            coarse = greedy["total_s"] / (r["matrix_s"] + r["search_s"])
            checks.append({"claim": f"{r['method']}: search (matrix + search + verify) >= 50x faster than "
                                    f"metric-greedy at N={n_layers}, K={k}",
                           "value": f"{speed:.1f}x ({coarse:.0f}x without the verify step)", "holds": speed >= 50})
            gap = r["test_per_after"] - greedy["test_per_after"]
            checks.append({"claim": f"{r['method']}: test PER after fine-tune within 1 point of metric-greedy's",
                           "value": f"{r['test_per_after']:.4f} vs {greedy['test_per_after']:.4f} ({gap * 100:+.2f} "
                                    "points)", "holds": gap <= 0.01})
            gap = r["coarse_test_per_after"] - greedy["test_per_after"]
            checks.append({"claim": f"{r['method']} without the verify step ({coarse:.0f}x faster): its set's test PER "
                                    "after fine-tune within 1 point of metric-greedy's",
                           "value": f"{r['coarse_test_per_after']:.4f} vs {greedy['test_per_after']:.4f} "
                                    f"({gap * 100:+.2f} points)", "holds": gap <= 0.01})
    ideal = n_layers / (n_layers - k)
    for q, lat in doc["latency"].items():
        speed = lat["parent_ms"] / lat["pruned_ms"]
        checks.append({"claim": f"{q} TFLite: {n_layers - k}-layer encoder's speed-up >= 0.8 of the ideal "
                                f"{ideal:.2f}x",
                       "value": f"{speed:.2f}x ({speed / ideal:.2f} of ideal; {lat['parent_ms']:.2f} -> "
                                f"{lat['pruned_ms']:.2f} ms)", "holds": speed >= 0.8 * ideal})
    arts = [(n, f, a) for n, e in doc["exports"].items() for f, a in e["artifacts"].items()]
    checks.append({"claim": "every exported file passes parity",
                   "value": f"{sum(a['passed'] for _, _, a in arts)}/{len(arts)}",
                   "holds": all(a["passed"] for _, _, a in arts)})
    for device, b in doc["benchmarks"].items():
        if b.get("agreement"):
            agree = b["agreement"].values()
            checks.append({"claim": f"{device}: outputs agree with the desktop's",
                           "value": f"{sum(bool(a['ok']) for a in agree)}/{len(agree)}",
                           "holds": all(a["ok"] for a in agree)})
    return checks


def markdown(doc: dict[str, Any]) -> str:
    m, p, s = doc["machine"], doc["parent"], doc["settings"]
    lines = [f"# {doc['title']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}.",
             (f"Command: `{doc['command']}` ({sum(doc['step_seconds'].values()) / 60:.1f} min of steps, each timed "
              "when it first ran; the parent's training is not among them when --checkpoint gives it)."), "",
             f"Parent: {doc['layers']}-layer speech-encoder, {p['params']:,} parameters; PER validation "
             f"{p['validation_per']:.4f}, test {p['test_per']:.4f}. Calibration: {s['calib']} train utterances "
             f"(padding masked out of every pooling). Search: beam {s['beam']}, top {s['top']} verified on the "
             f"validation split by dropping layers without retraining; the best is selected. Every chosen set is "
             f"fine-tuned the same way ({s['finetune_epochs']} epochs"
             f"{', distillation from the parent' if s['distill'] else ''}); test PER before and after.", "",
             "## Chosen sets", "",
             markdown_table(doc["rows"], ["K", "method", "removed", "validation_per_no_retrain",
                                          "test_per_before", "test_per_after", "coarse_best", "coarse_test_per_after", "matrix_s", "search_s", "verify_s",
                                          "total_s", "evaluations"]), "",
             "removed: the set chosen after verifying the matrix's top candidates (validation PER, no retraining); "
             "coarse_best: the matrix's own best set, unverified, fine-tuned the same way for the largest K. Times in "
             "seconds; matrix_s includes the hidden-state pass (the same for every measure). The random row "
             "gives the medians of its sets (each set's figures in the JSON).",
             "",
             "## Search time against depth (K = N / 2 for the deep encoder)", "",
             (f"The deep encoder ({s['deep_layers']} layers, narrower than the parent) is trained "
              f"{doc['scaling']['deep'].get('trained_epochs')} epochs, as `edgeprune train` trains a speech-encoder; "
              "it is there to time both searches at a larger N."), "",
             markdown_table(list(doc["scaling"].values()),
                            ["layers", "remove", "measure", "matrix_s", "search_s", "verify_s", "correlation_s",
                             "correlation_evaluations", "greedy_s", "greedy_evaluations", "speedup"]), "",
             "## Latency, exported files (one process, alternating blocks, 1 thread, XNNPACK)", ""]
    lat = [{"precision": q, "parent_ms": round(v["parent_ms"], 3), "pruned_ms": round(v["pruned_ms"], 3),
            "speedup": round(v["parent_ms"] / v["pruned_ms"], 3), "ratio_spread": v["ratio_spread"]}
           for q, v in doc["latency"].items()]
    lines += [f"Pruned model exported: {doc['exported_model']} (best validation PER after fine-tune).", "",
              markdown_table(lat, ["precision", "parent_ms", "pruned_ms", "speedup", "ratio_spread"]), "",
              "## Exported files", ""]
    arts = [{"model": n, "file": f, "size_bytes": a["size_bytes"], "passed": a["passed"],
             "per": ((a["parity"].get("metric") or {}).get("per"))}
            for n, e in doc["exports"].items() for f, a in e["artifacts"].items()]
    lines += [markdown_table(arts, ["model", "file", "size_bytes", "per", "passed"]), "", "## Claims", ""]
    lines += [f"- {'holds' if c['holds'] else 'DOES NOT HOLD'}: {c['claim']}: {c['value']}" for c in doc["checks"]]
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
    import numpy as np

    names = list(doc["matrices"])
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(3.4 * (len(names) + 1), 3.4))
    for ax, name in zip(axes, names):
        im = ax.imshow(np.asarray(doc["matrices"][name]["matrix"]), vmin=0, vmax=1, cmap="viridis")
        ax.set_title(name)
        ax.set_xlabel("hidden state j")
        ax.set_ylabel("hidden state i")
    fig.colorbar(im, ax=axes[len(names) - 1], fraction=0.046)
    ax = axes[-1]
    rows = sorted(doc["scaling"].values(), key=lambda r: r["layers"])
    ax.plot([r["layers"] for r in rows], [r["correlation_s"] for r in rows], "o-", label="correlation + verify")
    ax.plot([r["layers"] for r in rows], [r["greedy_s"] for r in rows], "s-", label="metric-greedy")
    ax.set_yscale("log")
    ax.set_xlabel("encoder layers N (K = N/2 when deep)")
    ax.set_ylabel("search wall time (s)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.suptitle(doc["title"], fontsize=9)
    save_png(fig, path, dpi=90)


def write(doc: dict[str, Any], stem: Path) -> None:
    """STEM.json, STEM.md, STEM.csv and STEM.png, each written atomically."""
    write_stem(stem, doc, markdown(doc), csv_text(doc), plot)
