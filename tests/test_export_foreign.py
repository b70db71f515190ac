"""Export of models edgeprune did not write: export_model(model, InputSpec) on keras.applications MobileNetV2 and
MobileNetV3Small, a PyTorch CNN with a residual add, a concat and depthwise convs, a PyTorch Conv1d audio model, and
models with LSTM / attention / spectral layers. Real conversions, real runtimes (ai-edge-litert, onnxruntime),
parity asserted at float32 and int8; what fails must fail with an error naming the op and what to try.

Data: 101-frame crops (about 1 s) of the tiny synthetic set's 40-band log-mel features, real calibration and
held-out parity clips. Models: trained for seconds on those crops before export. An untrained network gives nearly
the same output for every input (keras.applications MobileNetV2 gives exactly 0.1 for every class at init), so
float32 parity would pass trivially and int8 top-1 agreement would be a coin toss over ties.

Gates: float32 cosine >= 0.9999 everywhere (the default). int8 top-1 agreement: the default 0.95 for the Conv1d
model, whose outputs are confident after training (measured 0.967, cosine 0.9995). The 2D CNN stays close to
uniform after seconds of training (about a tenth of its clips have a top-1/top-2 margin under 1/256, one step of an
int8 softmax output; measured top-1 agreement 0.92, cosine 0.9999), so its gate is 0.85 with cosine >= 0.999, as
tests/test_export.py does for the tiny-trained DCASE baseline. Training is seeded, so these figures repeat. MobileNetV2 (alpha 0.35: 8- and 16-channel depthwise layers) loses real
accuracy at int8 after brief training (measured cosine 0.96, top-1 agreement 0.80, flips at margins up to 0.13, not
ties): its gate is 0.7 with cosine >= 0.95; the README's "What does not convert" table reports it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeprune.errors import EdgepruneError
from edgeprune.export import InputSpec, export_model

FRAMES = 101
N_CALIB = 100


@pytest.fixture(scope="module")
def crops(tiny_data):
    """(x_train, y_train, x_test, y_test): four crops per training clip, the middle crop of each test clip."""
    train, test = tiny_data["train"], tiny_data["test"]
    starts = range(0, 500 - FRAMES + 1, 100)
    x_train = np.concatenate([train.x[:, :, s : s + FRAMES] for s in starts])
    y_train = np.tile(np.asarray(train.y), len(starts))
    return x_train, y_train, test.x[:, :, 200 : 200 + FRAMES], np.asarray(test.y)


class ResConcatDepthwiseCNN(nn.Module):
    """A user's 2D CNN over log-mel [1, 40, T]: a strided stem and max pooling, two branches concatenated, then a
    depthwise-separable block with a residual add and a global-average head."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.MaxPool2d(2))
        self.branch3 = nn.Conv2d(16, 16, 3, padding=1)
        self.branch1 = nn.Conv2d(16, 8, 1)
        self.depthwise = nn.Conv2d(24, 24, 3, padding=1, groups=24, bias=False)
        self.pointwise = nn.Conv2d(24, 24, 1, bias=False)
        self.bn = nn.BatchNorm2d(24)
        self.head = nn.Linear(24, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([F.relu(self.branch3(x)), F.relu(self.branch1(x))], dim=1)
        x = x + self.bn(self.pointwise(F.relu(self.depthwise(x))))
        return self.head(F.relu(x).mean((2, 3)))


class KeywordConv1d(nn.Module):
    """A keyword-spotting-style audio model: Conv1d over time with the 40 mel bands as channels (input [40, T],
    NCW), a depthwise-separable residual block, a strided conv and average pooling over time."""

    def __init__(self, n_mels: int = 40, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, 48, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(48)
        self.depthwise = nn.Conv1d(48, 48, 9, padding=4, groups=48, bias=False)
        self.pointwise = nn.Conv1d(48, 48, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(48)
        self.conv3 = nn.Conv1d(48, 64, 3, stride=2, padding=1)
        self.head = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = x + F.relu(self.bn2(self.pointwise(self.depthwise(x))))
        return self.head(F.relu(self.conv3(x)).mean(-1))


def _train_torch(model_class: type[nn.Module], x: np.ndarray, y: np.ndarray, epochs: int = 8) -> nn.Module:
    """A new model trained with a few seconds of Adam: outputs that differ between clips (see the module
    docstring). Seeded before the model is built, so its weights do not depend on which tests ran first."""
    torch.manual_seed(0)
    model = model_class()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt)).split(32):
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def _by(manifest, fmt):
    return {a["precision"]: a for a in manifest["artifacts"] if a["format"] == fmt}


def _assert_parity(manifest, n_eval, int8_top1=0.95, int8_cosine=0.999):
    """Every artifact accepted; float32 under the default gate, int8 under the given ones."""
    assert all(a["passed"] for a in manifest["artifacts"]), [a["failures"] for a in manifest["artifacts"]]
    assert manifest["thresholds"]["fp32_cosine"] == 0.9999 and manifest["thresholds"]["int8_top1"] == int8_top1
    for a in manifest["artifacts"]:
        p = a["parity"]
        assert p["n"] == n_eval and "accuracy" in p
        if a["precision"] == "fp32":
            assert p["cosine"] >= 0.9999 and p["top1_agreement"] == 1.0
        else:
            assert p["top1_agreement"] >= int8_top1 and p["cosine"] >= int8_cosine


@pytest.fixture(scope="module")
def cnn_bundle(crops, tmp_path_factory):
    """(bundle folder, manifest) of a trained ResConcatDepthwiseCNN."""
    x_train, y_train, x_test, y_test = crops
    model = _train_torch(ResConcatDepthwiseCNN, x_train[:, None], y_train)
    out = tmp_path_factory.mktemp("foreign_cnn")
    manifest = export_model(model, InputSpec((1, 40, FRAMES), "NCHW", name="logmel"), out, name="cnn",
                            quant="fp32,int8", calib=x_train[::4][:N_CALIB, None], eval_x=x_test[:, None],
                            eval_y=y_test, classes=[f"c{i}" for i in range(10)], thresholds={"int8_top1": 0.85},
                            progress=False)
    return out / "cnn", manifest


@pytest.fixture(scope="module")
def conv1d(crops, tmp_path_factory):
    """(trained KeywordConv1d, bundle folder, manifest)."""
    x_train, y_train, x_test, y_test = crops
    model = _train_torch(KeywordConv1d, x_train, y_train)
    out = tmp_path_factory.mktemp("foreign_conv1d")
    manifest = export_model(model, InputSpec((40, FRAMES), "NCW"), out, quant="fp32,int8",
                            calib=x_train[::4][:N_CALIB], eval_x=x_test, eval_y=y_test, progress=False)
    return model, out / "KeywordConv1d", manifest


def test_torch_cnn_with_residual_concat_and_depthwise(cnn_bundle, crops):
    folder, m = cnn_bundle
    _assert_parity(m, len(crops[2]), int8_top1=0.85)
    assert {(a["format"], a["precision"]) for a in m["artifacts"]} == {(f, q) for f in ("tflite", "onnx")
                                                                      for q in ("fp32", "int8")}
    for a in _by(m, "tflite").values():
        assert a["inputs"][0] == {**a["inputs"][0], "name": "logmel", "shape": [1, 40, FRAMES, 1], "layout": "NHWC"}
        assert a["transpose_ops"] == 0, a["ops"]
        assert {"CONCATENATION", "DEPTHWISE_CONV_2D", "ADD"} <= set(a["ops"])
    for a in _by(m, "onnx").values():
        assert a["inputs"][0]["shape"][1:] == [1, 40, FRAMES] and a["inputs"][0]["layout"] == "NCHW"
        assert a["transpose_ops"] == 0
    assert m["input"] == {"name": "logmel", "shape": [1, 1, 40, FRAMES], "layout": "NCHW", "dtype": "float32",
                          "tflite_shape": [1, 40, FRAMES, 1], "tflite_layout": "NHWC"}
    assert m["source"]["checkpoint"] is None and m["source"]["model"] == "ResConcatDepthwiseCNN"
    assert m["classes"] == [f"c{i}" for i in range(10)]
    assert (folder / "model_int8.tflite").is_file() and (folder / "REPORT.md").read_text().startswith("# Export: cnn")


def test_conv1d_tflite_takes_nwc_with_no_transpose(conv1d, crops):
    _, folder, m = conv1d
    _assert_parity(m, len(crops[2]))
    for a in _by(m, "tflite").values():
        assert a["inputs"][0]["shape"] == [1, FRAMES, 40] and a["inputs"][0]["layout"] == "NWC"
        assert a["transpose_ops"] == 0, a["ops"]
    assert _by(m, "tflite")["int8"]["inputs"][0]["dtype"] == "int8"
    for a in _by(m, "onnx").values():
        assert a["inputs"][0]["shape"][1:] == [40, FRAMES] and a["inputs"][0]["layout"] == "NCW"
    assert m["input"]["tflite_layout"] == "NWC" and "NWC [1, 101, 40]" in (folder / "REPORT.md").read_text()


def test_conv1d_can_keep_ncw_at_the_cost_of_one_transpose(conv1d, crops, tmp_path):
    model, _, _ = conv1d
    _, _, x_test, _ = crops
    m = export_model(model, InputSpec((40, FRAMES), "NCW", tflite_layout="NCW"), tmp_path, formats="tflite",
                     quant="fp32", eval_x=x_test, progress=False)
    a = m["artifacts"][0]
    assert a["passed"] and a["parity"]["cosine"] >= 0.9999
    assert a["inputs"][0]["shape"] == [1, 40, FRAMES] and a["inputs"][0]["layout"] == "NCW"
    assert a["transpose_ops"] == 1  # onnx2tf moves the NCW input to NWC inside the model


def test_keras_applications_mobilenetv2(crops, tmp_path):
    import keras

    x_train, y_train, x_test, y_test = crops
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(40, FRAMES, 1), alpha=0.35, classes=10)
    _train_keras(model, x_train[..., None], y_train)
    m = export_model(model, InputSpec((40, FRAMES, 1), "NHWC"), tmp_path, name="mnv2", quant="fp32,int8",
                     calib=x_train[::4][:N_CALIB, ..., None], eval_x=x_test[..., None], eval_y=y_test,
                     thresholds={"int8_top1": 0.7}, progress=False)
    _assert_parity(m, len(x_test), int8_top1=0.7, int8_cosine=0.95)
    assert not _by(m, "onnx") and any("ONNX skipped" in n and "twin" not in n for n in m["notes"])
    for a in _by(m, "tflite").values():
        assert a["inputs"][0]["shape"] == [1, 40, FRAMES, 1] and a["inputs"][0]["name"] == "input"
        assert a["transpose_ops"] == 0
    assert m["source"]["model"] == model.name and m["source"]["params"] == model.count_params()


