"""Keras structured-pruning surgery: a pruned model is smaller and computes exactly what the original computes once
the removed channels are zeroed along their path (filter and bias, BN gamma and beta, depthwise filter)."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import pytest
from keras import layers as L

from edgeprune.errors import EdgepruneError
from edgeprune.models import arch_spec, build
from edgeprune.pruning.keras_surgery import channels_of, coupled_groups, prune_keras


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def randomize(model: keras.Model, x: np.ndarray, seed: int = 0) -> None:
    """Random biases, BN gamma/beta and moving statistics (kernels keep their random initialisation).

    The moving statistics are first set to the batch statistics of x (BN momentum 0 for one training-mode pass),
    then perturbed: so deep models (MobileNetV2, ResNet50) still pass a signal from input to output instead of
    being swamped by BN offsets."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        if v.name == "gamma":
            v.assign(rng.uniform(0.5, 1.5, shape))
        elif v.name in ("beta", "bias"):
            v.assign(rng.normal(0, 0.2, shape))
    bns = [layer for layer in model.layers if isinstance(layer, L.BatchNormalization)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    # A batch of 16 gives statistics that do not vanish where the maps are 1x1 (deep layers of 32x32 inputs).
    model(np.concatenate([x] * 8) * rng.uniform(0.5, 1.5, (8 * len(x),) + (1,) * (x.ndim - 1)), training=True)
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
        var = bn.moving_variance.numpy() * rng.uniform(0.5, 1.5, bn.moving_variance.shape)
        bn.moving_variance.assign(var)
        bn.moving_mean.assign(bn.moving_mean.numpy() + rng.normal(0, 0.2, var.shape) * np.sqrt(var))


def zero_channels(model: keras.Model, removed: dict[str, Sequence[int]]) -> None:
    """Make these output channels of these layers exactly zero: filter and bias (Conv, Dense, SeparableConv
    pointwise), gamma and beta (BN: output = beta = 0 whatever the moving statistics), and for a depthwise conv
    output channel c*mult + m its filter [..., c, m] and bias."""
    for name, idx in removed.items():
        layer, idx = model.get_layer(name), np.asarray(idx, dtype=int)
        for v in layer.weights:
            w = np.array(v.numpy())
            if isinstance(layer, L.DepthwiseConv2D) and v.name == "kernel":
                c, m = np.divmod(idx, w.shape[-1])
                w[..., c, m] = 0
            elif v.name in ("kernel", "pointwise_kernel", "bias", "gamma", "beta"):
                w[..., idx] = 0
            else:
                continue  # BN moving statistics stay random; a separable conv's depthwise kernel acts on its inputs
            v.assign(w)


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))


def names(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers if not isinstance(layer, L.InputLayer)]


def removed_from(keep: dict[str, Sequence[int]], widths: dict[str, int]) -> dict[str, list[int]]:
    return {k: sorted(set(range(widths[k])) - set(v)) for k, v in keep.items()}


def assert_prune_matches_zeroing(model: keras.Model, keep: dict, zero: dict, x: np.ndarray):
    """THE surgery property. Zero the channels to remove, record the outputs, prune them: outputs unchanged."""
    randomize(model, x)
    unzeroed = predict(model, x)
    zero_channels(model, zero)
    reference = predict(model, x)
    assert np.abs(unzeroed - reference).max() > 1e-4, "the removed channels should matter before zeroing"
    weights = [w.copy() for w in model.get_weights()]

    pruned, notes = prune_keras(model, keep)

    out = predict(pruned, x)
    scale = max(1.0, float(np.abs(reference).max()))
    np.testing.assert_allclose(out, reference, rtol=0, atol=1e-5 * scale)
    assert pruned.count_params() < model.count_params()
    assert names(pruned) == names(model)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights())), "the original must not change"
    assert np.array_equal(predict(model, x), reference)
    assert notes and notes[0].startswith("parameters")
    return pruned, notes


def pick(rng: np.random.Generator, n: int, k: int) -> list[int]:
    """k of n channel indices, random and (almost surely) non-contiguous."""
    return sorted(rng.choice(n, k, replace=False).tolist())


# ----------------------------------------------------------------------------------------------------------------
# The DCASE 2021 1a baseline: the seed's kept counts give the published parameter counts.


@pytest.mark.parametrize("keep, params", [
    ({"conv1": range(11)}, 42_056),
    ({"conv2": range(11)}, 34_461),
    ({"conv3": range(22)}, 36_356),
    ({"conv1": range(11), "conv2": range(11), "conv3": range(22)}, 24_056),
])
def test_dcase_baseline_kept_counts_give_the_published_parameter_counts(keep, params):
    model = build(arch_spec("dcase2021_baseline"), "keras")
    assert model.count_params() == 46_246
    pruned, _ = prune_keras(model, keep)
    assert pruned.count_params() == params  # BN moving statistics counted, as Keras counts
    assert model.count_params() == 46_246  # the original is untouched


