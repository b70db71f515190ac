"""Keras 3 (TensorFlow backend) adapter. Training and evaluation take log-mel features [N, 40, 500] and make them
channels-last [N, 40, 500, 1]; export feeds inputs already in the model's own layout (forward_proba)."""

from __future__ import annotations

import random
from typing import Any

import keras
import numpy as np

from edgeprune.errors import EdgepruneError

NAME = "keras"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def to_input(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[..., None], dtype=np.float32)


def predict_proba(model: keras.Model, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Class probabilities [N, classes] from log-mel features [N, 40, 500] (the Keras twins end in softmax)."""
    return forward_proba(model, x[..., None], batch_size)


def forward_proba(model: keras.Model, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """The model's outputs (probabilities for models ending in softmax, as Keras classifiers do) for inputs
    already in its own layout [N, *input shape]."""
    out = []
    for i in range(0, len(x), batch_size):
        batch = np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)
        out.append(np.asarray(model(batch, training=False)))
    return np.concatenate(out).astype(np.float32)


class Trainer:
    """Adam + sparse cross-entropy, one batch at a time through Keras' compiled train step.

    With `temperature` set, the loss is alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE, as in the
    PyTorch adapter. The Keras twins end in softmax, so logits are recovered as log-probabilities (softmax is
    invariant to the constant this leaves), and the teacher's probabilities travel packed beside the label.
    """

    def __init__(self, model: keras.Model, lr: float, temperature: float | None = None, alpha: float = 0.5) -> None:
        self.model = model
        self.distill = temperature is not None
        loss = _distill_loss(temperature, alpha) if self.distill else "sparse_categorical_crossentropy"
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss)

    def step(self, x: np.ndarray, y: np.ndarray, teacher_probs: np.ndarray | None = None) -> float:
        target = y
        if self.distill:
            target = np.concatenate([y[:, None].astype(np.float32), teacher_probs.astype(np.float32)], axis=1)
        return float(self.model.train_on_batch(to_input(x), target))


def _distill_loss(t: float, alpha: float):
    from keras import ops

    def loss(packed, probs):
        labels = ops.cast(packed[:, 0], "int32")
        teacher = packed[:, 1:]
        ce = keras.losses.sparse_categorical_crossentropy(labels, probs)
        student_t = ops.log_softmax(ops.log(ops.maximum(probs, 1e-12)) / t, axis=1)
        teacher_t = ops.log_softmax(ops.log(ops.maximum(teacher, 1e-12)) / t, axis=1)
        kd = ops.sum(ops.exp(teacher_t) * (teacher_t - student_t), axis=1)
        return alpha * t * t * kd + (1 - alpha) * ce

    return loss


def get_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """Every variable (BN moving statistics included) as numpy, by its path 'layer/variable'."""
    return {v.path: np.asarray(v.numpy()).copy() for v in model.weights}


def set_weights(model: keras.Model, weights: dict[str, np.ndarray], source: str = "weights") -> None:
    """Load named arrays; any missing, extra or mis-shaped entry is one clear error."""
    variables = {v.path: v for v in model.weights}
    missing, extra = sorted(set(variables) - set(weights)), sorted(set(weights) - set(variables))
    if missing or extra:
        raise EdgepruneError(f"{source}: does not match the model (missing {missing[:5]}, unexpected {extra[:5]})")
    for path, var in variables.items():
        if tuple(weights[path].shape) != tuple(var.shape):
            raise EdgepruneError(f"{source}: '{path}' has shape {tuple(weights[path].shape)}; the model expects {tuple(var.shape)}")
        var.assign(np.asarray(weights[path], dtype=var.dtype))


def count_params(model: keras.Model) -> int:
    """Keras' own count: trainable plus non-trainable (BN moving statistics)."""
    return int(model.count_params())


def layer_rows(model: keras.Model, input_shape: tuple[int, ...]) -> list[dict[str, Any]]:
    """One row per layer: name, type, output shape, params and MACs (conv, depthwise and dense)."""
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        out = tuple(layer.output.shape[1:])
        macs = 0
        if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)) and not isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel = layer.kernel.shape  # [..., in/groups, out]
            macs = int(np.prod(out)) * int(np.prod(kernel[:-1]))
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            macs = int(np.prod(out)) * int(np.prod(layer.kernel.shape[:2]))
        elif isinstance(layer, keras.layers.Dense):
            macs = int(np.prod(out)) * int(layer.kernel.shape[0])
        rows.append({"name": layer.name, "type": type(layer).__name__, "output": list(out),
                     "params": int(layer.count_params()), "macs": macs})
    return rows


def input_shape(arch: dict[str, Any]) -> tuple[int, ...]:
    return (arch["n_mels"], arch["n_frames"], 1)
