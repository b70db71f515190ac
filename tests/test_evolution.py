"""CMa-FSMC's filter-level search: Deb's feasibility rules, the violation and objective, and the hand-written DE."""

from __future__ import annotations

import numpy as np
import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.search.evolution import (
    SearchResult,
    allocation_objective,
    better,
    differential_evolution,
    violation,
)


def test_a_feasible_candidate_beats_an_infeasible_one_whatever_the_objectives():
    assert better((0.0, 10.0), (0.1, -5.0))
    assert not better((0.1, -5.0), (0.0, 10.0))


def test_among_infeasible_candidates_the_lower_violation_wins():
    assert better((0.1, 9.0), (0.2, 1.0))
    assert not better((0.2, 1.0), (0.1, 9.0))


def test_at_equal_violation_the_lower_objective_wins_and_ties_lose():
    assert better((0.0, 1.0), (0.0, 2.0))
    assert better((0.3, 1.0), (0.3, 2.0))
    assert not better((0.0, 1.0), (0.0, 1.0))


def test_violation_is_free_within_the_tolerance_and_linear_beyond_it():
    targets = {"flops": 0.5, "params": 0.3}
    assert violation({"flops": 0.5 + 3.9e-4, "params": 0.3 - 3.9e-4}, targets) == 0.0
    # 5e-4 off, 4e-4 of it forgiven
    assert violation({"flops": 0.5 + 5e-4, "params": 0.3}, targets) == pytest.approx(1e-4)
    # terms add up: 1e-4 + 2e-4
    assert violation({"flops": 0.5 - 5e-4, "params": 0.3 + 6e-4}, targets) == pytest.approx(3e-4)


@pytest.mark.parametrize("unset", [0, 0.0, None])
def test_a_zero_target_is_not_constrained(unset):
    assert violation({"flops": 0.5, "params": 0.9}, {"flops": 0.5, "params": unset}) == 0.0


def test_violation_needs_an_achieved_value_for_each_target():
    with pytest.raises(EdgepruneError, match="'params' has no achieved value"):
        violation({"flops": 0.5}, {"flops": 0.5, "params": 0.3})


def test_allocation_objective_hand_worked():
    # scores [1, 1, 2] -> [1/4, 1/4, 1/2]; equal rates -> [1/3, 1/3, 1/3]; |differences| 1/12 + 1/12 + 1/6
    assert allocation_objective(np.array([1.0, 1.0, 2.0]), np.array([0.2, 0.2, 0.2])) == pytest.approx(1 / 3)
    # only the shape counts: rates proportional to the scores cost nothing
    assert allocation_objective(np.array([1.0, 1.0, 2.0]), np.array([0.2, 0.2, 0.4])) == pytest.approx(0.0)


def test_allocation_objective_errors():
    with pytest.raises(EdgepruneError, match="one rate per score"):
        allocation_objective(np.ones(3), np.ones(2))
    with pytest.raises(EdgepruneError, match="sum to 0"):
        allocation_objective(np.zeros(3), np.ones(3))


def _sphere(centre):
    return lambda x: (0.0, float(((x - centre) ** 2).sum()))


def test_de_finds_the_minimum_of_an_unconstrained_bowl():
    centre = np.array([0.3, 0.5, 0.7])
    result = differential_evolution(_sphere(centre), dim=3, population=20, iterations=100)
    assert isinstance(result, SearchResult)
    assert result.feasible and result.violation == 0.0
    np.testing.assert_allclose(result.x, centre, atol=1e-3)
    assert result.objective == pytest.approx(float(((result.x - centre) ** 2).sum()))
    # one evaluation per initial member, then one trial per member per generation
    assert result.evaluations == 20 * (1 + 100)
    assert len(result.history) == 100


def test_the_best_never_gets_worse():
    result = differential_evolution(_sphere(np.array([0.2, 0.8])), dim=2, population=8, iterations=30)
    for earlier, later in zip(result.history, result.history[1:]):
        assert not better(earlier, later)
    assert result.history[-1] == (result.violation, result.objective)


def test_de_reaches_feasibility_against_the_objective():
    # the objective wants every rate small (sum 0.5 at the lower bound); the constraint holds the sum at 1.5
    def evaluate(x):
        return violation({"sum": float(x.sum())}, {"sum": 1.5}), float(x.sum())

    result = differential_evolution(evaluate, dim=5, population=20, iterations=100)
    assert result.feasible
    assert abs(float(result.x.sum()) - 1.5) <= 4e-4


def test_the_same_seed_gives_the_same_search():
    a = differential_evolution(_sphere(np.array([0.4, 0.6])), dim=2, population=6, iterations=10, seed=3)
    b = differential_evolution(_sphere(np.array([0.4, 0.6])), dim=2, population=6, iterations=10, seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.history == b.history
    c = differential_evolution(_sphere(np.array([0.4, 0.6])), dim=2, population=6, iterations=10, seed=4)
    assert not np.array_equal(a.x, c.x)


def test_candidates_stay_in_bounds_and_the_bound_is_reached_by_clipping():
    seen = []

    def evaluate(x):
        seen.append(x)
        return 0.0, float(((x - 2.0) ** 2).sum())  # optimum outside the box, at the upper corner

    result = differential_evolution(evaluate, dim=4, bounds=(0.1, 0.9), population=10, iterations=50)
    seen = np.array(seen)
    assert seen.min() >= 0.1 and seen.max() <= 0.9
    # a mutant past the bound is clipped onto it (not re-drawn), so the bound itself is evaluated
    assert (seen == 0.9).any()
    assert np.all(result.x <= 0.9) and np.all(result.x > 0.8)


def test_progress_reports_each_generation_and_zero_generations_keep_the_initial_best():
    calls = []
    differential_evolution(_sphere(np.zeros(2) + 0.5), dim=2, population=5, iterations=4,
                           progress=lambda g, best: calls.append(g))
    assert calls == [1, 2, 3, 4]
    result = differential_evolution(_sphere(np.zeros(2) + 0.5), dim=2, population=5, iterations=0)
    assert result.evaluations == 5 and result.history == []


@pytest.mark.parametrize("kwargs, message", [
    ({"population": 3}, "population must be an integer >= 4"),
    ({"dim": 0}, "dim must be a positive integer"),
    ({"bounds": (0.9, 0.1)}, "low < high"),
    ({"bounds": (0.1, 0.1)}, "low < high"),
    ({"f": 0.0}, r"f \(the mutation scale\) must be in \(0, 2\]"),
    ({"f": 2.5}, r"f \(the mutation scale\) must be in \(0, 2\]"),
    ({"cr": 1.5}, r"cr \(the crossover rate\) must be in \[0, 1\]"),
    ({"cr": -0.1}, r"cr \(the crossover rate\) must be in \[0, 1\]"),
    ({"iterations": -1}, "iterations must be an integer >= 0"),
])
def test_bad_settings_are_errors(kwargs, message):
    args = {"dim": 2, **kwargs}
    with pytest.raises(EdgepruneError, match=message):
        differential_evolution(_sphere(np.zeros(2)), **args)


def test_a_non_finite_evaluation_is_an_error():
    with pytest.raises(EdgepruneError, match="evaluation 1 returned"):
        differential_evolution(lambda x: (0.0, float("nan")), dim=2, population=4, iterations=1)
