"""Run every artifact in its real runtime and compare it with the source model's outputs, as the task judges:

- classification (probabilities [N, K]): cosine, top-1 agreement, accuracy;
- frames (per-frame logits [N, T, K]): cosine per utterance, frame agreement;
- regression (masks, magnitudes): output SNR against the source in dB, and cosine.
Every kind also reports the task metric of the file and of the source on the held-out samples (accuracy, PER,
SI-SDR improvement) when labels or metric data are given. Inputs are fed by name; outputs read back in the
task's axes.
"""

from __future__ import annotations

from collections import Counter
from itertools import permutations
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks.arrays import arrange

PARITY_KINDS = ("classification", "frames", "regression")
# What each kind gates beside the cosine, and the metric name that goes with a precision: PRECISION_<suffix>.
GATES = {"classification": "top1", "frames": "frame_agreement", "regression": "snr_db"}


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


def match_inputs(names: Sequence[str], details: Sequence[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """The runtime input detail for each of `names`: by exact name, then by a unique substring (converters write
    'serving_default_noisy:0'), then, for a single input, the only one."""
    if len(details) != len(names):
        raise ValueError(f"{where} has {len(details)} inputs; the model has {len(names)} ({', '.join(names)})")
    out = []
    for name in names:
        exact = [d for d in details if d["name"] == name]
        near = exact or [d for d in details if name in d["name"]]
        if len(near) != 1 and len(details) == 1:
            near = list(details)
        if len(near) != 1:
            raise ValueError(f"{where}: cannot tell which input tensor is '{name}' "
                             f"(tensors: {', '.join(d['name'] for d in details)})")
        out.append(near[0])
    return out


def run_tflite(path: Path, inputs: Sequence[np.ndarray], names: Sequence[str], num_threads: int = 1) -> np.ndarray:
    """The file's first output for float samples `inputs` (one array per input, each in the file's input layout),
    one sample at a time (the models are batch 1); int8 tensors quantized and dequantized with their own scale
    and zero point."""
    interp = tflite_interpreter(path, num_threads)
    details = match_inputs(names, interp.get_input_details(), Path(path).name)
    out = interp.get_output_details()[0]
    for d, x in zip(details, inputs):
        if list(d["shape"][1:]) != list(x.shape[1:]):
            raise ValueError(f"{Path(path).name} input '{d['name']}' takes {list(d['shape'])}, data is {list(x.shape)}")
    results = []
    for i in range(len(inputs[0])):
        for d, x in zip(details, inputs):
            sample = x[i : i + 1].astype(np.float32)
            if d["dtype"] in (np.int8, np.uint8):
                scale, zp = _quant(d)
                info = np.iinfo(d["dtype"])
                sample = np.clip(np.round(sample / scale) + zp, info.min, info.max).astype(d["dtype"])
            interp.set_tensor(d["index"], sample)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out["dtype"] in (np.int8, np.uint8):
            scale, zp = _quant(out)
            y = (y.astype(np.float32) - zp) * scale
        results.append(np.asarray(y, dtype=np.float32))
    return np.concatenate(results)


def onnx_session(path: Path, num_threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, inputs: Sequence[np.ndarray], names: Sequence[str], num_threads: int = 1,
             batch: int = 32) -> np.ndarray:
    """The file's first output for float samples (one array per input, in the PyTorch model's own layout)."""
    sess = onnx_session(path, num_threads)
    details = match_inputs(names, [{"name": i.name, "shape": i.shape} for i in sess.get_inputs()], Path(path).name)
    fixed = sess.get_inputs()[0].shape[0]
    step = batch if not isinstance(fixed, int) else fixed
    outs = [sess.run(None, {d["name"]: x[i : i + step].astype(np.float32) for d, x in zip(details, inputs)})[0]
            for i in range(0, len(inputs[0]), step)]
    return np.concatenate(outs).astype(np.float32)


def output_axes(file_shape: Sequence[int], task_axes: str, task_shape: Sequence[int]) -> str:
    """The task letters of a file's output axes (batch first), found by matching its shape against the source
    output's shape in the task's axes; the task's own order wins a tie (e.g. a square output)."""
    letters = "N" + task_axes
    sizes = dict(zip(letters, [1, *task_shape]))
    for order in [letters] + ["".join(p) for p in permutations(letters) if "".join(p) != letters and p[0] == "N"]:
        if [sizes[a] for a in order] == [1, *list(file_shape)[1:]] and len(order) == len(file_shape):
            return order
    raise ValueError(f"an output of shape {list(file_shape)} is no arrangement of the source's "
                     f"{[1, *task_shape]} ({letters})")


def to_task_axes(got: np.ndarray, file_axes: str, task_axes: str) -> np.ndarray:
    return arrange(got, file_axes, "N" + task_axes)


def compare(ref: np.ndarray, got: np.ndarray, kind: str, labels: np.ndarray | None = None) -> dict[str, Any]:
    """How closely `got` follows `ref` (both [N, ...] in the task's axes), as `kind` judges."""
    ref64, got64 = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if not np.isfinite(got64).all():
        return {"n": int(len(ref)), "max_abs_error": float("nan"), "cosine": float("nan"), "cosine_min": float("nan"),
                "non_finite": int((~np.isfinite(got64)).sum())}
    flat_r, flat_g = ref64.reshape(len(ref64), -1), got64.reshape(len(got64), -1)
    num = (flat_r * flat_g).sum(1)
    den = np.linalg.norm(flat_r, axis=1) * np.linalg.norm(flat_g, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-30), 0.0)
    res: dict[str, Any] = {"n": int(len(ref)), "max_abs_error": float(np.abs(ref64 - got64).max()),
                           "cosine": float(cos.mean()), "cosine_min": float(cos.min())}
    if kind == "classification":
        res["top1_agreement"] = float((ref64.argmax(1) == got64.argmax(1)).mean())
        if labels is not None:
            labels = np.asarray(labels)
            res["accuracy"] = float((got64.argmax(1) == labels).mean())
            res["source_accuracy"] = float((ref64.argmax(1) == labels).mean())
    elif kind == "frames":
        from benchmarks.metrics import frame_agreement

        res["frame_agreement"] = frame_agreement(ref64, got64)
    elif kind == "regression":
        from benchmarks.metrics import output_snr_db

        res["snr_db"] = output_snr_db(ref64, got64)
    else:
        raise ValueError(f"unknown parity kind {kind!r}; expected one of {', '.join(PARITY_KINDS)}")
    return res


def check(metrics: dict[str, Any], precision: str, thresholds: dict[str, float | None], kind: str) -> list[str]:
    """Failed checks, as readable strings (empty when the artifact passes)."""
    if metrics.get("non_finite"):
        return [f"{metrics['non_finite']} output values are NaN or infinite"]
    failures = []
    cos_min = thresholds.get(f"{precision}_cosine")
    if cos_min is not None and metrics["cosine"] < cos_min:
        failures.append(f"cosine {metrics['cosine']:.6f} < {cos_min}")
    gate = GATES[kind]
    bound = thresholds.get(f"{precision}_{gate}")
    value = metrics.get({"top1": "top1_agreement"}.get(gate, gate))
    if bound is not None and value is not None and value < bound:
        label = {"top1": "top-1 agreement", "frame_agreement": "frame agreement", "snr_db": "output SNR (dB)"}[gate]
        failures.append(f"{label} {value:.4f} < {bound}")
    return failures


def tflite_ops(path: Path) -> Counter:
    """Operator counts of a .tflite (from the interpreter's op table: every op the runtime will execute)."""
    interp = tflite_interpreter(path, 1, delegates=False)
    return Counter(d["op_name"] for d in interp._get_ops_details())


def onnx_ops(path: Path) -> Counter:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _row(name: str, shape: Sequence[Any], dtype: str, quant: tuple[float, int] | None) -> dict[str, Any]:
    r: dict[str, Any] = {"name": name, "shape": list(shape), "dtype": dtype}
    if quant is not None:
        r.update(scale=quant[0], zero_point=quant[1])
    return r


def tflite_io(path: Path, names: Sequence[str], layouts: Sequence[str], axes: Sequence[str | None],
              out_axes: str) -> dict[str, list[dict[str, Any]]]:
    """Input and output tensors (name, shape, dtype; int8 scale and zero point), in the model's input order, each
    input with its `layout` and feature `axes`, the output with its task `axes`."""
    interp = tflite_interpreter(path, 1)

    def row(d: dict[str, Any]) -> dict[str, Any]:
        q = _quant(d) if d["dtype"] in (np.int8, np.uint8) else None
        return _row(d["name"], [int(s) for s in d["shape"]], np.dtype(d["dtype"]).name, q)

    details = match_inputs(names, interp.get_input_details(), Path(path).name)
    return {"inputs": [dict(row(d), layout=lay, axes=ax) for d, lay, ax in zip(details, layouts, axes)],
            "outputs": [dict(row(d), axes=out_axes) for d in interp.get_output_details()[:1]]}


def onnx_io(path: Path, names: Sequence[str], layouts: Sequence[str], axes: Sequence[str | None],
            out_axes: str) -> dict[str, list[dict[str, Any]]]:
    """As tflite_io, for an ONNX file (a symbolic batch axis shows as its name, e.g. "N")."""
    sess = onnx_session(path, 1)
    types = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8"}

    def row(a) -> dict[str, Any]:
        return _row(a.name, [s if isinstance(s, int) else str(s) for s in a.shape], types.get(a.type, a.type), None)

    details = match_inputs(names, [{"name": a.name, "a": a} for a in sess.get_inputs()], Path(path).name)
    return {"inputs": [dict(row(d["a"]), layout=lay, axes=ax) for d, lay, ax in zip(details, layouts, axes)],
            "outputs": [dict(row(a), axes=out_axes) for a in sess.get_outputs()[:1]]}
