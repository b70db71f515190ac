"""Activation statistics: E||O_{F,C}||_1 per output channel over a calibration set ("activation_l1").

For each sample b and channel c: l1[b, c] = sum of |out[b, c, ...]| over every non-channel dimension; summed over
samples and divided by the sample count. Read at the layer's own output (a conv's output is pre-BN and
pre-activation). Eval mode, no gradients, batches in input order (no shuffling), so repeated passes with
different input masks see the same samples (what CMC-ASP needs: `activation_l1_means` is called once per mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.frameworks import framework_of
from edgeprune.scoring.base import LayerScores
from edgeprune.scoring.kernels import named_layers, resolve_layers
from edgeprune.scoring.registry import register_criterion


@dataclass
class ActivationMeans:
    """Per-layer E||O_c||_1 ([C] float64 arrays), and how many samples and batches produced them."""

    means: dict[str, np.ndarray]
    n_samples: int
    n_batches: int
    channel_dim: int


def activation_l1_means(model: Any, inputs: np.ndarray | Sequence[np.ndarray], layers: list[str] | None,
                        input_mask: Sequence[bool] | None = None, *, channel_dim: int | None = None,
                        output_index: int = 0, batch_size: int = 32, max_batches: int | None = None,
                        features: bool | None = None, activation: str | None = None) -> ActivationMeans:
    """Mean per-channel L1 norm of each layer's output over `inputs`.

    inputs: one array (N first) or a tuple/list of arrays for a multi-input model (torch: model(*inputs);
        Keras: model([inputs...])). A single array one rank short of the model's input is taken as features
        (e.g. DCASE [N, 40, 500]) and gets the unit channel axis where the framework puts channels (axis 1 in
        PyTorch, last in Keras); `features=True/False` forces or forbids that. Already laid-out arrays pass through.
    input_mask: one bool per input; True replaces that input with exact zeros for this pass (masking happens
        only at the model input).
    channel_dim: the channel axis of the layer output (default 1 for torch, -1 for Keras; use -1 for torch
        [B, T, C] outputs such as Linear or LSTM). output_index picks the element of a tuple output.
    max_batches: stop after this many batches (the first ones, in order).
    activation: "relu" applies max(0, .) to the layer output before the norm (reading a BatchNorm's output as the
        ReLU after it would give it).
    A layer that runs more than once per forward is refused: its statistics would be over-counted.
    """
    if activation not in (None, "relu"):
        raise EdgepruneError(f"activation {activation!r}: expected None or 'relu'")
    fw = framework_of(model)
    names = resolve_layers(model, layers, conv_only=False)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise EdgepruneError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, (int, np.integer))
                                    or max_batches < 1):
        raise EdgepruneError(f"max_batches must be a positive integer or None, got {max_batches!r}")
    arrays, convert = _prepare(model, fw, inputs, features)
    if input_mask is None:
        mask = (False,) * len(arrays)
    else:
        mask = tuple(bool(m) for m in input_mask)
        if len(mask) != len(arrays):
            raise EdgepruneError(f"input_mask has {len(mask)} entries; the model is given {len(arrays)} input(s)")
    cd = (1 if fw == "torch" else -1) if channel_dim is None else int(channel_dim)
    n = len(arrays[0])
    starts = list(range(0, n, batch_size))
    if max_batches is not None:
        starts = starts[:max_batches]

    def batches():
        for s in starts:
            batch = []
            for a, masked in zip(arrays, mask):
                b = a[s : s + batch_size]
                if convert:
                    b = b[:, None] if fw == "torch" else b[..., None]
                b = np.asarray(b)
                # Exact zeros, same shape and dtype: the masked modality contributes nothing.
                batch.append(np.zeros_like(b) if masked else b)
            yield batch

    run = _run_torch if fw == "torch" else _run_keras
    sums, count = run(model, names, batches(), cd, output_index, activation == "relu")
    return ActivationMeans({k: sums[k] / count for k in names}, count, len(starts), cd)


def _prepare(model: Any, fw: str, inputs: Any, features: bool | None) -> tuple[list[np.ndarray], bool]:
    multi = isinstance(inputs, (tuple, list))
    arrays = [np.asarray(a) for a in inputs] if multi else [np.asarray(inputs)]
    if not arrays or arrays[0].ndim == 0 or len(arrays[0]) == 0:
        raise EdgepruneError("calibration data is empty; pass at least one sample")
    if len({len(a) for a in arrays}) != 1:
        raise EdgepruneError(f"the model inputs have different sample counts: {[len(a) for a in arrays]}")
    if multi:
        if features:
            raise EdgepruneError("features=True applies to a single feature array, not to several inputs")
        return arrays, False
    if features is not None:
        return arrays, bool(features)
    expected = _expected_rank(model, fw)
    return arrays, expected is not None and arrays[0].ndim == expected - 1


def _expected_rank(model: Any, fw: str) -> int | None:
    """Rank of the model's (first) input, batch included, if it can be told."""
    if fw == "keras":
        ins = getattr(model, "inputs", None)
        return len(ins[0].shape) if ins else None
    import torch.nn as nn

    for mod in model.modules():  # a torch model's rank is told by its first conv
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return mod.weight.ndim
    return None


