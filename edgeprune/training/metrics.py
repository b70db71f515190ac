"""Classification metrics on numpy arrays, shared by every framework and runtime."""

from __future__ import annotations

import numpy as np


def log_loss(probs: np.ndarray, y: np.ndarray, eps: float = 1e-7) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped and renormalised, as sklearn)."""
    p = np.clip(probs.astype(np.float64), eps, 1 - eps)
    p /= p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def classification_report(probs: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, log-loss, per-class accuracy and the confusion matrix, JSON-ready."""
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
