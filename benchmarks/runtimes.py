"""One small interface over the TFLite and ONNX runtimes: load, describe inputs, run one batch."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

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
    """A loaded model. `run(x)` takes a float32 batch in the model's own layout, returns float32 outputs."""

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
        self.inputs = [{"name": i.name, "shape": [s if isinstance(s, int) else 1 for s in i.shape],
                        "dtype": "float32" if "float" in i.type else i.type, "scale": 0.0, "zero_point": 0}
                       for i in self._sess.get_inputs()]
        self.outputs = [{"name": o.name} for o in self._sess.get_outputs()]

    def invoke_prepared(self) -> None:
        """Run once on the inputs already set (the timed unit for TFLite, as benchmark_model times invoke)."""
        if self.kind == "tflite":
            self._interp.invoke()
        else:
            self._last = self._sess.run(None, self._feed)

    def prepare(self, x: np.ndarray) -> None:
        """Set the input for the next invoke: quantised here for int8 inputs, so timing excludes it."""
        spec = self.inputs[0]
        if self.kind == "tflite":
            self._interp.set_tensor(spec["index"], quantize(x, spec))
        else:
            self._feed = {spec["name"]: x.astype(np.float32)}

    def output(self) -> np.ndarray:
        if self.kind == "tflite":
            spec = self.outputs[0]
            return dequantize(self._interp.get_tensor(spec["index"]), spec)
        return np.asarray(self._last[0], dtype=np.float32)

    def run(self, x: np.ndarray) -> np.ndarray:
        self.prepare(x)
        self.invoke_prepared()
        return self.output()


def quantize(x: np.ndarray, spec: Dict[str, Any]) -> np.ndarray:
    """float -> the tensor's dtype with its scale and zero point (identity for float tensors)."""
    if spec["dtype"] in ("int8", "uint8") and spec["scale"]:
        info = np.iinfo(spec["dtype"])
        q = np.round(x / spec["scale"] + spec["zero_point"])
        return np.clip(q, info.min, info.max).astype(spec["dtype"])
    return x.astype(np.float32)


def dequantize(y: np.ndarray, spec: Dict[str, Any]) -> np.ndarray:
    if spec["dtype"] in ("int8", "uint8") and spec["scale"]:
        return ((y.astype(np.float32) - spec["zero_point"]) * spec["scale"]).astype(np.float32)
    return y.astype(np.float32)


def to_layout(features: np.ndarray, shape: List[int]) -> np.ndarray:
    """Features [N, bands, frames] -> the model's input rank: NHWC [..., 1] or NCHW [:, 1, ...]."""
    if len(shape) == features.ndim:
        return features
    if len(shape) == features.ndim + 1:
        if shape[-1] == 1:
            return features[..., None]
        if shape[1] == 1:
            return features[:, None]
    raise ModelError(f"test features of shape {list(features.shape)} do not fit the model input {shape}")


def check_features(features: np.ndarray, shape: List[int], where: str) -> Optional[str]:
    """None if a single example fits the input shape, else a one-line reason."""
    try:
        one = to_layout(features[:1], shape)
    except ModelError as exc:
        return f"{where}: {exc}"
    if list(one.shape[1:]) != list(shape[1:]):
        return f"{where}: test features {list(features.shape[1:])} do not match the model input {shape[1:]}"
    return None
