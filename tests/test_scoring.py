"""Importance scoring: the criteria, their keep rules, the twin parity of PyTorch and Keras, and the file format."""

import json
import math
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgeprune.errors import EdgepruneError
from edgeprune.models import arch_spec, build
from edgeprune.scoring import (LayerScores, Scores, activation_l1_means, conv_kernels, get_criterion, passive_layer,
                               prototypes, ranked_keep, scorable_layers, score)
from edgeprune.transfer import transfer_weights

from conftest import randomize


@pytest.fixture(scope="module")
def twins():
    """The DCASE baseline twins with the same (randomised) weights."""
    arch = arch_spec("dcase2021_baseline")
    tm = build(arch, "torch")
    randomize(tm)
    km = build(arch, "keras")
    transfer_weights(tm, km)
    return tm, km


def _kernel(filters):
    """A canonical kernel [kh, kw, cin, F] from a list of [kh, kw, cin] filters."""
    return np.stack([np.asarray(f, dtype=np.float64) for f in filters], axis=-1)


# --- kernels and layers ---------------------------------------------------------------------------------------

def test_kernels_share_one_layout_across_twins(twins):
    tm, km = twins
    assert scorable_layers(tm) == scorable_layers(km) == ["conv1", "conv2", "conv3"]
    kt, kk = conv_kernels(tm), conv_kernels(km)
    assert kt["conv1"].shape == (7, 7, 1, 16) and kt["conv3"].shape == (7, 7, 16, 32)  # [kh, kw, cin, F]
    for name in kt:
        np.testing.assert_array_equal(kt[name], kk[name])


def test_conv1d_kernel_becomes_width_one_2d_kernel():
    conv = nn.Conv1d(3, 5, 4)
    model = nn.Sequential(conv)
    k = conv_kernels(model)["0"]
    assert k.shape == (4, 1, 3, 5)  # [k, 1, cin, F]
    np.testing.assert_array_equal(k[:, 0, :, :], conv.weight.detach().numpy().transpose(2, 1, 0))


def test_depthwise_convs_are_not_scorable():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 8, 1))
    assert scorable_layers(model) == ["1"]


# --- magnitude --------------------------------------------------------------------------------------------------

def test_l1_and_l2_known_values():
    conv = nn.Conv2d(1, 2, (1, 2), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[3.0, -4.0]]], [[[0.0, 1.0]]]]))
    model = nn.Sequential(conv)
    np.testing.assert_allclose(score(model, "l1").layers["0"].scores, [7.0, 1.0])
    np.testing.assert_allclose(score(model, "l2").layers["0"].scores, [5.0, 1.0])
    assert score(model, "l2").layers["0"].keep is None  # magnitude criteria have no keep rule: use ranked_keep


# --- passive filter pruning -------------------------------------------------------------------------------------

def test_passive_hand_example_two_near_parallel_pairs():
    # cin = 1, 1x2 filters: f0 ~ f1 (angle atan 0.1), f2 ~ f3 (angle atan 0.2); the pairs are far apart.
    k = _kernel([[[[1.0], [0.0]]], [[[1.0], [0.1]]], [[[0.0], [1.0]]], [[[0.2], [1.0]]]])
    assert k.shape == (1, 2, 1, 4)
    r = passive_layer(k)
    d01, d23 = 1 - 1 / math.sqrt(1.01), 1 - 1 / math.sqrt(1.04)
    np.testing.assert_allclose(r.distances, [d01, d01, d23, d23], rtol=1e-12)
    assert list(r.neighbours) == [1, 0, 3, 2]
    # Visit 0 (d01, tie with 1 -> lower index first): keep 0, 1 becomes redundant; 1 skipped; keep 2; 3 skipped.
    assert r.order == [0, 1, 2, 3]
    assert r.keep == [0, 2]


def test_passive_chain_keeps_a_filter_whose_neighbour_is_already_kept():
    # f0=(1,0), f1=(1,.1), f2=(1,.3): n(0)=1, n(1)=0, n(2)=1. Visit 0: keep 0, R={1}; 1 in R; 2 not in R: keep 2.
    k = _kernel([[[[1.0], [0.0]]], [[[1.0], [0.1]]], [[[1.0], [0.3]]]])
    r = passive_layer(k)
    assert list(r.neighbours) == [1, 0, 1]
    assert r.keep == [0, 2]


