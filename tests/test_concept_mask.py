"""Concept masks (CMa-FSMC): bilinear upsampling as torch does it, the per-channel threshold, DoC, rates, CMaMix."""

from __future__ import annotations

import numpy as np
import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.scoring.concept_mask import (
    cmamix,
    concept_mask,
    degree_of_change,
    doc_rates,
    feature_concept_mask,
    upsample_bilinear,
)

# A 2x2 map and its 4x4 bilinear upsampling, worked by hand. With half-pixel centres each output index d reads
# source position (d + 0.5) * 2/4 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (neighbour clamped to 1), so a
# row [a, b] becomes [a, 0.75a + 0.25b, 0.25a + 0.75b, b], and the same along the other axis.
MAP = np.array([[0.0, 1.0],
                [2.0, 3.0]])
UP = np.array([[0.0, 0.25, 0.75, 1.0],
               [0.5, 0.75, 1.25, 1.5],
               [1.5, 1.75, 2.25, 2.5],
               [2.0, 2.25, 2.75, 3.0]])
# threshold 0.5: index floor(0.5 * (4 - 1)) = 1 of the values sorted descending [3, 2, 1, 0], so T = 2
MASK_HALF = UP >= 2.0


def _one(m: np.ndarray) -> np.ndarray:
    return m[None, None]


def test_upsampling_a_2x2_map_matches_the_hand_worked_values():
    out = upsample_bilinear(_one(MAP), (4, 4))
    assert out.dtype == np.float32 and out.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(out[0, 0], UP)


@pytest.mark.parametrize("shape, size", [((2, 3, 7, 5), (13, 11)), ((1, 2, 3, 9), (17, 23)),
                                         ((2, 1, 13, 11), (7, 5)), ((1, 1, 5, 3), (5, 3)), ((1, 1, 1, 1), (3, 5))])
def test_upsampling_equals_torch_bilinear_without_aligned_corners(shape, size):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear",
                                               align_corners=False).numpy()
    np.testing.assert_allclose(upsample_bilinear(x, size), expected, rtol=0, atol=1e-6)


def test_concept_mask_thresholds_at_the_hand_worked_rank():
    np.testing.assert_array_equal(concept_mask(_one(MAP), (4, 4), threshold=0.5)[0, 0], MASK_HALF)
    # threshold 0.2: index floor(0.2 * 3) = 0, T is the maximum 3, reached only at the far corner
    only_corner = np.zeros((4, 4), dtype=bool)
    only_corner[3, 3] = True
    np.testing.assert_array_equal(concept_mask(_one(MAP), (4, 4), threshold=0.2)[0, 0], only_corner)


def test_each_channel_gets_its_own_threshold():
    # channel 1 is channel 0 scaled by 10: its T scales too, so the masks are the same
    fmap = np.stack([MAP, 10 * MAP])[None]
    mask = concept_mask(fmap, (4, 4), threshold=0.5)
    assert mask.dtype == bool and mask.shape == (1, 2, 4, 4)
    np.testing.assert_array_equal(mask[0, 0], MASK_HALF)
    np.testing.assert_array_equal(mask[0, 1], MASK_HALF)


def test_a_zero_threshold_value_marks_the_non_zero_support_instead():
    # threshold 1: index 3, the smallest value, T = 0; ">= 0" would mark everything, "!= 0" all but one corner
    expected = UP != 0
    assert expected.sum() == 15
    np.testing.assert_array_equal(concept_mask(_one(MAP), (4, 4), threshold=1.0)[0, 0], expected)


def test_a_mostly_zero_map_has_t_zero_and_masks_its_upsampled_support():
    fmap = np.zeros((2, 1, 5, 7), dtype=np.float32)
    fmap[0, 0, 1, 2], fmap[0, 0, 3, 5], fmap[1, 0, 4, 0] = 1.0, 2.0, 0.5
    # 35 values, index floor(0.2 * 34) = 6 of the sorted values: at most 2 are non-zero, so T = 0
    mask = concept_mask(fmap, (10, 14))
    support = upsample_bilinear(fmap, (10, 14)) != 0
    np.testing.assert_array_equal(mask, support)
    assert 0 < support.sum() < support.size


def test_degree_of_change_of_an_identity_block_is_zero():
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 9))
    assert degree_of_change(x, x, (12, 18)) == 0
    assert degree_of_change(x, 3 * x, (12, 18)) == 0  # positive scaling moves no threshold crossing


def test_degree_of_change_counts_the_differing_positions():
    # the flipped map upsamples to the flipped UP (the half-pixel rule is mirror-symmetric), so its mask is
    # MASK_HALF flipped: rows 0 and 1[:2] instead of rows 2[2:] and 3; 6 + 6 positions, none shared
    out = MAP[::-1, ::-1]
    np.testing.assert_array_equal(concept_mask(_one(out), (4, 4), threshold=0.5)[0, 0], MASK_HALF[::-1, ::-1])
    assert degree_of_change(_one(MAP), _one(out), (4, 4), threshold=0.5) == 12