def test_dcase_baseline_channels_and_coupling():
    model = build(arch_spec("dcase2021_baseline"), "keras")
    # dense2 is the classifier: its width is the number of classes and never changes.
    assert channels_of(model) == {"conv1": 16, "conv2": 16, "conv3": 32, "dense1": 100}
    assert coupled_groups(model) == []


def test_dcase_baseline_pruning_equals_zeroing_at_random_indices():
    rng = np.random.default_rng(1)
    model = build(arch_spec("dcase2021_baseline"), "keras")
    keep = {"conv1": pick(rng, 16, 11), "conv2": pick(rng, 16, 11), "conv3": pick(rng, 32, 22)}
    removed = removed_from(keep, {"conv1": 16, "conv2": 16, "conv3": 32})
    zero = {**removed, "bn1": removed["conv1"], "bn2": removed["conv2"], "bn3": removed["conv3"]}
    x = rng.normal(size=(2, 40, 500, 1)).astype("float32")
    pruned, _ = assert_prune_matches_zeroing(model, keep, zero, x)
    assert pruned.count_params() == 24_056
    assert [pruned.get_layer(n).filters for n in ("conv1", "conv2", "conv3")] == [11, 11, 22]


def test_flatten_to_dense_rows_follow_channels_last_order():
    # After pool2 the map is [H=2, W=1, C=32]; Flatten puts channel c of position p at row p * 32 + c. The rows of
    # channel c are c and 32 + c (the seed's 2c, 2c + 1 is the channels-first mapping: wrong in Keras).
    model = build(arch_spec("dcase2021_baseline"), "keras")
    kept = [1, 5, 30]
    pruned, notes = prune_keras(model, {"conv3": kept})
    rows = [p * 32 + c for p in range(2) for c in kept]
    dense1 = model.get_layer("dense1").get_weights()[0]
    np.testing.assert_array_equal(pruned.get_layer("dense1").get_weights()[0], dense1[rows])
    assert any(n.startswith("flatten: features 64 -> 6") for n in notes)


# ----------------------------------------------------------------------------------------------------------------
# Graph patterns, each checked with the zeroing property.


def residual_model() -> keras.Model:
    """stem -> BN -> ReLU, plus a branch res_a -> BN -> ReLU -> res_b (no BN): summed by an Add."""
    inp = keras.Input((16, 16, 3))
    x = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(L.Conv2D(8, 3, padding="same", name="stem")(inp)))
    y = L.ReLU(name="res_relu")(L.BatchNormalization(name="res_a_bn")(L.Conv2D(6, 3, padding="same", name="res_a")(x)))
    y = L.Conv2D(8, 3, padding="same", name="res_b")(y)
    s = L.ReLU(name="add_relu")(L.Add(name="add")([x, y]))
    s = L.Conv2D(4, 1, name="head")(s)
    return keras.Model(inp, L.Dense(5, name="out")(L.GlobalAveragePooling2D(name="gap")(s)))


def test_residual_add_prunes_coupled_producers_together():
    model = residual_model()
    assert coupled_groups(model) == [{"stem", "res_b"}]
    shared = [0, 2, 3, 6, 7]  # the Add sums channel c of stem with channel c of res_b: both keep the same ones
    keep = {"stem": shared, "res_b": shared, "res_a": [1, 2, 4]}
    removed = removed_from(keep, {"stem": 8, "res_b": 8, "res_a": 6})
    # res_b feeds the Add directly (no BN): its filter and bias are zeroed; stem is zeroed through its BN.
    zero = {**removed, "stem_bn": removed["stem"], "res_a_bn": removed["res_a"]}
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    pruned, _ = assert_prune_matches_zeroing(model, keep, zero, x)
    assert pruned.get_layer("add").output.shape[-1] == 5
    assert pruned.get_layer("head").get_weights()[0].shape == (1, 1, 5, 4)


def concat_model() -> keras.Model:
    inp = keras.Input((16, 16, 3))
    a = L.ReLU(name="a_relu")(L.BatchNormalization(name="a_bn")(L.Conv2D(4, 3, padding="same", name="a")(inp)))
    b = L.ReLU(name="b_relu")(L.BatchNormalization(name="b_bn")(L.Conv2D(6, 1, name="b")(inp)))
    c = L.Concatenate(name="cat")([a, b])  # channels 0-3 from a, 4-9 from b
    c = L.MaxPooling2D(2, name="pool")(c)
    c = L.Conv2D(5, 3, name="mix")(c)
    return keras.Model(inp, L.Dense(3, name="out")(L.Flatten(name="flat")(c)))