def test_keras_applications_mobilenetv3_with_its_preprocessing_float32(crops, tmp_path):
    """A second keras.applications family, float32 only (its quantized files are in the README table): a
    Rescaling layer in the graph, hard-swish, squeeze-excite multiplies. Untrained, with batch-norm statistics
    from data so its outputs differ between clips."""
    import keras

    x_train, _, x_test, _ = crops
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(40, FRAMES, 1), classes=10)
    _bn_statistics_from(model, x_train[::2, ..., None])
    assert np.asarray(model(x_test[..., None], training=False)).argmax(1).std() > 0  # not one class for all
    m = export_model(model, InputSpec((40, FRAMES, 1), "NHWC"), tmp_path, formats="tflite", quant="fp32",
                     eval_x=x_test, progress=False)  # single-channel samples may come without the channel axis
    a = m["artifacts"][0]
    assert a["passed"] and a["parity"]["cosine"] >= 0.9999 and a["parity"]["top1_agreement"] == 1.0
    assert a["transpose_ops"] == 0 and a["inputs"][0]["shape"] == [1, 40, FRAMES, 1]


def _train_keras(model, x: np.ndarray, y: np.ndarray, epochs: int = 4) -> None:
    """A few epochs, then batch-norm statistics recomputed from data: MobileNetV2's BN momentum is 0.999, so a few
    dozen steps leave the moving statistics near their initial values and inference mode would see another network
    than the one trained (measured: one class for every clip)."""
    import keras

    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", jit_compile=False)
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    _bn_statistics_from(model, x[::2])


