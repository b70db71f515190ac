"""Keras 3 -> TFLite through tf.lite.TFLiteConverter (from_keras_model; SavedModel export as the fallback)."""

from __future__ import annotations

import contextlib
import io
import shutil
import warnings
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeprune.errors import EdgepruneError

ONNX_NOTE = ("Keras -> ONNX skipped: no maintained converter is installed (tf2onnx is not installed and does not "
             "support Keras 3 / TensorFlow 2.21)")
TWIN_NOTE = ("; export the PyTorch twin instead (framework='torch', CLI --framework torch): the weights transfer "
             "exactly")


def alternative(twin: bool, reason: str = "") -> str:
    """What else to try when Keras -> TFLite fails on `reason`."""
    if "tensorlist" in reason.lower():  # a recurrent layer's while loop over a TensorList (Keras 3 LSTM / GRU)
        return ("build recurrent layers with unroll=True (a fixed number of time steps; measured: an unrolled LSTM "
                "converts at float32 and int8)")
    if twin:
        return "try the PyTorch twin through ONNX / onnx2tf (--framework torch)"
    return "replace the layer with one TFLite has a builtin kernel for"


def check_model(model: Any, specs: list[Any]) -> None:
    """The model's inputs are the specs' (same names, or the same count in call order) with exactly their shapes
    (plus batch), and it has one output: what the TFLite file and parity assume."""
    if len(model.outputs) != 1:
        raise EdgepruneError(f"Keras model '{model.name}' has {len(model.outputs)} outputs; export handles one output")
    if len(model.inputs) != len(specs):
        raise EdgepruneError(f"Keras model '{model.name}' has {len(model.inputs)} inputs; the input spec names "
                             f"{len(specs)} ({', '.join(s.name for s in specs)})")
    for tensor, spec in zip(model.inputs, specs):
        have = tuple(tensor.shape[1:])
        if have != tuple(spec.shape):
            raise EdgepruneError(f"Keras model '{model.name}' input {len(specs) > 1 and spec.name or ''} takes "
                                 f"{['N', *have]}; the input spec says {['N', *spec.shape]}. Build the model with a "
                                 "fixed input shape (None axes become dynamic TFLite shapes) equal to the spec's")


def _converter_factory(model: Any, work: Path) -> tuple[Callable[[], Any], str, bytes]:
    """A function making a fresh converter, which route it takes, and the float32 model the probe produced."""
    import tensorflow as tf

    try:
        fp32 = tf.lite.TFLiteConverter.from_keras_model(model).convert()  # the probe is the float32 conversion
        return (lambda: tf.lite.TFLiteConverter.from_keras_model(model)), "from_keras_model", fp32
    except Exception:  # noqa: BLE001 - Keras 3 models sometimes need the SavedModel route
        saved = work / "saved_model"
        model.export(str(saved), format="tf_saved_model", verbose=False)
        make = lambda: tf.lite.TFLiteConverter.from_saved_model(str(saved))  # noqa: E731
        return make, "from_saved_model", make().convert()


def keras_to_tflite(model: Any, out_dir: Path, calib: list[np.ndarray] | None, quants: set[str], int8_io: bool,
                    twin: bool = True) -> tuple[dict[str, Path], str]:
    """Write one .tflite per precision into a work folder under `out_dir`; returns ({precision: path}, route).

    `calib` is float32 [N, ...] per model input, in the model's call order and input layout; needed for "int8"."""
    import tensorflow as tf

    work = Path(tempfile.mkdtemp(prefix="keras-tflite-", dir=out_dir))
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # Keras 3 prints its serving signature
            make, route, fp32 = _converter_factory(model, work)
    except Exception as exc:  # noqa: BLE001
        reason = _reason(exc)
        raise EdgepruneError(f"Keras -> TFLite failed {reason}; {alternative(twin, reason)}") from exc
    out: dict[str, Path] = {}
    for q in ("fp32", "fp16", "dynamic", "int8"):
        if q not in quants:
            continue
        path = work / f"keras_{q}.tflite"
        if q == "fp32":
            path.write_bytes(fp32)
            out[q] = path
            continue
        conv = make()
        conv.optimizations = [tf.lite.Optimize.DEFAULT]  # alone: dynamic range (int8 weights)
        if q == "fp16":
            conv.target_spec.supported_types = [tf.float16]
        elif q == "int8":
            if calib is None:
                raise EdgepruneError("int8 export needs calibration data (calib=[N, ...] float32 samples)")
            data = [np.ascontiguousarray(x, dtype=np.float32) for x in calib]

            def representative():
                for i in range(len(data[0])):
                    yield [x[i : i + 1] for x in data]

            conv.representative_dataset = representative
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if int8_io:
                conv.inference_input_type = tf.int8
                conv.inference_output_type = tf.int8
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
                blob = conv.convert()
        except Exception as exc:  # noqa: BLE001 - the converter names the op it could not lower
            reason = _reason(exc)
            raise EdgepruneError(f"Keras -> TFLite {q} failed {reason}; {alternative(twin, reason)}") from exc
        path.write_bytes(blob)
        out[q] = path
    shutil.rmtree(work / "saved_model", ignore_errors=True)
    return out, route


def _reason(exc: BaseException) -> str:
    """The converter's first error naming an op, with the graph node it sits in ("at node
    'functional_1/lstm_1/TensorArrayV2_1': 'tf.TensorListReserve' op requires element_shape to be static ..."),
    else ": " and its first line."""
    import re

    msg = str(exc)
    for line in msg.splitlines():
        if "error:" in line and " op " in line:
            node = re.search(r'fused\["[^"]*", "([^"@]+)', line)
            text = line.rsplit("): ", 1)[-1].strip()
            return ((f"at node '{node.group(1)}': " if node else ": ") + text)[:400]
    return ": " + (msg.strip().splitlines()[0] if msg.strip() else repr(exc))[:300]
