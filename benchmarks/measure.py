"""What is measured for one model file, TFLite benchmark_model style, in the current process.

Test data reaches a file through a plan: each test array (in the data's feature layout, e.g. "FT") is matched to
one input tensor of the file by name and arranged into that tensor's axes; the task's output tensor is arranged back
into the task's axes ("N" + the output's letters) before the metrics see it.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np

from benchmarks.arrays import LayoutError, arrange
from benchmarks.metrics import task_metrics
from benchmarks.runtimes import ModelError, Session, guess_axes, match_names

DEFAULT_METRIC = {"classification": "accuracy", "phones": "per", "enhancement": "si_sdri"}
LETTERS = "abcdefghijklm"  # names for the axes of test arrays nobody described (never clash with "1" or "N")


# --- test data ---------------------------------------------------------------------------------------------------


def load_test_data(source: Dict[str, Any], subset: Optional[int] = None) -> Dict[str, Any]:
    """{"inputs": {name: array}, "y": array or None, "meta": {key: array}} from an .npz (`{"npz": path}`: one array
    per model input keyed by its name, "y", "meta/KEY") or from .npy files (`{"x": path, "y": path}`: one input,
    keyed None). `subset`: the first N samples of every array."""
    inputs: Dict[Optional[str], np.ndarray] = {}
    y, meta = None, {}
    if source.get("npz"):
        with np.load(source["npz"], allow_pickle=False) as npz:
            for key in npz.files:
                if key == "y":
                    y = npz[key]
                elif key.startswith("meta/"):
                    meta[key[len("meta/"):]] = npz[key]
                else:
                    inputs[key] = npz[key]
    else:
        if source.get("x"):
            inputs[None] = np.load(source["x"], allow_pickle=False)
        if source.get("y"):
            y = np.load(source["y"], allow_pickle=False)
    if subset:
        inputs = {k: v[:subset] for k, v in inputs.items()}
        meta = {k: v[:subset] for k, v in meta.items()}
        y = None if y is None else y[:subset]
    return {"inputs": inputs, "y": y, "meta": meta}


# --- matching test arrays and tensors ------------------------------------------------------------------------------


def _artifact_entries(tensors: List[Dict[str, Any]], entries: List[Dict[str, Any]], what: str) -> List[Optional[dict]]:
    """The manifest's record (name, axes) of each tensor of the file: matched by name, substring, then order."""
    if not entries:
        return [None] * len(tensors)
    if len(entries) != len(tensors):
        raise ModelError(f"{what}: the manifest lists {len(entries)} tensor(s) "
                         f"({', '.join(str(e.get('name')) for e in entries)}), the file has {len(tensors)} "
                         f"({', '.join(t['name'] for t in tensors)})")
    out: List[Optional[dict]] = [None] * len(tensors)
    for entry, (j, _) in zip(entries, match_names([e.get("name") for e in entries], [[t["name"]] for t in tensors],
                                                  what)):
        out[j] = entry
    return out


def plan_inputs(session: Session, spec: Dict[str, Any],
                inputs: Dict[Optional[str], np.ndarray]) -> List[Dict[str, Any]]:
    """One feed per input tensor of the file (in the file's order): which test array, from which axes to which."""
    path, fmt = session.path, session.kind
    tensors = session.inputs
    entries = _artifact_entries(tensors, (spec.get("artifact") or {}).get("inputs") or [], f"{path}: inputs")
    wanted = spec.get("inputs") or [{"name": name} for name in inputs]
    names = [[t["name"]] + ([e["name"]] if e and e.get("name") and e["name"] != t["name"] else [])
             for t, e in zip(tensors, entries)]
    feeds: List[Optional[Dict[str, Any]]] = [None] * len(tensors)
    for want, (j, how) in zip(wanted, match_names([w.get("name") for w in wanted], names, path)):
        name, tensor = want.get("name"), tensors[j]
        if name in inputs:
            x = inputs[name]
        elif len(inputs) == 1:
            x = next(iter(inputs.values()))
        else:
            raise ModelError(f"{path}: no test array for input '{name}' (the test data has "
                             f"{', '.join(str(k) for k in inputs)})")
        label = f"{path}: input '{name}' (tensor {tensor['name']})" if name else f"{path}"
        src, dst = None, (entries[j] or {}).get("axes") or (want.get("file_axes") or {}).get(fmt)
        feature_axes, feature_shape = want.get("feature_axes"), want.get("feature_shape")
        if feature_axes and x.ndim == len(feature_axes) + 1 and (
                not feature_shape or list(x.shape[1:]) == list(feature_shape)):
            src = "N" + feature_axes
        elif list(x.shape[1:]) == list(tensor["shape"][1:]):
            dst = None  # --test-x already in the file's own layout
        if src is None or dst is None:
            src, dst = _guess(x, src, tensor["shape"])
            if dst is None:
                raise ModelError(f"{label}: test features {list(x.shape[1:])} do not match the model input "
                                 f"{tensor['shape'][1:]}" + ("" if feature_axes else " (no axes in a manifest say how "
                                                                                    "to arrange them)"))
        try:
            one = arrange(x[:1], src, dst)
        except LayoutError as exc:
            raise ModelError(f"{label}: {exc}") from exc
        if list(one.shape[1:]) != list(tensor["shape"][1:]):
            raise ModelError(f"{label}: test features {list(x.shape[1:])} ({src}) arranged as {dst} give "
                             f"{list(one.shape[1:])}; they do not match the model input {tensor['shape'][1:]}")
        feeds[j] = {"input": name, "tensor": tensor["name"], "matched_by": how, "from": src, "to": dst,
                    "array": arrange(x, src, dst)}
    return feeds  # type: ignore[return-value]


