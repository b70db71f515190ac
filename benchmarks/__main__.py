"""python -m benchmarks BUNDLE_OR_FILES ... : size, latency, memory and accuracy of each model file.

Each (model, threads, XNNPACK) combination runs in a fresh process, so one model's memory does not leak into the
next. A model that fails is marked failed in the results and the run goes on; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from benchmarks.fingerprint import device_fingerprint

SCHEMA_VERSION = 1


def find_models(targets: List[str]) -> List[Dict[str, Any]]:
    """Model files from bundles (folders with manifest.json) and plain files, with their manifest entries."""
    found = []
    for target in targets:
        if os.path.isdir(target):
            manifest_path = os.path.join(target, "manifest.json")
            manifest = json.load(open(manifest_path)) if os.path.isfile(manifest_path) else {}
            entries = {a["file"]: a for a in manifest.get("artifacts", [])}
            for name in sorted(os.listdir(target)):
                if name.endswith((".tflite", ".onnx")):
                    found.append({"file": os.path.join(target, name), "manifest": entries.get(name, {}),
                                  "source": manifest.get("source", {})})
        else:
            found.append({"file": target, "manifest": {}, "source": {}})
    return found


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


def write_tables(results: List[Dict[str, Any]], stem: str, emulated: bool = False) -> None:
    cols = ["file", "precision", "size_kb", "threads", "xnnpack", "median_ms", "p90_ms", "std_ms", "peak_rss_mb",
            "accuracy", "ok"]
    rows = []
    for r in results:
        lat, acc = r.get("latency", {}), r.get("accuracy", {})
        rows.append({"file": os.path.basename(r["file"]), "precision": r.get("precision"),
                     "size_kb": round(r.get("size_bytes", 0) / 1024, 1), "threads": r.get("threads"),
                     "xnnpack": r.get("xnnpack"), "median_ms": _r(lat.get("median_ms")), "p90_ms": _r(lat.get("p90_ms")),
                     "std_ms": _r(lat.get("std_ms")), "peak_rss_mb": _r(r.get("peak_rss_mb")),
                     "accuracy": _r(acc.get("accuracy"), 4), "ok": "yes" if r.get("ok") else "FAILED: " + r.get("error", "")})
    if emulated:  # an emulator's timings must never be read as the device's latency: say so in every header
        renamed = {c: "emulated_" + c for c in ("median_ms", "p90_ms", "std_ms")}
        cols = [renamed.get(c, c) for c in cols]
        rows = [{renamed.get(k, k): v for k, v in row.items()} for row in rows]
    with open(stem + ".csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    with open(stem + ".md", "w") as fh:
        fh.write("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
        for row in rows:
            fh.write("| " + " | ".join("" if row[c] is None else str(row[c]) for c in cols) + " |\n")


def _r(v, nd=3):
    return None if v is None else round(float(v), nd)


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("targets", nargs="+", help="bundle folders (with manifest.json) and/or .tflite/.onnx files")
    p.add_argument("--threads", default=f"1,{os.cpu_count() or 1}", help="thread counts, e.g. 1,4 (default 1 and all)")
    p.add_argument("--xnnpack", default="on,off", help="for .tflite: on, off or on,off")
    p.add_argument("--test-x", help="test features .npy [N, 40, 500]")
    p.add_argument("--test-y", help="test labels .npy [N] (indices or one-hot)")
    p.add_argument("--subset", type=int, help="evaluate only the first N test clips (slow targets)")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--warmup-seconds", type=float, default=0.5)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per model before one retry")
    p.add_argument("--out", default="benchmarks/results/run", help="output stem: STEM.json, STEM.md, STEM.csv")
    p.add_argument("--save-outputs", metavar="DIR", help="write each model's outputs on the test clips to DIR/*.npy "
                                                         "(to compare targets: emulated vs native, board vs desktop)")
    p.add_argument("--emulated", action="store_true",
                   help="this runs under an emulator: timings are flagged emulated and never shown as latency")
    p.add_argument("--worker-python", metavar="CMD",
                   help="command line that starts the per-model worker Python (default: this Python)")
    args = p.parse_args(argv)
    for path in (args.test_x, args.test_y):
        if path and not os.path.isfile(path):
            print(f"benchmarks: error: {path}: file not found", file=sys.stderr)
            return 2
    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        print(f"benchmarks: error: --threads '{args.threads}': expected numbers like 1,4", file=sys.stderr)
        return 2
    xnn = {"on": True, "off": False}
    try:
        xnnpack = [xnn[v.strip()] for v in args.xnnpack.split(",")]
    except KeyError:
        print(f"benchmarks: error: --xnnpack '{args.xnnpack}': expected on, off or on,off", file=sys.stderr)
        return 2
    timing = {"runs": args.runs, "min_s": args.min_seconds, "warmup_s": args.warmup_seconds}
    worker = shlex.split(args.worker_python) if args.worker_python else None
    outputs_dir = os.path.abspath(args.save_outputs) if args.save_outputs else None
    if outputs_dir:
        os.makedirs(outputs_dir, exist_ok=True)
    results, started = [], time.time()
    for model in find_models(args.targets):
        path, meta = model["file"], model["manifest"]
        for n in threads:
            for use_xnn in (xnnpack if path.endswith(".tflite") else [True]):
                job = {"file": os.path.abspath(path), "threads": n, "xnnpack": use_xnn, "timing": timing,
                       "x": args.test_x and os.path.abspath(args.test_x), "subset": args.subset,
                       "y": args.test_y and os.path.abspath(args.test_y)}
                if outputs_dir:  # numbered: two bundles may both hold a model_fp32.tflite
                    bundle = os.path.basename(os.path.dirname(os.path.abspath(path)))
                    name = f"{len(results):03d}-{bundle}-{os.path.basename(path)}-t{n}-xnn_{'on' if use_xnn else 'off'}"
                    job["save_outputs"] = os.path.join(outputs_dir, name + ".npy")
                print(f"[bench] {path} threads={n} xnnpack={'on' if use_xnn else 'off'}", flush=True)
                r = run_job(job, args.timeout, worker)
                if args.emulated and "latency" in r:
                    r["latency"]["emulated"] = True
                r.update({"file": path, "size_bytes": os.path.getsize(path) if os.path.isfile(path) else None,
                          "precision": meta.get("precision"), "format": meta.get("format"),
                          "params": model["source"].get("params"), "macs": model["source"].get("macs"),
                          "exporter_accuracy": (meta.get("parity") or {}).get("accuracy")})
                results.append(r)
                if not r.get("ok"):
                    print(f"[bench] FAILED {path}: {r.get('error')}", flush=True)
    out = {"schema": SCHEMA_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "command": shlex.join(["python", "-m", "benchmarks"] + sys.argv[1:]),  # re-runnable as written
           "device": device_fingerprint(), "emulated": args.emulated, "outputs_dir": outputs_dir,
           "seconds": round(time.time() - started, 1), "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".json.tmp"
    with open(tmp, "w") as fh:
        json.dump(out, fh, indent=1)
    os.replace(tmp, args.out + ".json")
    write_tables(results, args.out, emulated=args.emulated)
    print(open(args.out + ".md").read())
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
