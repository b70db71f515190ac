"""Checkpoints are weights plus a JSON spec: they round-trip, cross frameworks, and refuse bad input."""

import json

import numpy as np
import pytest

from edgeprune import checkpoint
from edgeprune.errors import EdgepruneError
from edgeprune.frameworks import get_adapter
from edgeprune.models import arch_spec, build

from conftest import randomize

CLASSES = [f"c{i}" for i in range(10)]


@pytest.fixture
def saved(tmp_path):
    arch = arch_spec("dcase2021_baseline", conv2=9)  # a "pruned" width: must reload the same way
    model = build(arch, "torch")
    randomize(model)
    path = checkpoint.save(tmp_path / "ck", model, "torch", arch, CLASSES)
    return path, model


def test_round_trip_same_framework(saved, rng):
    path, model = saved
    loaded = checkpoint.load(path)
    x = rng.normal(size=(3, 40, 500)).astype(np.float32)
    T = get_adapter("torch")
    assert np.array_equal(T.predict_proba(loaded.model, x), T.predict_proba(model, x))
    spec = json.loads((path / "spec.json").read_text())
    assert spec["arch"]["args"]["conv2"] == 9 and spec["params"] == T.count_params(model)
    assert sorted(p.name for p in path.iterdir()) == ["spec.json", "weights.npz"]  # no pickled module


def test_load_into_the_other_framework(saved, rng):
    path, model = saved
    keras_twin = checkpoint.load(path, framework="keras")
    x = rng.normal(size=(3, 40, 500)).astype(np.float32)
    diff = get_adapter("keras").predict_proba(keras_twin.model, x) - get_adapter("torch").predict_proba(model, x)
    assert np.abs(diff).max() < 1e-4


def test_existing_checkpoint_is_not_overwritten_without_force(saved):
    path, model = saved
    before = (path / "weights.npz").read_bytes()
    with pytest.raises(EdgepruneError, match="already exists; pass --force"):
        checkpoint.save(path, model, "torch", arch_spec("dcase2021_baseline", conv2=9), CLASSES)
    assert (path / "weights.npz").read_bytes() == before
    checkpoint.save(path, model, "torch", arch_spec("dcase2021_baseline", conv2=9), CLASSES, force=True)


def test_corrupt_weights_file(saved):
    path, _ = saved
    (path / "weights.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(EdgepruneError, match="weights.npz: corrupt or unreadable"):
        checkpoint.load(path)


def test_weights_that_do_not_match_the_spec(saved):
    path, _ = saved
    spec = json.loads((path / "spec.json").read_text())
    spec["arch"]["args"]["conv2"] = 16
    (path / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(EdgepruneError, match=r"'conv2.weight' has shape \(9, 16, 7, 7\); the model expects \(16, 16, 7, 7\)"):
        checkpoint.load(path)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(EdgepruneError, match="checkpoint not found"):
        checkpoint.load(tmp_path / "nothing")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "spec.json").write_text("{broken")
    with pytest.raises(EdgepruneError, match="spec.json: not valid JSON"):
        checkpoint.load(tmp_path / "x")


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    model = build(arch_spec("dcase2021_baseline"), "torch")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoint, "sha256_file", boom)
    with pytest.raises(RuntimeError):
        checkpoint.save(tmp_path / "ck", model, "torch", arch_spec("dcase2021_baseline"), CLASSES)
    assert list(tmp_path.iterdir()) == []
