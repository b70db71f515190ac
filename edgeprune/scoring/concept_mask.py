"""Concept masks (CMa-FSMC, Sun et al.) on audio feature maps [B, C, h, w] over (frequency, time).

A channel's concept mask marks where its upsampled map reaches the value ranked `threshold` of the way down its
own h*w values (the top ~20% by default). A shape-preserving block whose input and output masks differ in few
places (a small degree of change, DoC) moves little of what the network attends to, so it is cheap to prune:
`doc_rates` turns DoC into per-block pruning rates. `cmamix` mixes two inputs through a teacher's concept mask
(CMaMix), pasting the other sample's region of interest into this one.
"""

from __future__ import annotations

import numpy as np

from edgeprune.errors import EdgepruneError


def _size(size, what: str) -> tuple[int, int]:
    try:
        out = tuple(int(s) for s in size)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 2 or min(out) < 1 or out != tuple(size):
        raise EdgepruneError(f"{what}: size must be two positive integers (H, W), got {size!r}")
    return out


def _fmap(x, what: str) -> np.ndarray:
    # float32 as the authors' torch maps: the threshold and the upsampled values must share one precision, or a
    # value equal to the threshold could round to just below it
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or 0 in x.shape:
        raise EdgepruneError(f"{what}: expected a non-empty feature map [B, C, h, w], got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        raise EdgepruneError(f"{what}: feature map {list(x.shape)} has NaN/inf values; expected finite values")
    return x


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and their weights for one axis, by torch's half-pixel rule (align_corners=False)."""
    # torch rounds the scale to float32 and the position once (a fused multiply-add); matching that bit for bit
    # matters: a float32 position near 500 is only good to 3e-5, and the weight inherits that error
    scale = np.float64(np.float32(n_in) / np.float32(n_out))
    src = np.maximum(((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32), np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0.astype(np.float32)
    return i0, i1, (np.float32(1) - w1).astype(np.float64), w1.astype(np.float64)


def upsample_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[B, C, h, w] -> [B, C, H, W] float32, as torch's F.interpolate(mode="bilinear", align_corners=False).

    Positions and weights are torch's bit for bit; the weighted sums are taken in float64 and rounded once, so
    values agree with torch's float32 sums to a couple of float32 ulp.
    """
    h_out, w_out = _size(size, "upsample_bilinear")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4 or 0 in x.shape:
        raise EdgepruneError(f"upsample_bilinear: expected a non-empty [B, C, h, w], got shape {list(x.shape)}")
    i0, i1, a0, a1 = _axis_weights(x.shape[2], h_out)
    j0, j1, b0, b1 = _axis_weights(x.shape[3], w_out)
    out = np.empty(x.shape[:2] + (h_out, w_out), dtype=np.float32)
    for n, s in enumerate(x):  # one sample at a time: the float64 temporaries of a whole batch can reach GBs
        s = s[:, i0, :] * a0[:, None] + s[:, i1, :] * a1[:, None]
        out[n] = s[..., j0] * b0 + s[..., j1] * b1
    return out


def _concept_mask(x: np.ndarray, size: tuple[int, int], threshold: float, what: str) -> np.ndarray:
    if not 0 < threshold <= 1:
        raise EdgepruneError(f"{what}: threshold must be in (0, 1], got {threshold}")
    size = _size(size, what)
    b, c, h, w = x.shape
    k = int(np.floor(threshold * (h * w - 1)))  # the authors' int(th * (n - 1))
    t = -np.sort(-x.reshape(b, c, h * w), axis=-1)[..., k][..., None, None]  # k-th largest per (b, c)
    up = upsample_bilinear(x, size)
    # an all-but-zero channel (common after ReLU) has T = 0, where ">= T" would mark everything: mark the
    # non-zero support instead
    return np.where(t == 0, up != 0, up >= t)


def concept_mask(fmap: np.ndarray, size: tuple[int, int], threshold: float = 0.2) -> np.ndarray:
    """Bool [B, C, H, W]: upsampled fmap >= T per (b, c), T its value at index floor(threshold * (h*w - 1)) sorted
    descending; where T == 0, the upsampled map's non-zero positions instead."""
    return _concept_mask(_fmap(fmap, "concept_mask"), size, threshold, "concept_mask")


def degree_of_change(block_in: np.ndarray, block_out: np.ndarray, size: tuple[int, int],
                     threshold: float = 0.2) -> int:
    """DoC of a block: count of positions (over B, C, H, W) where its input and output concept masks differ."""
    a, b = _fmap(block_in, "degree_of_change: block_in"), _fmap(block_out, "degree_of_change: block_out")
    if a.shape != b.shape:
        raise EdgepruneError(f"degree_of_change: block input {list(a.shape)} and output {list(b.shape)} differ; "
                             f"not a shape-preserving block (expected equal [B, C, h, w])")
    # sample by sample, so only one sample's masks are held at a time
    return sum(int(np.count_nonzero(_concept_mask(a[n:n + 1], size, threshold, "degree_of_change")
                                    != _concept_mask(b[n:n + 1], size, threshold, "degree_of_change")))
               for n in range(len(a)))


def doc_rates(doc, low: float = 0.4, high: float = 0.7) -> np.ndarray:
    """Per-block pruning rates: DoC min-max scaled so the smallest DoC gets `high`, the largest `low`."""
    d = np.asarray(doc, dtype=np.float64)
    if d.ndim != 1 or d.size == 0 or not np.isfinite(d).all():
        raise EdgepruneError(f"doc_rates: expected a non-empty 1-D array of finite DoC values, got shape "
                             f"{list(d.shape)}")
    if not 0 <= low <= high <= 1:
        raise EdgepruneError(f"doc_rates: expected 0 <= low <= high <= 1, got low={low}, high={high}")
    span = d.max() - d.min()
    if span == 0:
        # the authors' min-max scaling divides by zero here; no block is easier than another, so take the middle
        return np.full(d.shape, (low + high) / 2)
    return high - (d - d.min()) / span * (high - low)


def _perm(perm, n: int) -> np.ndarray:
    p = np.asarray(perm)
    if p.shape != (n,) or not np.issubdtype(p.dtype, np.integer) or not np.array_equal(np.sort(p), np.arange(n)):
        raise EdgepruneError(f"cmamix: perm must be a permutation of range({n}) (the batch), got {p.tolist()}")
    return p


def cmamix(x: np.ndarray, mask: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """CMaMix: x~ = x * (1 - M[perm]) + x[perm] * M[perm], for x [B, ..., H, W] and a 0/1 mask [B, 1, H, W].

    The mask is aligned batch first and (H, W) last, so a [B, 1, H, W] mask also fits features x [B, H, W].
    """
    x = np.asarray(x)
    m = np.asarray(mask)
    if x.ndim >= 3 and m.ndim >= 3 and m.ndim != x.ndim and all(d == 1 for d in m.shape[1:-2]):
        m = m.reshape((m.shape[0],) + (1,) * (x.ndim - 3) + m.shape[-2:])
    if x.ndim < 3 or m.ndim != x.ndim or m.shape[0] != x.shape[0]:
        raise EdgepruneError(f"cmamix: expected x [B, ..., H, W] and mask [B, 1, H, W] with the same B and rank, "
                             f"got {list(x.shape)} and {list(m.shape)}")
    try:
        fits = np.broadcast_shapes(m.shape, x.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise EdgepruneError(f"cmamix: mask {list(m.shape)} does not broadcast to x {list(x.shape)}")
    if not np.isin(m, (0, 1)).all():
        raise EdgepruneError(f"cmamix: mask {list(m.shape)} must be bool or 0/1")
    p = _perm(perm, x.shape[0])
    mp = m[p].astype(bool)
    # a select, not the product form: same values for a 0/1 mask, but 0 * inf would turn an unmasked inf into NaN
    return np.where(mp, x[p], x)


def feature_concept_mask(features: np.ndarray, size: tuple[int, int], threshold: float = 0.2) -> np.ndarray:
    """CMaMix mask from a teacher's pre-pooling features [B, C, h, w]: channel sum -> concept mask, float32 0/1
    [B, 1, H, W]."""
    f = _fmap(features, "feature_concept_mask")
    return _concept_mask(f.sum(axis=1, keepdims=True), size, threshold, "feature_concept_mask").astype(np.float32)
