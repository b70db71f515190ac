"""The study's bound: the best predicted latency cut / MAC cut that any channel counts reach at a MAC budget. Worked
on tables built by hand, where the answer follows from the costs: time proportional to MACs follows the cut
exactly (1), and a fixed cost as large as the layers' halves every cut (0.5)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from edgeprune.latency import layer_grid
from edgeprune.latency.study import LAYERS, bound
from edgeprune.models import arch_spec, build as build_model
from edgeprune.models.measure import measure
from edgeprune.models.registry import input_specs

ARCH = arch_spec("dcase2021_baseline")
BUDGET = 140_146_000  # the seed's C1+C2+C3 (11/11/25)
NS_PER_MAC = 1e-9


@pytest.fixture(scope="module")
def parent():
    torch.manual_seed(0)
    model = build_model(ARCH, "torch")
    return SimpleNamespace(model=model, framework="torch", arch=ARCH)


def _proportional_table(parent, rest_ms: float) -> dict:
    """Every layer's time is NS_PER_MAC per MAC at any (in, out) counts; `rest_ms` is a fixed cost of the file."""
    geoms = layer_grid.geometry(parent.model, [s.shape for s in input_specs(ARCH, "torch")])
    layers = {}
    for name, g in geoms.items():
        ms = lambda cin, cout, g=g: g.macs(cin, cout) * NS_PER_MAC  # noqa: E731
        layers[name] = {"full_ms": ms(g.cin, g.cout),
                        "out": {str(c): ms(g.cin, c) for c in range(1, g.cout + 1)},
                        "in": {str(c): ms(c, g.cout) for c in range(1, g.cin + 1)}}
    whole = rest_ms + sum(e["full_ms"] for e in layers.values())
    return {"geometry": {n: g.to_json() for n, g in geoms.items()},
            "feeds": {"conv1": {"conv2": 1.0}, "conv2": {"conv3": 1.0}, "conv3": {"dense1": 2.0}},
            "precisions": {"int8": {"whole_ms": whole, "rest_ms": rest_ms, "layers": layers}}}


def test_the_grid_covers_every_mac_of_the_model(parent):
    geoms = layer_grid.geometry(parent.model, [s.shape for s in input_specs(ARCH, "torch")])
    assert sum(g.macs(g.cin, g.cout) for g in geoms.values()) == measure(parent.model, "torch", ARCH)["macs"]


def test_time_proportional_to_macs_follows_the_cut_exactly(parent):
    b = bound(_proportional_table(parent, 0.0), "int8", parent, BUDGET, tolerance=0.0)
    assert b["band"]["ratio"] == pytest.approx(1.0, abs=1e-3)
    assert b["deeper"]["ratio"] == pytest.approx(1.0, abs=1e-3)


def test_a_fixed_cost_as_large_as_the_layers_halves_every_cut(parent):
    full_ms = measure(parent.model, "torch", ARCH)["macs"] * NS_PER_MAC
    b = bound(_proportional_table(parent, full_ms), "int8", parent, BUDGET, tolerance=0.0)
    assert b["band"]["ratio"] == pytest.approx(0.5, abs=1e-3)
    assert b["deeper"]["ratio"] == pytest.approx(0.5, abs=1e-3)


def test_the_band_holds_counts_within_five_percent_under_the_budget(parent):
    from edgeprune.latency.choose import Pricer

    doc = _proportional_table(parent, 0.0)
    b = bound(doc, "int8", parent, BUDGET, tolerance=0.0)
    priced = Pricer(doc, "int8", parent.model, "torch", ARCH, list(LAYERS), 0.0)
    macs, _ = priced(dict(zip(LAYERS, b["band"]["counts"])))
    assert 0.95 * BUDGET <= macs <= BUDGET


def test_the_fold_trial_times_a_folded_conv_that_computes_the_same_function(tmp_path):
    from edgeprune.latency.study import fold_trial

    g = layer_grid.Geometry("conv", "conv2d", (6, 10), 3, 4, (3, 5), (1, 1), (1, 1), (1, 2))
    rows = fold_trial(g.to_json(), (2, 3), tmp_path / "new", rounds=2, block=2)  # raises if the float32 files differ
    assert [(r["cin"], r["precision"]) for r in rows] == [(2, "fp32"), (2, "int8"), (3, "fp32"), (3, "int8")]
    assert all(r["plain_ms"] > 0 and r["folded_ms"] > 0 for r in rows)


def test_the_fold_trial_refuses_a_conv_the_fold_does_not_keep_the_size_of(tmp_path):
    from edgeprune.errors import EdgepruneError
    from edgeprune.latency.study import fold_trial

    g = layer_grid.Geometry("conv", "conv2d", (6, 10), 3, 4, (3, 3), (2, 2), (1, 1), (1, 1))
    with pytest.raises(EdgepruneError, match="stride-1 2-D conv"):
        fold_trial(g.to_json(), (2,), tmp_path, rounds=2, block=2)