def test_concatenate_keeps_the_union_of_its_inputs_channels_offset_per_input():
    model = concat_model()
    assert coupled_groups(model) == []  # a concatenation joins channels side by side: no coupling
    keep = {"a": [0, 3], "b": [1, 2, 5]}
    removed = removed_from(keep, {"a": 4, "b": 6})
    zero = {**removed, "a_bn": removed["a"], "b_bn": removed["b"]}
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    pruned, _ = assert_prune_matches_zeroing(model, keep, zero, x)
    rows = [0, 3, 4 + 1, 4 + 2, 4 + 5]
    mix = model.get_layer("mix").get_weights()[0]
    np.testing.assert_array_equal(pruned.get_layer("mix").get_weights()[0], mix[:, :, rows, :])


def separable_model() -> keras.Model:
    inp = keras.Input((16, 16, 3))
    x = L.ReLU(name="c0_relu")(L.BatchNormalization(name="c0_bn")(L.Conv2D(8, 3, padding="same", name="c0")(inp)))
    x = L.SeparableConv2D(12, 3, padding="same", depth_multiplier=2, name="sep")(x)
    x = L.ReLU(name="sep_relu")(L.BatchNormalization(name="sep_bn")(x))
    x = L.ZeroPadding2D(1, name="pad")(x)
    x = L.DepthwiseConv2D(3, strides=2, depth_multiplier=2, name="dw")(x)  # 12 -> 24 channels: c*2 + m
    x = L.ReLU(name="dw_relu")(L.BatchNormalization(name="dw_bn")(x))
    x = L.ReLU(name="pw_relu")(L.BatchNormalization(name="pw_bn")(L.Conv2D(10, 1, name="pw")(x)))
    return keras.Model(inp, L.Dense(4, name="out")(L.GlobalAveragePooling2D(name="gap")(x)))


def test_depthwise_separable_channels_follow_their_inputs():
    model = separable_model()
    assert "dw" not in channels_of(model)  # a depthwise conv's channels follow its input
    keep = {"c0": [0, 1, 4, 6, 7], "sep": [0, 2, 3, 5, 8, 9, 11], "pw": [1, 2, 5, 8]}
    removed = removed_from(keep, {"c0": 8, "sep": 12, "pw": 10})
    # A removed sep channel c also removes depthwise outputs 2c and 2c+1, with their bias and BN beta: zero them.
    dw_removed = [2 * c + m for c in removed["sep"] for m in (0, 1)]
    zero = {**removed, "c0_bn": removed["c0"], "sep_bn": removed["sep"], "dw": dw_removed, "dw_bn": dw_removed,
            "pw_bn": removed["pw"]}
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    pruned, _ = assert_prune_matches_zeroing(model, keep, zero, x)
    sep = pruned.get_layer("sep").get_weights()
    assert sep[0].shape == (3, 3, 5, 2) and sep[1].shape == (1, 1, 10, 7)  # depthwise by input, pointwise both ways
    assert pruned.get_layer("dw").get_weights()[0].shape == (3, 3, 7, 2)
    assert pruned.get_layer("dw_bn").get_weights()[0].shape == (14,)


def squeeze_excite_model() -> keras.Model:
    inp = keras.Input((16, 16, 3))
    x = L.ReLU(name="relu")(L.BatchNormalization(name="bn")(L.Conv2D(8, 3, padding="same", name="conv")(inp)))
    s = L.GlobalAveragePooling2D(name="se_pool")(x)
    s = L.Dense(4, activation="relu", name="se_reduce")(s)
    s = L.Dense(8, activation="sigmoid", name="se_expand")(s)
    x = L.Multiply(name="se_scale")([x, L.Reshape((1, 1, 8), name="se_reshape")(s)])
    x = L.Conv2D(6, 3, name="conv_out")(x)
    return keras.Model(inp, L.Dense(3, name="out")(L.GlobalAveragePooling2D(name="gap")(x)))


