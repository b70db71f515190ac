"""Weight transfer between PyTorch and Keras twins: layers matched by name, layouts converted per layer type.

Layouts: Conv2d [out, in, kh, kw] <-> Conv2D [kh, kw, in, out]; Conv1d [out, in, k] <-> Conv1D [k, in, out];
depthwise Conv2d [C*m, 1, kh, kw] <-> DepthwiseConv2D [kh, kw, C, m]; Linear [out, in] <-> Dense [in, out];
BatchNorm weight/bias/running_mean/running_var <-> gamma/beta/moving_mean/moving_variance.
A Dense fed by Flatten needs its input rows reordered: PyTorch flattens channels-first (c*H*W + h*W + w),
Keras channels-last ((h*W + w)*C + c).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError


def _flatten_source_shape(layer) -> tuple[int, ...] | None:
    """(H, W, C) of the channels-last tensor a Dense's Flatten input came from, else None."""
    import keras

    nodes = getattr(layer, "_inbound_nodes", [])
    if not nodes or not nodes[0].parent_nodes:
        return None
    parent = nodes[0].parent_nodes[0].operation
    if isinstance(parent, keras.layers.Flatten):
        shape = tuple(parent.input.shape[1:])
        return shape if len(shape) >= 2 else None
    return None


def _nhwc_rows_from_nchw(shape_hwc: tuple[int, ...]) -> np.ndarray:
    """perm such that keras_row[i] = torch_row[perm[i]] for a flatten of a (spatial..., C) tensor."""
    *spatial, c = shape_hwc
    torch_index = np.arange(int(np.prod(shape_hwc))).reshape(c, *spatial)  # channels-first numbering
    return np.moveaxis(torch_index, 0, -1).reshape(-1)  # read it in channels-last order


def _pairs(keras_model, torch_model) -> list[tuple[Any, Any]]:
    """(keras layer, torch module) for every Keras layer with weights; a missing twin is an error."""
    modules = dict(torch_model.named_modules())
    pairs = []
    for layer in keras_model.layers:
        if not layer.weights:
            continue
        if layer.name not in modules:
            raise EdgepruneError(f"weight transfer: Keras layer '{layer.name}' has no PyTorch module of that name")
        pairs.append((layer, modules[layer.name]))
    return pairs


def torch_to_keras(torch_model, keras_model) -> None:
    """Copy the PyTorch twin's weights into the Keras twin."""
    for layer, mod in _pairs(keras_model, torch_model):
        sd = {k: v.detach().cpu().numpy() for k, v in mod.state_dict().items()}
        arrays = _to_keras(layer, sd)
        for var, value in zip(layer.weights, arrays):
            if tuple(var.shape) != value.shape:
                raise EdgepruneError(
                    f"weight transfer: '{var.path}' is {tuple(var.shape)} in Keras, {value.shape} from PyTorch"
                )
        layer.set_weights(arrays)


def keras_to_torch(keras_model, torch_model) -> None:
    """Copy the Keras twin's weights into the PyTorch twin."""
    import torch

    for layer, mod in _pairs(keras_model, torch_model):
        arrays = _to_torch(layer, [np.asarray(w) for w in layer.get_weights()])
        state = mod.state_dict()
        for key, value in arrays.items():
            if tuple(state[key].shape) != value.shape:
                raise EdgepruneError(
                    f"weight transfer: '{layer.name}.{key}' is {tuple(state[key].shape)} in PyTorch, {value.shape} from Keras"
                )
            state[key] = torch.from_numpy(np.ascontiguousarray(value)).to(state[key].dtype)
        mod.load_state_dict(state)


def transfer_weights(source, target) -> None:
    """Copy weights from one twin to the other, whichever direction that is."""
    from edgeprune.frameworks import framework_of

    kinds = (framework_of(source), framework_of(target))
    if kinds == ("torch", "keras"):
        torch_to_keras(source, target)
    elif kinds == ("keras", "torch"):
        keras_to_torch(source, target)
    else:
        raise EdgepruneError(f"weight transfer needs one PyTorch and one Keras model, got {kinds[0]} and {kinds[1]}")


def _kind(layer) -> str:
    import keras

    L = keras.layers
    if isinstance(layer, L.DepthwiseConv2D):
        return "depthwise"
    if isinstance(layer, (L.Conv1D, L.Conv2D)):
        return "conv"
    if isinstance(layer, L.Dense):
        return "dense"
    if isinstance(layer, L.BatchNormalization):
        return "bn"
    raise EdgepruneError(f"weight transfer: no layout rule for Keras layer '{layer.name}' ({type(layer).__name__})")


_BN = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var"))


def _to_keras(layer, sd: dict[str, np.ndarray]) -> list[np.ndarray]:
    kind = _kind(layer)
    if kind == "bn":
        return [sd[t] for _, t in _BN]
    w = sd["weight"]
    if kind == "conv":
        kernel = np.transpose(w, tuple(range(2, w.ndim)) + (1, 0))
    elif kind == "depthwise":
        c_in = layer.kernel.shape[2]
        kernel = np.transpose(w.reshape(c_in, -1, *w.shape[2:]), (2, 3, 0, 1))
    else:
        kernel = w.T
        src = _flatten_source_shape(layer)
        if src is not None:
            kernel = kernel[_nhwc_rows_from_nchw(src)]
    return [kernel, sd["bias"]] if "bias" in sd else [kernel]


def _to_torch(layer, weights: list[np.ndarray]) -> dict[str, np.ndarray]:
    kind = _kind(layer)
    if kind == "bn":
        return {t: weights[i] for i, (_, t) in enumerate(_BN)}
    kernel = weights[0]
    if kind == "conv":
        n = kernel.ndim
        w = np.transpose(kernel, (n - 1, n - 2) + tuple(range(n - 2)))
    elif kind == "depthwise":
        kh, kw, c, m = kernel.shape
        w = np.transpose(kernel, (2, 3, 0, 1)).reshape(c * m, 1, kh, kw)
    else:
        src = _flatten_source_shape(layer)
        if src is not None:
            inverse = np.argsort(_nhwc_rows_from_nchw(src))
            kernel = kernel[inverse]
        w = kernel.T
    out = {"weight": w}
    if len(weights) > 1:
        out["bias"] = weights[1]
    return out
