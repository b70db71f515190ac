"""The bundle's manifest.json and REPORT.md."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeprune.tables import markdown_table

TOOLS = ("edgeprune", "torch", "onnx", "onnxruntime", "onnx2tf", "tensorflow", "tensorflow-cpu", "keras",
         "ai-edge-litert", "numpy")


def tool_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in TOOLS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def table_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per artifact: size, TRANSPOSE count, parity and the task metric."""
    metric = (manifest.get("task") or {}).get("metric", "accuracy")
    rows = []
    for a in manifest["artifacts"]:
        p = a.get("parity", {})
        rows.append({"file": a["file"], "precision": a["precision"], "KB": round(a["size_bytes"] / 1024, 1),
                     "B/param": round(a["bytes_per_param"], 3), "transpose": a["transpose_ops"],
                     "cosine": round(p.get("cosine", float("nan")), 6), "max_abs": p.get("max_abs_error"),
                     "agreement": p.get("top1_agreement", p.get("frame_agreement")), "snr_db": p.get("snr_db"),
                     metric: (p.get("metric") or {}).get(metric, p.get(metric)),
                     "parity": "pass" if a["passed"] else "FAIL: " + "; ".join(a["failures"])})
    return rows


def table_columns(manifest: dict[str, Any]) -> list[str]:
    """The columns of `table_rows` that mean something for the bundle's task."""
    task = manifest.get("task") or {}
    gate = {"classification": ["agreement"], "frames": ["agreement"], "regression": ["snr_db"]}
    return (["file", "precision", "KB", "B/param", "transpose", "cosine", "max_abs"]
            + gate.get(task.get("parity", "classification"), []) + [task.get("metric", "accuracy"), "parity"])


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def write_report(folder: Path, manifest: dict[str, Any]) -> None:
    src, task = manifest["source"], manifest.get("task") or {}
    origin = (f"`{src['checkpoint']}` ({src['framework']}, {src['model']}), weights sha256 `{src['weights_sha256']}`"
              if src.get("checkpoint") else f"in-memory {src['framework']} model `{src['model']}`")
    inputs = "; ".join(f"`{i['name']}`: {i['layout']} {i['shape']} in the source model and the ONNX files, "
                       f"{i['tflite_layout']} {i['tflite_shape']} in the TFLite files" for i in manifest["inputs"])
    metric = manifest["evaluation"].get("metric") or {}
    lines = [
        f"# Export: {manifest['name']}",
        "",
        f"Source: {origin}; {src['params']:,} parameters, {src['macs'] / 1e6:.1f} M MACs per input."
        + (f" Compressed ({len(src['transforms'])} transform(s) in manifest.json)." if src.get("transforms") else ""),
        f"Task: {task.get('name') or 'classifier'} ({task.get('kind')}); output `{manifest['output']['name']}` "
        f"{manifest['output']['shape']} ({manifest['output']['axes']}).",
        f"Inputs: {inputs}.",
        f"Parity: {manifest['evaluation']['n']} held-out samples, each artifact run in its own runtime "
        f"(LiteRT with {manifest['num_threads']} thread(s), onnxruntime CPU) against the source model's outputs, "
        f"judged as {task.get('parity')}. Calibration: {manifest['calibration']['n']} samples."
        + (f" Source model's {task.get('metric')}: {metric.get(task.get('metric')):.4f}."
           if isinstance(metric.get(task.get("metric")), float) else ""),
        "",
        markdown_table(table_rows(manifest), table_columns(manifest)),
        "",
    ]
    versus = [a for a in manifest["artifacts"] if a.get("vs_parent")]
    if versus:
        parent = manifest.get("vs_parent") or {}
        lines += [f"Against the parent bundle `{parent.get('bundle')}` ({parent.get('macs', 0) / 1e6:.1f} M MACs): each "
                  "file timed with the parent's file of the same precision in alternating blocks in one process "
                  "(LiteRT, 1 thread, XNNPACK), on this machine.", "",
                  markdown_table([{"file": a["file"], **a["vs_parent"]} for a in versus],
                                 ["file", "parent_ms", "ms", "mac_cut", "latency_cut", "cut_over_mac_cut"],
                                 ["file", "parent ms", "ms", "MAC cut", "latency cut", "latency cut / MAC cut"]), ""]
    rejected = [a["file"] for a in manifest["artifacts"] if not a["passed"]]
    if rejected:
        lines += [f"Rejected (moved to `rejected/`, see `rejected/parity.json`): {', '.join(rejected)}", ""]
    for note in manifest.get("notes", []):
        lines.append(f"- {note}")
    lines.append(f"\nTotal export time {manifest['seconds']['total']:.1f} s. Tools: "
                 + ", ".join(f"{k} {v}" for k, v in manifest["tools"].items()) + ".")
    (folder / "REPORT.md").write_text("\n".join(lines) + "\n")


def compare_to_parent(bundle: Path, parent: Path, rounds: int = 12, block: int = 50) -> list[dict[str, Any]]:
    """Time each .tflite of `bundle` against the parent bundle's file of the same precision (alternating blocks,
    one process) and add the latency cut beside the MAC cut to manifest.json and REPORT.md; returns the rows."""
    from edgeprune.errors import EdgepruneError
    from edgeprune.paired import paired_latency

    bundle, parent = Path(bundle), Path(parent)
    try:
        theirs = json.loads((parent / "manifest.json").read_text())
    except (OSError, ValueError):
        raise EdgepruneError(f"--vs {parent}: not an export bundle (no readable manifest.json)") from None
    ours = json.loads((bundle / "manifest.json").read_text())
    mac_cut = 1 - ours["source"]["macs"] / theirs["source"]["macs"]
    by_precision = {a["precision"]: a for a in theirs["artifacts"] if a["format"] == "tflite" and a["passed"]}
    rows = []
    for a in ours["artifacts"]:
        other = by_precision.get(a["precision"])
        if a["format"] != "tflite" or not a["passed"] or other is None:
            continue
        timed = paired_latency(str(parent / other["file"]), str(bundle / a["file"]), rounds=rounds, block=block)
        cut = 1 - timed["ratio"]
        a["vs_parent"] = {"parent_ms": round(timed["parent_ms"], 4), "ms": round(timed["pruned_ms"], 4),
                          "mac_cut": round(mac_cut, 4), "latency_cut": round(cut, 4),
                          "cut_over_mac_cut": round(cut / mac_cut, 3) if mac_cut > 0.01 else None,
                          "ratio_spread": [round(v, 4) for v in timed["ratio_spread"]]}
        rows.append({"file": a["file"], **a["vs_parent"]})
    if not rows:
        raise EdgepruneError(f"--vs {parent}: no TFLite file of a precision both bundles have")
    ours["vs_parent"] = {"bundle": str(parent), "macs": theirs["source"]["macs"]}
    write_manifest(bundle, ours)
    write_report(bundle, ours)
    return rows
