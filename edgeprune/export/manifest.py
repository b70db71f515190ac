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
    rows = []
    for a in manifest["artifacts"]:
        p = a.get("parity", {})
        rows.append({"file": a["file"], "precision": a["precision"], "KB": round(a["size_bytes"] / 1024, 1),
                     "B/param": round(a["bytes_per_param"], 3), "transpose": a["transpose_ops"],
                     "cosine": round(p.get("cosine", float("nan")), 6), "max_abs": p.get("max_abs_error"),
                     "top1": p.get("top1_agreement"), "accuracy": p.get("accuracy"),
                     "parity": "pass" if a["passed"] else "FAIL: " + "; ".join(a["failures"])})
    return rows


TABLE_COLUMNS = ["file", "precision", "KB", "B/param", "transpose", "cosine", "max_abs", "top1", "accuracy", "parity"]


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def write_report(folder: Path, manifest: dict[str, Any]) -> None:
    src, inp = manifest["source"], manifest["input"]
    origin = (f"`{src['checkpoint']}` ({src['framework']}, {src['model']}), weights sha256 `{src['weights_sha256']}`"
              if src.get("checkpoint") else f"in-memory {src['framework']} model `{src['model']}`")
    lines = [
        f"# Export: {manifest['name']}",
        "",
        f"Source: {origin}; {src['params']:,} parameters, {src['macs'] / 1e6:.1f} M MACs per input."
        + (" Pruned (keep-lists in manifest.json)." if src.get("pruning") else ""),
        f"Input `{inp['name']}`: {inp['layout']} {inp['shape']} in the source model and the ONNX files, "
        f"{inp['tflite_layout']} {inp['tflite_shape']} in the TFLite files.",
        f"Parity: {manifest['evaluation']['n']} held-out samples, each artifact run in its own runtime "
        f"(LiteRT with {manifest['num_threads']} thread(s), onnxruntime CPU) against the source model's probabilities. "
        f"Calibration: {manifest['calibration']['n']} samples.",
        "",
        markdown_table(table_rows(manifest), TABLE_COLUMNS),
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
