"""Validation of keep-lists, shared by both surgeries."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgeprune.errors import EdgepruneError


def validate_indices(name: str, idx: Any, n: int) -> np.ndarray:
    """Sorted, unique channel indices to keep for layer `name` with `n` output channels, or one clear error."""
    if isinstance(idx, (str, bytes)) or not hasattr(idx, "__iter__"):
        raise EdgepruneError(f"keep list for '{name}' must be a sequence of channel indices, not {type(idx).__name__}")
    arr = np.asarray(list(idx))
    if arr.size == 0:
        raise EdgepruneError(f"keep list for '{name}' is empty: at least one channel must stay")
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise EdgepruneError(f"keep list for '{name}' must hold integer channel indices, got {list(idx)[:5]}")
    bad = arr[(arr < 0) | (arr >= n)]
    if bad.size:
        raise EdgepruneError(f"keep index {int(bad[0])} for '{name}' is out of range: it has {n} output channels "
                             f"(0-{n - 1})")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise EdgepruneError(f"keep list for '{name}' repeats index {int(uniq[counts > 1][0])}")
    return uniq.astype(np.int64)


def listing(names: Sequence[str], limit: int = 20) -> str:
    """Names for an error message, shortened past `limit`."""
    names = list(names)
    if not names:
        return "none"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
