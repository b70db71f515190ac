"""Training and inference throughput of each twin on this machine (samples/s), for benchmarks/results/.

    python -m edgeprune.training.throughput --out benchmarks/results/training_throughput

Each framework is measured in the same run, on the same random batches, after warm-up steps; the figure is the
median over timed rounds so one noisy round on a shared machine does not decide it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from edgeprune.frameworks import get_adapter
from edgeprune.models import arch_spec, build
from edgeprune.models.inference import model_inputs
from edgeprune.results import write_result


def measure(framework: str, batch_size: int = 32, steps: int = 10, rounds: int = 3, warmup: int = 3) -> dict:
    """Median training and inference samples/s of the DCASE baseline in `framework`."""
    adapter = get_adapter(framework)
    adapter.seed_everything(0)
    arch = arch_spec("dcase2021_baseline")
    model = build(arch, framework)
    trainer = adapter.Trainer(model, 1e-3)
    rng = np.random.default_rng(0)
    x = model_inputs(arch, framework, {"logmel": rng.normal(-3, 1.5, size=(batch_size, 40, 500)).astype(np.float32)})
    y = rng.integers(0, 10, size=batch_size)
    for _ in range(warmup):
        trainer.step(x, y)
    train_rates, infer_rates = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            trainer.step(x, y)
        train_rates.append(steps * batch_size / (time.perf_counter() - start))
        start = time.perf_counter()
        adapter.predict(model, [np.repeat(x[0], 4, axis=0)], "probs", batch_size=128)
        infer_rates.append(4 * batch_size / (time.perf_counter() - start))
    return {"framework": framework, "batch_size": batch_size,
            "train_samples_per_s": round(statistics.median(train_rates), 1),
            "train_spread": [round(r, 1) for r in (min(train_rates), max(train_rates))],
            "infer_samples_per_s": round(statistics.median(infer_rates), 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench-host/training_throughput")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(torch.get_num_threads())
    rows = [measure(fw, steps=args.steps, rounds=args.rounds) for fw in ("torch", "keras")]
    command = ("python -m edgeprune.training.throughput " + " ".join(argv or [])).strip()
    print(write_result(Path(args.out), "DCASE 2021 1a baseline: training throughput per twin", command,
                       f"median of {args.rounds} rounds of {args.steps} steps; spread = min and max round", rows,
                       ["framework", "batch_size", "train_samples_per_s", "train_spread", "infer_samples_per_s"]))


if __name__ == "__main__":
    main()