def test_doc_rates_give_the_smallest_change_the_highest_rate():
    np.testing.assert_allclose(doc_rates([10, 40, 25]), [0.7, 0.4, 0.55])
    np.testing.assert_allclose(doc_rates([10, 40, 25], low=0.2, high=0.6), [0.6, 0.2, 0.4])


def test_doc_rates_of_equal_changes_are_all_the_middle_rate():
    np.testing.assert_allclose(doc_rates([7, 7, 7]), [0.55, 0.55, 0.55])


def test_cmamix_with_no_mask_keeps_x_and_with_a_full_mask_takes_the_partner():
    x = np.random.default_rng(2).standard_normal((4, 1, 6, 8))
    perm = np.array([2, 0, 3, 1])
    np.testing.assert_array_equal(cmamix(x, np.zeros((4, 1, 6, 8)), perm), x)
    np.testing.assert_array_equal(cmamix(x, np.ones((4, 1, 6, 8), dtype=bool), perm), x[perm])


def test_cmamix_pastes_the_partners_masked_region():
    x = np.arange(2 * 1 * 2 * 2, dtype=np.float64).reshape(2, 1, 2, 2)  # sample 0: 0..3, sample 1: 4..7
    mask = np.zeros((2, 1, 2, 2))
    mask[1, 0, 0, :] = 1  # sample 1's first row is its concept
    out = cmamix(x, mask, np.array([1, 0]))
    # sample 0 mixes with sample 1 through sample 1's mask: its first row becomes [4, 5]
    np.testing.assert_array_equal(out[0, 0], [[4.0, 5.0], [2.0, 3.0]])
    # sample 1 mixes with sample 0, whose mask is empty: unchanged
    np.testing.assert_array_equal(out[1], x[1])


def test_cmamix_fits_a_4d_mask_to_3d_features():
    x = np.random.default_rng(3).standard_normal((3, 5, 7))  # [B, F, T], no channel axis
    mask = np.zeros((3, 1, 5, 7), dtype=bool)
    mask[:, :, 2:, :4] = True
    perm = np.array([1, 2, 0])
    out = cmamix(x, mask, perm)
    np.testing.assert_array_equal(out[:, 2:, :4], x[perm][:, 2:, :4])
    np.testing.assert_array_equal(out[:, :2], x[:, :2])


def test_feature_concept_mask_sums_channels_then_masks():
    # two channels summing to MAP
    features = np.stack([MAP / 4, 3 * MAP / 4])[None]
    mask = feature_concept_mask(features, (4, 4), threshold=0.5)
    assert mask.dtype == np.float32 and mask.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(mask[0, 0], MASK_HALF.astype(np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_map_is_an_error(bad):
    fmap = np.ones((1, 1, 3, 3))
    fmap[0, 0, 1, 1] = bad
    with pytest.raises(EdgepruneError, match="NaN/inf"):
        concept_mask(fmap, (6, 6))


def test_degree_of_change_needs_a_shape_preserving_block():
    with pytest.raises(EdgepruneError, match=r"\[1, 2, 4, 4\].*\[1, 3, 4, 4\].*not a shape-preserving block"):
        degree_of_change(np.ones((1, 2, 4, 4)), np.ones((1, 3, 4, 4)), (8, 8))


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5, float("nan")])
def test_threshold_outside_zero_to_one_is_an_error(threshold):
    with pytest.raises(EdgepruneError, match=r"threshold must be in \(0, 1\]"):
        concept_mask(np.ones((1, 1, 2, 2)), (4, 4), threshold=threshold)


def test_other_bad_inputs_are_errors():
    with pytest.raises(EdgepruneError, match=r"\[B, C, h, w\]"):
        concept_mask(np.ones((1, 2, 2)), (4, 4))
    with pytest.raises(EdgepruneError, match="two positive integers"):
        concept_mask(np.ones((1, 1, 2, 2)), (4, 0))
    with pytest.raises(EdgepruneError, match="permutation of range"):
        cmamix(np.ones((3, 1, 2, 2)), np.zeros((3, 1, 2, 2)), np.array([0, 0, 1]))
    with pytest.raises(EdgepruneError, match="does not broadcast"):
        cmamix(np.ones((3, 1, 2, 2)), np.zeros((3, 1, 4, 4)), np.arange(3))
    with pytest.raises(EdgepruneError, match="bool or 0/1"):
        cmamix(np.ones((3, 1, 2, 2)), np.full((3, 1, 2, 2), 0.5), np.arange(3))
    with pytest.raises(EdgepruneError, match="non-empty 1-D"):
        doc_rates([])
