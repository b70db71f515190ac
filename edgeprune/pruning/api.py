"""Channel surgery for both frameworks: keep-lists in, a smaller model out (the input model untouched).

Surgery is per framework (`torch_surgery` on Torch-Pruning's dependency graph, `keras_surgery` by rebuilding the
Keras graph). Channel keep-lists are the "channels" transform of a checkpoint's transform list
(`pruning.transforms`); `pruning.prune` chooses them.
"""

from __future__ import annotations

from typing import Any

from edgeprune.models.registry import input_specs
from edgeprune.pruning.transforms import register_transform


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
    """`cut` for a model of a registered architecture (its example inputs come from the architecture)."""
    return cut(model, framework, keep, example_inputs(framework, arch) if framework == "torch" else None)


def cut(model: Any, framework: str, keep: dict[str, list[int]], examples: Any = None) -> tuple[Any, list[str]]:
    """Remove every channel not in `keep` for real; the input model is left untouched. `examples`: the inputs a
    PyTorch model is traced with."""
    if framework == "torch":
        from edgeprune.pruning.torch_surgery import prune_torch

        return prune_torch(model, keep, examples)
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