def test_squeeze_excite_gate_is_coupled_to_the_channels_it_scales():
    model = squeeze_excite_model()
    # The gate's channel c scales the map's channel c, so se_expand must keep what conv keeps.
    assert coupled_groups(model) == [{"conv", "se_expand"}]
    keep = {"conv": [0, 1, 3, 6], "se_expand": [0, 1, 3, 6], "se_reduce": [0, 2, 3]}
    removed = removed_from(keep, {"conv": 8, "se_expand": 8, "se_reduce": 4})
    zero = {"conv": removed["conv"], "bn": removed["conv"], "se_reduce": removed["se_reduce"]}
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    pruned, _ = assert_prune_matches_zeroing(model, keep, zero, x)
    assert pruned.get_layer("se_reshape").target_shape == (1, 1, 4)


def conv1d_model() -> keras.Model:
    """An audio model on log-mel frames [T=100, F=40]: the mel bands are the input channels."""
    inp = keras.Input((100, 40))
    x = L.ReLU(name="r1")(L.BatchNormalization(name="bn1")(L.Conv1D(16, 5, padding="same", name="c1")(inp)))
    x = L.MaxPooling1D(4, name="p1")(x)
    x = L.ReLU(name="r2")(L.BatchNormalization(name="bn2")(L.Conv1D(24, 3, padding="same", name="c2")(x)))
    x = L.Flatten(name="flat")(L.MaxPooling1D(5, name="p2")(x))  # [5, 24] -> 120: row t * 24 + c
    x = L.Dense(16, activation="relu", name="fc")(x)
    return keras.Model(inp, L.Dense(10, activation="softmax", name="out")(x))


def test_conv1d_audio_model():
    rng = np.random.default_rng(2)
    model = conv1d_model()
    keep = {"c1": pick(rng, 16, 9), "c2": pick(rng, 24, 13), "fc": pick(rng, 16, 10)}
    removed = removed_from(keep, {"c1": 16, "c2": 24, "fc": 16})
    zero = {**removed, "bn1": removed["c1"], "bn2": removed["c2"]}
    pruned, _ = assert_prune_matches_zeroing(model, keep, zero, rng.normal(size=(3, 100, 40)).astype("float32"))
    assert pruned.get_layer("fc").get_weights()[0].shape == (5 * 13, 10)


def test_residual_written_with_operators_is_a_merge_too():
    inp = keras.Input((8, 8, 2))
    a = L.Conv2D(4, 3, padding="same", name="a")(inp)
    b = L.Conv2D(4, 1, name="b")(inp)
    s = keras.ops.relu(a + b * 0.5)  # keras.ops calls on Keras tensors: Add, Multiply by a scalar, Relu
    model = keras.Model(inp, L.Dense(2, name="out")(L.GlobalAveragePooling2D(name="gap")(s)))
    assert coupled_groups(model) == [{"a", "b"}]
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 2)).astype("float32")
    assert_prune_matches_zeroing(model, {"a": [0, 3], "b": [0, 3]}, {"a": [1, 2], "b": [1, 2]}, x)


def test_sequential_model_becomes_a_functional_one():
    model = keras.Sequential([keras.Input((16, 16, 1)), L.Conv2D(6, 3, name="c"), L.BatchNormalization(name="bn"),
                              L.ReLU(name="r"), L.Flatten(name="f"), L.Dense(3, name="out")])
    keep = {"c": [0, 2, 5]}
    zero = {"c": [1, 3, 4], "bn": [1, 3, 4]}
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype("float32")
    pruned, _ = assert_prune_matches_zeroing(model, keep, zero, x)
    assert not isinstance(pruned, keras.Sequential)


# ----------------------------------------------------------------------------------------------------------------
# Models the project did not write.


@pytest.fixture
def float64():
    """Deep random networks amplify float32 rounding (a conv with fewer input channels sums in another order) to
    about 1e-5 relative at the logits; in float64 that noise vanishes, so the check shows the surgery is exact."""
    previous = keras.config.floatx(), keras.config.dtype_policy().name
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # layers take their dtype from the policy, once it has been read
    yield
    keras.config.set_floatx(previous[0])
    keras.config.set_dtype_policy(previous[1])


def test_mobilenet_v2_prunes_an_expansion_and_a_coupled_projection_group(float64):
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10,
                                           classifier_activation=None)
    groups = coupled_groups(model)
    group = next(g for g in groups if "block_2_project" in g)
    assert group == {"block_1_project", "block_2_project"}  # block_2's Add sums them
    assert "predictions" not in channels_of(model)
    widths = channels_of(model)
    keep = {"block_1_expand": list(range(0, 48, 2)), **{m: [0, 2, 3, 5, 6] for m in group}}
    removed = removed_from(keep, widths)
    e = removed["block_1_expand"]
    # An expansion channel runs through BN, ReLU6, padding, the depthwise conv and its BN before it is mixed.
    zero = {**removed, "block_1_expand_BN": e, "block_1_depthwise": e, "block_1_depthwise_BN": e,
            **{m + "_BN": removed[m] for m in group}}
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3))
    assert_prune_matches_zeroing(model, keep, zero, x)


