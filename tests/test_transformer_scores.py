"""Head and FFN-unit scores of transformer encoders (MelHuBERT compression, methods.md section 5) and the
keep-lists they give.

Bounds come from hand-worked cases (weights set by hand, a two-frame context/gradient example) and exact
equivalences: a head whose out_proj columns are zero gets no gradient, so it scores exactly 0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomize

from edgeprune.errors import EdgepruneError
from edgeprune.models import arch_spec, build
from edgeprune.models.encoder import encoder_layers
from edgeprune.scoring.transformer_scores import (
    context_importance,
    ffn_keep,
    ffn_l1,
    head_data_driven,
    head_l1,
    heads_to_remove,
    normalise_per_layer,
)

SIZES = {"layers": 2, "dim": 8, "heads": 2, "ffn": 16}  # head_dim 4
TINY = {"speech-encoder": {**SIZES, "pos_kernel": 4, "pos_groups": 2},
        "hf-wav2vec2": {**SIZES, "conv_pos": 4, "conv_pos_groups": 2},
        "hf-hubert": {**SIZES, "conv_pos": 4, "conv_pos_groups": 2}}
FFN_NAMES = {"speech-encoder": ("fc1", "fc2"), "hf-wav2vec2": ("intermediate_dense", "output_dense"),
             "hf-hubert": ("intermediate_dense", "output_dense")}


def _tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build(arch_spec(name, "phones", **TINY[name]), "torch")
    randomize(model)
    return model


def _loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).pow(2).mean()


def _batches(n: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, 40, 12, generator=g) for _ in range(n)]


@pytest.mark.parametrize("name", list(TINY))
def test_head_l1_sums_the_heads_q_k_v_rows_and_biases_but_not_out_proj(name):
    model = _tiny(name)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        attn = encoder_layers(model)[0].attention
        attn.q_proj.weight[0:4] = 1.0      # head 0: 4 rows x 8 inputs = 32
        attn.k_proj.bias[4:8] = -0.5       # head 1: 4 x 0.5 = 2
        attn.v_proj.weight[5, 0] = -3.0    # head 1: 3
        attn.out_proj.weight.fill_(7.0)    # excluded
    scores = head_l1(model)
    assert list(scores) == [1, 2]
    np.testing.assert_array_equal(scores[1], [32.0, 5.0])
    np.testing.assert_array_equal(scores[2], [0.0, 0.0])


def test_context_importance_takes_the_absolute_value_per_frame_not_per_entry():
    # two frames, 2 heads x head_dim 2: frame 1 head 0 |1*1 + 2*(-1)| = 1, head 1 |3*1 + 4*1| = 7;
    # frame 2 head 0 |1 + 1| = 2, head 1 |-2 + 1| = 1. Per entry, head 0 would be 1 + 2 + 1 + 1 = 5.
    c = np.array([[[1, 2, 3, 4], [1, 1, 1, 1]]], float)
    g = np.array([[[1, -1, 1, 1], [1, 1, -2, 1]]], float)
    np.testing.assert_array_equal(context_importance(c, g, heads=2), [3.0, 8.0])


def test_normalise_per_layer_gives_unit_l2_norm_and_leaves_zeros_zero():
    np.testing.assert_allclose(normalise_per_layer(np.array([3.0, 4.0])), [0.6, 0.8], rtol=1e-15)
    np.testing.assert_array_equal(normalise_per_layer(np.zeros(3)), np.zeros(3))


@pytest.mark.parametrize("name", list(TINY))
def test_data_driven_scores_are_normalised_and_a_head_without_out_proj_columns_scores_zero(name):
    model = _tiny(name)
    with torch.no_grad():  # head 1 of layer 1 no longer reaches the output, so dL/dc = 0 there
        encoder_layers(model)[0].attention.out_proj.weight[:, 4:8] = 0.0
    model.train()
    model.head.eval()  # a mixed mode, which must come back as it was
    scores = head_data_driven(model, _batches(), _loss)
    assert list(scores) == [1, 2]
    assert scores[1][1] == 0.0 and scores[1][0] > 0
    for s in scores.values():
        assert s.shape == (2,) and np.all(s >= 0)
        assert np.linalg.norm(s) == pytest.approx(1.0, abs=1e-12)
    assert model.training and not model.head.training and model.encoder.training
    assert all(p.grad is None for p in model.parameters())
    assert all(not encoder_layers(model)[i].attention.out_proj._forward_pre_hooks for i in range(2))


def test_data_driven_scores_do_not_depend_on_whether_the_weights_are_frozen():
    model = _tiny("speech-encoder")
    trainable = head_data_driven(model, _batches(), _loss)
    for p in model.parameters():
        p.requires_grad_(False)
    frozen = head_data_driven(model, _batches(), _loss)
    for layer in trainable:
        np.testing.assert_array_equal(frozen[layer], trainable[layer])


def test_data_driven_scoring_refuses_no_batches_and_a_loss_that_is_not_a_scalar():
    model = _tiny("speech-encoder")
    with pytest.raises(EdgepruneError, match="no batches"):
        head_data_driven(model, [], _loss)
    with pytest.raises(EdgepruneError, match="scalar tensor"):
        head_data_driven(model, _batches(1), lambda m, x: m(x))
    assert all(not layer.attention.out_proj._forward_pre_hooks for layer in encoder_layers(model))


def test_by_layer_removes_the_lowest_head_of_every_layer():
    # ties go to the lower index: layer 2's head 0
    assert heads_to_remove({1: np.array([0.3, 0.1, 0.2]), 2: np.array([1.0, 1.0])}, 1, "by_layer") == \
        {"1": [0, 2], "2": [1]}
    with pytest.raises(EdgepruneError, match="layer 2: removing 2 of its 2 heads would leave none"):
        heads_to_remove({1: np.array([0.3, 0.1, 0.2]), 2: np.array([1.0, 1.0])}, 2, "by_layer")


def test_by_whole_removes_the_globally_lowest_heads_but_never_a_layers_top_head():
    scores = {1: np.array([0.1, 0.2]), 2: np.array([5.0, 6.0, 7.0]), 3: np.array([0.05])}
    # candidates, each layer's top head set aside: (0.1, layer 1 head 0), (5, layer 2 head 0), (6, layer 2 head 1)
    assert heads_to_remove(scores, 2, "by_whole") == {"1": [1], "2": [1, 2]}
    # layer 1's top head (0.2) and layer 3's only head (0.05) are below every other score, and both stay
    assert heads_to_remove(scores, 3, "by_whole") == {"1": [1], "2": [2]}
    with pytest.raises(EdgepruneError, match="only 3 heads are outside their layer's protected top 1"):
        heads_to_remove(scores, 4, "by_whole")


@pytest.mark.parametrize("scores,n,mode,message", [
    ({1: np.array([1.0, 2.0])}, 1, "by_head", "mode 'by_head'"),
    ({1: np.array([1.0, 2.0])}, 0, "by_layer", "positive integer"),
    ({1: np.array([1.0, np.nan])}, 1, "by_layer", "finite"),
    ({}, 1, "by_layer", "expected")])
def test_bad_head_removal_requests_are_one_clear_error(scores, n, mode, message):
    with pytest.raises(EdgepruneError, match=message):
        heads_to_remove(scores, n, mode)


@pytest.mark.parametrize("name", list(TINY))
def test_ffn_l1_sums_the_units_fc1_row_bias_and_fc2_column(name):
    model = _tiny(name)
    first, second = FFN_NAMES[name]
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        ff = encoder_layers(model)[1].feed_forward
        getattr(ff, first).weight[0] = 1.0       # unit 0: 8 inputs = 8
        getattr(ff, first).bias[1] = -2.0        # unit 1: 2
        getattr(ff, second).weight[:, 2] = 0.5   # unit 2: 8 outputs x 0.5 = 4
        getattr(ff, second).bias.fill_(100.0)    # belongs to no unit
    scores = ffn_l1(model)
    np.testing.assert_array_equal(scores[1], np.zeros(16))
    np.testing.assert_array_equal(scores[2], [8.0, 2.0, 4.0] + [0.0] * 13)


def test_ffn_keep_drops_the_lowest_units_of_every_layer_and_never_all():
    scores = {1: np.array([3.0, 1.0, 2.0, 0.0]), 2: np.array([0.0, 1.0, 2.0, 3.0])}
    assert ffn_keep(scores, 2) == {"1": [0, 2], "2": [2, 3]}
    with pytest.raises(EdgepruneError, match="would leave none"):
        ffn_keep(scores, 4)


def test_ffn_scores_refuse_a_factorised_linear_in_one_clear_error():
    model = _tiny("speech-encoder")
    encoder_layers(model)[0].feed_forward.fc1 = torch.nn.Sequential(torch.nn.Linear(8, 2), torch.nn.Linear(2, 16))
    with pytest.raises(EdgepruneError, match="layer 1 feed-forward is a Sequential, not one linear"):
        ffn_l1(model)


def test_by_whole_can_protect_more_than_the_top_head():
    """With two protected heads per layer, a layer whose other heads all score lowest still keeps two."""
    scores = {1: np.array([0.1, 0.2, 0.3, 0.4]), 2: np.array([5.0, 6.0, 7.0, 8.0])}
    keep = heads_to_remove(scores, 2, "by_whole", protect=2)
    assert keep == {"1": [2, 3]}
    with pytest.raises(EdgepruneError, match="only 4 heads are outside their layer's protected top 2"):
        heads_to_remove(scores, 5, "by_whole", protect=2)
