"""Layer discovery and conv kernels in one canonical layout, for PyTorch and Keras models.

Canonical layout: Keras' 2-D layout [kh, kw, cin, F] (F = output channels, last), always 4-D:
- torch Conv2d weight [F, cin, kh, kw]   -> transpose (2, 3, 1, 0)
- torch Conv1d weight [F, cin, k]        -> [k, 1, cin, F]
- Keras Conv2D kernel [kh, kw, cin, F]   -> as is
- Keras Conv1D kernel [k, cin, F]        -> [k, 1, cin, F]
A 1-D kernel is a 2-D kernel of width 1, so criteria handle one shape. For grouped convs cin is in/groups.
Depthwise convs (torch Conv with groups == in_channels > 1, Keras DepthwiseConv*/Conv with that grouping) are
not scorable here: their output channels are tied to input channels.
Layer names: torch `named_modules()` names ("conv1", "block.0"), Keras layer names (the DCASE twins share them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.frameworks import framework_of


def named_layers(model: Any) -> dict[str, Any]:
    """Every named layer/module of the model (torch: named_modules minus the root; Keras: layers, recursively)."""
    if framework_of(model) == "torch":
        return {name: mod for name, mod in model.named_modules() if name}
    out: dict[str, Any] = {}

    def walk(container: Any) -> None:
        for layer in getattr(container, "layers", []):
            out.setdefault(layer.name, layer)
            walk(layer)

    walk(model)
    return out


def is_scorable_conv(layer: Any) -> bool:
    """True for a (non-depthwise) 1-D or 2-D convolution."""
    mod = type(layer).__module__
    if mod.startswith("torch"):
        import torch.nn as nn

        if not isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            return False
        return not (layer.groups > 1 and layer.groups == layer.in_channels)
    import keras

    if not isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
        return False  # DepthwiseConv*, SeparableConv* and transposed convs are not subclasses
    groups = getattr(layer, "groups", 1)
    return not (groups > 1 and int(layer.kernel.shape[-2]) == 1)


def scorable_layers(model: Any) -> list[str]:
    """Names of every Conv1D/Conv2D (not depthwise) layer, in model order."""
    return [name for name, layer in named_layers(model).items() if is_scorable_conv(layer)]


def resolve_layers(model: Any, layers: list[str] | None, conv_only: bool = True) -> list[str]:
    """Validate requested layer names (default: every scorable conv); unknown names are one clear error."""
    convs = scorable_layers(model)
    if layers is None:
        if not convs:
            raise EdgepruneError("the model has no Conv1D/Conv2D layers to score; name the layers to score")
        return convs
    if isinstance(layers, str):
        layers = [layers]
    everything = named_layers(model)
    for name in layers:
        if name not in everything:
            raise EdgepruneError(f"layer '{name}' not found; scorable layers: {', '.join(convs) or 'none'}")
        if conv_only and name not in convs:
            raise EdgepruneError(
                f"layer '{name}' is a {type(everything[name]).__name__}, not a Conv1D/Conv2D; "
                f"scorable layers: {', '.join(convs) or 'none'}"
            )
    if len(set(layers)) != len(layers):
        raise EdgepruneError(f"layer names repeat in {list(layers)}")
    return list(layers)


def conv_kernels(model: Any, layers: list[str] | None = None) -> dict[str, np.ndarray]:
    """Conv kernels by layer name, float32, in the canonical layout [kh, kw, cin, F] (see the module docstring)."""
    names = resolve_layers(model, layers)
    everything = named_layers(model)
    return {name: _canonical(everything[name]) for name in names}


def is_dense(layer: Any) -> bool:
    """A torch Linear or a Keras Dense layer."""
    if type(layer).__module__.startswith("torch"):
        import torch.nn as nn

        return isinstance(layer, nn.Linear)
    import keras

    return isinstance(layer, keras.layers.Dense)


def weight_kernels(model: Any, layers: list[str] | None = None) -> dict[str, np.ndarray]:
    """Canonical kernels of convs and of dense layers (a dense layer is a 1x1 conv: [1, 1, in, out]), by name;
    default every scorable conv. Any other layer is one clear error."""
    names = resolve_layers(model, layers, conv_only=False)
    everything = named_layers(model)
    convs = set(scorable_layers(model))
    out = {}
    for name in names:
        layer = everything[name]
        if name in convs:
            out[name] = _canonical(layer)
        elif is_dense(layer):
            w = layer.weight.detach().cpu().numpy().T if type(layer).__module__.startswith("torch") \
                else np.asarray(layer.kernel.numpy())
            out[name] = np.ascontiguousarray(w[None, None], dtype=np.float32)
        else:
            raise EdgepruneError(f"layer '{name}' is a {type(layer).__name__}: the weight-magnitude criteria score "
                                 "Conv1D/Conv2D and Dense/Linear layers")
    return out


def _canonical(layer: Any) -> np.ndarray:
    if type(layer).__module__.startswith("torch"):
        w = layer.weight.detach().cpu().numpy()
        if w.ndim == 3:  # Conv1d [F, cin, k] -> [k, 1, cin, F]
            return np.ascontiguousarray(np.transpose(w, (2, 1, 0))[:, None], dtype=np.float32)
        return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)), dtype=np.float32)
    k = np.asarray(layer.kernel.numpy())
    if k.ndim == 3:  # Conv1D [k, cin, F] -> [k, 1, cin, F]
        k = k[:, None]
    return np.ascontiguousarray(k, dtype=np.float32)
