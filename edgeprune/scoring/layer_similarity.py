"""Similarity between the hidden states of a transformer encoder, and the layer-to-layer matrix (CoMFLP).

`states` holds N+1 arrays [B, T, D]: index 0 is the encoder input, index i the output of layer i, so M[a-1][b]
compares the state entering layers a..b with the state leaving them. Every measure is stored as a similarity,
so every matrix reads "higher = the run changes less":
- "svcca": SVCCA as CoMFLP computes it (mean canonical correlation after an SVD reduction), modes "U" or "T";
- "dc": squared distance correlation (V-statistic), per batch of utterances, averaged over batches;
- "cka": linear CKA (Kornblith et al. 2019), modes "T" or "U";
- "bi": mean per-frame cosine; ShortGPT's block influence is BI = 1 - this.
Mode "U" mean-pools each utterance over time, "T" uses every real frame as a sample. Padding (mask False) is
excluded from every pooling and flattening, and from the NaN/inf check (padded frames may hold anything).
The diagonal is set to 1: every measure of a state with itself is 1 in exact arithmetic (the authors compute
it and then take M + M^T - I, which differs only by rounding).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeprune.errors import EdgepruneError

MEASURES = ("svcca", "dc", "cka", "bi")
_MODES = {"svcca": ("U", "T"), "dc": ("U",), "cka": ("T", "U"), "bi": ("T",)}  # default first
_EPS = 1e-10  # Google's cca_core epsilon, as CoMFLP passes it


def _pair(x, y, what: str, same_width: bool = False) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or (same_width and x.shape[1] != y.shape[1]):
        width = " and the same D" if same_width else ""
        raise EdgepruneError(f"{what}: expected x [n, D1] and y [n, D2] with the same n{width}, "
                             f"got {x.shape} and {y.shape}")
    return x, y


def svd_reduce(x: np.ndarray, threshold: float = 0.99) -> np.ndarray:
    """Centre each neuron of x [n, D], keep the top-k SVD directions and project: [n, k] (s_k V_k^T, transposed).

    k is the smallest count whose singular values sum to strictly more than `threshold` of their total: a
    fraction of the singular-value sum, as CoMFLP does, not of the variance.
    """
    if not 0 < threshold <= 1:
        raise EdgepruneError(f"svcca: threshold must be in (0, 1], got {threshold}")
    xc = np.asarray(x, dtype=np.float64) - np.mean(x, axis=0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    if s.sum() == 0:
        raise EdgepruneError(f"svcca: a representation {xc.shape} is constant over all samples; nothing to compare")
    k = min(int(np.searchsorted(np.cumsum(s) / s.sum(), threshold, side="right")) + 1, len(s))
    return u[:, :k] * s[:k]


def _check_dof(n: int, k: int, where: str) -> None:
    # n centred samples span at most n - 1 directions: with k >= n - 1 kept, the kept directions span the whole
    # centred sample space and every canonical correlation is 1 whatever the data.
    if n - 1 <= k:
        raise EdgepruneError(f"svcca: {n} samples given but {k} SVD directions kept for {where}; CCA needs more "
                             f"samples than kept directions + 1: give more calibration samples (or mode 'T')")


def _check_pair(n: int, kx: int, ky: int, where: str) -> None:
    # Two subspaces of kx and ky directions in the (n - 1)-dimensional centred sample space share at least
    # kx + ky - (n - 1) directions: that many canonical correlations are 1 whatever the data, inflating the mean.
    if kx + ky > n - 1:
        raise EdgepruneError(f"svcca: {n} samples for {kx} + {ky} SVD directions kept ({where}); at least "
                             f"{kx + ky - n + 1} canonical correlations would be 1 whatever the data: give at least "
                             f"{kx + ky + 1} calibration samples (or mode 'T')")


def _inv_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(np.linalg.pinv(s + _EPS * np.eye(len(s))))
    # rounding can leave eigenvalues of about -1e-17, where cca_core's plain sqrt gives NaN
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _cca_mean(a: np.ndarray, b: np.ndarray) -> float:
    """Mean canonical correlation of centred a [n, kx] and b [n, ky], as Google's cca_core.get_cca_similarity."""
    n = a.shape[0]
    sxx, syy, sxy = a.T @ a / (n - 1), b.T @ b / (n - 1), a.T @ b / (n - 1)
    xmax, ymax = np.abs(sxx).max(), np.abs(syy).max()  # rescaled for stability, as cca_core does
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / np.sqrt(xmax * ymax)
    kx, ky = np.abs(np.diag(sxx)) >= _EPS, np.abs(np.diag(syy)) >= _EPS
    if not kx.any() or not ky.any():
        return 0.0
    arr = _inv_sqrt(sxx[np.ix_(kx, kx)]) @ sxy[np.ix_(kx, ky)] @ _inv_sqrt(syy[np.ix_(ky, ky)])
    return float(np.mean(np.abs(np.linalg.svd(arr, compute_uv=False))))


