"""python -m benchmarks.grid DIR [--rounds 8] [--block 30] [--threads 1] [--out FILE.json]

The per-invoke time of every .tflite file in DIR (a latency grid: single-layer files at a model's real shapes),
measured in one process in interleaved rounds: each round times a block of invokes of every file, the order
reversed every other round, so drift (frequency, temperature, neighbours) spreads over all files alike. Reports
each file's median block mean and the spread (quartiles) in ms, with the device fingerprint. numpy and a TFLite
runtime only: it runs on the board.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List

import numpy as np

from benchmarks.fingerprint import device_fingerprint
from benchmarks.runtimes import ModelError, Session


def time_files(paths: List[str], rounds: int = 8, block: int = 30, threads: int = 1,
               warmup: int = 5) -> Dict[str, Dict[str, float]]:
    """{file name: {"ms": median block mean, "q1", "q3"}} for files timed in interleaved rounds."""
    if rounds < 1 or block < 1:
        raise ValueError(f"rounds {rounds} and block {block} must be at least 1")
    sessions = []
    for path in paths:
        s = Session(path, threads=threads)
        s.prepare([np.zeros(i["shape"], dtype=np.float32) for i in s.inputs])
        for _ in range(warmup):
            s.invoke_prepared()
        sessions.append(s)
    times: List[List[float]] = [[] for _ in sessions]
    for r in range(rounds):
        order = range(len(sessions)) if r % 2 == 0 else reversed(range(len(sessions)))
        for i in order:
            start = time.perf_counter()
            for _ in range(block):
                sessions[i].invoke_prepared()
            times[i].append((time.perf_counter() - start) / block * 1e3)
    out = {}
    for path, t in zip(paths, times):
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        out[os.path.basename(path)] = {"ms": round(float(med), 5), "q1": round(float(q1), 5), "q3": round(float(q3), 5)}
    return out


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--block", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the JSON here (default: stdout)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.folder):
        print(f"{args.folder}: not a folder of .tflite files", file=sys.stderr)
        return 2
    paths = sorted(os.path.join(args.folder, f) for f in os.listdir(args.folder) if f.endswith(".tflite"))
    if not paths:
        print(f"{args.folder}: no .tflite files", file=sys.stderr)
        return 2
    try:
        files = time_files(paths, args.rounds, args.block, args.threads)
    except (ModelError, ValueError) as exc:
        print(str(exc).splitlines()[0], file=sys.stderr)
        return 2
    doc: Dict[str, Any] = {"device": device_fingerprint(), "threads": args.threads, "rounds": args.rounds,
                           "block": args.block, "files": files}
    text = json.dumps(doc, indent=1)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, args.out)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
