"""One small interface over the TFLite and ONNX runtimes: load, describe inputs and outputs, run one batch; and how
test arrays are matched to a file's input tensors."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np


class ModelError(Exception):
    """A model file that cannot be loaded or run: the message says which file and why."""


def _tflite_interpreter_class():
    """The first TFLite interpreter available: ai-edge-litert, tflite-runtime, then tf.lite."""
    try:
        from ai_edge_litert import interpreter as lit

        return lit.Interpreter, getattr(lit, "OpResolverType", None), "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as tfr

        return tfr.Interpreter, getattr(tfr, "OpResolverType", None), "tflite-runtime"
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return tf.lite.Interpreter, getattr(tf.lite.experimental, "OpResolverType", None), "tf.lite"
    except ImportError as exc:
        raise ModelError("no TFLite runtime: install ai-edge-litert (or tflite-runtime)") from exc


def runtime_versions() -> Dict[str, str]:
    """Versions of the runtimes this Python can import."""
    from importlib import metadata

    out = {"numpy": np.__version__}
    for dist in ("ai-edge-litert", "tflite-runtime", "onnxruntime", "tensorflow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


class Session:
    """A loaded model. `run(xs)` takes one float32 batch per input tensor (in `inputs` order, each in the file's own
    layout) and returns one output as float32."""

    def __init__(self, path: str, threads: int = 1, xnnpack: bool = True) -> None:
        self.path, self.threads, self.xnnpack = path, threads, xnnpack
        if not os.path.isfile(path):
            raise ModelError(f"{path}: file not found")
        ext = os.path.splitext(path)[1].lower()
        try:
            if ext == ".tflite":
                self._load_tflite()
            elif ext == ".onnx":
                self._load_onnx()
            else:
                raise ModelError(f"{path}: unknown model type '{ext}'; expected .tflite or .onnx")
        except ModelError:
            raise
        except Exception as exc:  # runtimes raise assorted types for corrupt files
            raise ModelError(f"{path}: cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc

    def _load_tflite(self) -> None:
        cls, resolver, self.runtime = _tflite_interpreter_class()
        kwargs: Dict[str, Any] = {"model_path": self.path, "num_threads": self.threads}
        if not self.xnnpack:
            if resolver is None:
                raise ModelError(f"{self.path}: this TFLite runtime cannot turn XNNPACK off")
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self._interp = cls(**kwargs)
        self._interp.allocate_tensors()
        self.kind = "tflite"
        self.inputs = [self._describe(d) for d in self._interp.get_input_details()]
        self.outputs = [self._describe(d) for d in self._interp.get_output_details()]

    @staticmethod
    def _describe(d: Dict[str, Any]) -> Dict[str, Any]:
        scale, zero = d.get("quantization", (0.0, 0))
        return {"name": d["name"], "index": d["index"], "shape": [int(s) for s in d["shape"]],
                "dtype": np.dtype(d["dtype"]).name, "scale": float(scale), "zero_point": int(zero)}

    def _load_onnx(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        self._sess = ort.InferenceSession(self.path, sess_options=opts, providers=["CPUExecutionProvider"])
        self.kind, self.runtime = "onnx", "onnxruntime"

        def describe(t: Any, index: int) -> Dict[str, Any]:
            # symbolic dimensions (a dynamic batch) are run with size 1
            return {"name": t.name, "index": index, "shape": [s if isinstance(s, int) else 1 for s in t.shape],
                    "dtype": "float32" if "float" in t.type else t.type, "scale": 0.0, "zero_point": 0}

        self.inputs = [describe(t, i) for i, t in enumerate(self._sess.get_inputs())]
        self.outputs = [describe(t, i) for i, t in enumerate(self._sess.get_outputs())]

    def invoke_prepared(self) -> None:
        """Run once on the inputs already set (the timed unit for TFLite, as benchmark_model times invoke)."""
        if self.kind == "tflite":
            self._interp.invoke()
        else:
            self._last = self._sess.run(None, self._feed)

    def prepare(self, xs: Union[np.ndarray, Sequence[np.ndarray]]) -> None:
        """Set every input for the next invoke: one array per input tensor, in `inputs` order (a single array for a
        one-input model). Quantised here for int8 inputs, each with its own scale, so timing excludes it."""
        if isinstance(xs, np.ndarray):
            xs = [xs]
        if len(xs) != len(self.inputs):
            raise ModelError(f"{self.path}: {len(xs)} input array(s) for {len(self.inputs)} input tensor(s)")
        if self.kind == "tflite":
            for spec, x in zip(self.inputs, xs):
                self._interp.set_tensor(spec["index"], quantize(x, spec))
        else:
            self._feed = {spec["name"]: np.ascontiguousarray(x, dtype=np.float32) for spec, x in zip(self.inputs, xs)}

    def output(self, k: int = 0) -> np.ndarray:
        """Output tensor `k` of the last invoke, dequantised with its own scale and zero point."""
        if self.kind == "tflite":
            spec = self.outputs[k]
            return dequantize(self._interp.get_tensor(spec["index"]), spec)
        return np.asarray(self._last[k], dtype=np.float32)

    def run(self, xs: Union[np.ndarray, Sequence[np.ndarray]], k: int = 0) -> np.ndarray:
        self.prepare(xs)
        self.invoke_prepared()
        return self.output(k)


def quantize(x: np.ndarray, spec: Dict[str, Any]) -> np.ndarray:
    """float -> the tensor's dtype with its scale and zero point (identity for float tensors)."""
    if spec["dtype"] in ("int8", "uint8") and spec["scale"]:
        info = np.iinfo(spec["dtype"])
        q = np.round(x / spec["scale"] + spec["zero_point"])
        return np.ascontiguousarray(np.clip(q, info.min, info.max), dtype=spec["dtype"])
    return np.ascontiguousarray(x, dtype=np.float32)


