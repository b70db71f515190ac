"""Data-free magnitude criteria: per-filter L1 ("l1") and L2 ("l2") norm of a conv kernel, or of a dense layer's
weights into each output unit."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeprune.scoring.base import LayerScores
from edgeprune.scoring.kernels import weight_kernels
from edgeprune.scoring.registry import register_criterion


def filter_norms(kernel: np.ndarray, order: int) -> np.ndarray:
    """L`order` norm of each output filter of a canonical kernel [..., cin, F] (F last)."""
    k = np.asarray(kernel, dtype=np.float64)
    flat = k.reshape(-1, k.shape[-1])
    if order == 1:
        return np.abs(flat).sum(axis=0)
    return np.sqrt((flat * flat).sum(axis=0))


def _norm_criterion(order: int):
    def fn(model: Any, layers: list[str], data: Any = None) -> tuple[dict[str, LayerScores], dict[str, Any]]:
        kernels = weight_kernels(model, layers)
        out = {name: LayerScores(name, filter_norms(k, order)) for name, k in kernels.items()}
        return out, {"options": {}}

    return fn


register_criterion("l1", conv_only=False,
                   description="per-filter L1 norm of the kernel, convs and dense layers (data-free)")(_norm_criterion(1))
register_criterion("l2", conv_only=False,
                   description="per-filter L2 norm of the kernel, convs and dense layers (data-free)")(_norm_criterion(2))