def _guess(x: np.ndarray, src: Optional[str], shape: List[int]):
    """Axes for a test array no manifest describes: its own, or one unit axis more; unit axes of the array may go."""
    src = src or "N" + "".join("1" if n == 1 else LETTERS[i] for i, n in enumerate(x.shape[1:]))
    dst = guess_axes(src, x.shape, shape)
    if dst is None and "1" in src:
        squeezed = [n for n, a in zip(x.shape, src) if a != "1"]
        dst = guess_axes(src.replace("1", ""), squeezed, shape)
    return src, dst


def plan_output(session: Session, spec: Dict[str, Any]) -> Dict[str, Any]:
    """The task's output tensor (the only one, else by the task output's name) and its axes -> the task's axes."""
    tensors, want = session.outputs, (spec.get("output") or {})
    entries = (spec.get("artifact") or {}).get("outputs") or []
    k, how = 0, "only"
    if len(tensors) > 1:
        names = [[t["name"]] for t in tensors]
        hits = [j for j, t in enumerate(tensors) if want.get("name") and want["name"] == t["name"]]
        hits = hits or [j for j, t in enumerate(tensors) if want.get("name") and want["name"] in t["name"]]
        if len(hits) == 1:
            k, how = hits[0], "name"
        elif entries and entries[0].get("name") in [n[0] for n in names]:
            k, how = [n[0] for n in names].index(entries[0]["name"]), "manifest"
        else:
            how = "first"
    tensor = tensors[k]
    entry = next((e for e in entries if e.get("name") == tensor["name"]), None)
    if entry is None and len(entries) == len(tensors):
        entry = entries[k]
    dst = "N" + want["axes"] if want.get("axes") else None
    src = (entry or {}).get("axes")
    if dst and not src:
        src = dst if len(tensor["shape"]) == len(dst) else None
        if src is None:
            raise ModelError(f"{session.path}: output {tensor['name']} {tensor['shape']} does not have the task's "
                             f"axes '{dst}', and no manifest says how to arrange it")
    if dst is None:
        src = None
    if src:
        try:
            arrange(np.zeros([1] + list(tensor["shape"][1:]), np.float32), src, dst)
        except LayoutError as exc:
            raise ModelError(f"{session.path}: output {tensor['name']}: {exc}") from exc
    return {"index": k, "tensor": tensor["name"], "matched_by": how, "from": src, "to": dst}


# --- measuring -----------------------------------------------------------------------------------------------------


def _stats(ms: List[float]) -> Dict[str, float]:
    a = np.asarray(ms)
    return {"n": int(a.size), "mean_ms": float(a.mean()), "median_ms": float(np.median(a)),
            "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)),
            "min_ms": float(a.min()), "std_ms": float(a.std())}


def latency(session: Session, example: List[np.ndarray], warmup_runs: int = 1, warmup_s: float = 0.5,
            runs: int = 50, min_s: float = 1.0, max_s: float = 60.0) -> Dict[str, Any]:
    """First inference, warm-up (at least `warmup_runs` and `warmup_s`), then timed invokes (at least `runs` and
    `min_s`, at most `max_s`). Only the invoke is timed; inputs (one per tensor) are set beforehand, as
    benchmark_model does."""
    session.prepare(example)
    t = time.perf_counter()
    session.invoke_prepared()
    first_ms = (time.perf_counter() - t) * 1e3
    warm: List[float] = []
    start = time.perf_counter()
    while len(warm) < warmup_runs or time.perf_counter() - start < warmup_s:
        t = time.perf_counter()
        session.invoke_prepared()
        warm.append((time.perf_counter() - t) * 1e3)
    timed: List[float] = []
    start = time.perf_counter()
    while (len(timed) < runs or time.perf_counter() - start < min_s) and time.perf_counter() - start < max_s:
        t = time.perf_counter()
        session.invoke_prepared()
        timed.append((time.perf_counter() - t) * 1e3)
    return {"first_ms": first_ms, "warmup": {"n": len(warm), "mean_ms": float(np.mean(warm))}, **_stats(timed)}


