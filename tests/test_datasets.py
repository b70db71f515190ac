"""Loading the real DCASE feature layout and checking what is loaded."""

import json

import numpy as np
import pytest

from edgeprune.data.datasets import load_folder
from edgeprune.errors import EdgepruneError


def write_layout(d, n_train=30, n_test=10, x_shape=(40, 500), one_hot=False, validation=False):
    rng = np.random.default_rng(0)
    for split, n in [("train", n_train), ("test", n_test)] + ([("validation", 10)] if validation else []):
        np.save(d / f"X_{split}.npy", rng.normal(size=(n, *x_shape)).astype(np.float32))
        y = np.arange(n) % 10
        np.save(d / f"Y_{split}.npy", np.eye(10)[y] if one_hot else y)
    return d


def test_seed_layout_with_one_hot_labels_and_channel_axis(tmp_path):
    data = load_folder(write_layout(tmp_path, x_shape=(40, 500, 1), one_hot=True))
    assert data["train"].x.shape[1:] == (40, 500)
    assert data["test"].y.tolist() == list(range(10))
    # no validation files: a stratified 10 % of train is held out, disjoint from what remains
    assert len(data["validation"]) == 10 and len(data["train"]) == 20
    assert sorted(data["validation"].y.tolist()) == list(range(10))


def test_explicit_validation_split_and_class_names(tmp_path):
    write_layout(tmp_path, validation=True)
    (tmp_path / "classes.json").write_text(json.dumps([f"scene{i}" for i in range(10)]))
    data = load_folder(tmp_path)
    assert len(data["train"]) == 30 and len(data["validation"]) == 10
    assert data.classes[3] == "scene3"


def test_wrong_feature_shape_names_file_and_expectation(tmp_path):
    write_layout(tmp_path, x_shape=(64, 500))
    with pytest.raises(EdgepruneError, match=r"X_train.npy: features have shape \(30, 64, 500\); expected \[N, 40, 500\]"):
        load_folder(tmp_path)


def test_missing_folder_and_missing_file(tmp_path):
    with pytest.raises(EdgepruneError, match="data folder not found"):
        load_folder(tmp_path / "nope")
    write_layout(tmp_path)
    (tmp_path / "Y_test.npy").unlink()
    with pytest.raises(EdgepruneError, match="missing Y_test.npy"):
        load_folder(tmp_path)


def test_label_count_mismatch(tmp_path):
    write_layout(tmp_path)
    np.save(tmp_path / "Y_test.npy", np.zeros(3, dtype=int))
    with pytest.raises(EdgepruneError, match=r"Y_test.npy: labels have shape \(3,\); expected \[10\]"):
        load_folder(tmp_path)


def test_corrupt_npy(tmp_path):
    write_layout(tmp_path)
    (tmp_path / "X_train.npy").write_bytes(b"garbage")
    with pytest.raises(EdgepruneError, match="X_train.npy: not a readable .npy"):
        load_folder(tmp_path)