def svcca(x: np.ndarray, y: np.ndarray, threshold: float = 0.99) -> float:
    """SVCCA similarity of x [n, D1] and y [n, D2] (samples x neurons): mean canonical correlation in [0, 1]."""
    x, y = _pair(x, y, "svcca")
    a, b = svd_reduce(x, threshold), svd_reduce(y, threshold)
    _check_dof(len(a), a.shape[1], "x")
    _check_dof(len(b), b.shape[1], "y")
    _check_pair(len(a), a.shape[1], b.shape[1], "x and y")
    return _cca_mean(a, b)


def _centred_distances(x: np.ndarray) -> np.ndarray:
    a = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1) + 1e-12)
    return a - a.mean(axis=0, keepdims=True) - a.mean(axis=1, keepdims=True) + a.mean()


def _dc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a * b) / np.sqrt(np.mean(a * a) * np.mean(b * b) + 1e-9))


def distance_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Squared distance correlation (V-statistic) of x [n, D1] and y [n, D2], with CoMFLP's 1e-12 and 1e-9 guards."""
    x, y = _pair(x, y, "distance_correlation")
    return _dc(_centred_distances(x), _centred_distances(y))


def _dc_batches(pooled: list[np.ndarray], size: int) -> list[list[np.ndarray]]:
    """Per state, the centred distance matrices of its L2-normalised rows, one per batch of utterances."""
    n = len(pooled[0])
    chunks = [slice(s, s + size) for s in range(0, n, size) if min(s + size, n) - s >= 2]
    if not chunks:
        raise EdgepruneError(f"layer_matrix: 'dc' needs at least 2 utterances, got {n}")
    # rows L2-normalised as the authors do (with F.normalize's 1e-12 guard)
    unit = [p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12) for p in pooled]
    return [[_centred_distances(u[c]) for c in chunks] for u in unit]


def _mean_dc(fa: list[np.ndarray], fb: list[np.ndarray]) -> float:
    return float(np.mean([_dc(a, b) for a, b in zip(fa, fb)]))


def _cka_parts(x: np.ndarray) -> tuple[np.ndarray, float]:
    xc = x - x.mean(axis=0)
    norm = float(np.linalg.norm(xc.T @ xc))
    if norm == 0:
        raise EdgepruneError(f"linear_cka: a representation {x.shape} is constant over all samples")
    return xc, norm


def _cka(px: tuple[np.ndarray, float], py: tuple[np.ndarray, float]) -> float:
    return float(np.linalg.norm(py[0].T @ px[0]) ** 2 / (px[1] * py[1]))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of x [n, D1] and y [n, D2] on centred features: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)."""
    x, y = _pair(x, y, "linear_cka")
    return _cka(_cka_parts(x), _cka_parts(y))


def cosine_similarity(x: np.ndarray, y: np.ndarray) -> float:
    """Mean over rows of cos(x_i, y_i) for x, y [n, D]; a zero row counts as cosine 0 (torch's 1e-8 guard)."""
    x, y = _pair(x, y, "cosine_similarity", same_width=True)
    den = np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-8)
    return float(np.mean((x * y).sum(axis=1) / den))


def _mask(mask, shape: tuple[int, int]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask)
    if m.shape != shape:
        raise EdgepruneError(f"mask: expected shape [B, T] = {list(shape)}, got {list(m.shape)}")
    m = m.astype(bool)
    empty = np.flatnonzero(~m.any(axis=1))
    if empty.size:
        raise EdgepruneError(f"mask: utterance {int(empty[0])} has no real frames (mask all False)")
    return m


