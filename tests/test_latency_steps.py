"""`latency.steps`: the stairs of a measured latency curve and the channel counts worth keeping."""

from __future__ import annotations

import numpy as np
import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.latency import steps


def _staircase(tile: int = 8, top: int = 32, noise: float = 0.01, seed: int = 0) -> dict[int, float]:
    """A kernel that computes whole tiles of `tile` channels: time = tiles used, +-1 % noise."""
    rng = np.random.default_rng(seed)
    return {n: float(np.ceil(n / tile)) * (1 + rng.uniform(-noise, noise)) for n in range(1, top + 1)}


def test_a_tiled_kernel_is_a_staircase_whose_last_counts_are_the_tile_multiples():
    curve = _staircase()
    assert [(a, b) for a, b, _ in steps.stairs(curve)] == [(1, 8), (9, 16), (17, 24), (25, 32)]
    assert steps.step_counts(curve) == [8, 16, 24, 32]
    levels = [lv for _, _, lv in steps.stairs(curve)]
    assert levels == pytest.approx([1, 2, 3, 4], rel=0.011)


def test_rounding_up_gives_the_free_channels_back():
    counts = steps.step_counts(_staircase())
    assert steps.round_up(11, counts) == 16  # 11 channels cost what 16 cost
    assert steps.round_up(16, counts) == 16
    assert steps.round_up(1, counts) == 8
    with pytest.raises(EdgepruneError, match="above the largest measured count 32"):
        steps.round_up(33, counts)


def test_a_rise_below_the_tolerance_is_not_a_step():
    jitter = {n: 1.0 + 0.02 * (n % 2) for n in range(1, 17)}  # 2 % up and down: one stair
    assert steps.step_counts(jitter, tolerance=0.05) == [16]
    small = {n: 1.0 if n <= 8 else 1.02 for n in range(1, 17)}  # a real 2 % rise after 8
    assert steps.step_counts(small, tolerance=0.05) == [16]
    assert steps.step_counts(small, tolerance=0.01) == [8, 16]


def test_interpolation_between_measured_counts():
    curve = {4: 1.0, 8: 2.0, 16: 2.0}
    assert steps.interpolate(curve, 6) == pytest.approx(1.5)
    assert steps.interpolate(curve, 12) == pytest.approx(2.0)
    assert steps.interpolate(curve, 2) == pytest.approx(1.0)  # clamped


def test_bad_curves_are_one_line():
    with pytest.raises(EdgepruneError, match="at least two"):
        steps.stairs({4: 1.0})
    with pytest.raises(EdgepruneError, match="positive finite"):
        steps.stairs({4: 1.0, 8: float("nan")})


def test_a_rise_below_the_absolute_floor_is_not_a_step():
    """A layer taking 0.02 ms whose time jitters by 10 % is noise beside a 1 ms model: min_ms filters it."""
    sliver = {n: 0.020 if n % 3 else 0.022 for n in range(1, 13)}
    assert len(steps.step_counts(sliver)) > 1
    assert steps.step_counts(sliver, min_ms=0.01) == [12]


def test_with_drops_a_faster_wider_count_is_a_stair_of_its_own():
    curve = {**{c: 0.106 for c in range(1, 17)}, **{c: 0.213 for c in range(17, 32)}, 32: 0.156}
    assert [(a, b) for a, b, _ in steps.stairs(curve)] == [(1, 16), (17, 32)]  # rises only: 32 joins 17-31
    assert [(a, b, lv) for a, b, lv in steps.stairs(curve, drops=True)] == [(1, 16, 0.106), (17, 31, 0.213),
                                                                            (32, 32, 0.156)]
