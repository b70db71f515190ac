"""CMa-FSMC's pruning choices on a residual CNN: how much each block changes the concept masks (DoC), which blocks
to remove (block level), and one pruning rate per block found by differential evolution so that the REALLY pruned
model meets a FLOPs (MACs) and parameter reduction within 4e-4 (filter level); filters inside a block chosen by L1.

The search evaluates 50 x 100 candidates, too many to prune each for real, so it predicts MACs and parameters from
a cost model measured on real surgeries: the parent, and per internal layer the parent with that layer cut to one
channel. A block's internal layers feed only the block's own next layer, so the counts are affine in each one's
kept width and the prediction is exact; the chosen rates are then pruned for real and measured, and a mismatch is
an error, not a row.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.pruning.block_surgery import block_io, block_names
from edgeprune.scoring.concept_mask import degree_of_change, doc_rates
from edgeprune.search.evolution import allocation_objective, differential_evolution, violation


def block_doc(model: Any, x: np.ndarray, threshold: float = 0.2) -> dict[str, int]:
    """Each block's DoC on the samples x (the model's layout, [B, 1, F, T] for resnet-kws): positions where the
    concept masks of its input and output differ, upsampled to the input's frequency x time."""
    import torch

    names = block_names(model)
    io = block_io(model, torch.from_numpy(np.asarray(x, dtype=np.float32)), names)
    size = tuple(np.asarray(x).shape[-2:])
    return {n: degree_of_change(io[n][0], io[n][1], size, threshold) for n in names}


def blocks_to_drop(doc: dict[str, int], n: int) -> list[str]:
    """The n blocks with the smallest DoC (ties broken by forward order)."""
    if not 1 <= n < len(doc):
        raise EdgepruneError(f"blocks to drop: {n}; the model has {len(doc)} blocks, so 1..{len(doc) - 1}")
    order = sorted(range(len(doc)), key=lambda i: (list(doc.values())[i], i))
    return [list(doc)[i] for i in sorted(order[:n])]


def internal_layers(model: Any, framework: str, arch: dict[str, Any]) -> dict[str, list[str]]:
    """Per block, the prunable layers whose channels stay inside it (not coupled to the skip path)."""
    from edgeprune.pruning.api import example_inputs
    from edgeprune.pruning.groups import find_groups

    groups = find_groups(model, framework, example_inputs(framework, arch) if framework == "torch" else None)
    out: dict[str, list[str]] = {}
    for block in block_names(model, framework, arch):
        inside = [g.members[0] for g in groups.groups if all(m.startswith(block + ".") for m in g.members)]
        if not inside:
            raise EdgepruneError(f"{block} has no channels of its own to prune (every layer is coupled to the skip)")
        out[block] = inside
    return out


def kept_width(channels: int, rate: float) -> int:
    """ceil(C * (1 - rate)), at least one channel: the seed's rounding."""
    return max(1, math.ceil(channels * (1 - rate) - 1e-9))


def l1_keep(model: Any, framework: str, widths: dict[str, int]) -> dict[str, list[int]]:
    """For each layer, the indices of its `widths[layer]` filters of largest L1 norm, ascending."""
    from edgeprune.scoring.kernels import weight_kernels
    from edgeprune.scoring.magnitude import filter_norms

    kernels = weight_kernels(model, list(widths))
    keep = {}
    for layer, k in widths.items():
        norms = filter_norms(kernels[layer], 1)
        keep[layer] = sorted(np.argsort(-norms, kind="stable")[:k].tolist())
    return keep