def _per_sample_l1_np(out: np.ndarray, cd: int, name: str) -> np.ndarray:
    if out.ndim < 2 or cd % out.ndim == 0:
        raise EdgepruneError(f"layer '{name}': channel_dim {cd} is not a channel axis of its output {out.shape}")
    o = np.moveaxis(out, cd, 1)
    return np.abs(o.reshape(o.shape[0], o.shape[1], -1)).sum(axis=-1, dtype=np.float64)


def _select(out: Any, output_index: int, name: str) -> Any:
    if isinstance(out, (tuple, list)):
        if not -len(out) <= output_index < len(out):
            raise EdgepruneError(
                f"layer '{name}' returns {len(out)} outputs; output_index {output_index} is out of range"
            )
        return out[output_index]
    return out


def _check_counts(counts: dict[str, int]) -> None:
    for name, c in counts.items():
        if c > 1:
            raise EdgepruneError(
                f"layer '{name}' is called {c} times per forward; its activation statistics would be over-counted "
                "(score a module that runs once, or wrap each use in its own module)"
            )
        if c == 0:
            raise EdgepruneError(f"layer '{name}' did not run during the forward pass")


def _accumulate(sums: dict[str, np.ndarray], name: str, l1: np.ndarray) -> None:
    total = l1.sum(axis=0)
    if name in sums and sums[name].shape != total.shape:
        raise EdgepruneError(f"layer '{name}': channel count changed between batches")
    sums[name] = sums.get(name, 0) + total


def _run_torch(model: Any, names: list[str], batches: Any, cd: int, output_index: int, relu: bool = False):
    import torch

    modules = named_layers(model)
    counts: dict[str, int] = {}
    current: dict[str, np.ndarray] = {}

    def hook(name: str):
        def fn(mod, inp, out):
            counts[name] += 1
            if counts[name] > 1:
                return  # reported after the forward, with the full count
            o = _select(out, output_index, name)
            if o.ndim < 2 or cd % o.ndim == 0:
                raise EdgepruneError(
                    f"layer '{name}': channel_dim {cd} is not a channel axis of its output {tuple(o.shape)}"
                )
            o = o.detach().movedim(cd, 1)
            if relu:
                o = o.clamp_min(0)
            # float32 sums over one sample's positions (relative error ~1e-7; a float64 reduction doubles the hook's
            # cost); the samples add up in float64
            current[name] = o.reshape(o.shape[0], o.shape[1], -1).abs().sum(-1).cpu().numpy().astype(np.float64)
        return fn

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    was_training = model.training
    model.eval()
    sums: dict[str, np.ndarray] = {}
    count = 0
    try:
        with torch.no_grad():
            for batch in batches:
                counts.update({n: 0 for n in names})
                current.clear()
                tensors = [torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)
                                            if np.issubdtype(b.dtype, np.floating) else np.ascontiguousarray(b))
                           for b in batch]
                model(*tensors)
                _check_counts(counts)
                for n in names:
                    _accumulate(sums, n, current[n])
                count += len(batch[0])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return sums, count


def _run_keras(model: Any, names: list[str], batches: Any, cd: int, output_index: int, relu: bool = False):
    import keras

    if not getattr(model, "inputs", None):
        raise EdgepruneError("activation statistics of a Keras model need a functional model (model.inputs)")
    layers = named_layers(model)
    outputs = []
    for n in names:
        layer = layers[n]
        calls = len(getattr(layer, "_inbound_nodes", []))
        if calls > 1:
            raise EdgepruneError(
                f"layer '{n}' is called {calls} times per forward; its activation statistics would be over-counted"
            )
        try:
            out = layer.output
        except Exception as exc:  # Keras raises plain ValueError/AttributeError for unconnected layers
            raise EdgepruneError(f"layer '{n}': cannot read its output from the model graph ({exc})") from exc
        outputs.append(_select(out, output_index, n))
    # A single input as a tensor, not a one-element list: Keras warns when the call structure differs.
    sub = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs, outputs)
    sums: dict[str, np.ndarray] = {}
    count = 0
    for batch in batches:
        args = batch[0] if len(batch) == 1 else list(batch)
        res = sub(args, training=False)
        res = res if isinstance(res, (list, tuple)) else [res]
        for n, o in zip(names, res):
            o = np.asarray(o)
            _accumulate(sums, n, _per_sample_l1_np(np.maximum(o, 0) if relu else o, cd, n))
        count += len(batch[0])
    return sums, count


@register_criterion("activation_l1", needs_data=True, conv_only=False,
                    description="mean per-channel L1 norm of the layer output over calibration data")
def activation_l1(model: Any, layers: list[str], data: Any, *, channel_dim: int | None = None,
                  output_index: int = 0, batch_size: int = 32, max_batches: int | None = None,
                  features: bool | None = None,
                  input_mask: Sequence[bool] | None = None) -> tuple[dict[str, LayerScores], dict[str, Any]]:
    """E||O_c||_1 per output channel (higher = more important); options as `activation_l1_means`."""
    res = activation_l1_means(model, data, layers, input_mask, channel_dim=channel_dim, output_index=output_index,
                              batch_size=batch_size, max_batches=max_batches, features=features)
    out = {n: LayerScores(n, res.means[n]) for n in layers}
    options = {"channel_dim": res.channel_dim, "output_index": output_index, "batch_size": batch_size,
               "max_batches": max_batches, "features": features,
               "input_mask": None if input_mask is None else [bool(m) for m in input_mask]}
    return out, {"options": options, "calibration_samples": res.n_samples, "batches": res.n_batches}
