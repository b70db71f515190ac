"""Runs one model in a fresh process (so peak memory is that model's own) and prints its result as JSON."""

from __future__ import annotations

import json
import resource
import sys

import numpy as np

from benchmarks.measure import run_one


def main() -> None:
    job = json.loads(sys.argv[1])
    x = np.load(job["x"]) if job.get("x") else None
    y = np.load(job["y"]) if job.get("y") else None
    if x is not None and job.get("subset"):
        x, y = x[: job["subset"]], (None if y is None else y[: job["subset"]])
    if x is not None and x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if y is not None and y.ndim == 2:
        y = y.argmax(axis=1)
    result = run_one(job["file"], job["threads"], job["xnnpack"], x, y, job["timing"], job.get("save_outputs"))
    # ru_maxrss is KiB on Linux: the peak resident set of this process (runtime, model and the test arrays).
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("BENCHMARK_RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
