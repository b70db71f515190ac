"""`latency.padding`: a pruned layer is padded back only to a width its target runs measurably faster, worked on
a DCASE table shaped like this x86's (float32 conv3: 0.106 ms at 1-16 channels, 0.213 at 17-31, 0.156 at 32)."""

from __future__ import annotations

import pytest
import torch

from edgeprune.latency import layer_grid
from edgeprune.latency.padding import pad_widths
from edgeprune.models import arch_spec, build as build_model
from edgeprune.models.registry import input_specs

ARCH = arch_spec("dcase2021_baseline")


def _stairs(levels):  # [(last count of the stair, ms)] -> {count: ms}
    out, first = {}, 1
    for last, ms in levels:
        out.update({str(c): ms for c in range(first, last + 1)})
        first = last + 1
    return out


@pytest.fixture(scope="module")
def parent():
    torch.manual_seed(0)
    return build_model(ARCH, "torch")


@pytest.fixture(scope="module")
def doc(parent):
    geoms = layer_grid.geometry(parent, [s.shape for s in input_specs(ARCH, "torch")])
    flat = lambda n, ms: _stairs([(n, ms)])  # noqa: E731
    return {"geometry": {n: g.to_json() for n, g in geoms.items()},
            "feeds": {"conv1": {"conv2": 1.0}, "conv2": {"conv3": 1.0}, "conv3": {"dense1": 2.0}},
            "precisions": {
                "fp32": {"whole_ms": 3.0, "rest_ms": 0.05, "layers": {
                    "conv1": {"full_ms": 0.25, "out": flat(16, 0.25), "in": {}},
                    "conv2": {"full_ms": 2.6, "out": flat(16, 2.6), "in": _stairs([(8, 1.3), (16, 2.6)])},
                    "conv3": {"full_ms": 0.156, "out": _stairs([(16, 0.106), (31, 0.213), (32, 0.156)]),
                              "in": flat(16, 0.156)},
                    "dense1": {"full_ms": 0.01, "out": flat(100, 0.01), "in": flat(64, 0.01)},
                    "dense2": {"full_ms": 0.01, "out": {}, "in": flat(100, 0.01)}}},
                "int8": {"whole_ms": 0.7, "rest_ms": 0.02, "layers": {
                    "conv1": {"full_ms": 0.1, "out": flat(16, 0.1), "in": {}},
                    "conv2": {"full_ms": 0.53, "out": flat(16, 0.53), "in": _stairs([(8, 0.34), (16, 0.53)])},
                    "conv3": {"full_ms": 0.042, "out": _stairs([(16, 0.021), (32, 0.042)]), "in": flat(16, 0.042)},
                    "dense1": {"full_ms": 0.005, "out": flat(100, 0.005), "in": flat(64, 0.005)},
                    "dense2": {"full_ms": 0.003, "out": {}, "in": flat(100, 0.003)}}}}}


def test_a_count_on_a_slower_stair_is_padded_to_the_faster_width(doc, parent):
    # conv3 = 26 costs 0.213 ms, 32 costs 0.156: 0.057 ms saved, over 1 % of the 3 ms file
    assert pad_widths(doc, "fp32", parent, "torch", ARCH, {"conv1": 11, "conv3": 26}) == {"conv3": 32}


def test_no_padding_where_the_wider_count_costs_the_same(doc, parent):
    # int8: 17-32 output channels are one stair, and conv1 = 11 is on conv2's 9-16 input stair already
    assert pad_widths(doc, "int8", parent, "torch", ARCH, {"conv1": 11, "conv3": 26}) == {}


def test_no_padding_for_a_saving_inside_the_noise(doc, parent):
    small = {**doc, "precisions": {**doc["precisions"], "fp32": {**doc["precisions"]["fp32"], "whole_ms": 6.0}}}
    # the same 0.057 ms is under 1 % of a 6 ms file
    assert pad_widths(small, "fp32", parent, "torch", ARCH, {"conv3": 26}) == {}


def test_coupled_layers_are_padded_together_or_not_at_all(doc, parent):
    """conv1 and conv2 taken as one unit (as an add would couple them). conv1 alone gains 0.2 ms at 16 channels
    (9-15 is a remainder stair); conv2 loses 0.4 ms there. Apart, conv1 pads; together, neither does."""
    import copy

    worked = copy.deepcopy(doc)
    layers = worked["precisions"]["fp32"]["layers"]
    layers["conv1"]["out"] = _stairs([(8, 0.25), (15, 0.5), (16, 0.3)])
    layers["conv2"]["out"] = _stairs([(12, 2.6), (16, 3.0)])
    assert pad_widths(worked, "fp32", parent, "torch", ARCH, {"conv1": 12, "conv2": 12}) == {"conv1": 16}
    assert pad_widths(worked, "fp32", parent, "torch", ARCH, {"conv1": 12, "conv2": 12}, [("conv1", "conv2")]) == {}
