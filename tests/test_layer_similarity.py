"""Layer similarity (CoMFLP): the measures' invariances, and the layer-to-layer matrix built from hidden states."""

import numpy as np
import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.scoring.layer_similarity import (
    MEASURES,
    cosine_similarity,
    distance_correlation,
    layer_matrix,
    linear_cka,
    pool,
    svcca,
    svd_reduce,
)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _orthogonal(d, rng):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return q


def test_svcca_of_a_representation_with_itself_is_one():
    x = _rng().standard_normal((400, 8))
    assert svcca(x, x) == pytest.approx(1.0, abs=1e-6)


def test_svcca_is_invariant_to_an_invertible_linear_map():
    rng = _rng(1)
    x = rng.standard_normal((400, 8))
    # singular values between 1 and 2: well conditioned, so the 0.99 threshold keeps every direction on both
    # sides (checked below); both then span the same column space and every canonical correlation is 1
    a = _orthogonal(8, rng) @ np.diag(np.linspace(1.0, 2.0, 8)) @ _orthogonal(8, rng)
    y = x @ a
    assert svd_reduce(x).shape[1] == 8 and svd_reduce(y).shape[1] == 8
    assert svcca(x, y) == pytest.approx(1.0, abs=1e-6)


def test_svd_reduce_keeps_directions_by_singular_value_sum_not_variance():
    # zero-mean orthonormal columns scaled to singular values 3 and 1: the first direction holds 3/4 of the
    # singular-value sum but 9/10 of the variance
    rng = _rng(2)
    z = rng.standard_normal((50, 2))
    x = np.linalg.qr(z - z.mean(axis=0))[0] * np.array([3.0, 1.0])
    assert svd_reduce(x, threshold=0.8).shape[1] == 2  # a variance fraction would keep 1
    assert svd_reduce(x, threshold=0.7).shape[1] == 1
    assert svd_reduce(x, threshold=0.99).shape[1] == 2


def test_svcca_with_too_few_samples_is_an_error():
    x = _rng().standard_normal((5, 16))  # 5 centred samples span 4 directions: CCA would be trivially 1
    with pytest.raises(EdgepruneError, match="5 samples given but 4 SVD directions kept"):
        svcca(x, x)


def _dcov_parts(x):
    a = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1) + 1e-12)
    big_a = a - a.mean(0, keepdims=True) - a.mean(1, keepdims=True) + a.mean()
    return a.mean(), np.mean(big_a * big_a)


def test_distance_correlation_of_independent_gaussians_is_near_zero():
    rng = _rng(3)
    n = 200
    x, y = rng.standard_normal((n, 8)), rng.standard_normal((n, 8))
    r = distance_correlation(x, y)
    (ma, vx), (mb, vy) = _dcov_parts(x), _dcov_parts(y)
    # Under independence n * V_n^2 / S2 (S2 = mean distance of x times that of y) converges to a quadratic form
    # Q with E[Q] = 1 and P(Q >= 10.83) <= 0.001, 10.83 being the chi2(1) 0.999 quantile (Szekely, Rizzo and
    # Bakirov 2007, Theorem 6 and its corollary). So dCor^2 = V_n^2 / sqrt(Vx * Vy) stays below that level.
    # (A fixed "< 0.1" would not do: for D = 8 and n = 200 E[dCor^2] is itself about 0.13.)
    assert 0 <= r < 10.83 * ma * mb / (n * np.sqrt(vx * vy + 1e-9))
    assert distance_correlation(x, x**2 + 0.1 * y) > r  # a dependent pair scores higher


def test_distance_correlation_of_a_copy_is_one():
    x = _rng(4).standard_normal((50, 8))
    _, v = _dcov_parts(x)
    # r = v / sqrt(v^2 + 1e-9) >= 1 - 0.5e-9 / v^2
    assert distance_correlation(x, x.copy()) == pytest.approx(1.0, abs=1e-9 / v**2)


def test_distance_correlation_is_invariant_to_scaling():
    rng = _rng(5)
    x = rng.standard_normal((60, 8))
    y = x[:, :4] ** 2 + rng.standard_normal((60, 4))
    # exact in exact arithmetic; the 1e-12 under the square root moves each distance by at most c * 1e-6 against
    # distances of order 1 here, so 1e-4 is loose
    assert distance_correlation(10 * x, 0.5 * y) == pytest.approx(distance_correlation(x, y), abs=1e-4)


