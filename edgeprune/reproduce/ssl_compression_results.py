"""The ssl-compression job's results: one document (JSON), its Markdown and CSV, and the paper's figure (each
downstream metric against parameters, one line per method)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from edgeprune.machine import machine_description
from edgeprune.results import save_png, write_stem
from edgeprune.tables import markdown_table

OBJECTIVES = {"kl": "pure KL on the teacher's cluster predictions, T 1",
              "hidden": "DistilHuBERT: the last layer predicts the teacher's layers at thirds of its depth"}
TITLE = "MelHuBERT-style compression of a pre-trained speech-encoder: weights, heads, FFN rows, low rank, distillation"
COLUMNS = ["model", "method", "level", "params", "nonzero_params", "macs", "ssl_loss", "per", "keyword_accuracy",
           "speaker_accuracy", "kb_fp32", "zip_kb_fp32", "kb_int8", "zip_kb_int8", "ms_fp32", "ms_int8",
           "latency_over_mac_cut_int8", "latency_over_mac_cut_fp32", "per_int8"]


def build(settings, data_info: dict[str, Any], models: dict[str, Any], results: dict[str, Any],
          exports: dict[str, Any], latency: dict[str, Any], step_seconds: dict[str, float], wall_s: float,
          command: str) -> dict[str, Any]:
    teacher = results["teacher"]
    rows = []
    for name, m in models.items():
        r, e = results[name], exports[name]["artifacts"]
        row = {"model": name, "method": m["method"], "level": m["level"], "params": r["params"],
               "nonzero_params": r.get("nonzero_params"), "macs": r["macs"],
               "params_kept": round(r["params"] / teacher["params"], 4),
               "macs_kept": round(r["macs"] / teacher["macs"], 4), "ssl_loss": round(r["ssl_loss"], 4),
               "per": round(r["per"], 4), "per_last_layer": round(r["per_last_layer"], 4),
               "keyword_accuracy": round(r["keyword_accuracy"], 4),
               "speaker_accuracy": round(r["speaker_accuracy"], 4)}
        for q in ("fp32", "int8"):
            a = e.get(f"model_{q}.tflite")
            if a:
                row[f"kb_{q}"] = round(a["size_bytes"] / 1024, 1)
                row[f"zip_kb_{q}"] = round(a["zip_bytes"] / 1024, 1)
                row[f"per_{q}"] = None if a["per"] is None else round(a["per"], 4)
                row[f"passed_{q}"] = a["passed"]
            lat = (latency.get(name) or {}).get(q)
            if lat:
                row[f"ms_{q}"] = round(lat["pruned_ms"], 3)
                row[f"teacher_ms_{q}"] = round(lat["parent_ms"], 3)
                mac_cut = 1 - row["macs_kept"]
                lat_cut = 1 - lat["ratio"]
                row[f"latency_cut_{q}"] = round(lat_cut, 4)
                row[f"latency_over_mac_cut_{q}"] = round(lat_cut / mac_cut, 3) if mac_cut > 0.01 else None
        rows.append(row)
    doc = {"title": TITLE, "command": command, "machine": machine_description(), "data": data_info,
           "settings": settings.to_json(), "rows": rows, "results": results, "exports": exports, "latency": latency,
           "compression": {n: m.get("compression") for n, m in models.items()}, "step_seconds": step_seconds,
           "wall_s": wall_s}
    doc["checks"] = _checks(rows)
    return doc


def _checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {r["model"]: r for r in rows}
    checks = []
    for r in rows:
        for q in ("int8", "fp32"):
            v = r.get(f"latency_over_mac_cut_{q}")
            if v is not None:
                checks.append({"claim": f"{r['model']}: {q} latency cut >= 0.8 of its MAC cut",
                               "value": f"{v:.2f} (MACs -{(1 - r['macs_kept']) * 100:.0f} %, latency "
                                        f"-{r[f'latency_cut_{q}'] * 100:.0f} %)", "holds": v >= 0.8})
    passed = [r.get(f"passed_{q}") for r in rows for q in ("fp32", "int8") if r.get(f"passed_{q}") is not None]
    checks.append({"claim": "every exported file passes parity", "value": f"{sum(passed)}/{len(passed)}",
                   "holds": all(passed)})
    sparse = [r for r in rows if r["method"] == "weight"]
    if sparse:  # what unstructured zeros buy on the edge: measured, not assumed
        t = by["teacher"]
        s = max(sparse, key=lambda r: r["level"])
        file_cut, zip_cut = 1 - s["kb_int8"] / t["kb_int8"], 1 - s["zip_kb_int8"] / t["zip_kb_int8"]
        checks.append({"claim": f"{s['model']}: the zeros shrink the zipped int8 file more than the file itself",
                       "value": f"file {s['kb_int8']} KB vs teacher {t['kb_int8']} KB ({file_cut * 100:.0f} % "
                                f"smaller); zip {s['zip_kb_int8']} KB vs {t['zip_kb_int8']} KB ({zip_cut * 100:.0f} % "
                                f"smaller); int8 latency {s.get('ms_int8')} vs {s.get('teacher_ms_int8')} ms",
                       "holds": zip_cut > file_cut})
    l1 = {r["level"]: r for r in rows if r["method"] == "heads-l1"}
    data = {r["level"]: r for r in rows if r["method"] == "heads-data"}
    for level in sorted(set(l1) & set(data)):
        checks.append({"claim": f"heads, {level} event(s): the data-driven metric's PER at or below l1's",
                       "value": f"{data[level]['per']:.4f} vs {l1[level]['per']:.4f}",
                       "holds": data[level]["per"] <= l1[level]["per"]})
    heads = [r for r in rows if r["method"].startswith("heads")]
    for d in (r for r in rows if r["method"] == "distill"):
        near = min(heads, key=lambda r: abs(r["params"] - d["params"]), default=None)
        if near is None or abs(near["params"] - d["params"]) > 0.1 * d["params"]:
            checks.append({"claim": f"head pruning against {d['model']} at comparable parameters", "holds": None,
                           "value": f"no head-pruned model within 10 % of its {d['params']:,} parameters"})
            continue
        checks.append({"claim": f"head pruning keeps PER better than distillation at comparable parameters "
                                f"({near['model']} {near['params']:,} vs {d['model']} {d['params']:,})",
                       "value": f"{near['per']:.4f} vs {d['per']:.4f}", "holds": near["per"] <= d["per"]})
    return checks


def markdown(doc: dict[str, Any]) -> str:
    m, s = doc["machine"], doc["settings"]
    teacher = next(r for r in doc["rows"] if r["model"] == "teacher")
    lines = [f"# {doc['title']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}.",
             f"Command: `{doc['command']}` ({sum(doc['step_seconds'].values()) / 60:.1f} min of steps).", "",
             (f"Teacher: speech-encoder {s['layers']} x {s['dim']}, {s['heads']} heads, FFN {s['ffn']} "
              f"({teacher['params']:,} parameters), pre-trained {s['pretrain_epochs']} epochs on masked prediction "
              f"of {s['clusters']} k-means clusters of log-mel frames (loss type {s['loss_type']}); every compression "
              f"event followed by {s['recover_epochs']} epoch(s) of the same loss; students distilled "
              f"{s['distill_epochs']} epochs ({OBJECTIVES[s.get('distill_objective', 'kl')]}). Probes on the "
              "frozen encoder (learned weighted sum of its hidden states "
              f"+ a linear head, {s['probe_epochs']} epochs, Adam lr {s.get('probe_lr', 1e-3)}): PER on the phones test split (probe trained on "
              f"{s['probe_utterances']} train utterances), keyword accuracy on the keywords test split, speaker "
              "identification within the phones train split (last utterance of each speaker held out)."), "",
             markdown_table(doc["rows"], COLUMNS), "",
             ("ssl_loss: masked-prediction loss on the validation split (same masks for every model). kb / zip_kb: "
              "the .tflite file and its zip (what unstructured zeros buy on the edge: dense kernels store every zero). "
              "ms: per-invoke "
              "latency of the edge model (a phones head fitted on the last layer), 1 thread, XNNPACK, measured in "
              "alternating blocks against the teacher's file in one process. latency_over_mac_cut: the latency "
              "cut divided by the MAC cut (1 = latency falls as fast as MACs). per_int8: PER of the int8 file "
              "with its last-layer head."), "", "## Claims", ""]
    verdict = {True: "holds", False: "DOES NOT HOLD", None: "not measured"}
    lines += [f"- {verdict[c['holds']]}: {c['claim']}: {c['value']}" for c in doc["checks"]]
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

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    teacher = next(r for r in doc["rows"] if r["model"] == "teacher")
    for ax, key, label in zip(axes, ("per", "keyword_accuracy", "speaker_accuracy"),
                              ("phone recognition PER (lower is better)", "keyword accuracy", "speaker ID accuracy")):
        for method in dict.fromkeys(r["method"] for r in doc["rows"] if r["method"] != "teacher"):
            # non-zero parameters: what weight pruning removes shows on the same axis as what surgery removes
            pts = sorted([(r["nonzero_params"], r[key]) for r in doc["rows"] if r["method"] == method] +
                         ([] if method == "distill" else [(teacher["nonzero_params"], teacher[key])]))
            ax.plot(*zip(*pts), "o-", label=method)
        ax.scatter([teacher["nonzero_params"]], [teacher[key]], marker="*", s=150, c="k", label="teacher", zorder=5)
        ax.set_xlabel("non-zero parameters")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(doc["title"], fontsize=9)
    save_png(fig, path, dpi=90)


def write(doc: dict[str, Any], stem: Path) -> None:
    """STEM.json, STEM.md, STEM.csv and STEM.png, each written atomically."""
    write_stem(stem, doc, markdown(doc), csv_text(doc), plot)
