"""score -> prune -> finetune on checkpoints: real surgery, replayable checkpoints, twins, targets, bad input."""

import json

import numpy as np
import pytest

from edgeprune import checkpoint
from edgeprune.cli import main
from edgeprune.frameworks import get_adapter
from edgeprune.models import arch_spec, build
from edgeprune.pruning import api
from edgeprune.transfer import transfer_weights

from conftest import randomize, probs

SEED_KEEP_COUNTS = {"conv1": 11, "conv2": 11, "conv3": 22}


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A DCASE baseline checkpoint with random (non-trivial) weights."""
    arch = arch_spec("dcase2021_baseline")
    model = build(arch, "torch")
    randomize(model)
    return checkpoint.save(tmp_path_factory.mktemp("p") / "parent", model, "torch", arch, [f"c{i}" for i in range(10)])


def random_keep(rng, counts):
    widths = {"conv1": 16, "conv2": 16, "conv3": 32}
    return {k: sorted(rng.choice(widths[k], size=n, replace=False).tolist()) for k, n in counts.items()}


@pytest.mark.parametrize("layers,params", [
    (["conv1"], 42_056), (["conv2"], 34_461), (["conv3"], 36_356), (["conv1", "conv2", "conv3"], 24_056)])
@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_seed_kept_counts_give_the_seed_parameter_counts(framework, layers, params, rng):
    arch = arch_spec("dcase2021_baseline")
    model = build(arch, framework)
    pruned, _ = api.apply_keep(model, framework, arch, random_keep(rng, {k: SEED_KEEP_COUNTS[k] for k in layers}))
    assert get_adapter(framework).count_params(pruned) == params


def test_twins_pruned_with_the_same_indices_agree(rng):
    arch = arch_spec("dcase2021_baseline")
    tm, km = build(arch, "torch"), build(arch, "keras")
    randomize(tm)
    transfer_weights(tm, km)
    keep = random_keep(rng, SEED_KEEP_COUNTS)
    tp, _ = api.apply_keep(tm, "torch", arch, keep)
    kp, _ = api.apply_keep(km, "keras", arch, keep)
    x = rng.normal(-3, 1.5, size=(4, 40, 500)).astype(np.float32)
    assert np.abs(probs(tp, x) - probs(kp, x)).max() < 1e-4


def test_cli_score_prune_and_the_pruned_checkpoint_replays(parent, tmp_path, rng, capsys):
    scores = tmp_path / "scores.json"
    assert main(["score", str(parent), "--criterion", "passive", "--out", str(scores)]) == 0
    assert main(["prune", str(parent), "--scores", str(scores), "--rule", "--out", str(tmp_path / "pruned")]) == 0
    out = capsys.readouterr().out
    assert "| conv2 " in out and "passive" in out
    table = json.loads((tmp_path / "pruned" / "pruning.json").read_text())
    rule_keep = json.loads(scores.read_text())["layers"]["conv1"]["keep"]
    assert table["keep"]["conv1"] == rule_keep
    assert {r["layer"]: r["channels_after"] for r in table["table"]}["conv1"] == len(rule_keep)
    # The checkpoint rebuilds from parent spec + keep-lists, in either framework, with the same outputs.
    as_torch = checkpoint.load(tmp_path / "pruned")
    as_keras = checkpoint.load(tmp_path / "pruned", framework="keras")
    x = rng.normal(-3, 1.5, size=(3, 40, 500)).astype(np.float32)
    pt = probs(as_torch.model, x)
    assert np.abs(pt - probs(as_keras.model, x)).max() < 1e-4
    assert get_adapter("torch").count_params(as_torch.model) == table["params"] < 46_246


def test_budget_through_the_cli(parent, tmp_path):
    assert main(["prune", str(parent), "--criterion", "l1", "--budget", "params=0.7", "--out", str(tmp_path / "b")]) == 0
    params = json.loads((tmp_path / "b" / "pruning.json").read_text())["params"]
    assert abs(params / 46_246 - 0.7) <= 0.01


def test_round_to_keeps_multiples(parent, tmp_path):
    assert main(["prune", str(parent), "--criterion", "l2", "--ratio", "0.4", "--round-to", "4",
                 "--out", str(tmp_path / "r")]) == 0
    keep = json.loads((tmp_path / "r" / "pruning.json").read_text())["keep"]
    assert {k: len(v) for k, v in keep.items()} == {"conv1": 12, "conv2": 12, "conv3": 20}


def test_tiny_finetune_with_distillation_from_the_parent(parent, tmp_path, tiny_data):
    assert main(["prune", str(parent), "--criterion", "l1", "--ratio", "0.5", "--out", str(tmp_path / "p")]) == 0
    assert main(["finetune", str(tmp_path / "p"), "--profile", "tiny", "--distill", "--out", str(tmp_path / "f")]) == 0
    spec = json.loads((tmp_path / "f" / "spec.json").read_text())
    assert spec["finetune"]["distillation"]["teacher"] == str(parent)
    assert spec["transforms"][-1]["params"]["keep"] == json.loads((tmp_path / "p" / "pruning.json").read_text())["keep"]
    checkpoint.load(tmp_path / "f")  # still replays


@pytest.mark.parametrize("argv,fragment", [
    (["--layers", "conv9", "--ratio", "0.3"], "layer 'conv9' not found"),
    (["--ratio", "1.5"], "ratio 1.5 is outside [0, 1)"),
    (["--budget", "params=0.02"], "cannot be met"),
    (["--ratio", "0.3", "--rule"], "exactly one target"),
])
def test_bad_pruning_requests_write_nothing(parent, tmp_path, capsys, argv, fragment):
    assert main(["prune", str(parent), "--criterion", "l1", *argv, "--out", str(tmp_path / "x")]) == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_keras_checkpoint_prunes_and_finetunes_through_the_cli(tmp_path, tiny_data):
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    run.train("dcase2021_baseline", "keras", tiny_data, get_profile("tiny"), tmp_path / "k", progress=False)
    assert main(["prune", str(tmp_path / "k"), "--criterion", "passive", "--rule", "--out", str(tmp_path / "kp")]) == 0
    assert main(["finetune", str(tmp_path / "kp"), "--profile", "tiny", "--distill", "--out", str(tmp_path / "kf")]) == 0
    loaded = checkpoint.load(tmp_path / "kf")
    assert loaded.framework == "keras"
    assert get_adapter("keras").count_params(loaded.model) == loaded.transforms[-1].record["params"] < 46_246
