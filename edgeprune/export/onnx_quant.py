"""ONNX variants with onnxruntime's own tools: float16 (keep float32 I/O), int8 QDQ static per-channel, int8
dynamic. The float16 ONNX is a size win, not a speed win: the CPU provider has few float16 kernels."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError


def to_fp16(src: Path, dst: Path) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return dst


class _Reader:
    """CalibrationDataReader over float32 samples {input name: [N, ...]} in the ONNX inputs' layout, one at a time."""

    def __init__(self, samples: dict[str, np.ndarray]) -> None:
        self.x = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in samples.items()}
        self.n, self.i = len(next(iter(self.x.values()))), 0

    def get_next(self):
        if self.i >= self.n:
            return None
        self.i += 1
        return {k: v[self.i - 1 : self.i] for k, v in self.x.items()}

    def rewind(self) -> None:
        self.i = 0


def _preprocessed(src: Path, work: Path) -> Path:
    """quant_pre_process (shape inference + graph optimisation); symbolic shapes need sympy, so skipped."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / (src.stem + ".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        return pre
    except Exception:  # noqa: BLE001 - pre-processing is an optimisation, not a requirement
        shutil.copyfile(src, pre)
        return pre


def to_int8_static(src: Path, dst: Path, calib: dict[str, np.ndarray], work: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    reader = type("Reader", (_Reader, CalibrationDataReader), {})(calib)
    pre = _preprocessed(src, work)
    try:
        quantize_static(str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    except Exception as exc:  # noqa: BLE001
        raise EdgepruneError(f"ONNX int8 static quantization failed: {str(exc).splitlines()[0][:300]}; "
                             "try --format tflite (onnx2tf / TFLiteConverter)") from exc
    finally:
        pre.unlink(missing_ok=True)
    return dst


def to_int8_dynamic(src: Path, dst: Path, work: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    pre = _preprocessed(src, work)
    try:
        # QUInt8 weights: onnxruntime's CPU ConvInteger kernel takes uint8 only
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QUInt8)
    except Exception as exc:  # noqa: BLE001
        raise EdgepruneError(f"ONNX int8 dynamic quantization failed: {str(exc).splitlines()[0][:300]}") from exc
    finally:
        pre.unlink(missing_ok=True)
    return dst
