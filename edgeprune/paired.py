"""Two .tflite files timed against each other in one process, in alternating blocks: the honest way to say how
much faster one is (drift, frequency and neighbours hit both alike). Host side (LiteRT)."""

from __future__ import annotations


def paired_latency(a: str, b: str, rounds: int = 12, block: int = 200, threads: int = 1) -> dict:
    """Median per-invoke time of two .tflite files measured in alternating blocks (A B B A ...) in one process,
    1 thread, XNNPACK on; returns each file's median block mean (ms) and the median of the per-round ratio b / a."""
    import time

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interps = []
    for path in (a, b):
        it = Interpreter(model_path=path, num_threads=threads)
        it.allocate_tensors()
        for d in it.get_input_details():
            it.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
        for _ in range(20):  # warm-up
            it.invoke()
        interps.append(it)

    def timed(it) -> float:
        start = time.perf_counter()
        for _ in range(block):
            it.invoke()
        return (time.perf_counter() - start) / block * 1e3

    times = {0: [], 1: []}
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for i in order:
            times[i].append(timed(interps[i]))
    ratios = [tb / ta for ta, tb in zip(times[0], times[1])]
    return {"parent_ms": float(np.median(times[0])), "pruned_ms": float(np.median(times[1])),
            "ratio": float(np.median(ratios)), "ratio_spread": [float(min(ratios)), float(max(ratios))]}
