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
             "support Keras 3 / TensorFlow 2.21); export the PyTorch twin instead (framework='torch', "
             "CLI --framework torch): the weights transfer exactly")


def _converter_factory(model: Any, work: Path) -> tuple[Callable[[], Any], str]:
    """A function making a fresh converter, and which route it takes."""
    import tensorflow as tf

    try:
        tf.lite.TFLiteConverter.from_keras_model(model).convert()  # cheap probe: float32 conversion
        return (lambda: tf.lite.TFLiteConverter.from_keras_model(model)), "from_keras_model"
    except Exception:  # noqa: BLE001 - Keras 3 models sometimes need the SavedModel route
        saved = work / "saved_model"
        model.export(str(saved), format="tf_saved_model", verbose=False)
        return (lambda: tf.lite.TFLiteConverter.from_saved_model(str(saved))), "from_saved_model"


def keras_to_tflite(model: Any, out_dir: Path, calib_nhwc: np.ndarray | None, quants: set[str],
                    int8_io: bool) -> tuple[dict[str, Path], str]:
    """Write one .tflite per precision into a work folder under `out_dir`; returns ({precision: path}, route)."""
    import tensorflow as tf

    work = Path(tempfile.mkdtemp(prefix="keras-tflite-", dir=out_dir))
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # Keras 3 prints its serving signature
            make, route = _converter_factory(model, work)
    except Exception as exc:  # noqa: BLE001
        raise EdgepruneError(f"Keras -> TFLite failed: {str(exc).splitlines()[0][:300] if str(exc) else exc!r}; "
                             "try the PyTorch twin through ONNX (--framework torch)") from exc
    out: dict[str, Path] = {}
    for q in ("fp32", "fp16", "dynamic", "int8"):
        if q not in quants:
            continue
        conv = make()
        if q == "fp16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        elif q == "dynamic":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        elif q == "int8":
            if calib_nhwc is None:
                raise EdgepruneError("int8 export needs calibration data (calib=[N, 40, 500] float32 features)")
            data = np.ascontiguousarray(calib_nhwc, dtype=np.float32)

            def representative():
                for i in range(len(data)):
                    yield [data[i : i + 1]]

            conv.optimizations = [tf.lite.Optimize.DEFAULT]
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
            msg = str(exc)
            ops = [ln.strip() for ln in msg.splitlines() if "op" in ln.lower() and ("not supported" in ln.lower() or "failed to legalize" in ln.lower())]
            raise EdgepruneError(f"Keras -> TFLite {q} failed: {(ops[0] if ops else msg.splitlines()[0] if msg else repr(exc))[:300]}; "
                                 "try the PyTorch twin through ONNX / onnx2tf (--framework torch)") from exc
        path = work / f"keras_{q}.tflite"
        path.write_bytes(blob)
        out[q] = path
    shutil.rmtree(work / "saved_model", ignore_errors=True)
    return out, route