def _bn_statistics_from(model, x: np.ndarray) -> None:
    """Moving statistics of every BatchNormalization layer set to those of `x` (momentum 0, one training pass)."""
    import keras

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    model(x, training=True)
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum


def test_lstm_and_attention_models_convert_and_an_int8_crash_is_an_error(crops, tmp_path):
    """Two fixes on the PyTorch path: the static ONNX is constant-folded before onnx2tf (an LSTM's zero initial
    state is a Shape -> Expand chain onnx2tf fails on), and attention exports with the fused fast path off. At int8,
    TensorFlow's calibrator segfaults on the LSTM's loop: onnx2tf runs in a child process, so that is an error
    naming the node, not a dead interpreter."""
    x_train, _, x_test, _ = crops

    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(40, 32, 3, stride=2, padding=1)
            self.lstm = nn.LSTM(32, 32, batch_first=True)
            self.attention = nn.MultiheadAttention(32, 4, batch_first=True)
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            h, _ = self.lstm(F.relu(self.conv(x)).transpose(1, 2))
            a, _ = self.attention(h, h, h, need_weights=False)
            return self.head((h + a).mean(1))

    torch.manual_seed(0)
    model, spec = Recurrent().eval(), InputSpec((40, FRAMES), "NCW")
    m = export_model(model, spec, tmp_path, formats="tflite", quant="fp32", eval_x=x_test[:20], progress=False)
    a = m["artifacts"][0]
    assert a["passed"] and a["parity"]["cosine"] >= 0.9999 and a["inputs"][0]["shape"] == [1, FRAMES, 40]
    crash = r"crashed with SIG\w+ after writing fp32, fp16[^;]*; the graph has LSTM"
    with pytest.raises(EdgepruneError, match=crash) as err:
        export_model(model, spec, tmp_path, name="int8", formats="tflite", quant="int8", calib=x_train[:20],
                     eval_x=x_test[:20], progress=False)
    assert "quant='fp32,fp16,dynamic'" in str(err.value) and not (tmp_path / "int8").exists()


