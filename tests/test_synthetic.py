"""The synthetic scene generator: deterministic, device mismatch built in, classes that differ."""

import numpy as np

from edgeprune.data import synthetic
from edgeprune.data.datasets import SyntheticSpec, generate_synthetic


def test_same_arguments_give_identical_features():
    a = synthetic.clip_features(7, "train", 3, label=2, device="B", difficulty=0.5)
    b = synthetic.clip_features(7, "train", 3, label=2, device="B", difficulty=0.5)
    assert a.shape == (40, 500) and np.array_equal(a, b)


def test_seed_index_and_split_change_the_clip():
    base = synthetic.clip_features(7, "train", 3, 2, "B", 0.5)
    for other in [(8, "train", 3), (7, "train", 4), (7, "test", 3)]:
        assert not np.allclose(base, synthetic.clip_features(*other, 2, "B", 0.5))


def test_generation_is_deterministic_and_independent_of_worker_count():
    spec = SyntheticSpec(seed=3, n_train=12, n_validation=4, n_test=9)
    one = generate_synthetic(spec, workers=1, progress=False)
    two = generate_synthetic(spec, workers=2, progress=False)
    for split in one:
        assert np.array_equal(one[split].x, two[split].x)
        assert np.array_equal(one[split].y, two[split].y)


def test_unseen_devices_appear_only_in_test():
    train = set(synthetic.device_plan("train", 500))
    test = set(synthetic.device_plan("test", 90))
    assert train == set(synthetic.TRAIN_DEVICES)
    assert test == set(synthetic.ALL_DEVICES)
    assert synthetic.device_plan("train", 500).count("A") >= 200  # device A dominates, as in DCASE


def test_device_response_changes_the_spectrum_of_the_same_scene():
    a = synthetic.clip_features(1, "test", 0, 0, "A", 0.5)
    s4 = synthetic.clip_features(1, "test", 0, 0, "S4", 0.5)
    assert np.abs(a.mean(axis=1) - s4.mean(axis=1)).max() > 1.0


def test_unambiguous_clips_of_a_class_share_a_spectral_profile():
    """At difficulty 0, a nearest-centroid rule on per-band mean and spread tells the ten classes apart."""

    def profile(index, label):
        f = synthetic.clip_features(0, "train", index, label, "A", 0.0)
        return np.concatenate([f.mean(axis=1) - f.mean(), f.std(axis=1)])

    centroids = np.array([np.mean([profile(i, c) for i in range(3)], axis=0) for c in range(10)])
    hits = [np.argmin(((centroids - profile(100 + i, c)) ** 2).sum(axis=1)) == c for c in range(10) for i in range(2)]
    assert np.mean(hits) >= 0.6  # chance is 0.1; measured 0.85
