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
    rejected = [a["file"] for a in manifest["artifacts"] if not a["passed"]]
    if rejected:
        lines += [f"Rejected (moved to `rejected/`, see `rejected/parity.json`): {', '.join(rejected)}", ""]
    for note in manifest.get("notes", []):
        lines.append(f"- {note}")
    lines.append(f"\nTotal export time {manifest['seconds']['total']:.1f} s. Tools: "
                 + ", ".join(f"{k} {v}" for k, v in manifest["tools"].items()) + ".")
    (folder / "REPORT.md").write_text("\n".join(lines) + "\n")
