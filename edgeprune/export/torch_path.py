"""PyTorch -> ONNX (TorchScript exporter) -> TFLite (one onnx2tf 1.x call for every precision)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgeprune.errors import EdgepruneError

OPSET = 17

# onnx2tf's output file suffixes -> our precision keys ("int8" picks the int8-I/O or float-I/O variant)
ONNX2TF_FILES = {
    "fp32": "_float32.tflite",
    "fp16": "_float16.tflite",
    "dynamic": "_dynamic_range_quant.tflite",
    "int8": "_full_integer_quant.tflite",
    "int8_float_io": "_integer_quant.tflite",
}


# Operators neither onnx2tf 1.28 nor litert-torch 0.10 takes (measured; README "What does not convert"): the remedy
# is in the model, so no other converter is suggested. Keys are matched in the lower-cased failure text.
IN_MODEL_REMEDIES = {
    ("stft", "fft", "complex", "dft"): "compute the spectrogram outside the model, or as a Conv1d with fixed DFT "
                                       "kernels (that exports; litert-torch cannot take torch.stft's complex tensors "
                                       "and runs torch.fft only on power-of-two lengths)",
    ("topk", "sort"): "replace top-k / sort pooling with max or mean pooling (litert-torch writes a STABLEHLO_SORT "
                      "op that LiteRT 2.3 cannot run)",
    ("median",): "replace the median with a mean or max (litert-torch has no lowering for it either)",
}


def alternative(twin: bool, reason: str = "") -> str:
    """What else to try when PyTorch -> TFLite fails on `reason`: a change in the model for operators no converter
    takes, else a registered model's Keras twin, else litert-torch (measured: it converts the Where, Einsum and
    DepthToSpace graphs onnx2tf 1.28 fails on)."""
    low = reason.lower()
    for keys, remedy in IN_MODEL_REMEDIES.items():
        if any(k in low for k in keys):
            return remedy
    if twin:
        return "export the Keras twin to TFLite instead (--framework keras)"
    return "try litert-torch (PyTorch -> TFLite through torch.export, no ONNX; not part of edgeprune)"


def with_softmax(model: Any) -> Any:
    """PyTorch classifiers return logits; exported classifiers output probabilities like the Keras twins."""
    import torch

    class ProbsWrapper(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *x):
            return torch.softmax(self.inner(*x), dim=1)

    wrapped = ProbsWrapper(model)
    wrapped.eval()
    return wrapped


@contextlib.contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    """In eval mode nn.MultiheadAttention and nn.TransformerEncoderLayer take a fused fast path
    (aten::_native_multi_head_attention) that has no ONNX export; the plain path computes the same function."""
    import torch

    mha = getattr(torch.backends, "mha", None)
    if mha is None:
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def to_onnx(model: Any, path: Path, input_shapes: list[tuple[int, ...]], input_names: list[str], output_name: str,
            dynamic_batch: bool = True, twin: bool = True, softmax: bool = True) -> Path:
    """torch.onnx.export (TorchScript exporter: the dynamo one needs onnxscript), with a softmax head for
    classifiers (`softmax`).

    `input_shapes` are one sample's shapes in the model's own layout ([1, 40, 500] for the DCASE baseline), one per
    input in call order; `twin` says whether a Keras twin exists to suggest when an operator does not export."""
    import torch

    wrapped = with_softmax(model) if softmax else model.eval()
    dummy = tuple(torch.zeros((1, *shape), dtype=torch.float32) for shape in input_shapes)
    kwargs: dict[str, Any] = dict(input_names=list(input_names), output_names=[output_name], opset_version=OPSET,
                                  do_constant_folding=True)
    if dynamic_batch:
        kwargs["dynamic_axes"] = {**{n: {0: "N"} for n in input_names}, output_name: {0: "N"}}
    buf = io.StringIO()
    try:
        with torch.no_grad(), _mha_fastpath_off(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            torch.onnx.export(wrapped, dummy, str(path), dynamo=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - torch names the operator it cannot export
        reason = _torch_reason(exc)
        raise EdgepruneError(f"PyTorch -> ONNX export failed: {reason}. Replace that operator in the model, or "
                             f"{alternative(twin, reason)}") from exc
    import onnx

    onnx.checker.check_model(str(path))
    return path


def onnx_to_tflite(onnx_path: Path, out_dir: Path, samples: dict[str, np.ndarray], quants: set[str], int8_io: bool,
                   progress: bool = False, keep_layout: list[str] | None = None, twin: bool = True) -> dict[str, Path]:
    """One onnx2tf.convert call writes every precision; returns {precision: .tflite path} for those asked.

    `onnx_path` must have a static shape. onnx2tf gives a channels-first input its channels-last form;
    `keep_layout` names the inputs that keep their ONNX layout instead (onnx2tf then adds a TRANSPOSE after them).
    `samples` are float32 [N, ...] per input name, in the TFLite inputs' layout: onnx2tf checks its conversion on
    them (without real samples it once computed something else, and for 3-channel inputs it downloads image data)
    and calibrates "int8" with them.
    """
    work = Path(tempfile.mkdtemp(prefix="onnx2tf-", dir=out_dir)).resolve()  # the child runs in it
    src = _simplified(Path(onnx_path), work)
    names = _onnx_input_names(src)
    missing = [n for n in names if n not in samples]
    if missing:
        raise EdgepruneError(f"onnx2tf needs sample inputs for {', '.join(missing)}")
    data = []
    for i, name in enumerate(names):
        npy = work / f"samples_{i}.npy"
        np.save(npy, np.ascontiguousarray(samples[name], dtype=np.float32))
        data.append([name, str(npy), 0.0, 1.0])
    kwargs: dict[str, Any] = dict(
        input_onnx_file_path=str(src), output_folder_path=str(work),
        copy_onnx_input_output_names_to_tflite=True, non_verbose=not progress,
        output_dynamic_range_quantized_tflite="dynamic" in quants,
        custom_input_op_name_np_data_path=data,
    )
    if keep_layout:
        # onnx2tf's node names start with "/" on this path, which its SavedModel step rejects unless it writes
        # signature defs (its own advice: -osd)
        kwargs.update(keep_ncw_or_nchw_or_ncdhw_input_names=list(keep_layout), output_signaturedefs=True)
    if "int8" in quants:
        kwargs.update(output_integer_quantized_tflite=True, input_quant_dtype="int8", output_quant_dtype="int8")
    _image_samples(samples, work)
    rc, log = _run_onnx2tf(kwargs, capture=True, cwd=work)
    if rc > 0 and "-osd" in log and not kwargs.get("output_signaturedefs"):
        # Its SavedModel step rejects some tensor names (a transformer's "/encoder/pos_conv/Conv/kernel" when only
        # float32 is asked for) and advises signature defs (-osd): convert once more with them
        kwargs["output_signaturedefs"] = True
        rc, log = _run_onnx2tf(kwargs, capture=True, cwd=work)
    if progress and log:
        print(log, end="" if log.endswith("\n") else "\n", flush=True)
    if rc < 0:  # killed by a signal: TensorFlow crashed inside onnx2tf
        done = [q for q in ("fp32", "fp16", "dynamic") if (work / f"{src.stem}{ONNX2TF_FILES[q]}").is_file()]
        recurrent = _recurrent_ops(src)
        raise EdgepruneError(
            f"ONNX -> TFLite (onnx2tf) crashed with {_signal_name(-rc)} after writing {', '.join(done) or 'nothing'}"
            + (f"; the graph has {', '.join(recurrent)}, and TensorFlow's int8 calibrator crashes on recurrent "
               "loops: export without int8 (quant='fp32,fp16,dynamic')" if recurrent and "int8" in quants else "")
            + f". Use the ONNX files (formats='onnx', CLI --format onnx), or {alternative(twin)}")
    if rc != 0:
        culprit = _onnx2tf_culprit(log, src)
        raise EdgepruneError(
            f"ONNX -> TFLite (onnx2tf) failed {culprit}: {_marked_error(log)}. "
            f"Use the ONNX files (formats='onnx', CLI --format onnx), or {alternative(twin, culprit)}")
    found: dict[str, Path] = {}
    for q in quants:
        key = q if not (q == "int8" and not int8_io) else "int8_float_io"
        f = work / f"{src.stem}{ONNX2TF_FILES[key]}"
        if not f.is_file():
            # onnx2tf only warns when a quantized variant fails (silently under non_verbose); the usual cause is
            # a TensorFlow op with no TFLite builtin, which its float32 file then carries as a Flex op
            flex = _custom_ops(work / f"{src.stem}{ONNX2TF_FILES['fp32']}")
            why = (f"the float32 model needs TensorFlow Select ops {flex}, which LiteRT's builtin kernels lack"
                   if flex else _onnx2tf_culprit(log, src))
            shutil.rmtree(work, ignore_errors=True)
            raise EdgepruneError(f"onnx2tf did not write the {q} model ({f.name}): {why}. Use the ONNX files "
                                 f"(formats='onnx', CLI --format onnx), or {alternative(twin, why)}")
        found[q] = f
    return found


# The child's marker line for an exception from onnx2tf (it also exits on its own with status 1)
_ERROR_MARK = "EDGEPRUNE-ONNX2TF-ERROR:"


def _run_onnx2tf(kwargs: dict[str, Any], capture: bool, cwd: Path | None = None) -> tuple[int, str]:
    """onnx2tf.convert(**kwargs) in a child process started in `cwd`: (exit status, its output when captured).

    A child because TensorFlow can crash outright inside onnx2tf (a segfault in the int8 calibrator on recurrent
    models): in-process that kills the caller; here it is an exit status that becomes an EdgepruneError.
    `python -m`, not multiprocessing: a spawned process would re-run the caller's __main__ script."""
    import os
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[2])  # the folder holding the edgeprune package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "edgeprune.export.torch_path", json.dumps(kwargs)]
    if not capture:
        return subprocess.run(cmd, env=env, cwd=cwd).returncode, ""
    done = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace")
    return done.returncode, done.stdout


