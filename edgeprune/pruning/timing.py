"""Wall time of passive scoring and pruning of the DCASE baseline, per twin, for benchmarks/results/.

    python -m edgeprune.pruning.timing --out benchmarks/results/passive_pruning_time

Scoring (SVD prototypes, distances, keep rule on conv1-3) and surgery (Torch-Pruning's dependency graph, or the
Keras graph rebuild) are timed separately; median of --repeats runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from edgeprune.frameworks import get_adapter
from edgeprune.models import arch_spec, build
from edgeprune.pruning.api import apply_keep
from edgeprune.scoring import score
from edgeprune.results import write_result


def measure(framework: str, repeats: int = 5) -> dict:
    arch = arch_spec("dcase2021_baseline")
    get_adapter(framework).seed_everything(0)  # the kept counts depend on the (random) initial weights
    model = build(arch, framework)
    score_s, prune_s = [], []
    for i in range(repeats + 1):
        start = time.perf_counter()
        scores = score(model, "passive")
        mid = time.perf_counter()
        apply_keep(model, framework, arch, {n: s.keep for n, s in scores.layers.items()})
        end = time.perf_counter()
        if i:  # the first run pays one-off imports and graph compilation
            score_s.append(mid - start)
            prune_s.append(end - mid)
    kept = {n: len(s.keep) for n, s in scores.layers.items()}
    return {"framework": framework, "score_s": round(statistics.median(score_s), 4),
            "prune_s": round(statistics.median(prune_s), 4),
            "total_s": round(statistics.median(a + b for a, b in zip(score_s, prune_s)), 4),
            "kept": ", ".join(f"{k} {v}" for k, v in kept.items())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench-host/passive_pruning_time")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = [measure(fw, args.repeats) for fw in ("torch", "keras")]
    command = ("python -m edgeprune.pruning.timing " + " ".join(argv or [])).strip()
    print(write_result(Path(args.out), "Passive scoring + pruning of the DCASE 2021 1a baseline (random init), wall time",
                       command, f"median of {args.repeats} runs after a warm-up; target: under 1 s", rows,
                       ["framework", "score_s", "prune_s", "total_s", "kept"]))


if __name__ == "__main__":
    main()
