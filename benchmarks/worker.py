"""Runs one model in a fresh process (so peak memory is that model's own) and prints its result as JSON."""

from __future__ import annotations

import json
import resource
import sys

from benchmarks.measure import load_test_data, run_one


def main() -> None:
    job = json.loads(sys.argv[1])
    spec = job.get("spec") or {}
    data = load_test_data(job["data"], job.get("subset")) if job.get("data") else None
    if data is not None and None in data["inputs"] and len(spec.get("inputs") or []) == 1:
        data["inputs"] = {spec["inputs"][0]["name"]: data["inputs"][None]}  # --test-x feeds the one input
    result = run_one(job["file"], job["threads"], job["xnnpack"], data, job["timing"], spec, job.get("save_outputs"))
    # ru_maxrss is KiB on Linux: the peak resident set of this process (runtime, model and the test arrays).
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("BENCHMARK_RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