def model_outputs(session: Session, feeds: List[Dict[str, Any]], out: Dict[str, Any], n: int) -> np.ndarray:
    """The task output on every test sample, one sample at a time, in the task's axes (float32)."""
    got = np.concatenate([session.run([f["array"][i : i + 1] for f in feeds], out["index"]) for i in range(n)])
    return arrange(got, out["from"], out["to"]) if out["from"] else got


def evaluate(session: Session, feeds: List[Dict[str, Any]], out: Dict[str, Any], task: Dict[str, Any],
             data: Dict[str, Any], save_outputs: Optional[str] = None) -> Dict[str, Any]:
    """The task's metrics on the test set. `save_outputs`: also write the outputs (task axes, float32) there."""
    n = len(feeds[0]["array"])
    outputs = model_outputs(session, feeds, out, n)
    if save_outputs:  # through a temporary name: a reader never sees half a file
        tmp = f"{save_outputs}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(outputs, dtype=np.float32))
        os.replace(tmp, save_outputs)
    bad = int(outputs.size - np.isfinite(outputs).sum())
    if bad:
        raise ModelError(f"model outputs contain NaN or infinite values on the test data ({bad} of {outputs.size} "
                         "values)")
    y = data.get("y")
    if y is not None and task.get("kind", "classification") == "classification" and y.ndim == 2:
        y = y.argmax(axis=1)  # one-hot labels
    return {"n": int(n), **task_metrics(task, outputs, y, data.get("meta") or {})}


def run_one(path: str, threads: int, xnnpack: bool, data: Optional[Dict[str, Any]], timing: Dict[str, Any],
            spec: Optional[Dict[str, Any]] = None, save_outputs: Optional[str] = None) -> Dict[str, Any]:
    """Load, time and evaluate one model; errors become a failed result, not an exception.

    `data`: from `load_test_data` (None: time on zeros, no metrics). `spec`: what the bundle's manifest says of the
    file: {"task", "inputs" (each: name, feature_axes, feature_shape, file_axes), "output" (name, axes), "artifact"
    (the file's manifest entry: inputs and outputs with their axes)}; None or {} for a plain file (one input,
    classification). `save_outputs`: a .npy path for the outputs on the test set (recorded with the output tensor's
    dtype, scale and zero point, so a comparison can allow one quantisation step)."""
    spec = spec or {}
    task = spec.get("task") or {"kind": "classification"}
    kind = task.get("kind", "classification")
    result: Dict[str, Any] = {"file": path, "threads": threads, "xnnpack": xnnpack,
                              "task": {"name": task.get("name"), "kind": kind,
                                       "metric": task.get("metric") or DEFAULT_METRIC.get(kind)}}
    try:
        t = time.perf_counter()
        session = Session(path, threads=threads, xnnpack=xnnpack)
        result["init_ms"] = (time.perf_counter() - t) * 1e3
        result["runtime"] = session.runtime
        feeds, out = None, None
        if data is not None and data["inputs"]:
            feeds = plan_inputs(session, spec, data["inputs"])
            out = plan_output(session, spec)
            result["feeds"] = [{k: v for k, v in f.items() if k != "array"} for f in feeds]
            result["output"] = {k: v for k, v in out.items() if k != "index"}
            example = [np.asarray(f["array"][:1], dtype=np.float32) for f in feeds]
        else:
            example = [np.zeros(t_["shape"], dtype=np.float32) for t_ in session.inputs]
        result["latency"] = latency(session, example, **timing)
        if feeds is not None:
            if save_outputs:
                spec_out = session.outputs[out["index"]]
                result["outputs"] = {"file": os.path.basename(save_outputs), "tensor": spec_out["name"],
                                     "axes": out["to"], "dtype": spec_out.get("dtype", "float32"),
                                     "scale": spec_out.get("scale", 0.0), "zero_point": spec_out.get("zero_point", 0)}
            result["metrics"] = evaluate(session, feeds, out, task, data, save_outputs)
        result["ok"] = True
    except Exception as exc:  # one model's failure must not stop the others
        result["ok"] = False
        result["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if not math.isfinite(result.get("init_ms", 0.0)):
        result["init_ms"] = None
    return result