def dequantize(y: np.ndarray, spec: Dict[str, Any]) -> np.ndarray:
    if spec["dtype"] in ("int8", "uint8") and spec["scale"]:
        return ((y.astype(np.float32) - spec["zero_point"]) * spec["scale"]).astype(np.float32)
    return y.astype(np.float32)


def match_names(wanted: Sequence[Optional[str]], names: Sequence[Sequence[str]], what: str) -> List[Tuple[int, str]]:
    """Pair each wanted name with one tensor: by exact name, then by substring (the wanted name inside one of the
    tensor's names, e.g. 'noisy' in 'serving_default_noisy:0'), then the rest by order. `names[j]`: the names
    tensor j is known by (the runtime's, the manifest's). Returns (tensor index, how) per wanted name; a count
    that differs is a ModelError saying what is missing."""
    if len(wanted) != len(names):
        have = ", ".join(n[0] for n in names) or "none"
        raise ModelError(f"{what}: {len(wanted)} test input(s) ({', '.join(str(w) for w in wanted)}) for "
                         f"{len(names)} input tensor(s) ({have})")
    found: Dict[int, Tuple[int, str]] = {}
    taken: set = set()
    for i, w in enumerate(wanted):
        hits = [j for j, ns in enumerate(names) if w is not None and w in ns and j not in taken]
        if len(hits) == 1:
            found[i] = (hits[0], "name")
            taken.add(hits[0])
    progress = True
    while progress:  # one unique substring hit at a time: 'x' and 'x2' resolve once 'x2' has taken its tensor
        progress = False
        for i, w in enumerate(wanted):
            if i in found or not w:
                continue
            hits = [j for j, ns in enumerate(names) if j not in taken and any(w in n for n in ns)]
            if len(hits) == 1:
                found[i] = (hits[0], "substring")
                taken.add(hits[0])
                progress = True
    rest = iter(j for j in range(len(names)) if j not in taken)
    for i in range(len(wanted)):
        if i not in found:
            found[i] = (next(rest), "only" if len(names) == 1 else "order")
    return [found[i] for i in range(len(wanted))]


def guess_axes(data_axes: str, data_shape: Sequence[int], shape: Sequence[int]) -> Optional[str]:
    """A file input's axes when no manifest names them: the data's own, or one unit axis more, last (NHWC) or
    after the batch axis (NCHW), as a single-channel 2-D CNN takes log-mel. None when neither fits."""
    sample, want = list(data_shape[1:]), list(shape[1:])
    if want == sample:
        return data_axes
    if len(want) == len(sample) + 1:
        if want[-1] == 1 and want[:-1] == sample:
            return data_axes + "1"
        if want[0] == 1 and want[1:] == sample:
            return data_axes[0] + "1" + data_axes[1:]
    return None
