"""One channel-pruning call for both frameworks: keep-lists in, a smaller model and a per-layer table out.

Surgery is per framework (`torch_surgery` on Torch-Pruning's dependency graph, `keras_surgery` by rebuilding the
Keras graph); targets, tables and checkpoints are shared. Channel keep-lists are the "channels" transform of a
checkpoint's transform list (`pruning.transforms`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from edgeprune.models.measure import layer_table
from edgeprune.models.registry import input_specs
from edgeprune.pruning.transforms import register_transform


@dataclass
class PruneResult:
    model: Any
    keep: dict[str, list[int]]
    notes: list[str] = field(default_factory=list)
    table: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def example_inputs(framework: str, arch: dict[str, Any]) -> Any:
    """Zero inputs of batch 1 in the model's own layout: a tuple of tensors (torch) or one array / a list (Keras)."""
    import numpy as np

    shapes = [s.shape for s in input_specs(arch, framework)]
    if framework == "torch":
        from edgeprune.frameworks.torch_fw import example_inputs as zeros

        return zeros(shapes)
    arrays = [np.zeros((1, *s), dtype=np.float32) for s in shapes]
    return arrays[0] if len(arrays) == 1 else arrays


def apply_keep(model: Any, framework: str, arch: dict[str, Any], keep: dict[str, list[int]]) -> tuple[Any, list[str]]:
    """Remove every channel not in `keep` for real; the input model is left untouched."""
    if framework == "torch":
        from edgeprune.pruning.torch_surgery import prune_torch

        return prune_torch(model, keep, example_inputs(framework, arch))
    from edgeprune.pruning.keras_surgery import prune_keras

    return prune_keras(model, keep)


@register_transform("channels")
def _channels(model: Any, framework: str, arch: dict[str, Any], params: dict[str, Any]) -> tuple[Any, list[str]]:
    keep = params.get("keep")
    if not isinstance(keep, dict):
        from edgeprune.errors import EdgepruneError

        raise EdgepruneError("a channels transform needs {\"keep\": {layer: [channel indices]}}")
    return apply_keep(model, framework, arch, keep)


def prunable_channels(model: Any, framework: str, arch: dict[str, Any]) -> dict[str, int]:
    """Layers whose output channels can be pruned, with their widths."""
    if framework == "torch":
        from edgeprune.pruning.torch_surgery import channels_of

        return channels_of(model, example_inputs(framework, arch))
    from edgeprune.pruning.keras_surgery import channels_of

    return channels_of(model)


def prune(model: Any, framework: str, arch: dict[str, Any], keep: dict[str, list[int]],
          criterion: str = "") -> PruneResult:
    """Prune `model` to `keep` and describe what changed."""
    start = time.perf_counter()
    pruned, notes = apply_keep(model, framework, arch, keep)
    seconds = time.perf_counter() - start
    return PruneResult(pruned, keep, list(notes), layer_table(model, pruned, framework, arch, criterion), seconds)