def test_resnet50_prunes_a_residual_stage_and_a_bottleneck_conv(float64):
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    group = next(g for g in coupled_groups(model) if "conv2_block1_0_conv" in g)
    # Stage 2: the projection shortcut and every block's last conv meet at the stage's Adds.
    assert group == {"conv2_block1_0_conv", "conv2_block1_3_conv", "conv2_block2_3_conv", "conv2_block3_3_conv"}
    kept = list(range(0, 256, 3))
    keep = {**{m: kept for m in group}, "conv3_block1_1_conv": list(range(64))}
    removed = removed_from(keep, channels_of(model))
    zero = {**removed, **{m.replace("_conv", "_bn"): removed[m] for m in keep}}
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3))
    pruned, _ = assert_prune_matches_zeroing(model, keep, zero, x)
    assert pruned.get_layer("conv1_conv").dtype == "float64"
    assert pruned.get_layer("conv3_block1_0_conv").get_weights()[0].shape == (1, 1, len(kept), 512)


# ----------------------------------------------------------------------------------------------------------------
# Errors: every impossible request is one clear EdgepruneError, never a silent skip.


def test_unknown_layer_lists_the_prunable_ones():
    model = build(arch_spec("dcase2021_baseline"), "keras")
    with pytest.raises(EdgepruneError, match="layer 'conv9' not found; prunable layers: conv1, conv2, conv3, dense1"):
        prune_keras(model, {"conv9": [0]})


@pytest.mark.parametrize("keep, message", [
    ({"conv1": [0, 16]}, "keep index 16 for 'conv1' is out of range: it has 16 output channels"),
    ({"conv1": [-1]}, "keep index -1 for 'conv1' is out of range"),
    ({"conv1": [3, 3]}, "keep list for 'conv1' repeats index 3"),
    ({"conv1": []}, "keep list for 'conv1' is empty: at least one channel must stay"),
    ({"conv1": [0.5]}, "integer channel indices"),
    ({"bn1": [0]}, r"layer 'bn1' \(BatchNormalization\) does not produce prunable channels"),
    ({"dense2": [0, 1]}, "could not prune dense2 because its channels reach the model output 'dense2'"),
])
def test_bad_keep_requests(keep, message):
    model = build(arch_spec("dcase2021_baseline"), "keras")
    with pytest.raises(EdgepruneError, match=message):
        prune_keras(model, keep)


def test_coupled_producers_with_different_keep_lists_are_refused():
    model = residual_model()
    with pytest.raises(EdgepruneError, match="could not prune stem because its output meets res_b at add"):
        prune_keras(model, {"stem": [0, 1, 2], "res_b": [0, 1, 3]})
    with pytest.raises(EdgepruneError, match="could not prune res_b .*stem keeps all 8, res_b keeps 3 of 8"):
        prune_keras(model, {"res_b": [0, 1, 3]})


def test_unsupported_layer_on_a_pruned_path_is_refused():
    inp = keras.Input((8, 8, 2))
    x = L.LayerNormalization(name="ln")(L.Conv2D(4, 3, name="conv")(inp))  # normalises across channels
    model = keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(L.Conv2D(3, 1, name="free")(x))))
    assert channels_of(model) == {"free": 3}
    with pytest.raises(EdgepruneError, match="could not prune conv because .*LayerNormalization is not supported "
                                             "on a pruned channel path"):
        prune_keras(model, {"conv": [0, 1]})


def test_reshape_that_touches_the_channel_axis_is_refused():
    inp = keras.Input((4, 4, 3))
    x = L.Reshape((4, 24), name="fold")(L.Conv2D(6, 1, name="conv")(inp))  # [4, 4, 6] -> [4, 24]
    model = keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(x)))
    with pytest.raises(EdgepruneError, match=r"could not prune conv because .*Reshape changes the channel axis"):
        prune_keras(model, {"conv": [0]})


def test_a_skip_from_the_model_input_pins_the_producer_it_meets():
    inp = keras.Input((8, 8, 3))
    x = L.Add(name="skip")([inp, L.Conv2D(3, 3, padding="same", name="conv")(inp)])  # the input's 3 channels stay
    model = keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(L.Conv2D(4, 1, name="free")(x))))
    assert channels_of(model) == {"free": 4}
    with pytest.raises(EdgepruneError, match="could not prune conv because its channels meet channels that cannot "
                                             "be pruned .* at 'skip'"):
        prune_keras(model, {"conv": [0, 1]})