def test_passive_duplicate_filters_keep_exactly_one():
    rng = np.random.default_rng(1)
    filters = [rng.normal(size=(3, 3, 4)) for _ in range(5)]
    filters.insert(3, filters[1].copy())  # 1 and 3 are identical
    r = passive_layer(_kernel(filters))
    assert r.neighbours[1] == 3 and r.neighbours[3] == 1  # never itself, even at distance 0
    assert r.distances[1] == r.distances[3] == 0.0
    assert (1 in r.keep) != (3 in r.keep)  # exactly one of the pair
    assert 1 in r.keep  # distance 0 is visited first; ties go to the lower index, so 1 is kept and 3 dropped


def test_passive_scale_invariance_and_a_triple_of_duplicates():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(2, 2, 3))
    others = [rng.normal(size=(2, 2, 3)) for _ in range(3)]
    np.testing.assert_allclose(prototypes(_kernel([2.5 * base]))[0], prototypes(_kernel([base]))[0], atol=1e-12)
    r = passive_layer(_kernel([base, base, 2.5 * base] + others))
    assert max(r.distances[:3]) < 1e-12
    # The rule marks ONE neighbour per kept filter: of three mutual duplicates the first visited is kept and marks
    # one other; the third is never marked, so it is kept too. Two of the three survive (as in the original).
    assert sum(i in r.keep for i in (0, 1, 2)) == 2


def test_passive_prototype_is_first_column_of_rank1_approximation():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=9), rng.normal(size=4)
    kernel = np.outer(a, b).reshape(3, 3, 4)[..., None]  # rank-1 filter a b^T, cin = 4
    p = prototypes(kernel)[0]
    # u1 v1^T (no singular value) first column = u1 * v1[0]; normalised: sign(b[0]) * a / |a|.
    np.testing.assert_allclose(p, np.sign(b[0]) * a / np.linalg.norm(a), atol=1e-12)
    np.testing.assert_allclose(prototypes(-kernel)[0], -p, atol=1e-12)  # unaffected by the SVD's sign choice
    single = rng.normal(size=(3, 3, 1, 1))  # cin = 1: just the normalised filter
    np.testing.assert_allclose(prototypes(single)[0], single.reshape(-1) / np.linalg.norm(single), atol=1e-12)


def test_passive_same_keep_sets_and_scores_for_the_twins(twins, capsys):
    tm, km = twins
    start = time.perf_counter()
    st = score(tm, "passive")
    elapsed = time.perf_counter() - start
    sk = score(km, "passive")
    for name in ("conv1", "conv2", "conv3"):
        assert st.layers[name].keep == sk.layers[name].keep
        np.testing.assert_allclose(st.layers[name].scores, sk.layers[name].scores, rtol=1e-12, atol=1e-15)
        assert st.layers[name].extra["neighbours"].tolist() == sk.layers[name].extra["neighbours"].tolist()
        assert 1 <= len(st.layers[name].keep) < st.layers[name].channels
    kept = {n: f"{len(ls.keep)}/{ls.channels}" for n, ls in st.layers.items()}
    with capsys.disabled():
        print(f"\n  passive, DCASE baseline (3 conv layers, torch): {elapsed * 1000:.1f} ms; kept {kept}")
    assert st.record["framework"] == "torch" and sk.record["framework"] == "keras"
    assert st.record["calibration_samples"] == 0 and st.record["data_free"]


def test_passive_scores_rank_to_a_ratio(twins):
    tm, _ = twins
    ls = score(tm, "passive", ["conv3"]).layers["conv3"]
    keep = ranked_keep(ls.scores, 0.25)
    assert len(keep) == 24
    assert min(ls.scores[keep]) >= max(np.delete(ls.scores, keep))  # the most distant (least redundant) survive


# --- ranked_keep ------------------------------------------------------------------------------------------------