def test_registered_model_input_spec_is_derived_from_its_arch():
    from edgeprune.models import arch_spec, input_spec

    arch = arch_spec("dcase2021_baseline", conv2=8)  # widths are the model's; input sizes are the task's
    torch_spec = input_spec(arch, "torch").resolve("torch")
    assert torch_spec.shape == (1, 40, 500) and torch_spec.layout == "NCHW" and torch_spec.name == "logmel"
    assert torch_spec.tflite_shape == (40, 500, 1) and torch_spec.tflite_layout == "NHWC"
    assert torch_spec.file_axes("onnx") == "N1FT" and torch_spec.file_axes("tflite") == "NFT1"
    keras_spec = input_spec(arch, "keras").resolve("keras")
    assert keras_spec.shape == keras_spec.tflite_shape == (40, 500, 1) and keras_spec.tflite_layout == "NHWC"
    with pytest.raises(EdgepruneError, match="unknown framework"):
        input_spec(arch, "jax")
    with pytest.raises(EdgepruneError, match=r"n_frames follow\(s\) from the scenes task \(n_frames=500\)"):
        arch_spec("dcase2021_baseline", n_frames=300)


def test_input_spec_takes_the_model_layout_and_single_channel_forms():
    spec = InputSpec((1, 40, 500), "NCHW").resolve("torch")
    x = np.random.default_rng(0).normal(size=(3, 40, 500)).astype(np.float64)
    for form in (x, x[..., None], x[:, None]):
        got = spec.check(form, "data")
        assert got.shape == (3, 1, 40, 500) and got.dtype == np.float32 and np.allclose(got[:, 0], x)
    assert np.array_equal(spec.to_tflite(spec.check(x, "data"))[..., 0], x.astype(np.float32))
    ncw = InputSpec((40, FRAMES), "NCW").resolve("torch")
    assert ncw.tflite_layout == "NWC" and ncw.to_tflite(np.zeros((2, 40, FRAMES))).shape == (2, FRAMES, 40)
    with pytest.raises(EdgepruneError, match=r"shape \[2, 101, 40\]; expected a float32 array \[N, 40, 101\] \(NCW\)"):
        ncw.check(np.zeros((2, FRAMES, 40), np.float32), "data")


