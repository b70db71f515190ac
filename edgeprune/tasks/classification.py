"""Classification tasks: one label per sample, class probabilities out, cross-entropy, accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.tasks.base import Task


def classification_report(probs: np.ndarray, y: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, log-loss, per-class accuracy and the confusion matrix, JSON-ready."""
    from benchmarks.metrics import confusion_matrix, log_loss

    pred = probs.argmax(axis=1)
    cm = confusion_matrix(y, pred, len(classes))
    support = cm.sum(axis=1)
    per_class = {c: (float(cm[i, i] / support[i]) if support[i] else None) for i, c in enumerate(classes)}
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "log_loss": log_loss(probs, y),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
    }


@dataclass(frozen=True)
class ClassificationTask(Task):
    def check_targets(self, y: np.ndarray, n: int, where: str) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim == 2:  # one-hot, as the passive-pruning seed stores them for Keras
            y = y.argmax(axis=1)
        if y.ndim != 1 or len(y) != n:
            raise EdgepruneError(f"{where}: labels have shape {tuple(y.shape)}; expected [{n}] or [{n}, classes]")
        if not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.isfinite(y)) or not np.all(np.equal(np.mod(y, 1), 0)):
                raise EdgepruneError(f"{where}: labels must be integer class indices")
        y = y.astype(np.int64)
        if len(y) and y.min() < 0:
            raise EdgepruneError(f"{where}: label {int(y.min())} is negative; expected class indices from 0")
        return y

    def evaluate(self, outputs: np.ndarray, y: np.ndarray | None, meta: dict[str, np.ndarray],
                 classes: list[str] | None = None, full: bool = False) -> dict[str, Any]:
        if not np.isfinite(outputs).all():
            raise EdgepruneError("model outputs contain NaN or infinite values")
        if y is None:
            return {"n": int(len(outputs))}
        names = list(classes or self.classes or [f"class_{i}" for i in range(outputs.shape[1])])
        return classification_report(outputs, y, names)

    def metric_names(self) -> list[str]:
        return ["accuracy", "log_loss"]
