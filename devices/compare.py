"""Do two targets compute the same thing? Compare the outputs two result files saved (`--save-outputs`).

Models are matched by bundle and file name, thread count and XNNPACK setting. Outputs of any shape are compared
(class probabilities, frame logits, masks: whatever the suite saved, in the task's axes). A float output agrees within
FLOAT_ATOL; a quantised (int8 / uint8) output within one quantisation step of its own scale; and a metric that
counts (accuracy, the phone error rate) must be the same on the same samples. A continuous metric (SI-SDR) follows
from outputs that agree and is shown, not compared. `--subset N` takes the first N samples, so runs on different
subsets of one test set are compared on the samples both ran (their metrics then need not match, and are only
compared on equal counts). Reads result schemas 1 (accuracy only) and 2 (a task metric per result).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from devices.errors import DeviceError

FLOAT_ATOL = 1e-4
QUANT_STEPS = 1.0
COUNTED_METRICS = ("accuracy", "per")  # decided by argmaxes: equal outputs up to the limits give equal values


def metric(record: dict[str, Any]) -> tuple[str, Any]:
    """(name, value or None) of a result's task metric: schema 2 keeps it in "metrics", schema 1 has accuracy."""
    if "metrics" in record or "task" in record:
        name = (record.get("task") or {}).get("metric") or "accuracy"
        return name, (record.get("metrics") or {}).get(name)
    return "accuracy", (record.get("accuracy") or {}).get("accuracy")


def _key(record: dict[str, Any]) -> str:
    # The bundle folder and file name: the same on every target, whatever path the suite was given there.
    path = Path(record["file"])
    return f"{path.parent.name}/{path.name} threads={record.get('threads')} xnnpack={record.get('xnnpack')}"


def _load(result: Path) -> tuple[dict[str, Any], Path | None]:
    try:
        data = json.loads(Path(result).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DeviceError(f"{result}: cannot be read as a result file ({exc})") from None
    outputs = data.get("outputs_dir")
    return data, Path(outputs) if outputs else None


def _outputs(record: dict[str, Any], folder: Path | None) -> np.ndarray | None:
    saved = record.get("outputs")
    if not saved or folder is None or not (folder / saved["file"]).is_file():
        return None
    return np.load(folder / saved["file"])


def compare_outputs(a: Path, b: Path) -> list[dict[str, Any]]:
    """One row per model in both result files: max abs difference, the difference in quantisation steps for a
    quantised output, both values of the task metric (`metric` names it; `accuracy_a`/`accuracy_b` too for
    classification), and `ok` with the reason when not."""
    (data_a, dir_a), (data_b, dir_b) = _load(a), _load(b)
    by_b = {_key(r): r for r in data_b.get("results", [])}
    rows = []
    for ra in data_a.get("results", []):
        key = _key(ra)
        rb = by_b.get(key)
        if rb is None:
            continue
        (name, value_a), (_, value_b) = metric(ra), metric(rb)
        row: dict[str, Any] = {"model": key, "precision": ra.get("precision") or rb.get("precision"),
                               "metric": name, "metric_a": value_a, "metric_b": value_b,
                               "accuracy_a": value_a if name == "accuracy" else None,
                               "accuracy_b": value_b if name == "accuracy" else None}
        ya, yb = _outputs(ra, dir_a), _outputs(rb, dir_b)
        if ya is None or yb is None:
            row.update(ok=False, why="no saved outputs (failed, or run without --save-outputs)")
        elif ya.shape[1:] != yb.shape[1:]:
            row.update(ok=False, why=f"output shapes differ: {list(ya.shape)} vs {list(yb.shape)}")
        else:
            same_clips = len(ya) == len(yb)
            row["clips"] = n = min(len(ya), len(yb))
            ya, yb = ya[:n], yb[:n]
            row["max_abs_diff"] = float(np.abs(ya.astype(np.float64) - yb.astype(np.float64)).max(initial=0.0))
            quant = ra["outputs"]
            if quant.get("dtype") in ("int8", "uint8") and quant.get("scale"):
                # dequantised values: a difference of k steps is k * scale (plus float rounding of the product)
                row["max_steps"] = row["max_abs_diff"] / quant["scale"]
                close, limit = row["max_steps"] <= QUANT_STEPS + 1e-3, f"{QUANT_STEPS:g} quantisation step"
            else:
                close, limit = row["max_abs_diff"] <= FLOAT_ATOL, f"{FLOAT_ATOL:g}"
            same_metric = value_a == value_b or not same_clips or name not in COUNTED_METRICS
            row["ok"] = close and same_metric
            if not close:
                row["why"] = f"outputs differ by {row['max_abs_diff']:.3g} (limit {limit})"
            elif not same_metric:
                row["why"] = f"{name} {value_a} vs {value_b}"
        rows.append(row)
    if not rows:
        raise DeviceError(f"{a} and {b} have no model in common (matched by bundle/file, threads and XNNPACK)")
    return rows


def agree(rows: list[dict[str, Any]]) -> bool:
    """True if every compared model agrees."""
    return all(r["ok"] for r in rows)
