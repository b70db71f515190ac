"""From scores to keep-lists: ratios, per-layer ratios, the passive rule, round_to and budgets."""

import numpy as np
import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.pruning.targets import Target, parse_budget, resolve
from edgeprune.scoring import LayerScores, Scores

CHANNELS = {"a": 8, "b": 16, "fc": 100}


def scores(rule=False):
    rng = np.random.default_rng(0)
    layers = {n: LayerScores(n, rng.random(c), keep=[0, 2, 4] if rule else None) for n, c in CHANNELS.items() if n != "fc"}
    return Scores("test", layers, {})


def test_one_ratio_for_every_scored_layer_keeps_the_best_channels():
    s = scores()
    keep = resolve(Target(ratio=0.25), s, CHANNELS)
    assert {n: len(k) for n, k in keep.items()} == {"a": 6, "b": 12}
    worst_b = set(np.argsort(s.layers["b"].scores)[:4].tolist())
    assert not worst_b & set(keep["b"])


def test_per_layer_ratios_and_round_to():
    keep = resolve(Target(layer_ratios={"b": 0.5}, round_to=4), scores(), CHANNELS)
    assert list(keep) == ["b"] and len(keep["b"]) == 8
    keep = resolve(Target(ratio=0.3, round_to=4), scores(), CHANNELS)
    assert all(len(k) % 4 == 0 for k in keep.values())


def test_the_criterions_own_rule():
    assert resolve(Target(rule=True), scores(rule=True), CHANNELS) == {"a": [0, 2, 4], "b": [0, 2, 4]}
    with pytest.raises(EdgepruneError, match="no keep rule of its own"):
        resolve(Target(rule=True), scores(), CHANNELS)


def test_bad_ratios_and_unknown_layers():
    with pytest.raises(EdgepruneError, match="ratio 1.0 is outside"):
        resolve(Target(ratio=1.0), scores(), CHANNELS)
    with pytest.raises(EdgepruneError, match="layer 'zz' has no scores"):
        resolve(Target(layer_ratios={"zz": 0.2}), scores(), CHANNELS)
    with pytest.raises(EdgepruneError, match="layer 'zz' not found"):
        resolve(Target(keep={"zz": [0]}), None, CHANNELS)


def fake_measure(keep):
    # a conv chain a -> b -> fc: per-layer terms plus the a*b coupling term
    a, b = len(keep["a"]), len(keep["b"])
    return {"params": float(a * 9 + a * b * 9 + b * 10), "macs": float(a * 4000 + a * b * 1000 + b * 300)}


@pytest.mark.parametrize("kind,fraction", [("params", 0.6), ("params", 0.4), ("macs", 0.5)])
def test_budget_is_met_within_one_point_of_the_parent(kind, fraction):
    full = fake_measure({"a": range(8), "b": range(16)})[kind]
    keep = resolve(Target(budget=(kind, fraction)), scores(), CHANNELS, measure=fake_measure)
    assert abs(fake_measure(keep)[kind] / full - fraction) <= 0.01


def test_impossible_budget_says_so():
    with pytest.raises(EdgepruneError, match="cannot be met"):
        resolve(Target(budget=("params", 0.001)), scores(), CHANNELS, measure=fake_measure)


def test_budget_parsing():
    assert parse_budget("macs=0.5") == ("macs", 0.5)
    for bad in ("flops=0.5", "params=abc", "params=1.5"):
        with pytest.raises(EdgepruneError, match="budget"):
            parse_budget(bad)
