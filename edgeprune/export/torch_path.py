"""PyTorch -> ONNX (TorchScript exporter) -> TFLite (one onnx2tf 1.x call for every precision)."""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "logmel", "probs"

# onnx2tf's output file suffixes -> our precision keys ("int8" picks the int8-I/O or float-I/O variant)
ONNX2TF_FILES = {
    "fp32": "_float32.tflite",
    "fp16": "_float16.tflite",
    "dynamic": "_dynamic_range_quant.tflite",
    "int8": "_full_integer_quant.tflite",
    "int8_float_io": "_integer_quant.tflite",
}


def with_softmax(model: Any) -> Any:
    """The PyTorch twins return logits; exported artifacts output probabilities like the Keras twins."""
    import torch

    class ProbsWrapper(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return torch.softmax(self.inner(x), dim=1)

    wrapped = ProbsWrapper(model)
    wrapped.eval()
    return wrapped


def to_onnx(model: Any, path: Path, input_shape: tuple[int, ...], dynamic_batch: bool = True) -> Path:
    """torch.onnx.export (TorchScript exporter: the dynamo one needs onnxscript) with a softmax head.

    `input_shape` is one sample's shape, channels-first ([1, 40, 500] for the DCASE baseline)."""
    import torch

    wrapped = with_softmax(model)
    dummy = torch.zeros((1, *input_shape), dtype=torch.float32)
    kwargs: dict[str, Any] = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=OPSET,
                                  do_constant_folding=True)
    if dynamic_batch:
        kwargs["dynamic_axes"] = {INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}}
    buf = io.StringIO()
    try:
        with torch.no_grad(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                torch.onnx.export(wrapped, (dummy,), str(path), dynamo=False, **kwargs)
            except TypeError:  # older torch without the dynamo argument
                torch.onnx.export(wrapped, (dummy,), str(path), **kwargs)
    except Exception as exc:  # noqa: BLE001 - name the failing op if torch does
        raise EdgepruneError(
            f"PyTorch -> ONNX export failed: {_first_line(exc)}. If an operator is unsupported at opset {OPSET}, "
            "replace it in the model or export the Keras twin to TFLite instead (--framework keras)") from exc
    import onnx

    onnx.checker.check_model(str(path))
    return path


def onnx_to_tflite(onnx_path: Path, out_dir: Path, calib_nhwc: np.ndarray | None, quants: set[str],
                   int8_io: bool, progress: bool = False) -> dict[str, Path]:
    """One onnx2tf.convert call writes every precision; returns {precision: .tflite path} for those asked.

    `calib_nhwc` is float32 [N, H, W, C] (the layout the TFLite model takes); needed for "int8"."""
    import onnx2tf

    work = Path(tempfile.mkdtemp(prefix="onnx2tf-", dir=out_dir))
    kwargs: dict[str, Any] = dict(
        input_onnx_file_path=str(onnx_path), output_folder_path=str(work),
        copy_onnx_input_output_names_to_tflite=True, non_verbose=not progress,
        output_dynamic_range_quantized_tflite="dynamic" in quants,
    )
    if "int8" in quants:
        if calib_nhwc is None:
            raise EdgepruneError("int8 export needs calibration data (calib=[N, 40, 500] float32 features)")
        npy = work / "calib.npy"
        np.save(npy, np.ascontiguousarray(calib_nhwc, dtype=np.float32))
        kwargs.update(output_integer_quantized_tflite=True, input_quant_dtype="int8", output_quant_dtype="int8",
                      custom_input_op_name_np_data_path=[[INPUT_NAME, str(npy), 0.0, 1.0]])
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf) if not progress else contextlib.nullcontext():
            onnx2tf.convert(**kwargs)
    except (Exception, SystemExit) as exc:  # onnx2tf calls sys.exit(1) on conversion errors
        log = buf.getvalue()
        raise EdgepruneError(
            f"ONNX -> TFLite (onnx2tf) failed: {_first_line(exc) or 'exit'}; {_onnx2tf_culprit(log)}. "
            "Try --format onnx (onnxruntime) or export the Keras twin to TFLite (--framework keras)") from exc
    found: dict[str, Path] = {}
    stem = Path(onnx_path).stem
    for q in quants:
        key = q if not (q == "int8" and not int8_io) else "int8_float_io"
        f = work / f"{stem}{ONNX2TF_FILES[key]}"
        if not f.is_file():
            shutil.rmtree(work, ignore_errors=True)
            raise EdgepruneError(f"onnx2tf did not write the {q} model ({f.name}); {_onnx2tf_culprit(buf.getvalue())}")
        found[q] = f
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _onnx2tf_culprit(log: str) -> str:
    """onnx2tf prints the failing ONNX node (op type and name) before it stops; quote it if it is there."""
    import re

    log = re.sub(r"\x1b\[[0-9;]*m", "", log)
    lines = [ln.strip().rstrip(".") for ln in log.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if "ERROR" in ln and ("onnx_op_type" in ln or "onnx_op_name" in ln or "op_name" in ln):
            return "failing node: " + ln[:300]
    errs = [ln for ln in lines if "ERROR" in ln or "not supported" in ln.lower()]
    return ("onnx2tf said: " + errs[-1][:300]) if errs else "onnx2tf gave no reason"