def test_ranked_keep_ratio_and_rounding():
    s = np.arange(16, dtype=float)[::-1]  # channel 0 is the most important
    assert ranked_keep(s, 0.3) == list(range(12))  # floor(0.3 * 16) = 4 removed
    assert ranked_keep(s, 0.3, round_to=8) == list(range(16))  # 12 rounded UP to 16 (= C): nothing removed
    assert ranked_keep(s, 0.6, round_to=8) == list(range(8))  # 16 - 9 = 7 -> 8
    assert ranked_keep(s, 0.3, round_to=5) == list(range(15))  # 12 -> 15
    assert ranked_keep(s, 0.0) == list(range(16))
    assert ranked_keep(s, 0.99) == [0]  # at least one channel survives
    assert ranked_keep(np.array([0.5, 3.0, 1.0, 3.0]), 0.5) == [1, 3]  # indices sorted ascending
    assert ranked_keep(np.array([1.0, 1.0, 1.0]), 0.34) == [0, 1]  # ties go to the lower index
    assert ranked_keep(np.array([np.nan, 1.0, 2.0]), 0.34) == [1, 2]  # NaN counts as least important
    assert len(ranked_keep(np.ones(100), 0.29)) == 71  # not fooled by 0.29 * 100 = 28.999999999999996


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_ranked_keep_rejects_ratios_outside_0_1(bad):
    with pytest.raises(EdgepruneError, match=str(bad)):
        ranked_keep(np.ones(8), bad)


def test_ranked_keep_rejects_bad_round_to():
    with pytest.raises(EdgepruneError, match="round_to"):
        ranked_keep(np.ones(8), 0.5, round_to=0)


# --- activation_l1 ----------------------------------------------------------------------------------------------

def test_activation_l1_equals_hand_computation():
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).reshape(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 0.5]))
    model = nn.Sequential(conv)
    x = np.array([[[[1.0, -2.0], [0.0, 3.0]]], [[[-1.0, 1.0], [1.0, 1.0]]]], dtype=np.float32)  # [2, 1, 2, 2]
    # channel 0 = 2x: |.| sums 12 and 8 -> mean 10; channel 1 = 0.5 - x: |.| sums 0.5+2.5+0.5+2.5=6, 1.5+.5+.5+.5=3
    s = score(model, "activation_l1", data=x, batch_size=1)
    np.testing.assert_allclose(s.layers["0"].scores, [10.0, 4.5])
    assert s.record["calibration_samples"] == 2 and s.record["batches"] == 2
    assert model.training  # the caller's mode is restored
    capped = score(model, "activation_l1", data=x, batch_size=1, max_batches=1)
    np.testing.assert_allclose(capped.layers["0"].scores, [12.0, 6.0])
    assert capped.record["calibration_samples"] == 1


def test_activation_l1_matches_between_twins(twins, rng):
    tm, km = twins
    x = rng.normal(-3, 1.5, size=(4, 40, 500)).astype(np.float32)  # features: laid out per framework
    st = score(tm, "activation_l1", data=x, batch_size=2)
    sk = score(km, "activation_l1", data=x, batch_size=2)
    for name in ("conv1", "conv2", "conv3"):
        np.testing.assert_allclose(sk.layers[name].scores, st.layers[name].scores, rtol=1e-3)
    assert st.record["options"]["channel_dim"] == 1 and sk.record["options"]["channel_dim"] == -1
    # An already laid-out array gives the same numbers.
    laid_out = score(tm, "activation_l1", ["conv1"], data=x[:, None])
    np.testing.assert_allclose(laid_out.layers["conv1"].scores, st.layers["conv1"].scores, rtol=1e-6)