# onnx2tf 1.x fetches this file of image samples from GitHub for its checks whenever every model input is 4-D with
# 3 channels last, whatever samples it is given, unless a file of that name is in its working folder.
ONNX2TF_IMAGE_SAMPLES = "calibration_image_sample_data_20x128x128x3_float32.npy"


def _image_samples(samples: dict[str, np.ndarray], folder: Path) -> None:
    """Our own samples in the place of onnx2tf's downloaded images (20 of them, nearest-resized to 128 x 128), when
    every input looks like an image to it: an export never reaches the network."""
    arrays = list(samples.values())
    if not arrays or not all(a.ndim == 4 and a.shape[-1] == 3 for a in arrays):
        return
    x = arrays[0]
    rows = np.arange(128) * x.shape[1] // 128
    cols = np.arange(128) * x.shape[2] // 128
    picked = x[np.arange(20) % len(x)][:, rows][:, :, cols]
    np.save(folder / ONNX2TF_IMAGE_SAMPLES, np.ascontiguousarray(picked, dtype=np.float32))


def _convert_main(argv: list[str]) -> int:
    """The child's side of _run_onnx2tf."""
    import onnx2tf

    try:
        onnx2tf.convert(**json.loads(argv[0]))
    except SystemExit as exc:  # onnx2tf exits with 1 after printing the failing node
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one marked line
        print(f"{_ERROR_MARK} {_first_line(exc)}", flush=True)
        return 1
    return 0


