"""python -m benchmarks.overhead MODEL.tflite ... : what the suite's harness adds to a bare invoke loop, and how far
apart the medians of repeated runs are.

For each model (and thread count, XNNPACK setting) it runs K pairs of blocks in one go:
- harness: the model exactly as `python -m benchmarks` runs it: a fresh `benchmarks.worker` process (run_one ->
  measure.latency), whose reported median is the figure;
- bare: a fresh process with an Interpreter on the same settings, the same input values set once, the same
  first inference and warm-up, then `interp.invoke()` timed with time.perf_counter, as many times as the harness
  needs to fill its minimum run count and time.
Blocks alternate in ABBA order (harness-bare, bare-harness, ...), so machine noise and slow drift hit both sides
equally. Reported: the overhead (median over pairs of harness/bare - 1) and the spread of the K harness medians
(max/min - 1), next to the bare loop's own spread, which is the machine's noise floor.

Needs numpy and ai-edge-litert only, like the rest of benchmarks/ (.tflite files only: the bare loop is LiteRT's).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
import time
from typing import Any, Dict, List

import numpy as np

from benchmarks.__main__ import run_job
from benchmarks.fingerprint import device_fingerprint

BARE_FLAG = "--bare-job"  # internal: this module re-runs itself with it to time the bare loop in a fresh process
OVERHEAD_LIMIT_PCT = 3.0  # the bounds
SPREAD_LIMIT_PCT = 5.0


def bare_latency(path: str, threads: int, xnnpack: bool, runs: int, min_s: float, warmup_s: float) -> Dict[str, Any]:
    """The bare loop: LiteRT's Interpreter and nothing else between the timer calls."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs: Dict[str, Any] = {"model_path": path, "num_threads": threads}
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(**kwargs)
    interp.allocate_tensors()
    # The harness feeds zeros to every input, quantised to each one's zero point for int8: the same values here.
    for inp in interp.get_input_details():
        interp.set_tensor(inp["index"], np.full(inp["shape"], inp["quantization"][1], dtype=inp["dtype"]))
    interp.invoke()  # first inference (the harness times it separately, outside the median)
    warm, start = 0, time.perf_counter()
    while warm < 1 or time.perf_counter() - start < warmup_s:
        interp.invoke()
        warm += 1
    warm_ms = (time.perf_counter() - start) * 1e3 / warm
    n = max(runs, math.ceil(min_s * 1e3 / warm_ms))  # the harness's stopping rule, decided before the loop
    ms = [0.0] * n
    loop_start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        interp.invoke()
        ms[i] = (time.perf_counter() - t) * 1e3
    loop_ms = (time.perf_counter() - loop_start) * 1e3 / n
    a = np.asarray(ms)
    # loop_ms_per_invoke (no per-invoke timer) against mean_ms shows what timing each invoke costs
    return {"n": n, "median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)), "mean_ms": float(a.mean()),
            "std_ms": float(a.std()), "loop_ms_per_invoke": loop_ms}


