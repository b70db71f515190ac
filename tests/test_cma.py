"""`pruning.cma`: DoC per block, the blocks CMa removes, the cost model behind the filter-level search and the
search itself, whose rates meet the MACs target on the really pruned model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.models import arch_spec, build
from edgeprune.pruning import cma

ARCH = arch_spec("resnet-kws", "keywords", channels=8, blocks=(1, 2, 3, 4))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build(ARCH, "torch").eval()


def test_an_identity_block_has_zero_doc():
    """block3 with a zero bn2 outputs relu(x) = x: its concept masks cannot change; the others change them."""
    model = _model()
    with torch.no_grad():
        model.block3.bn2.weight.zero_()
        model.block3.bn2.bias.zero_()
    x = np.random.default_rng(0).normal(size=(4, 1, 40, 100)).astype(np.float32)
    doc = cma.block_doc(model, x)
    assert list(doc) == ["block1", "block2", "block3", "block4"]
    assert doc["block3"] == 0 and min(doc["block1"], doc["block2"], doc["block4"]) > 0
    assert cma.blocks_to_drop(doc, 1) == ["block3"]


def test_blocks_to_drop_takes_the_smallest_doc_ties_in_forward_order():
    assert cma.blocks_to_drop({"b1": 5, "b2": 1, "b3": 1, "b4": 0}, 2) == ["b2", "b4"]
    assert cma.blocks_to_drop({"b1": 5, "b2": 1, "b3": 1, "b4": 9}, 1) == ["b2"]
    with pytest.raises(EdgepruneError, match="1..3"):
        cma.blocks_to_drop({"b1": 5, "b2": 1, "b3": 1, "b4": 9}, 4)


def test_kept_width_is_the_seeds_ceiling():
    assert cma.kept_width(45, 0.5) == 23  # ceil(22.5)
    assert cma.kept_width(45, 2 / 3) == 15  # exactly 15, not 16 from float noise
    assert cma.kept_width(8, 0.9) == 1


def test_l1_keep_keeps_the_largest_filters():
    model = _model()
    with torch.no_grad():
        w = model.block1.conv1.weight
        w.fill_(0.01)
        w[5].fill_(1.0)
        w[2].fill_(0.5)
    assert cma.l1_keep(model, "torch", {"block1.conv1": 2}) == {"block1.conv1": [2, 5]}


def test_each_block_prunes_only_its_inner_conv():
    internal = cma.internal_layers(_model(), "torch", ARCH)
    assert internal == {f"block{b}": [f"block{b}.conv1"] for b in (1, 2, 3, 4)}


def test_the_cost_model_predicts_the_really_pruned_model_exactly():
    model = _model()
    internal = cma.internal_layers(model, "torch", ARCH)
    layers = [n for v in internal.values() for n in v]
    cost = cma.CostModel.measured(model, "torch", ARCH, layers)
    rng = np.random.default_rng(0)
    for _ in range(3):
        widths = {n: int(rng.integers(1, 9)) for n in layers}
        child, _ = cma.prune_widths(model, "torch", ARCH, widths)
        real = cma.measured_reductions(model, child, "torch", ARCH)
        predicted = cost.reductions(widths)
        assert predicted["macs"] == pytest.approx(real["macs"], abs=1e-12)
        assert predicted["params"] == pytest.approx(real["params"], abs=1e-12)


def test_the_search_meets_the_macs_target_within_4e_4_on_the_pruned_model():
    """Target: the MACs cut of removing one block, reachable by cutting 8 inner channels in all (each inner channel
    carries 1/8 of its block's conv MACs)."""
    from edgeprune.pruning.block_surgery import drop_blocks

    model = _model()
    internal = cma.internal_layers(model, "torch", ARCH)
    cost = cma.CostModel.measured(model, "torch", ARCH, [n for v in internal.values() for n in v])
    target = cma.measured_reductions(model, drop_blocks(model, "torch", ARCH, ["block4"]), "torch", ARCH)["macs"]
    doc = {"block1": 10, "block2": 40, "block3": 20, "block4": 30}
    found = cma.search_rates(cost, internal, doc, {"macs": target}, seed=0)
    child, _ = cma.prune_widths(model, "torch", ARCH, found["widths"])
    assert abs(cma.measured_reductions(model, child, "torch", ARCH)["macs"] - target) <= 4e-4
    assert sum(8 - w for w in found["widths"].values()) == 8
    assert found["rates"]["block1"] >= found["rates"]["block2"]  # smaller DoC, higher preferred rate
    with pytest.raises(EdgepruneError, match="cannot be met within rates"):
        cma.search_rates(cost, internal, doc, {"macs": 0.95}, population=10, iterations=5)
