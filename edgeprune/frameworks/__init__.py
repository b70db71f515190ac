"""Framework adapters: the small per-framework surface (layout, inference, one training step, weights).

Everything else (training loop, metrics, checkpoints, reports) is shared and talks to an adapter.
Adapters import their framework lazily, so using PyTorch never pays for importing TensorFlow.
"""

from __future__ import annotations

from types import ModuleType

from edgeprune.errors import EdgepruneError


def get_adapter(framework: str) -> ModuleType:
    """The adapter module for 'torch' or 'keras'."""
    if framework == "torch":
        from edgeprune.frameworks import torch_fw

        return torch_fw
    if framework == "keras":
        from edgeprune.frameworks import keras_fw

        return keras_fw
    raise EdgepruneError(f"unknown framework '{framework}'; expected torch or keras")


def framework_of(model: object) -> str:
    """'torch' or 'keras' for a model object."""
    mod = type(model).__module__
    if mod.startswith("torch") or any(c.__module__.startswith("torch.nn") for c in type(model).__mro__):
        return "torch"
    if mod.startswith("keras"):
        return "keras"
    raise EdgepruneError(f"cannot tell the framework of a {type(model).__name__}; expected a torch or keras model")
