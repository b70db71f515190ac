"""Run every artifact in its real runtime and compare it with the source model's probabilities."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


def tflite_interpreter(path: Path, num_threads: int = 1, delegates: bool = True):
    """ai_edge_litert's Interpreter; num_threads always explicit (None means one). XNNPACK is applied by default;
    `delegates=False` gives the plain op table (for counting operators)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = {} if delegates else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    interp = Interpreter(model_path=str(path), num_threads=num_threads, **kw)
    interp.allocate_tensors()
    return interp


def _quant(detail: dict[str, Any]) -> tuple[float, int]:
    scale, zp = detail.get("quantization", (0.0, 0))
    return float(scale), int(zp)


def run_tflite(path: Path, x: np.ndarray, num_threads: int = 1) -> np.ndarray:
    """Probabilities [N, classes] for float samples `x` in the file's input layout, one at a time (the models are
    batch 1); int8 inputs are quantized and int8 outputs dequantized with the tensors' own scale and zero point."""
    interp = tflite_interpreter(path, num_threads)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if list(inp["shape"][1:]) != list(x.shape[1:]):
        raise ValueError(f"{Path(path).name} takes {list(inp['shape'])}, data is {list(x.shape)}")
    results = []
    for i in range(len(x)):
        sample = x[i : i + 1].astype(np.float32)
        if inp["dtype"] in (np.int8, np.uint8):
            scale, zp = _quant(inp)
            info = np.iinfo(inp["dtype"])
            sample = np.clip(np.round(sample / scale) + zp, info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], sample)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out["dtype"] in (np.int8, np.uint8):
            scale, zp = _quant(out)
            y = (y.astype(np.float32) - zp) * scale
        results.append(np.asarray(y, dtype=np.float32).reshape(1, -1))
    return np.concatenate(results)


def onnx_session(path: Path, num_threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, x: np.ndarray, num_threads: int = 1, batch: int = 32) -> np.ndarray:
    """Outputs [N, classes] for float samples `x` in the file's input layout (the PyTorch model's own)."""
    sess = onnx_session(path, num_threads)
    name = sess.get_inputs()[0].name
    fixed = sess.get_inputs()[0].shape[0]
    step = batch if not isinstance(fixed, int) else fixed
    outs = [sess.run(None, {name: x[i : i + step].astype(np.float32)})[0] for i in range(0, len(x), step)]
    return np.concatenate(outs).astype(np.float32)


def compare(ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None = None) -> dict[str, Any]:
    """max abs error, cosine similarity (mean and worst sample), top-1 agreement, accuracy against labels."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    num = (ref * got).sum(1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-30), 0.0)
    res = {"n": int(len(ref)), "max_abs_error": float(np.abs(ref - got).max()), "cosine": float(cos.mean()),
           "cosine_min": float(cos.min()), "top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean())}
    if labels is not None:
        labels = np.asarray(labels)
        res["accuracy"] = float((got.argmax(1) == labels).mean())
        res["source_accuracy"] = float((ref.argmax(1) == labels).mean())
    return res


def check(metrics: dict[str, Any], precision: str, thresholds: dict[str, float]) -> list[str]:
    """Failed checks, as readable strings (empty when the artifact passes)."""
    failures = []
    cos_min = thresholds.get(f"{precision}_cosine")
    if cos_min is not None and metrics["cosine"] < cos_min:
        failures.append(f"cosine {metrics['cosine']:.6f} < {cos_min}")
    top1_min = thresholds.get(f"{precision}_top1")
    if top1_min is not None and metrics["top1_agreement"] < top1_min:
        failures.append(f"top-1 agreement {metrics['top1_agreement']:.4f} < {top1_min}")
    return failures


def tflite_ops(path: Path) -> Counter:
    """Operator counts of a .tflite (from the interpreter's op table: every op the runtime will execute)."""
    interp = tflite_interpreter(path, 1, delegates=False)
    return Counter(d["op_name"] for d in interp._get_ops_details())


def onnx_ops(path: Path) -> Counter:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def tflite_io(path: Path, layout: str) -> dict[str, list[dict[str, Any]]]:
    """Input and output tensors (name, shape, dtype; int8 scale and zero point), the input's `layout` recorded."""
    interp = tflite_interpreter(path, 1)

    def row(d: dict[str, Any]) -> dict[str, Any]:
        scale, zp = _quant(d)
        r = {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name}
        if d["dtype"] in (np.int8, np.uint8):
            r.update(scale=scale, zero_point=zp)
        return r

    return {"inputs": [dict(row(d), layout=layout) for d in interp.get_input_details()],
            "outputs": [row(d) for d in interp.get_output_details()]}


def onnx_io(path: Path, layout: str) -> dict[str, list[dict[str, Any]]]:
    """As tflite_io, for an ONNX file (a symbolic batch axis shows as its name, e.g. "N")."""
    sess = onnx_session(path, 1)

    def row(a) -> dict[str, Any]:
        dtype = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8"}.get(a.type, a.type)
        return {"name": a.name, "shape": [s if isinstance(s, int) else str(s) for s in a.shape], "dtype": dtype}

    return {"inputs": [dict(row(a), layout=layout) for a in sess.get_inputs()],
            "outputs": [row(a) for a in sess.get_outputs()]}