@dataclass
class CostModel:
    """Parameters and MACs of the model with each internal layer cut to a given width, predicted from real
    surgeries (exact when the counts are affine in each width, as they are for layers inside residual blocks)."""

    base: dict[str, float]
    channels: dict[str, int]
    per_channel: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def measured(cls, model: Any, framework: str, arch: dict[str, Any], layers: list[str]) -> CostModel:
        from edgeprune.models.measure import measure
        from edgeprune.pruning.api import apply_keep, prunable_channels

        widths = prunable_channels(model, framework, arch)
        base = measure(model, framework, arch)
        cost = cls(base, {n: widths[n] for n in layers})
        for layer in layers:
            child, _ = apply_keep(model, framework, arch, {layer: [0]})
            one = measure(child, framework, arch)
            cost.per_channel[layer] = {k: (base[k] - one[k]) / (widths[layer] - 1) for k in ("params", "macs")}
        return cost

    def predict(self, widths: dict[str, int]) -> dict[str, float]:
        return {k: self.base[k] - sum(self.per_channel[n][k] * (self.channels[n] - w) for n, w in widths.items())
                for k in ("params", "macs")}

    def reductions(self, widths: dict[str, int]) -> dict[str, float]:
        """The FLOPs (MACs) and parameter reductions, 1 - after / before."""
        p = self.predict(widths)
        return {"macs": 1 - p["macs"] / self.base["macs"], "params": 1 - p["params"] / self.base["params"]}


def widths_for(rates: np.ndarray, blocks: list[str], internal: dict[str, list[str]],
               channels: dict[str, int]) -> dict[str, int]:
    return {layer: kept_width(channels[layer], float(r)) for b, r in zip(blocks, rates) for layer in internal[b]}


def search_rates(cost: CostModel, internal: dict[str, list[str]], doc: dict[str, int],
                 targets: dict[str, float], tolerance: float = 4e-4, population: int = 50, iterations: int = 100,
                 bounds: tuple[float, float] = (0.1, 0.9), seed: int = 0) -> dict[str, Any]:
    """The per-block rates: DoC scaled to preferred rates (small DoC -> 0.7, large -> 0.4), differential evolution
    (rand/1/bin, F 0.5, CR 0.9) minimising the distance of the rates' proportions to those, under the constraint
    that each target reduction ("macs", "params"; 0 or absent: free) is met within `tolerance`. Targets out of
    reach are one clear error saying how close the search got."""
    blocks = list(doc)
    for name, t in targets.items():
        if name not in ("macs", "params") or not 0 <= t < 1:
            raise EdgepruneError(f"target {name}={t}: expected macs or params reductions in [0, 1)")
    preferred = doc_rates([doc[b] for b in blocks])

    def evaluate(x: np.ndarray) -> tuple[float, float]:
        achieved = cost.reductions(widths_for(x, blocks, internal, cost.channels))
        return violation(achieved, targets, tolerance), allocation_objective(preferred, x)

    start = time.perf_counter()
    result = differential_evolution(evaluate, len(blocks), bounds=bounds, population=population,
                                    iterations=iterations, seed=seed)
    widths = widths_for(result.x, blocks, internal, cost.channels)
    achieved = cost.reductions(widths)
    if not result.feasible:
        raise EdgepruneError(
            "the targets " + ", ".join(f"{k} {v:.4f}" for k, v in targets.items() if v) + " cannot be met within "
            f"rates [{bounds[0]}, {bounds[1]}]: the closest found reduces macs {achieved['macs']:.4f}, params "
            f"{achieved['params']:.4f}")
    return {"rates": {b: round(float(r), 6) for b, r in zip(blocks, result.x)}, "widths": widths,
            "preferred": {b: round(float(p), 6) for b, p in zip(blocks, preferred)},
            "predicted": {k: round(v, 6) for k, v in achieved.items()}, "objective": round(result.objective, 6),
            "evaluations": result.evaluations, "seconds": round(time.perf_counter() - start, 3)}


def prune_widths(model: Any, framework: str, arch: dict[str, Any], widths: dict[str, int]) -> tuple[Any, dict]:
    """The model with each layer cut to its width by L1 (for real), and the keep-lists."""
    from edgeprune.pruning.api import apply_keep

    keep = l1_keep(model, framework, widths)
    child, _ = apply_keep(model, framework, arch, keep)
    return child, keep


def measured_reductions(parent: Any, child: Any, framework: str, arch: dict[str, Any]) -> dict[str, float]:
    from edgeprune.models.measure import measure

    a, b = measure(parent, framework, arch), measure(child, framework, arch)
    return {k: 1 - b[k] / a[k] for k in ("macs", "params")}
