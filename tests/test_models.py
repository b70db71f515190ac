"""The DCASE 2021 1a baseline twins: same size, same MACs, rebuildable from a spec with other widths."""

import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.frameworks import get_adapter
from edgeprune.models import arch_spec, build, list_models
from edgeprune.models.measure import describe


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_baseline_has_46246_parameters_counting_bn_statistics(framework):
    model = build(arch_spec("dcase2021_baseline"), framework)
    assert get_adapter(framework).count_params(model) == 46_246


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_baseline_macs_and_layer_table(framework):
    arch = arch_spec("dcase2021_baseline")
    info = describe(build(arch, framework), framework, arch)
    assert round(info["macs"] / 1e6, 1) == 286.6
    by_name = {r["name"]: r for r in info["layers"]}
    assert by_name["conv2"]["params"] == 7 * 7 * 16 * 16 + 16
    assert by_name["dense1"]["params"] == 64 * 100 + 100
    assert sum(r["params"] for r in info["layers"]) == 46_246


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_spec_with_other_widths_builds_a_smaller_model(framework):
    # The seed's C1+C2+C3 kept counts: 11, 11, 22 filters.
    model = build(arch_spec("dcase2021_baseline", conv1=11, conv2=11, conv3=22), framework)
    assert get_adapter(framework).count_params(model) == 24_056


def test_unknown_model_and_argument_are_clear_errors():
    with pytest.raises(EdgepruneError, match="unknown model 'resnet9000'.*dcase2021_baseline"):
        arch_spec("resnet9000")
    with pytest.raises(EdgepruneError, match="no argument.*'conv9'"):
        arch_spec("dcase2021_baseline", conv9=3)


def test_registry_lists_both_frameworks():
    entry = {e.name: e for e in list_models()}["dcase2021_baseline"]
    assert set(entry.builders) == {"torch", "keras"}