def test_linear_cka_invariances():
    rng = _rng(6)
    x = rng.standard_normal((100, 6))
    y = np.tanh(x @ rng.standard_normal((6, 5)))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    base = linear_cka(x, y)
    assert linear_cka(x @ _orthogonal(6, rng), y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(3.7 * x, y) == pytest.approx(base, abs=1e-12)


def test_cosine_similarity_of_copy_and_negation():
    x = _rng(7).standard_normal((30, 5))
    assert cosine_similarity(x, x.copy()) == pytest.approx(1.0, abs=1e-12)
    assert cosine_similarity(x, -x) == pytest.approx(-1.0, abs=1e-12)


def test_pool_excludes_padding():
    state = np.arange(2 * 3 * 1, dtype=float).reshape(2, 3, 1)  # utterance 0: 0 1 2, utterance 1: 3 4 5
    mask = np.array([[True, True, False], [True, True, True]])
    np.testing.assert_array_equal(pool(state, mask, "U"), [[0.5], [4.0]])
    np.testing.assert_array_equal(pool(state, mask, "T"), [[0], [1], [3], [4], [5]])


def _states(seed=8, b=16, t=12, d=5, layers=3):
    """Hidden states of a toy residual stack, its mask (lengths 6..12) and the same states with garbage padding."""
    rng = _rng(seed)
    lengths = rng.integers(6, t + 1, size=b)
    mask = np.arange(t)[None, :] < lengths[:, None]
    states = [rng.standard_normal((b, t, d))]
    for _ in range(layers):
        states.append(states[-1] + 0.5 * np.tanh(states[-1] @ rng.standard_normal((d, d))))
    clean = [np.where(mask[..., None], s, 0.0) for s in states]
    garbage = [np.where(mask[..., None], s, rng.standard_normal(s.shape) * 1e3) for s in states]
    garbage[1][~mask] = np.nan  # padding may hold anything, even NaN
    return clean, garbage, mask


@pytest.mark.parametrize("measure", MEASURES)
def test_layer_matrix_is_symmetric_with_unit_diagonal_and_ignores_padding(measure):
    clean, garbage, mask = _states()
    m = layer_matrix(clean, measure, mask=mask)
    assert m.shape == (4, 4)
    np.testing.assert_array_equal(m, m.T)
    np.testing.assert_array_equal(np.diag(m), np.ones(4))
    np.testing.assert_array_equal(layer_matrix(garbage, measure, mask=mask), m)


def test_layer_matrix_reports_progress():
    clean, _, mask = _states()
    calls = []
    layer_matrix(clean, "cka", mask=mask, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 6) for i in range(1, 7)]  # C(4, 2) pairs


def test_layer_matrix_with_too_few_utterances_for_svcca():
    clean, _, mask = _states(b=4)  # 4 utterances in mode U: at most 3 centred directions, 5 neurons
    with pytest.raises(EdgepruneError, match="4 samples given"):
        layer_matrix(clean, "svcca", mask=mask)
    layer_matrix(clean, "svcca", mask=mask, mode="T")  # frames are samples: enough


def test_layer_matrix_rejects_nan_on_real_frames_naming_the_state():
    clean, _, mask = _states()
    clean[2][0, 0, 0] = np.nan
    with pytest.raises(EdgepruneError, match="hidden state 2 has NaN/inf"):
        layer_matrix(clean, "dc", mask=mask)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"measure": "mse"}, "unknown measure"),
    ({"measure": "bi", "mode": "U"}, "mode 'U' is not available"),
    ({"measure": "cka", "batch": 4}, "for measure 'dc' only"),
    ({"measure": "cka", "mask": np.ones((3, 3), dtype=bool)}, "mask: expected shape"),
])
def test_layer_matrix_rejects_bad_requests(kwargs, message):
    clean, _, _ = _states()
    with pytest.raises(EdgepruneError, match=message):
        layer_matrix(clean, **kwargs)


def test_layer_matrix_rejects_bad_states():
    clean, _, _ = _states()
    with pytest.raises(EdgepruneError, match="at least 2 arrays"):
        layer_matrix(clean[:1], "cka")
    with pytest.raises(EdgepruneError, match="hidden state 1 has shape"):
        layer_matrix([clean[0], clean[1][:, :5]], "cka")


def test_svcca_refuses_a_pair_whose_subspaces_must_overlap():
    """20 + 20 kept directions in the 29 dimensions that 30 centred samples span share at least 11: that many
    canonical correlations would be 1 even for independent data."""
    rng = _rng()
    x, y = rng.standard_normal((30, 20)), rng.standard_normal((30, 20))
    assert svd_reduce(x).shape[1] == 20 and svd_reduce(y).shape[1] == 20
    with pytest.raises(EdgepruneError, match="at least 11 canonical correlations would be 1"):
        svcca(x, y)
    x, y = rng.standard_normal((400, 20)), rng.standard_normal((400, 20))
    assert svcca(x, y) < 0.5  # enough samples: independent data are far from 1
