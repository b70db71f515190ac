"""Keras 3 (TensorFlow backend) adapter: the same surface as the PyTorch one. Keras classifiers end in softmax, so
their outputs already are probabilities."""

from __future__ import annotations

import random
from typing import Any, Sequence

import keras
import numpy as np

from edgeprune.errors import EdgepruneError

NAME = "keras"
LOSSES = ("cross_entropy", "masked_magnitude")
MAGNITUDE_POWER, MAGNITUDE_EPS = 0.3, 1e-4  # as the PyTorch adapter


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def _call_args(inputs: Sequence[np.ndarray], start: int, stop: int) -> Any:
    # A single input as an array, not a one-element list: Keras warns when the call structure differs.
    batch = [np.ascontiguousarray(x[start:stop], dtype=np.float32) for x in inputs]
    return batch[0] if len(batch) == 1 else batch


def forward(model: keras.Model, inputs: Sequence[np.ndarray], batch_size: int = 128) -> np.ndarray:
    """The model's (first) output, for inputs already in its own layout, one array per input."""
    out = []
    for i in range(0, len(inputs[0]), batch_size):
        y = model(_call_args(inputs, i, i + batch_size), training=False)
        out.append(np.asarray(y[0] if isinstance(y, (list, tuple)) else y))
    return np.concatenate(out).astype(np.float32)


def predict(model: keras.Model, inputs: Sequence[np.ndarray], kind: str, batch_size: int = 128) -> np.ndarray:
    """Outputs of the task's kind (Keras classifiers already end in softmax)."""
    return forward(model, inputs, batch_size)


def _task_loss(loss: str, perm: tuple[int, ...] | None, temperature: float | None, alpha: float):
    from keras import ops

    def to_task(pred):
        return pred if perm is None else ops.transpose(pred, perm)

    if loss == "cross_entropy":
        if temperature is None:
            return "sparse_categorical_crossentropy"
        t = temperature

        def distilled(packed, probs):  # labels and teacher probabilities travel packed: [N, 1 + K]
            labels = ops.cast(packed[:, 0], "int32")
            teacher = packed[:, 1:]
            ce = keras.losses.sparse_categorical_crossentropy(labels, probs)
            student_t = ops.log_softmax(ops.log(ops.maximum(probs, 1e-12)) / t, axis=1)
            teacher_t = ops.log_softmax(ops.log(ops.maximum(teacher, 1e-12)) / t, axis=1)
            kd = ops.sum(ops.exp(teacher_t) * (teacher_t - student_t), axis=1)
            return alpha * t * t * kd + (1 - alpha) * ce

        return distilled
    if loss == "masked_magnitude":

        def masked(packed, mask):  # [N, 2 (+1 with a teacher's mask), F, T] in the task's axes
            mask = to_task(mask)
            clean, noisy = packed[:, 0], packed[:, 1]
            est = ops.power(mask * noisy + MAGNITUDE_EPS, MAGNITUDE_POWER)
            task = ops.mean(ops.square(est - ops.power(clean + MAGNITUDE_EPS, MAGNITUDE_POWER)))
            if temperature is None:
                return task
            return alpha * ops.mean(ops.square(mask - packed[:, 2])) + (1 - alpha) * task

        return masked
    raise EdgepruneError(f"loss '{loss}' has no Keras implementation (the Keras adapter has {', '.join(LOSSES)}); "
                         "train the PyTorch twin")


class _Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """lr * min(1, (step + 1) / steps), as the PyTorch adapter's warm-up."""

    def __init__(self, lr: float, steps: int) -> None:
        self.lr, self.steps = float(lr), int(steps)

    def __call__(self, step):
        from keras import ops

        return self.lr * ops.minimum(1.0, (ops.cast(step, "float32") + 1.0) / self.steps)

    def get_config(self) -> dict:
        return {"lr": self.lr, "steps": self.steps}


class Trainer:
    """Adam and a task loss, one batch at a time through Keras' compiled train step; the same losses as the
    PyTorch adapter. Keras losses see only (target, prediction), so a teacher's outputs travel packed beside the
    target: labels + teacher probabilities [N, 1 + K]; clean and noisy magnitudes + teacher mask [N, 3, F, T].
    The Keras twins end in softmax, so distillation recovers logits as log-probabilities (softmax is invariant to
    the constant this leaves)."""

    def __init__(self, model: keras.Model, lr: float, loss: str = "cross_entropy",
                 output_perm: Sequence[int] | None = None, output_kind: str = "probs",
                 temperature: float | None = None, alpha: float = 0.5, clip_norm: float | None = None,
                 warmup_steps: int = 0) -> None:
        self.model, self.loss = model, loss
        self.distill = temperature is not None
        perm = None if output_perm is None or list(output_perm) == sorted(output_perm) else tuple(output_perm)
        self.perm = perm
        rate = _Warmup(lr, warmup_steps) if warmup_steps > 0 else lr
        optimizer = keras.optimizers.Adam(rate, clipnorm=clip_norm) if clip_norm else keras.optimizers.Adam(rate)
        model.compile(optimizer=optimizer, loss=_task_loss(loss, perm, temperature, alpha))

    def step(self, inputs: Sequence[np.ndarray], target: np.ndarray, teacher: np.ndarray | None = None) -> float:
        if self.distill:
            if self.loss == "cross_entropy":
                target = np.concatenate([target[:, None].astype(np.float32), teacher.astype(np.float32)], axis=1)
            else:  # the teacher's mask comes in the task's axes, like the targets
                target = np.concatenate([target, teacher[:, None]], axis=1)
        return float(self.model.train_on_batch(_call_args(inputs, 0, len(inputs[0])), target))


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


def layer_rows(model: keras.Model, input_shapes: Sequence[tuple[int, ...]] = ()) -> list[dict[str, Any]]:
    """One row per layer: name, type, output shape, params and MACs (conv, depthwise and dense). The shapes come
    from the model's own graph."""
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