class TwoInputs(nn.Module):
    """mix channel 0 = a, channel 1 = b, channel 2 = a + b (1x1 conv over the concatenated inputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Conv2d(2, 3, 1, bias=False)
        with torch.no_grad():
            self.mix.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).reshape(3, 2, 1, 1))

    def forward(self, a, b):
        return self.mix(torch.cat([a, b], dim=1))


def test_input_mask_zeroes_exactly_one_modality():
    rng = np.random.default_rng(4)
    a = np.abs(rng.normal(size=(6, 1, 3, 3))).astype(np.float32) + 0.1  # positive, so |a + b| = |a| + |b|
    b = np.abs(rng.normal(size=(6, 1, 3, 3))).astype(np.float32) + 0.1
    model = TwoInputs()
    both = activation_l1_means(model, (a, b), ["mix"], batch_size=4).means["mix"]
    no_b = activation_l1_means(model, (a, b), ["mix"], (False, True), batch_size=4).means["mix"]
    no_a = activation_l1_means(model, (a, b), ["mix"], (True, False), batch_size=4).means["mix"]
    ea, eb = np.abs(a).sum((1, 2, 3)).mean(), np.abs(b).sum((1, 2, 3)).mean()
    np.testing.assert_allclose(both, [ea, eb, ea + eb], rtol=1e-5)
    np.testing.assert_allclose(no_b, [ea, 0.0, ea], rtol=1e-5)  # the b channel is exactly zero
    np.testing.assert_allclose(no_a, [0.0, eb, eb], rtol=1e-5)
    with pytest.raises(EdgepruneError, match="input_mask has 1 entries"):
        activation_l1_means(model, (a, b), ["mix"], (True,))


def test_module_called_twice_per_forward_is_refused():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x))

    with pytest.raises(EdgepruneError, match="'conv' is called 2 times per forward"):
        score(Twice(), "activation_l1", data=np.zeros((2, 1, 4, 4), np.float32))


def test_channel_dim_for_channels_last_outputs():
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -3.0]]))
    model = nn.Sequential(lin)
    x = np.ones((2, 5, 2), np.float32)  # [B, T, C]
    s = score(model, "activation_l1", ["0"], data=x, channel_dim=-1)
    np.testing.assert_allclose(s.layers["0"].scores, [5.0, 15.0])


# --- file format and errors ---------------------------------------------------------------------------------------

def test_scores_json_round_trip(twins, tmp_path):
    tm, _ = twins
    s = score(tm, "passive", ["conv1", "conv3"], model_name="dcase2021_baseline")
    s.layers["conv1"].extra["odd"] = float("inf")
    path = s.save(tmp_path / "scores.json")
    text = path.read_text()
    json.loads(text)  # plain JSON
    back = Scores.load(path)
    assert back.criterion == "passive" and list(back.layers) == ["conv1", "conv3"]
    for name in back.layers:
        np.testing.assert_array_equal(back.layers[name].scores, s.layers[name].scores)  # floats survive exactly
        assert back.layers[name].keep == s.layers[name].keep
    assert back.record["model"] == "dcase2021_baseline" and back.record["layers"] == ["conv1", "conv3"]
    for key in ("options", "calibration_samples", "framework", "edgeprune_version", "created", "seconds"):
        assert key in back.record
    assert back.keep_sets() == s.keep_sets()
    assert back.keep_sets(0.5)["conv1"] == ranked_keep(s.layers["conv1"].scores, 0.5)
    with pytest.raises(EdgepruneError, match="already exists"):
        s.save(path)
    assert Scores.from_json(LayerScoresDoc).layers["x"].scores.tolist() == [1.0, float("inf")]


LayerScoresDoc = {"criterion": "l1", "layers": {"x": {"scores": [1.0, "inf"], "keep": None}}}


def test_unknown_criterion_layer_and_option_errors(twins):
    tm, _ = twins
    with pytest.raises(EdgepruneError, match="unknown criterion 'nope'; known criteria: .*passive"):
        score(tm, "nope")
    with pytest.raises(EdgepruneError, match="layer 'conv9' not found; scorable layers: conv1, conv2, conv3"):
        score(tm, "l1", ["conv9"])
    with pytest.raises(EdgepruneError, match="'dense1' is a Linear"):
        score(tm, "passive", ["dense1"])
    with pytest.raises(EdgepruneError, match="data-driven"):
        score(tm, "activation_l1")
    with pytest.raises(EdgepruneError, match="has no option"):
        score(tm, "passive", ratio=0.5)
    with pytest.raises(EdgepruneError, match="no keep rule"):
        score(tm, "l1").keep_sets()
    assert get_criterion("activation_l1").needs_data and not get_criterion("passive").needs_data


def test_layer_scores_normalise_inputs():
    ls = LayerScores("c", [3, 1], keep=[2, 0])
    assert ls.scores.dtype == np.float64 and ls.keep == [0, 2] and ls.channels == 2