def _marked_error(log: str) -> str:
    lines = [ln for ln in log.splitlines() if ln.startswith(_ERROR_MARK)]
    return lines[-1][len(_ERROR_MARK):].strip() if lines else "onnx2tf stopped without an exception"


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _recurrent_ops(onnx_path: Path) -> list[str]:
    """The recurrent or loop nodes of an ONNX file ("LSTM '/inner/lstm/LSTM'"), to explain a calibrator crash."""
    import onnx

    nodes = onnx.load(str(onnx_path), load_external_data=False).graph.node
    return [f"{n.op_type} '{n.name}'" for n in nodes if n.op_type in ("LSTM", "GRU", "RNN", "Loop", "Scan")]


def _custom_ops(tflite_path: Path) -> list[str]:
    """Names of the non-builtin (Flex / custom) ops of a .tflite, [] if there are none or it cannot be read."""
    try:
        from tensorflow.lite.tools import flatbuffer_utils as fu

        model = fu.read_model(str(tflite_path))
    except Exception:  # noqa: BLE001 - only used to explain another failure
        return []
    return sorted({(c.customCode or b"").decode() for c in model.operatorCodes if c.customCode})


def _simplified(onnx_path: Path, work: Path) -> Path:
    """A constant-folded copy of a static-shape ONNX file (onnxslim). onnx2tf would fold it with the onnxsim CLI,
    which is not installed here; without folding it fails on shape arithmetic it could have removed (e.g. the
    Shape -> Expand that builds an LSTM's zero initial state). Folding is an optimisation: on failure, a copy."""
    import onnx

    dst = work / onnx_path.name
    try:
        import onnxslim

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            onnx.save(onnxslim.slim(onnx.load(str(onnx_path))), str(dst))
    except Exception:  # noqa: BLE001
        shutil.copyfile(onnx_path, dst)
    return dst


def _onnx_input_names(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def _torch_reason(exc: BaseException) -> str:
    """torch's first line, without the TorchScript value dump it appends ("[Caused by the value ...")."""
    return _first_line(exc).split(" [Caused by")[0].strip()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _onnx2tf_culprit(log: str, onnx_path: Path) -> str:
    """"at node OpType 'name'" for the ONNX node onnx2tf stopped at (it prints the name before it exits), or the
    last error line it printed."""
    import re

    log = re.sub(r"\x1b\[[0-9;]*m", "", log)
    names = re.findall(r"ERROR:.*?onnx_op_name:\s*(\S+)", log)
    if names:
        op_type, name = _node(onnx_path, names[-1].rstrip("."))
        return f"at node {op_type} '{name}'"
    errs = [ln.strip()[:300] for ln in log.splitlines() if "ERROR" in ln or "not supported" in ln.lower()]
    return f"(onnx2tf said: {errs[-1]})" if errs else "(onnx2tf gave no reason)"


def _node(onnx_path: Path, printed: str) -> tuple[str, str]:
    """(op type, name) of the node of the converted file that onnx2tf printed as `printed` (it may prefix it)."""
    import onnx

    try:
        nodes = onnx.load(str(onnx_path), load_external_data=False).graph.node
    except Exception:  # noqa: BLE001 - the printed name alone still helps
        return "?", printed
    for node in nodes:
        if node.name and (node.name == printed or printed.endswith(node.name)):
            return node.op_type, node.name
    return "?", printed


if __name__ == "__main__":
    import sys

    sys.exit(_convert_main(sys.argv[1:]))
