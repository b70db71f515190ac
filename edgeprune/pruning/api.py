"""One pruning call for both frameworks: keep-lists in, a smaller model and a per-layer table out.

Surgery is per framework (`torch_surgery` on Torch-Pruning's dependency graph, `keras_surgery` by rebuilding the
Keras graph); targets, tables and checkpoints are shared. A pruned checkpoint stores its parent's architecture
plus the keep-lists, and loading replays them, so any model that can be pruned can be saved and loaded without
pickling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from edgeprune.frameworks import get_adapter


@dataclass
class PruneResult:
    model: Any
    keep: dict[str, list[int]]
    notes: list[str] = field(default_factory=list)
    table: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _example_inputs(framework: str, arch: dict[str, Any]):
    import numpy as np

    adapter = get_adapter(framework)
    x = np.zeros((1, *adapter.input_shape(arch["args"])), dtype=np.float32)
    if framework == "torch":
        import torch

        return torch.from_numpy(x)
    return x


def apply_keep(model: Any, framework: str, arch: dict[str, Any], keep: dict[str, list[int]]) -> tuple[Any, list[str]]:
    """Remove every channel not in `keep` for real; the input model is left untouched."""
    if framework == "torch":
        from edgeprune.pruning.torch_surgery import prune_torch

        return prune_torch(model, keep, _example_inputs(framework, arch))
    from edgeprune.pruning.keras_surgery import prune_keras

    return prune_keras(model, keep)


def prunable_channels(model: Any, framework: str, arch: dict[str, Any]) -> dict[str, int]:
    """Layers whose output channels can be pruned, with their widths."""
    if framework == "torch":
        from edgeprune.pruning.torch_surgery import channels_of

        return channels_of(model, _example_inputs(framework, arch))
    from edgeprune.pruning.keras_surgery import channels_of

    return channels_of(model)


def measure(model: Any, framework: str, arch: dict[str, Any]) -> dict[str, float]:
    """Parameters (BN statistics counted) and MACs for one input."""
    from edgeprune.training.run import describe

    info = describe(model, framework, arch)
    return {"params": info["params"], "macs": info["macs"]}


def layer_table(before: Any, after: Any, framework: str, arch: dict[str, Any], criterion: str) -> list[dict[str, Any]]:
    """Per layer: channels, params and MACs before and after, and the criterion that chose the channels."""
    from edgeprune.training.run import describe

    old = {r["name"]: r for r in describe(before, framework, arch)["layers"]}
    new = {r["name"]: r for r in describe(after, framework, arch)["layers"]}
    rows = []
    for name, r in old.items():
        n = new.get(name, {"output": None, "params": 0, "macs": 0})
        if r["params"] == 0 and r["macs"] == 0:
            continue
        ch_axis = 0 if framework == "torch" else -1
        rows.append({
            "layer": name, "type": r["type"],
            "channels_before": r["output"][ch_axis] if r["output"] else None,
            "channels_after": n["output"][ch_axis] if n["output"] else None,
            "params_before": r["params"], "params_after": n["params"],
            "macs_before": r["macs"], "macs_after": n["macs"], "criterion": criterion,
        })
    return rows


def prune(model: Any, framework: str, arch: dict[str, Any], keep: dict[str, list[int]],
          criterion: str = "") -> PruneResult:
    """Prune `model` to `keep` and describe what changed."""
    start = time.perf_counter()
    pruned, notes = apply_keep(model, framework, arch, keep)
    seconds = time.perf_counter() - start
    return PruneResult(pruned, keep, list(notes), layer_table(model, pruned, framework, arch, criterion), seconds)