@pytest.mark.parametrize("make, words", [
    (lambda: InputSpec((40, 101), "NCHW"), "expected 3 distinct upper-case axis letters"),
    (lambda: InputSpec((0, 101), "NCW"), "positive integers"),
    (lambda: InputSpec((40, 101), "NCW", tflite_layout="NCH"), "must reorder the axes"),
    (lambda: InputSpec((32, 32, 3), "NHWC", tflite_layout="NCHW").resolve("keras"), "keras converter gives"),
    (lambda: InputSpec((1, 40, 101), "NCHW", tflite_layout="NHCW").resolve("torch"), "NCHW or NHWC"),
])
def test_input_spec_errors(make, words):
    with pytest.raises(EdgepruneError, match=words):
        make()


def test_input_spec_that_does_not_fit_the_model_is_a_clear_error_and_writes_nothing(tmp_path, crops):
    with pytest.raises(EdgepruneError, match=r"does not run on its input\(s\) 'input' \[1, 1, 40, 101\] \(NCHW\)"):
        export_model(KeywordConv1d().eval(), InputSpec((1, 40, FRAMES), "NCHW"), tmp_path, formats="onnx",
                     quant="fp32", eval_x=crops[2], progress=False)
    assert list(tmp_path.iterdir()) == []


class _SpectrogramInside(nn.Module):
    """torch.stft in forward: complex tensors, which the ONNX exporter (and litert-torch) cannot take."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(400))
        self.head = nn.Linear(201, 10)

    def forward(self, wave):
        spec = torch.stft(wave, 400, 160, window=self.window, return_complex=True).abs()
        return self.head(torch.log(spec + 1e-6).mean(-1))


class _BandMask(nn.Module):
    """Zeroes the two lowest mel bands with a constant mask: onnx2tf fails on the Where over the NCW input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(40, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.where(torch.arange(40)[:, None] < 2, torch.zeros(()), x)
        return self.head(F.relu(self.conv(x)).mean(-1))


@pytest.mark.parametrize("model, spec, words, advice", [
    (_SpectrogramInside, InputSpec((16000,), "NT"), "PyTorch -> ONNX export failed: STFT", "fixed DFT kernels"),
    (_BandMask, InputSpec((40, FRAMES), "NCW"), "onnx2tf) failed at node Where '/inner/Where'", "litert-torch"),
])
def test_unsupported_ops_are_named_with_what_to_try_and_nothing_is_written(tmp_path, model, spec, words, advice):
    x = np.random.default_rng(0).normal(size=(4, *spec.shape)).astype(np.float32)
    with pytest.raises(EdgepruneError) as err:
        export_model(model().eval(), spec, tmp_path / "out", formats="tflite", quant="fp32", eval_x=x,
                     progress=False)
    assert words in str(err.value) and advice in str(err.value)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_keras_lstm_names_the_node_and_suggests_unrolling(tmp_path):
    import keras

    inputs = keras.Input((FRAMES, 40))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.LSTM(16)(inputs)))
    x = np.random.default_rng(0).normal(size=(4, FRAMES, 40)).astype(np.float32)
    with pytest.raises(EdgepruneError, match=r"failed at node '[^']*lstm[^']*': 'tf.TensorListReserve' op") as err:
        export_model(model, InputSpec((FRAMES, 40), "NWC"), tmp_path, quant="fp32", eval_x=x, progress=False)
    assert "unroll=True" in str(err.value) and list(tmp_path.iterdir()) == []


def test_what_to_try_depends_on_the_failure():
    from edgeprune.export.torch_path import alternative

    assert "Keras twin" in alternative(True, "at node Where '/x'")
    assert "litert-torch" in alternative(False, "at node Where '/x'")
    assert "max or mean pooling" in alternative(False, "at node TopK '/inner/TopK'")
    assert "DFT kernels" in alternative(True, "Exporting the operator 'aten::fft_rfft'")
