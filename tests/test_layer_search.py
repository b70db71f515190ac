"""Layer-set search (CoMFLP): run scoring, the coarse search modes, the metric-greedy baseline and verification."""

import itertools
import math

import numpy as np
import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.search.layer_sets import metric_greedy, run_score, search, verify


def _symmetric(n_layers, seed=0):
    a = np.random.default_rng(seed).uniform(size=(n_layers + 1, n_layers + 1))
    m = (a + a.T) / 2
    np.fill_diagonal(m, 1.0)
    return m


def test_run_score_hand_worked():
    m = np.arange(36, dtype=float).reshape(6, 6)  # M[i][j] = 6i + j, N = 5 layers
    # {2, 3, 5}: runs [2, 3] and [5, 5] -> mean(M[1][3], M[4][5]) = mean(9, 29) = 19
    assert run_score(m, [5, 2, 3]) == 19.0
    # one run [1, 5] -> M[0][5] = 5; a single layer l -> M[l-1][l]
    assert run_score(m, range(1, 6)) == 5.0
    assert run_score(m, {4}) == m[3, 4]


def test_run_score_rejects_empty_and_out_of_range_sets():
    m = _symmetric(5)
    with pytest.raises(EdgepruneError, match="empty"):
        run_score(m, [])
    with pytest.raises(EdgepruneError, match=r"within 1\.\.5"):
        run_score(m, [0, 2])


def test_beam_as_wide_as_all_sets_equals_exhaustive():
    m = _symmetric(8, seed=1)
    # a beam of C(8, 3) keeps every set at every step, so its final beam is the exhaustive ranking
    wide = search(m, 3, mode="beam", beam=math.comb(8, 3), top=10)
    assert wide == search(m, 3, mode="exhaustive", top=10)
    assert len(wide) == 10


def test_exhaustive_scores_match_run_score_best_first():
    m = _symmetric(8, seed=2)
    out = search(m, 3, mode="exhaustive", top=math.comb(8, 3))
    assert [s for _, s in out] == sorted((s for _, s in out), reverse=True)
    assert all(s == run_score(m, r) for r, s in out)
    assert out[0][1] == max(run_score(m, c) for c in itertools.combinations(range(1, 9), 3))


def test_greedy_is_beam_one():
    m = _symmetric(10, seed=3)
    assert search(m, 4, mode="greedy") == search(m, 4, mode="beam", beam=1)
    assert len(search(m, 4, mode="greedy")) == 1


@pytest.mark.parametrize("mode", ["beam", "exhaustive", "greedy", "random"])
def test_search_returns_distinct_sorted_sets_within_range(mode):
    m = _symmetric(9, seed=4)
    out = search(m, 3, mode=mode, samples=20)
    sets = [r for r, _ in out]
    assert len(set(sets)) == len(sets)
    for r in sets:
        assert r == tuple(sorted(r)) and len(set(r)) == 3 and 1 <= r[0] and r[-1] <= 9


def test_random_search_is_reproducible_by_seed():
    m = _symmetric(9, seed=5)
    assert search(m, 3, mode="random", seed=7, samples=15) == search(m, 3, mode="random", seed=7, samples=15)
    assert len(search(m, 3, mode="random", samples=15, top=100)) == 15


@pytest.mark.parametrize("k", [0, 6, 7])
def test_k_must_be_between_one_and_below_n(k):
    with pytest.raises(EdgepruneError, match=f"K={k} of N=6 layers"):
        search(_symmetric(6), k)
    with pytest.raises(EdgepruneError, match=f"K={k} of N=6 layers"):
        metric_greedy(6, k, lambda removed: 0.0)


def test_search_rejects_bad_requests():
    m = _symmetric(6)
    with pytest.raises(EdgepruneError, match="unknown mode"):
        search(m, 2, mode="annealing")
    with pytest.raises(EdgepruneError, match="at least 1"):
        search(m, 2, beam=0)
    with pytest.raises(EdgepruneError, match="square"):
        search(m[:, :-1], 2)
    bad = m.copy()
    bad[1, 2] = np.nan
    with pytest.raises(EdgepruneError, match="NaN/inf"):
        search(bad, 2)


COSTS = {1: 5.0, 2: 1.0, 3: 4.0, 4: 0.5, 5: 3.0, 6: 2.0, 7: 6.0}


def _total_cost(removed):
    return sum(COSTS[layer] for layer in removed)


def test_metric_greedy_finds_the_cheapest_layers_in_n_k_evaluations():
    n, k = 7, 4
    out = metric_greedy(n, k, _total_cost)
    # additive costs: each round adds the cheapest remaining layer, so the K cheapest (4, 2, 6, 5) are chosen
    assert out["removed"] == (2, 4, 5, 6)
    assert [r["removed"] for r in out["rounds"]] == [(4,), (2, 4), (2, 4, 6), (2, 4, 5, 6)]
    assert out["rounds"][1]["value"] == 1.5
    assert out["rounds"][0]["tried"] == {str(layer): c for layer, c in COSTS.items()}
    assert out["evaluations"] == sum(n - i for i in range(k))  # 7 + 6 + 5 + 4


def test_metric_greedy_higher_is_better_and_prefix_property():
    short = metric_greedy(7, 2, _total_cost, lower_is_better=False)
    long = metric_greedy(7, 4, _total_cost, lower_is_better=False)
    assert short["removed"] == (1, 7)  # the two most expensive
    assert long["rounds"][1]["removed"] == short["removed"]


def test_metric_greedy_rejects_nan():
    with pytest.raises(EdgepruneError, match="NaN"):
        metric_greedy(5, 2, lambda removed: float("nan"))


def test_verify_picks_the_minimum_and_keeps_candidate_order():
    candidates = [((1, 2), 0.9), ((2, 4), 0.8), ((6, 7), 0.7)]
    out = verify(candidates, _total_cost)
    assert out["best"] == (2, 4) and out["value"] == 1.5
    assert [(r["removed"], r["score"], r["value"]) for r in out["all"]] == [
        ((1, 2), 0.9, 6.0), ((2, 4), 0.8, 1.5), ((6, 7), 0.7, 8.0)]
    assert verify(candidates, _total_cost, lower_is_better=False)["best"] == (6, 7)
