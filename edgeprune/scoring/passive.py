"""Passive filter pruning (Singh and Plumbley, Interspeech 2022): data-free, from the kernels alone.

Per conv layer, kernel [kh, kw, cin, F] in the canonical (Keras) layout:
1. filter i -> A_i in R^{(kh*kw) x cin} (rows in (h, w) order; any fixed order gives the same cosines);
2. rank-1 prototype p_i: first column of u1 v1^T without the singular value, L2-normalised,
   i.e. sign(v1[0]) * u1; for cin = 1 simply the normalised filter;
3. D_ij = 1 - cos(p_i, p_j);
4. nearest neighbour n(i) over j != i. The original takes argsort(D[i])[1], assuming i sorts first; with a
   duplicate filter (distance 0 to i) that can pick i itself. We set the diagonal to +inf instead;
5. visit filters by ascending d_i = D[i, n(i)] (ties: lower index first): if i is not in the redundant set R,
   keep i and add n(i) to R. Kept = K (no ratio: the count falls out of the rule).
For ranking to a chosen ratio the score of filter i is d_i: far from its nearest neighbour = less redundant.
Edge cases (not in the original): if v1[0] == 0 the first column of u1 v1^T is zero, so the sign is taken from
v1's largest-magnitude entry; an all-zero filter has a zero prototype, cosine 0 (distance 1) to everything; a
layer with a single filter keeps it, with score 2.0 (the largest cosine distance) and neighbour -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.scoring.base import LayerScores
from edgeprune.scoring.kernels import conv_kernels
from edgeprune.scoring.registry import register_criterion


@dataclass
class PassiveResult:
    """One layer's passive analysis: kept filters, d_i, n(i), the distance matrix and the visit order."""

    keep: list[int]
    distances: np.ndarray  # d_i = D[i, n(i)]
    neighbours: np.ndarray  # n(i), -1 when the layer has one filter
    matrix: np.ndarray  # D, diagonal 0
    order: list[int]  # visit order (ascending d_i)


def prototypes(kernel: np.ndarray) -> np.ndarray:
    """Unit-norm rank-1 prototypes [F, kh*kw] of a canonical kernel [kh, kw, cin, F] (or [k, cin, F])."""
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim == 3:
        k = k[:, None]
    if k.ndim != 4:
        raise EdgepruneError(f"passive: expected a kernel [kh, kw, cin, F], got shape {k.shape}")
    kh, kw, cin, f = k.shape
    a = np.moveaxis(k, -1, 0).reshape(f, kh * kw, cin)
    if cin == 1:
        p = a[:, :, 0]
    else:
        u, _, vt = np.linalg.svd(a, full_matrices=False)  # batched over filters
        u1, v1 = u[:, :, 0], vt[:, 0, :]
        sign = np.sign(v1[:, 0])
        fallback = np.sign(v1[np.arange(f), np.abs(v1).argmax(axis=1)])
        sign = np.where(sign == 0, fallback, sign)
        p = u1 * sign[:, None]
    norms = np.linalg.norm(p, axis=1, keepdims=True)
    return np.divide(p, norms, out=np.zeros_like(p), where=norms > 0)


def passive_layer(kernel: np.ndarray) -> PassiveResult:
    """Apply the passive keep rule to one canonical kernel."""
    p = prototypes(kernel)
    f = p.shape[0]
    if f == 1:
        return PassiveResult([0], np.array([2.0]), np.array([-1]), np.zeros((1, 1)), [0])
    # Clip: identical prototypes can give 1 - cos = -2e-16; cosine distance lives in [0, 2].
    dist = np.clip(1.0 - p @ p.T, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    masked = dist.copy()
    np.fill_diagonal(masked, np.inf)  # exclude i itself explicitly (see module docstring, step 4)
    neighbours = masked.argmin(axis=1)  # ties: lowest index
    d = masked[np.arange(f), neighbours]
    order = [int(i) for i in np.argsort(d, kind="stable")]
    keep: set[int] = set()
    redundant: set[int] = set()
    for i in order:
        if i not in redundant:
            keep.add(i)
            redundant.add(int(neighbours[i]))
    return PassiveResult(sorted(keep), d, neighbours.astype(np.int64), dist, order)


@register_criterion("passive", description="passive filter pruning, Singh & Plumbley 2022 (data-free)")
def passive(model: Any, layers: list[str], data: Any = None) -> tuple[dict[str, LayerScores], dict[str, Any]]:
    """Passive filter pruning keep sets; scores = distance to the nearest-neighbour filter."""
    out = {}
    for name, kernel in conv_kernels(model, layers).items():
        r = passive_layer(kernel)
        out[name] = LayerScores(name, r.distances, r.keep,
                                {"distances": r.distances, "neighbours": r.neighbours, "visit_order": r.order})
    return out, {"options": {}}
