"""What is measured for one model file, TFLite benchmark_model style, in the current process."""

from __future__ import annotations

import math
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np

from benchmarks.runtimes import Session, check_features, to_layout


def _stats(ms: List[float]) -> Dict[str, float]:
    a = np.asarray(ms)
    return {"n": int(a.size), "mean_ms": float(a.mean()), "median_ms": float(np.median(a)),
            "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)),
            "min_ms": float(a.min()), "std_ms": float(a.std())}


def latency(session: Session, example: np.ndarray, warmup_runs: int = 1, warmup_s: float = 0.5,
            runs: int = 50, min_s: float = 1.0, max_s: float = 60.0) -> Dict[str, Any]:
    """First inference, warm-up (at least `warmup_runs` and `warmup_s`), then timed invokes (at least `runs` and
    `min_s`, at most `max_s`). Only the invoke is timed; inputs are set beforehand, as benchmark_model does."""
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


def accuracy(session: Session, x: np.ndarray, y: Optional[np.ndarray],
             save_outputs: Optional[str] = None) -> Dict[str, Any]:
    """Accuracy and log-loss one clip at a time (inputs quantised, outputs dequantised per the model's tensors).
    `save_outputs`: also write the outputs [N, classes] (dequantised float32) to this .npy path."""
    shape = session.inputs[0]["shape"]
    probs = np.concatenate([session.run(to_layout(x[i : i + 1], shape)) for i in range(len(x))])
    if save_outputs:
        np.save(save_outputs, probs)
    out: Dict[str, Any] = {"n": int(len(x))}
    if y is not None:
        p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
        p /= p.sum(axis=1, keepdims=True)
        out["accuracy"] = float((probs.argmax(axis=1) == y).mean())
        out["log_loss"] = float(-np.mean(np.log(p[np.arange(len(y)), y])))
    return out


def run_one(path: str, threads: int, xnnpack: bool, x: Optional[np.ndarray], y: Optional[np.ndarray],
            timing: Dict[str, Any], save_outputs: Optional[str] = None) -> Dict[str, Any]:
    """Load, time and evaluate one model; errors become a failed result, not an exception. `save_outputs`: a .npy
    path for the outputs on the test clips (recorded with the output tensor's dtype, scale and zero point, so a
    comparison can allow one quantisation step)."""
    result: Dict[str, Any] = {"file": path, "threads": threads, "xnnpack": xnnpack}
    try:
        t = time.perf_counter()
        session = Session(path, threads=threads, xnnpack=xnnpack)
        result["init_ms"] = (time.perf_counter() - t) * 1e3
        result["runtime"] = session.runtime
        shape = session.inputs[0]["shape"]
        if x is not None:
            problem = check_features(x, shape, path)
            if problem:
                raise ValueError(problem)
            example = to_layout(x[:1], shape).astype(np.float32)
        else:
            example = np.zeros(shape, dtype=np.float32)
        result["latency"] = latency(session, example, **timing)
        if x is not None:
            result["accuracy"] = accuracy(session, x, y, save_outputs)
            if save_outputs:
                spec = session.outputs[0]
                result["outputs"] = {"file": os.path.basename(save_outputs), "dtype": spec.get("dtype", "float32"),
                                     "scale": spec.get("scale", 0.0), "zero_point": spec.get("zero_point", 0)}
        result["ok"] = True
    except Exception as exc:  # one model's failure must not stop the others
        result["ok"] = False
        result["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if not math.isfinite(result.get("init_ms", 0.0)):
        result["init_ms"] = None
    return result
