"""python -m benchmarks BUNDLE_OR_FILES ... : size, latency, memory and the task's metric of each model file.

Each (model, threads, XNNPACK) combination runs in a fresh process, so one model's memory does not leak into the
next. A model that fails is marked failed in the results and the run goes on; the exit status is 1 if any failed.
Bad options or test data (a missing array, a shape that does not fit, NaN or infinite values) stop the run before
any model runs, with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

from benchmarks.fingerprint import device_fingerprint

SCHEMA_VERSION = 2
DEFAULT_OUT = os.path.join("runs", "benchmarks", "run")


class UsageError(Exception):
    """Bad options or test data: one line on stderr and exit status 2, before any model runs."""


def _read_manifest(folder: str) -> Dict[str, Any]:
    path = os.path.join(folder, "manifest.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot be read as a bundle manifest ({str(exc).splitlines()[0]})") from None
    if not isinstance(manifest, dict):
        raise UsageError(f"{path}: not a bundle manifest (expected a JSON object)")
    return manifest


def model_spec(manifest: Dict[str, Any], entry: Dict[str, Any], fmt: str) -> Dict[str, Any]:
    """What the worker needs from a bundle's manifest for one file: the task, the inputs (name, feature axes and
    shape, the file format's axes), the output (name, axes) and the file's own tensors (name, axes). A manifest
    without a task (format 1) or no manifest: one input, classification."""
    io = {"inputs": [{k: t.get(k) for k in ("name", "shape", "axes")} for t in entry.get("inputs") or []],
          "outputs": [{k: t.get(k) for k in ("name", "shape", "axes")} for t in entry.get("outputs") or []]}
    task = manifest.get("task")
    if not isinstance(task, dict):
        return {"task": {"kind": "classification", "metric": "accuracy"}, "artifact": io} if manifest else {}
    by_name = {i.get("name"): i for i in task.get("inputs") or []}
    inputs = []
    for i in manifest.get("inputs") or task.get("inputs") or []:
        record = {"name": i.get("name"), "feature_axes": i.get("feature_axes"), "feature_shape": i.get("feature_shape"),
                  "file_axes": {}}
        if isinstance(i.get("axes"), dict):
            record["file_axes"] = {fmt: i["axes"].get(fmt)}
        if not record["feature_axes"]:  # the task's record of the input: its axes are the feature axes
            t = by_name.get(i.get("name")) or {}
            if isinstance(t.get("axes"), str):
                record.update(feature_axes=t["axes"], feature_shape=t.get("shape"))
        inputs.append(record)
    output = manifest.get("output") or task.get("output") or {}
    axes = output.get("axes") or (task.get("output") or {}).get("axes")
    return {"task": task, "inputs": inputs or None, "output": {"name": output.get("name"), "axes": axes},
            "artifact": io}


def find_models(targets: List[str]) -> List[Dict[str, Any]]:
    """Model files from bundles (folders with manifest.json) and plain files, with their manifest entries. A plain
    file in a bundle folder gets its entry too (the manifest lists it)."""
    found = []
    for target in targets:
        if os.path.isdir(target):
            names, manifest = None, _read_manifest(target)
        else:  # a file named alone: a manifest beside it counts only if it reads and lists the file
            folder, names = os.path.dirname(target) or ".", [target]
            try:
                manifest = _read_manifest(folder) if os.path.isdir(folder) else {}
            except UsageError:
                manifest = {}
        entries = {a.get("file"): a for a in manifest.get("artifacts") or [] if isinstance(a, dict)}
        if names is None:
            names = [os.path.join(target, n) for n in sorted(os.listdir(target)) if n.endswith((".tflite", ".onnx"))]
        for path in names:
            entry = entries.get(os.path.basename(path))
            known = manifest if entry is not None or os.path.isdir(target) else {}
            fmt = "onnx" if path.endswith(".onnx") else "tflite"
            found.append({"file": path, "manifest": entry or {}, "source": known.get("source") or {},
                          "spec": model_spec(known, entry or {}, fmt)})
    return found


def load_and_check_data(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """The test data as the workers will load it, checked before anything runs: finite everywhere (inputs, y,
    meta), numeric, one sample count. Returns the job's "data" record with a summary, or None."""
    from benchmarks.measure import load_test_data

    if args.test_data and (args.test_x or args.test_y):
        raise UsageError("--test-data replaces --test-x/--test-y; give one or the other")
    if args.test_y and not args.test_x:
        raise UsageError("--test-y needs --test-x (labels for which features?)")
    paths = [p for p in (args.test_data, args.test_x, args.test_y) if p]
    for path in paths:
        if not os.path.isfile(path):
            raise UsageError(f"{path}: file not found")
    if not paths:
        return None
    source = ({"npz": os.path.abspath(args.test_data)} if args.test_data else
              {"x": os.path.abspath(args.test_x), "y": args.test_y and os.path.abspath(args.test_y)})
    try:
        data = load_test_data(source)
    except Exception as exc:  # a corrupt file, pickled objects, not an .npy/.npz at all
        raise UsageError(f"{args.test_data or args.test_x}: cannot be read as test data "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    arrays = []  # (file, name, array)
    for name, x in data["inputs"].items():
        arrays.append((args.test_data or args.test_x, name or "x", x))
    if data["y"] is not None:
        arrays.append((args.test_data or args.test_y, "y", data["y"]))
    arrays += [(args.test_data, "meta/" + k, v) for k, v in data["meta"].items()]
    if not data["inputs"]:
        raise UsageError(f"{args.test_data}: no input arrays (expected one per model input, keyed by its name, "
                         "besides 'y' and 'meta/...')")
    for file, name, x in arrays:
        if x.ndim == 0 or x.dtype.kind not in "biufc":
            raise UsageError(f"{file}: {name} is a {x.dtype} array of shape {list(x.shape)}; expected numbers with "
                             "one row per sample")
        if x.dtype.kind in "fc" and not np.isfinite(x).all():
            raise UsageError(f"{file}: {name} contains NaN or infinite values")
    counts = {name: len(x) for _, name, x in arrays}
    if len(set(counts.values())) > 1:
        raise UsageError(f"{args.test_data or args.test_x}: the arrays have different sample counts "
                         f"({', '.join(f'{k} {v}' for k, v in counts.items())})")
    if not next(iter(counts.values())):
        raise UsageError(f"{args.test_data or args.test_x}: no samples")
    return {"source": source, "n": next(iter(counts.values())),
            "arrays": {name: list(x.shape) for _, name, x in arrays}, "inputs": data["inputs"]}


def check_fit(models: List[Dict[str, Any]], data: Dict[str, Any], args: argparse.Namespace) -> None:
    """Every input a bundle's manifest names is in the test data, with the manifest's feature shape."""
    for model in models:
        inputs = model["spec"].get("inputs") or []
        names = [i["name"] for i in inputs]
        if args.test_x and len(inputs) > 1:
            raise UsageError(f"{model['file']} takes {len(inputs)} inputs ({', '.join(names)}); --test-x gives one: "
                             "pass --test-data DATA.npz with one array per input")
        if not args.test_data:
            continue
        for i in inputs:
            x = data["inputs"].get(i["name"])
            if x is None and len(data["inputs"]) == 1 and len(inputs) == 1:
                x = next(iter(data["inputs"].values()))  # a one-input model is fed the only array, whatever its name
            if x is None:
                raise UsageError(f"{args.test_data}: no array '{i['name']}' for the input '{i['name']}' of "
                                 f"{model['file']} (the file has {', '.join(sorted(data['arrays']))})")
            shape = i.get("feature_shape")
            if shape and list(x.shape[1:]) != list(shape):
                raise UsageError(f"{args.test_data}: '{i['name']}' has shape {list(x.shape)}; {model['file']} takes "
                                 f"[N, {', '.join(map(str, shape))}] ({i.get('feature_axes')})")


def run_job(job: Dict[str, Any], timeout: float, worker: Optional[List[str]] = None) -> Dict[str, Any]:
    """One model in a fresh process; a timeout is retried once, then reported. `worker`: the command that starts a
    Python for it (default this one; under qemu-user it must name the emulator, which cannot re-exec itself)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for attempt in (1, 2):
        try:
            proc = subprocess.run([*(worker or [sys.executable]), "-m", "benchmarks.worker", json.dumps(job)], cwd=here,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            if attempt == 2:
                return {"file": job["file"], "ok": False, "error": f"timed out twice after {timeout:.0f} s"}
            continue
        for line in proc.stdout.splitlines():
            if line.startswith("BENCHMARK_RESULT "):
                return json.loads(line[len("BENCHMARK_RESULT "):])
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"file": job["file"], "ok": False, "error": f"worker exited with status {proc.returncode}: {tail}"}
    raise AssertionError("unreachable")


def metric_columns(results: List[Dict[str, Any]]) -> List[str]:
    """The table's metric columns: each task metric the results carry (accuracy, per, si_sdri, ...), named after it;
    accuracy when none do."""
    cols: List[str] = []
    for r in results:
        name = (r.get("task") or {}).get("metric") or "accuracy"
        if "metrics" in r and name not in cols:
            cols.append(name)
    return cols or ["accuracy"]


def write_atomic(path: str, text: str) -> None:
    """Write `path` through a temporary sibling and os.replace: a reader never sees half a file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_tables(results: List[Dict[str, Any]], stem: str, emulated: bool = False) -> str:
    """STEM.csv and STEM.md (one row per result; the metric columns are named after the task's metric); returns
    the Markdown."""
    metrics = metric_columns(results)
    cols = ["file", "precision", "size_kb", "threads", "xnnpack", "median_ms", "p90_ms", "std_ms", "peak_rss_mb",
            *metrics, "ok"]
    rows = []
    for r in results:
        lat, got = r.get("latency", {}), r.get("metrics") or {}
        metric = (r.get("task") or {}).get("metric") or "accuracy"
        row = {"file": os.path.basename(r["file"]), "precision": r.get("precision"),
               "size_kb": None if r.get("size_bytes") is None else round(r["size_bytes"] / 1024, 1),
               "threads": r.get("threads"), "xnnpack": r.get("xnnpack"), "median_ms": _r(lat.get("median_ms")),
               "p90_ms": _r(lat.get("p90_ms")), "std_ms": _r(lat.get("std_ms")),
               "peak_rss_mb": _r(r.get("peak_rss_mb")),
               "ok": "yes" if r.get("ok") else "FAILED: " + r.get("error", "")}
        row.update({m: _r(got.get(m), 4) if m == metric else None for m in metrics})
        rows.append(row)
    if emulated:  # an emulator's timings must never be read as the device's latency: say so in every header
        renamed = {c: "emulated_" + c for c in ("median_ms", "p90_ms", "std_ms")}
        cols = [renamed.get(c, c) for c in cols]
        rows = [{renamed.get(k, k): v for k, v in row.items()} for row in rows]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_atomic(stem + ".csv", buf.getvalue())
    md = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    for row in rows:
        md += "| " + " | ".join("" if row[c] is None else str(row[c]) for c in cols) + " |\n"
    write_atomic(stem + ".md", md)
    return md


def _r(v, nd=3):
    return None if v is None else round(float(v), nd)


def main(argv: List[str] = None) -> int:
    try:
        return _main(argv)
    except UsageError as exc:
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return 2


def _main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("targets", nargs="+", help="bundle folders (with manifest.json) and/or .tflite/.onnx files")
    p.add_argument("--threads", default=f"1,{os.cpu_count() or 1}", help="thread counts, e.g. 1,4 (default 1 and all)")
    p.add_argument("--xnnpack", default="on,off", help="for .tflite: on, off or on,off")
    p.add_argument("--test-data", metavar="DATA.npz",
                   help="test set: one array per model input keyed by its name, in the feature layout "
                        "[N, *feature_shape]; optional 'y' (targets) and 'meta/KEY' (per-sample extras)")
    p.add_argument("--test-x", help="test features .npy for a one-input model, e.g. [N, 40, 500]")
    p.add_argument("--test-y", help="test labels .npy [N] (indices or one-hot)")
    p.add_argument("--subset", type=int, help="evaluate only the first N test samples (slow targets)")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--warmup-seconds", type=float, default=0.5)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per model before one retry")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help=f"output stem: STEM.json, STEM.md, STEM.csv (default {DEFAULT_OUT}, under this directory)")
    p.add_argument("--save-outputs", metavar="DIR", help="write each model's outputs on the test set to DIR/*.npy "
                                                         "(to compare targets: emulated vs native, board vs desktop)")
    p.add_argument("--emulated", action="store_true",
                   help="this runs under an emulator: timings are flagged emulated and never shown as latency")
    p.add_argument("--worker-python", metavar="CMD",
                   help="command line that starts the per-model worker Python (default: this Python)")
    args = p.parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        raise UsageError(f"--threads '{args.threads}': expected numbers like 1,4") from None
    xnn = {"on": True, "off": False}
    try:
        xnnpack = [xnn[v.strip()] for v in args.xnnpack.split(",")]
    except KeyError:
        raise UsageError(f"--xnnpack '{args.xnnpack}': expected on, off or on,off") from None
    data = load_and_check_data(args)
    models = find_models(args.targets)
    if data is not None:
        check_fit(models, data, args)
        del data["inputs"]  # the workers load their own copy
    timing = {"runs": args.runs, "min_s": args.min_seconds, "warmup_s": args.warmup_seconds}
    worker = shlex.split(args.worker_python) if args.worker_python else None
    outputs_dir = os.path.abspath(args.save_outputs) if args.save_outputs else None
    if outputs_dir:
        os.makedirs(outputs_dir, exist_ok=True)
    results, started = [], time.time()
    for model in models:
        path, meta = model["file"], model["manifest"]
        for n in threads:
            for use_xnn in (xnnpack if path.endswith(".tflite") else [True]):
                job = {"file": os.path.abspath(path), "threads": n, "xnnpack": use_xnn, "timing": timing,
                       "data": data and data["source"], "subset": args.subset, "spec": model["spec"]}
                if outputs_dir:  # numbered: two bundles may both hold a model_fp32.tflite
                    bundle = os.path.basename(os.path.dirname(os.path.abspath(path)))
                    name = f"{len(results):03d}-{bundle}-{os.path.basename(path)}-t{n}-xnn_{'on' if use_xnn else 'off'}"
                    job["save_outputs"] = os.path.join(outputs_dir, name + ".npy")
                print(f"[bench] {path} threads={n} xnnpack={'on' if use_xnn else 'off'}", flush=True)
                r = run_job(job, args.timeout, worker)
                if args.emulated and "latency" in r:
                    r["latency"]["emulated"] = True
                parity = meta.get("parity") or {}
                r.update({"file": path, "size_bytes": os.path.getsize(path) if os.path.isfile(path) else None,
                          "precision": meta.get("precision"), "format": meta.get("format"),
                          "params": model["source"].get("params"), "macs": model["source"].get("macs"),
                          "exporter_accuracy": parity.get("accuracy"),
                          "exporter_metrics": parity.get("metric") if isinstance(parity.get("metric"), dict) else None,
                          "exporter_parity": parity or None})
                r.setdefault("task", {"name": None, "kind": "classification", "metric": "accuracy"})
                results.append(r)
                if not r.get("ok"):
                    print(f"[bench] FAILED {path}: {r.get('error')}", flush=True)
    out = {"schema": SCHEMA_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "command": shlex.join(["python", "-m", "benchmarks"] + (sys.argv[1:] if argv is None else list(argv))),
           "device": device_fingerprint(), "emulated": args.emulated, "outputs_dir": outputs_dir,
           "test_data": data and {"n": data["n"], "arrays": data["arrays"],
                                  "files": [v for v in data["source"].values() if v]},
           "seconds": round(time.time() - started, 1), "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_atomic(args.out + ".json", json.dumps(out, indent=1))
    print(write_tables(results, args.out, emulated=args.emulated))
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
