"""Export-time rewrites: a conv over one input channel folded into a one-row conv over its kernel rows (PyTorch and
Keras). The rewrite is exact by construction, so the folded model must compute the same outputs as the model to
float rounding, and its int8 file the same integers up to one step; convs it does not apply to are left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeprune.export.rewrite import RowFoldedConv2d, fold_one_channel_convs

# (kernel, padding, bias): odd and even kernel rows, asymmetric kernels, no padding
TORCH_CONVS = [((7, 7), (3, 3), True), ((3, 5), (1, 2), False), ((5, 3), (0, 0), True), ((2, 3), (0, 1), True)]


def _torch_net(conv: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(conv.out_channels, 3))


@pytest.mark.parametrize("kernel, padding, bias", TORCH_CONVS)
def test_torch_fold_computes_the_same_function(kernel, padding, bias):
    torch.manual_seed(0)
    net = _torch_net(torch.nn.Conv2d(1, 6, kernel, padding=padding, bias=bias))
    folded, names = fold_one_channel_convs(net, [(1, 12, 20)])
    assert names == ["0"] and isinstance(folded[0], RowFoldedConv2d)
    assert folded[0].rows.kernel_size == (1, kernel[1]) and folded[0].rows.in_channels == kernel[0]
    x = torch.randn(4, 1, 12, 20)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)
    assert isinstance(net[0], torch.nn.Conv2d)  # the model itself is untouched


@pytest.mark.parametrize("conv", [torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Conv2d(1, 4, 3, stride=2),
                                  torch.nn.Conv2d(1, 4, (1, 3)), torch.nn.Conv2d(1, 4, 3, dilation=2),
                                  torch.nn.Conv2d(1, 4, 3, padding="same")],
                         ids=["two-channels", "stride-2", "one-row", "dilated", "padding-same-string"])
def test_torch_convs_the_fold_does_not_apply_to_are_left_alone(conv):
    net = _torch_net(conv)
    folded, names = fold_one_channel_convs(net, [(conv.in_channels, 12, 20)])
    assert folded is net and names == []


@pytest.mark.parametrize("kernel, padding", [((7, 7), "same"), ((4, 3), "same"), ((3, 5), "valid")])
def test_keras_fold_computes_the_same_function(kernel, padding):
    import keras

    from edgeprune.export.keras_rewrite import fold_one_channel_convs as fold_keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 20, 1))
    x = keras.layers.Conv2D(6, kernel, padding=padding, activation="relu", name="front")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    folded, names = fold_keras(model)
    assert names == ["front"] and folded is not model
    x = np.random.default_rng(0).normal(size=(4, 12, 20, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cin, kernel, padding", [(3, (7, 7), "same"), (8, (4, 3), "valid")])
def test_the_keras_fold_at_more_input_channels_computes_the_same_function(cin, kernel, padding):
    # what latency.study times for conv2; the export folds one-channel convs only
    import keras

    from edgeprune.export.keras_rewrite import folded_layer

    keras.utils.set_random_seed(0)
    conv = keras.layers.Conv2D(5, kernel, padding=padding)
    x = np.random.default_rng(0).normal(size=(2, 12, 20, cin)).astype(np.float32)
    want = np.asarray(conv(x))
    np.testing.assert_allclose(np.asarray(folded_layer(conv)(x)), want, atol=1e-5, rtol=1e-5)


def test_keras_convs_the_fold_does_not_apply_to_are_left_alone():
    import keras

    from edgeprune.export.keras_rewrite import fold_one_channel_convs as fold_keras

    inputs = keras.Input((12, 20, 1))
    x = keras.layers.Conv2D(4, 3, strides=2)(inputs)
    x = keras.layers.Conv2D(4, 3)(x)  # four input channels
    x = keras.layers.Conv2D(4, (1, 3))(keras.layers.Conv2D(1, 1)(x))  # one row
    model = keras.Model(inputs, x)
    assert fold_keras(model) == (model, [])


def test_folded_int8_file_gives_the_same_integers(tmp_path):
    """The fold moves data and reorders weights: per-channel weight scales and every integer product are the
    same, so the int8 outputs may differ only where a calibrated scale's last float bit does (one step)."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from edgeprune.export.keras_path import keras_to_tflite
    from edgeprune.export.keras_rewrite import fold_one_channel_convs as fold_keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 20, 1))
    x = keras.layers.Conv2D(8, 5, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same")(x))
    folded, names = fold_keras(model)
    assert len(names) == 1
    rng = np.random.default_rng(0)
    calib = [rng.normal(size=(16, 12, 20, 1)).astype(np.float32)]
    samples = rng.normal(size=(5, 1, 12, 20, 1)).astype(np.float32)
    outs = []
    for m, folder in ((model, tmp_path / "plain"), (folded, tmp_path / "folded")):
        folder.mkdir()
        files, _ = keras_to_tflite(m, folder, calib, {"int8"}, int8_io=True, twin=False)
        it = Interpreter(model_path=str(files["int8"]))
        it.allocate_tensors()
        d, o = it.get_input_details()[0], it.get_output_details()[0]
        scale, zero = d["quantization"]
        got = []
        for sample in samples:
            it.set_tensor(d["index"], np.clip(np.round(sample / scale + zero), -128, 127).astype(np.int8))
            it.invoke()
            got.append(it.get_tensor(o["index"]).astype(np.int32))
        outs.append(np.stack(got))
    assert np.abs(outs[0] - outs[1]).max() <= 1


def test_the_latency_grid_times_a_one_channel_conv_as_the_export_writes_it():
    from edgeprune.latency.layer_grid import Geometry, layer_model

    def kernels(model):
        inner = [getattr(layer, "inner", layer) for layer in model.layers]
        return [tuple(layer.kernel.shape) for layer in inner if hasattr(layer, "kernel")]

    g = Geometry("conv1", "conv2d", (40, 50), 1, 16, (7, 7), (1, 1), (1, 1), (3, 3))
    assert kernels(layer_model(g, 1, 8)) == [(1, 7, 7, 8)]  # one row of 7 taps over the 7 kernel rows
    assert layer_model(g, 1, 8).output.shape[1:] == (40, 50, 8)
    assert kernels(layer_model(g, 2, 8)) == [(7, 7, 2, 8)]  # two input channels: as it is
    strided = Geometry("c", "conv2d", (40, 50), 1, 16, (3, 3), (2, 2), (1, 1), (1, 1))
    assert kernels(layer_model(strided, 1, 8)) == [(3, 3, 1, 8)]
