"""`pruning.pad`: zero channels added back to pruned layers compute exactly what the pruned model computes, in
either framework, through a flatten into a dense layer, across a residual add and after two cuts."""

from __future__ import annotations

import numpy as np
import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.frameworks import get_adapter
from edgeprune.models import arch_spec, build as build_model
from edgeprune.models.registry import input_specs
from edgeprune.pruning.api import apply_keep
from edgeprune.pruning.pad import pad_channels, parent_keep
from edgeprune.latency.table import channel_counts

DCASE = arch_spec("dcase2021_baseline")
KWS = arch_spec("resnet-kws", "keywords", channels=8, blocks=(1,))
# scattered survivors, so the zero channels fall between kept ones in the padded layer
DCASE_KEEP = {"conv1": [0, 2, 3, 5, 8, 9, 11, 12, 13, 14, 15], "conv3": [1, 4, 6] + list(range(9, 32, 1))[:23]}


def _pruned(arch, framework: str, *keeps: dict) -> tuple:
    """A seeded parent cut by each keep-list in turn, and the checkpoint spec that records those cuts."""
    get_adapter(framework).seed_everything(0)
    model = build_model(arch, framework)
    for keep in keeps:
        model, _ = apply_keep(model, framework, arch, keep)
    spec = {"arch": arch, "transforms": [{"kind": "channels", "params": {"keep": k}} for k in keeps]}
    return model, spec


def _outputs(model, framework: str, arch) -> np.ndarray:
    rng = np.random.default_rng(1)
    x = [rng.normal(size=(4, *s.shape)).astype(np.float32) for s in input_specs(arch, framework)]
    return get_adapter(framework).forward(model, x)


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_a_padded_model_computes_what_the_pruned_one_does(framework):
    model, spec = _pruned(DCASE, framework, DCASE_KEEP)
    padded, notes = pad_channels(model, framework, spec, {"conv1": 16, "conv3": 32})
    counts = channel_counts(padded, framework)
    assert counts["conv1"][1] == 16 and counts["conv2"][0] == 16 and counts["conv3"][1] == 32
    assert counts["dense1"][0] == channel_counts(build_model(DCASE, framework), framework)["dense1"][0]
    assert notes == ["conv1: 11 -> 16 channels (5 of zeros)", "conv3: 26 -> 32 channels (6 of zeros)"]
    np.testing.assert_allclose(_outputs(padded, framework, DCASE), _outputs(model, framework, DCASE), atol=1e-6)


def test_the_zero_channels_are_zero_in_the_layer_and_in_its_reader():
    model, spec = _pruned(DCASE, "torch", DCASE_KEEP)
    padded, _ = pad_channels(model, "torch", spec, {"conv1": 13})
    kept, added = [0, 2, 3, 5, 8, 9, 11, 12, 13, 14, 15], [1, 4]  # the lowest pruned-away channels come back
    rows = sorted(kept + added)
    zero = [rows.index(c) for c in added]
    live = [rows.index(c) for c in kept]
    w = padded.conv1.weight.detach().numpy()
    assert not w[zero].any() and np.array_equal(w[live], model.conv1.weight.detach().numpy())
    assert not padded.conv2.weight.detach().numpy()[:, zero].any()


def test_a_coupled_group_pads_together_and_two_cuts_compose():
    model, spec = _pruned(KWS, "torch", {"conv0": [0, 2, 4, 5, 6, 7]}, {"conv0": [1, 2, 3, 4]})
    assert parent_keep(spec) == {"conv0": [2, 4, 5, 6]}  # block1.conv2 follows conv0 through the add
    padded, _ = pad_channels(model, "torch", spec, {"conv0": 8})
    assert padded.conv0.out_channels == padded.block1.conv2.out_channels == 8
    np.testing.assert_allclose(_outputs(padded, "torch", KWS), _outputs(model, "torch", KWS), atol=1e-6)


def test_widths_outside_the_pruned_and_parent_counts_are_refused():
    model, spec = _pruned(DCASE, "torch", DCASE_KEEP)
    with pytest.raises(EdgepruneError, match="between the two"):
        pad_channels(model, "torch", spec, {"conv1": 17})
    with pytest.raises(EdgepruneError, match="between the two"):
        pad_channels(model, "torch", spec, {"conv1": 10})
    with pytest.raises(EdgepruneError, match="not a pruned layer"):
        pad_channels(model, "torch", spec, {"conv2": 16})
    spec["transforms"].append({"kind": "layers", "params": {"drop": [1]}})
    with pytest.raises(EdgepruneError, match="channel keep-lists only"):
        pad_channels(model, "torch", spec, {"conv1": 16})