def run_bare(job: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    """The bare loop in a fresh process, as the harness's worker is one."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.overhead", BARE_FLAG, json.dumps(job)], cwd=here,
                          capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("BARE_RESULT "):
            return json.loads(line[len("BARE_RESULT "):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"bare loop for {job['file']} exited with status {proc.returncode}: {tail}")


def measure_pairs(path: str, threads: int, xnnpack: bool, timing: Dict[str, Any], repeats: int,
                  timeout: float) -> Dict[str, Any]:
    """K harness and K bare blocks in ABBA order, and their summary."""
    job = {"file": os.path.abspath(path), "threads": threads, "xnnpack": xnnpack, "timing": timing,
           "data": None, "subset": None}
    blocks: List[Dict[str, Any]] = []
    for i in range(repeats):
        block: Dict[str, Any] = {"order": "harness,bare" if i % 2 == 0 else "bare,harness"}
        for kind in block["order"].split(","):
            if kind == "harness":
                r = run_job(job, timeout)
                if not r.get("ok"):
                    raise RuntimeError(f"harness run of {path} failed: {r.get('error')}")
                block["harness"] = {k: r["latency"][k] for k in ("n", "median_ms", "p90_ms", "mean_ms", "std_ms")}
            else:
                block["bare"] = run_bare(job, timeout)
        block["ratio"] = block["harness"]["median_ms"] / block["bare"]["median_ms"]
        print(f"[overhead] {os.path.basename(path)} threads={threads} xnnpack={'on' if xnnpack else 'off'} "
              f"pair {i + 1}/{repeats}: harness {block['harness']['median_ms']:.3f} ms, "
              f"bare {block['bare']['median_ms']:.3f} ms, ratio {block['ratio']:.4f}", flush=True)
        blocks.append(block)
    harness = [b["harness"]["median_ms"] for b in blocks]
    bare = [b["bare"]["median_ms"] for b in blocks]
    ratios = [b["ratio"] for b in blocks]
    overhead = (float(np.median(ratios)) - 1) * 100
    spread = (max(harness) / min(harness) - 1) * 100
    with open(path, "rb") as fh:
        sha256 = hashlib.sha256(fh.read()).hexdigest()
    return {"file": path, "sha256": sha256, "threads": threads, "xnnpack": xnnpack, "size_bytes": os.path.getsize(path),
            "harness_median_ms": float(np.median(harness)), "bare_median_ms": float(np.median(bare)),
            "overhead_pct": overhead, "ratio_min": min(ratios), "ratio_max": max(ratios),
            "harness_spread_pct": spread, "bare_spread_pct": (max(bare) / min(bare) - 1) * 100,
            "overhead_ok": overhead <= OVERHEAD_LIMIT_PCT, "spread_ok": spread <= SPREAD_LIMIT_PCT, "blocks": blocks}


def write_markdown(out: Dict[str, Any], path: str) -> None:
    dev, t = out["device"], out["timing"]
    lines = [
        "# Harness overhead and repeatability", "",
        f"Command: `{out['command']}`  ",
        f"Machine: {dev['cpu']} ({dev['machine']}, {dev['cores']} cores), {dev['os']}, Python {dev['python']}, "
        + ", ".join(f"{k} {v}" for k, v in sorted(dev["runtimes"].items()))
        + f"; load average {out['loadavg_start'][0]:.2f} at the start, {out['loadavg_end'][0]:.2f} at the end "
          f"(1 min); {out['created']}, {out['seconds']:.0f} s.", "",
        f"Each model: {out['repeats']} pairs of blocks in ABBA order. Harness block: a fresh `benchmarks.worker` "
        f"process, exactly as `python -m benchmarks` runs it (warm-up >= {t['warmup_s']} s, then >= {t['runs']} "
        f"invokes and >= {t['min_s']} s); bare block: a fresh process, LiteRT Interpreter on the same settings, "
        "`interp.invoke()` timed with `time.perf_counter`, the same warm-up and as many invokes. overhead = median "
        "over the pairs of (harness median / bare median) - 1; spread = max / min - 1 of the medians of the "
        f"{out['repeats']} runs. Limits from the issue: overhead <= {OVERHEAD_LIMIT_PCT:g} %, spread <= "
        f"{SPREAD_LIMIT_PCT:g} % on a quiet machine.", "",
        "| model | threads | xnnpack | harness median ms | bare median ms | overhead % | pair ratios min-max | "
        f"harness spread % | bare spread % | overhead <= {OVERHEAD_LIMIT_PCT:g} % | spread <= {SPREAD_LIMIT_PCT:g} % |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|---|---|",
    ]
    if out["loadavg_start"][0] >= 1.0:  # sampled before this run started: other processes were busy
        lines[5:5] = [f"**Not a quiet machine**: the 1-minute load average was {out['loadavg_start'][0]:.2f} "
                      "before this run started; rerun when nothing else runs before judging the limits.", ""]
    for r in out["results"]:
        lines.append(
            f"| {os.path.basename(r['file'])} | {r['threads']} | {'on' if r['xnnpack'] else 'off'} | "
            f"{r['harness_median_ms']:.3f} | {r['bare_median_ms']:.3f} | {r['overhead_pct']:+.2f} | "
            f"{r['ratio_min']:.3f}-{r['ratio_max']:.3f} | {r['harness_spread_pct']:.2f} | {r['bare_spread_pct']:.2f} | "
            f"{'yes' if r['overhead_ok'] else 'NO'} | {'yes' if r['spread_ok'] else 'NO'} |")
    lines += ["", "Medians of each run, in the order they ran (ms):", "",
              "| model | threads | xnnpack | harness runs | bare runs |", "|---|---:|---|---|---|"]
    for r in out["results"]:
        runs = lambda kind: ", ".join(f"{b[kind]['median_ms']:.3f}" for b in r["blocks"])  # noqa: E731
        lines.append(f"| {os.path.basename(r['file'])} | {r['threads']} | {'on' if r['xnnpack'] else 'off'} | "
                     f"{runs('harness')} | {runs('bare')} |")
    with open(path + ".tmp", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)


def main(argv: List[str] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [BARE_FLAG]:
        job = json.loads(argv[1])
        result = bare_latency(job["file"], job["threads"], job["xnnpack"], **job["timing"])
        print("BARE_RESULT " + json.dumps(result))
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help=".tflite files")
    p.add_argument("--threads", default="1", help="thread counts, e.g. 1,2 (default 1)")
    p.add_argument("--xnnpack", default="on", help="on, off or on,off (default on)")
    p.add_argument("--repeats", type=int, default=5, help="harness and bare runs per model (default 5)")
    p.add_argument("--runs", type=int, default=50, help="as python -m benchmarks (default 50)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="as python -m benchmarks (default 1.0)")
    p.add_argument("--warmup-seconds", type=float, default=0.5, help="as python -m benchmarks (default 0.5)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    p.add_argument("--out", default="runs/benchmarks/harness_overhead", help="output stem: STEM.json, STEM.md")
    args = p.parse_args(argv)
    for path in args.models:
        if not (path.endswith(".tflite") and os.path.isfile(path)):
            print(f"benchmarks.overhead: error: {path}: expected an existing .tflite file", file=sys.stderr)
            return 2
    if args.repeats < 2:
        print("benchmarks.overhead: error: --repeats must be at least 2 to show a spread", file=sys.stderr)
        return 2
    try:
        threads = [int(t) for t in args.threads.split(",")]
        xnnpack = [{"on": True, "off": False}[v.strip()] for v in args.xnnpack.split(",")]
    except (ValueError, KeyError):
        print("benchmarks.overhead: error: expected --threads like 1,2 and --xnnpack on, off or on,off",
              file=sys.stderr)
        return 2
    # the same keys measure.latency takes, so both sides read one dict
    timing = {"runs": args.runs, "min_s": args.min_seconds, "warmup_s": args.warmup_seconds}
    started, load_start = time.time(), os.getloadavg()
    try:
        results = [measure_pairs(path, n, x, timing, args.repeats, args.timeout)
                   for path in args.models for n in threads for x in xnnpack]
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"benchmarks.overhead: error: {exc}", file=sys.stderr)
        return 1
    out = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "command": "python -m benchmarks.overhead " + " ".join(shlex.quote(a) for a in argv),
           "device": device_fingerprint(), "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
           "seconds": round(time.time() - started, 1), "repeats": args.repeats, "timing": timing, "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json.tmp", "w") as fh:
        json.dump(out, fh, indent=1)
    os.replace(args.out + ".json.tmp", args.out + ".json")
    write_markdown(out, args.out + ".md")
    print(open(args.out + ".md").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
