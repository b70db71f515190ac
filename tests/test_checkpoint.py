"""Checkpoints are weights plus a JSON spec: they round-trip, cross frameworks, and refuse bad input."""

import json

import numpy as np
import pytest

from edgeprune import checkpoint
from edgeprune.errors import EdgepruneError
from edgeprune.frameworks import get_adapter
from edgeprune.models import arch_spec, build

from conftest import randomize, probs

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
    assert np.array_equal(probs(loaded.model, x), probs(model, x))
    spec = json.loads((path / "spec.json").read_text())
    assert spec["arch"]["args"]["conv2"] == 9 and spec["params"] == T.count_params(model)
    assert sorted(p.name for p in path.iterdir()) == ["spec.json", "weights.npz"]  # no pickled module


def test_load_into_the_other_framework(saved, rng):
    path, model = saved
    keras_twin = checkpoint.load(path, framework="keras")
    x = rng.normal(size=(3, 40, 500)).astype(np.float32)
    diff = probs(keras_twin.model, x) - probs(model, x)
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


# --- transforms: the compression history that loading replays ----------------------------------------------------

def _saved_twin(tmp_path, framework):
    from edgeprune.transfer import transfer_weights

    arch = arch_spec("dcase2021_baseline")
    model = build(arch, "torch")
    randomize(model)
    if framework == "keras":
        twin = build(arch, "keras")
        transfer_weights(model, twin)
        model = twin
    return checkpoint.save(tmp_path / "base", model, framework, arch, CLASSES)


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_transforms_replay_exactly_including_a_prune_of_a_pruned_checkpoint(framework, tmp_path, rng):
    from edgeprune.pruning.run import prune_checkpoint, score_checkpoint
    from edgeprune.pruning.targets import Target

    base = checkpoint.load(_saved_twin(tmp_path, framework))
    prune_checkpoint(base, Target(keep={"conv2": [0, 2, 4, 6, 8, 10]}), None, tmp_path / "p1")
    p1 = checkpoint.load(tmp_path / "p1")
    second = prune_checkpoint(p1, Target(ratio=0.5), score_checkpoint(p1, "l1"), tmp_path / "p2")
    p2 = checkpoint.load(tmp_path / "p2")
    assert [t.kind for t in p2.transforms] == ["channels", "channels"]
    assert p2.transforms[0].params["keep"] == {"conv2": [0, 2, 4, 6, 8, 10]}
    assert p2.transforms[1].record["criterion"] == "l1"
    assert (tmp_path / "p2" / p2.transforms[1].record["scores"]["file"]).is_file()  # the scores that chose it
    assert {k: len(v) for k, v in p2.transforms[1].params["keep"].items()} == {"conv1": 8, "conv2": 3, "conv3": 16}
    x = rng.normal(-3, 1.5, size=(4, 40, 500)).astype(np.float32)
    np.testing.assert_allclose(probs(p2.model, x), probs(second.model, x), atol=1e-5)
    assert get_adapter(framework).count_params(p2.model) == p2.spec["params"] < 46_246


def test_a_transform_that_no_longer_applies_is_one_clear_error(tmp_path):
    from edgeprune.pruning.run import prune_checkpoint
    from edgeprune.pruning.targets import Target

    prune_checkpoint(checkpoint.load(_saved_twin(tmp_path, "torch")), Target(keep={"conv3": [0, 1, 2]}), None,
                     tmp_path / "p")
    spec = json.loads((tmp_path / "p" / "spec.json").read_text())
    spec["transforms"][0]["params"]["keep"]["conv3"] = [0, 1, 40]
    (tmp_path / "p" / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(EdgepruneError, match=r"transform 1 of 1 \(channels\) no longer applies: keep index 40 for "
                                             r"'conv3' is out of range"):
        checkpoint.load(tmp_path / "p")
    spec["transforms"][0]["kind"] = "magic"
    (tmp_path / "p" / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(EdgepruneError, match="unknown transform kind 'magic'"):
        checkpoint.load(tmp_path / "p")


def test_a_format_1_checkpoint_still_loads(tmp_path, rng):
    """edgeprune 0.1 wrote the task-less spec with its keep-lists under "pruning"."""
    from edgeprune.pruning.api import apply_keep

    arch = arch_spec("dcase2021_baseline")
    parent = build(arch, "torch")
    randomize(parent)
    keep = {"conv1": list(range(11)), "conv3": list(range(0, 32, 2))}
    pruned, _ = apply_keep(parent, "torch", arch, keep)
    path = checkpoint.save(tmp_path / "old", pruned, "torch", arch, CLASSES)
    spec = json.loads((path / "spec.json").read_text())
    old = {"format": 1, "framework": "torch", "arch": {"model": arch["model"], "args": arch["args"]},
           "classes": CLASSES, "params": spec["params"], "weights_sha256": spec["weights_sha256"],
           "pruning": {"keep": keep, "criterion": "explicit"}}
    (path / "spec.json").write_text(json.dumps(old))
    loaded = checkpoint.load(path)
    assert loaded.task.name == "scenes" and [t.kind for t in loaded.transforms] == ["channels"]
    x = rng.normal(-3, 1.5, size=(3, 40, 500)).astype(np.float32)
    np.testing.assert_array_equal(probs(loaded.model, x), probs(pruned, x))