def pool(state: np.ndarray, mask: np.ndarray | None, mode: str) -> np.ndarray:
    """Samples from a state [B, T, D]: "U" masked time-mean per utterance [B, D]; "T" the real frames [F, D].

    mask: bool [B, T], True = real frame; None = every frame is real.
    """
    state = np.asarray(state, dtype=np.float64)
    if state.ndim != 3:
        raise EdgepruneError(f"pool: expected a state [B, T, D], got shape {list(state.shape)}")
    m = _mask(mask, state.shape[:2])
    if mode == "T":
        return state[m]
    if mode == "U":
        # np.where, not a product: padded frames may hold inf/NaN, and 0 * inf is NaN
        return np.where(m[..., None], state, 0.0).sum(axis=1) / m.sum(axis=1)[:, None]
    raise EdgepruneError(f"pool: unknown mode {mode!r}; expected 'U' (per utterance) or 'T' (per frame)")


def _check_states(states) -> list[np.ndarray]:
    if not isinstance(states, (list, tuple)) or len(states) < 2:
        raise EdgepruneError("layer_matrix: states must be a list of at least 2 arrays [B, T, D] (input + layers)")
    out = [np.asarray(s, dtype=np.float64) for s in states]
    for i, s in enumerate(out):
        if s.ndim != 3 or s.shape[:2] != out[0].shape[:2]:
            raise EdgepruneError(f"layer_matrix: hidden state {i} has shape {list(s.shape)}; expected [B, T, D] "
                                 f"with B, T = {list(out[0].shape[:2])} like state 0")
    return out


def _per_state(fn: Callable, pooled: list[np.ndarray]) -> list:
    out = []
    for i, p in enumerate(pooled):
        try:
            out.append(fn(p))
        except EdgepruneError as e:  # say which state, e.g. a constant one
            raise EdgepruneError(f"layer_matrix: hidden state {i}: {e}") from None
    return out


def layer_matrix(states: list[np.ndarray], measure: str, mask: np.ndarray | None = None, mode: str | None = None,
                 batch: int | None = None, threshold: float = 0.99,
                 progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """The symmetric (N+1) x (N+1) similarity matrix of hidden states, unit diagonal; see the module docstring.

    `batch` (dc only, default 4 as the authors) splits the utterances into consecutive batches; a last batch of a
    single utterance is dropped (its distance correlation is 0 whatever the data). `threshold` is SVCCA's.
    """
    if measure not in MEASURES:
        raise EdgepruneError(f"layer_matrix: unknown measure {measure!r}; expected one of {MEASURES}")
    mode = mode or _MODES[measure][0]
    if mode not in _MODES[measure]:
        raise EdgepruneError(f"layer_matrix: mode {mode!r} is not available for {measure!r}; "
                             f"expected one of {_MODES[measure]}")
    if batch is not None and (measure != "dc" or int(batch) < 2):
        raise EdgepruneError(f"layer_matrix: batch={batch} is for measure 'dc' only and must be at least 2")
    states = _check_states(states)
    m = _mask(mask, states[0].shape[:2])
    for i, s in enumerate(states):
        if not np.isfinite(s[m]).all():
            raise EdgepruneError(f"layer_matrix: hidden state {i} has NaN/inf values on real frames; "
                                 f"NaN/inf data is an error, never a score")
    if measure == "bi" and len({s.shape[2] for s in states}) > 1:
        raise EdgepruneError(f"layer_matrix: 'bi' needs every state to have the same D, got "
                             f"{[s.shape[2] for s in states]}")
    pooled = [pool(s, m, mode) for s in states]
    if measure == "svcca":
        feats, pair = _per_state(lambda p: svd_reduce(p, threshold), pooled), _cca_mean
        for i, f in enumerate(feats):
            _check_dof(len(f), f.shape[1], f"hidden state {i}")
        widest = sorted(range(len(feats)), key=lambda i: feats[i].shape[1])[-2:]
        _check_pair(len(feats[0]), *(feats[i].shape[1] for i in widest),
                    f"hidden states {widest[0]} and {widest[1]}, the widest pair")
    elif measure == "dc":
        feats, pair = _dc_batches(pooled, int(batch or 4)), _mean_dc
    elif measure == "cka":
        feats, pair = _per_state(_cka_parts, pooled), _cka
    else:
        feats, pair = pooled, cosine_similarity
    n = len(states)
    out = np.eye(n)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    for done, (i, j) in enumerate(pairs, 1):
        out[i, j] = out[j, i] = pair(feats[i], feats[j])
        if progress is not None:
            progress(done, len(pairs))
    return out
