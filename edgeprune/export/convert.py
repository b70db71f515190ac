"""export() and export_model(): one call, every format and precision, every artifact checked against its source.

export(checkpoint) is a thin wrapper: it reads an edgeprune checkpoint, derives the model's InputSpec from its
architecture, and hands the loaded model to the same code as export_model(model, input_spec), which exports any
PyTorch or Keras classifier held in memory.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.fileio import atomic_path, refuse_overwrite, sha256_file
from edgeprune.models.input_spec import InputSpec

FORMATS = ("tflite", "onnx")
QUANTS = ("fp32", "fp16", "dynamic", "int8")
QUANT_ALIASES = {"float32": "fp32", "float16": "fp16", "uint8": "dynamic", "dynamic_range": "dynamic", "all": "all"}
DEFAULT_THRESHOLDS = {"fp32_cosine": 0.9999, "fp16_cosine": 0.999, "dynamic_top1": 0.95, "int8_top1": 0.95}
DEFAULT_CALIB, DEFAULT_EVAL = 200, 200


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[export] {msg}", flush=True)


def normalize_list(values: str | Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    """'tflite,onnx' or a sequence -> checked list, in the canonical order."""
    items = [v.strip().lower() for v in (values.split(",") if isinstance(values, str) else values) if v.strip()]
    items = [QUANT_ALIASES.get(v, v) for v in items]
    if "all" in items:
        return list(allowed)
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise EdgepruneError(f"unknown {what} {', '.join(bad) or '(none given)'}; expected some of {', '.join(allowed)}")
    return [v for v in allowed if v in items]


def export(checkpoint_path: str | Path, out_dir: str | Path = "export", formats: str | Sequence[str] = FORMATS,
           quant: str | Sequence[str] = QUANTS, calib: np.ndarray | None = None, eval_x: np.ndarray | None = None,
           eval_y: np.ndarray | None = None, int8_io: bool = True, thresholds: dict[str, float] | None = None,
           force: bool = False, progress: bool = True, name: str | None = None, framework: str | None = None,
           num_threads: int = 1) -> dict[str, Any]:
    """Export a checkpoint to `out_dir/<name>/` and return its manifest (also written as manifest.json).

    The model's input comes from its registered architecture (the DCASE baseline: log-mel [N, 40, 500], or with
    the channel axis of the exported twin). `framework` picks the twin to export (default: the checkpoint's;
    weights transfer exactly). Everything else is as in export_model().
    """
    from edgeprune import checkpoint as ckpt_mod
    from edgeprune.models import get_entry, input_spec

    t0 = time.perf_counter()
    checkpoint_path = Path(checkpoint_path)
    spec = ckpt_mod.read_spec(checkpoint_path)
    fw = framework or spec["framework"]
    req = _request(input_spec(spec["arch"], fw), fw, Path(out_dir) / (name or checkpoint_path.resolve().name),
                   formats, quant, calib, eval_x, eval_y, thresholds, force)
    ckpt = ckpt_mod.load(checkpoint_path, framework=framework)
    source = {"checkpoint": str(checkpoint_path), "checkpoint_framework": spec["framework"], "framework": fw,
              "weights_sha256": spec.get("weights_sha256"), "model": spec["arch"]["model"], "arch": spec["arch"],
              "pruning": (spec.get("pruning") or {}).get("keep")}
    twin = len(get_entry(spec["arch"]["model"]).builders) > 1
    return _export(ckpt.model, fw, req, classes=list(ckpt.classes), source=source, label=str(checkpoint_path),
                   twin=twin, int8_io=int8_io, progress=progress, num_threads=num_threads, t0=t0)


def export_model(model: Any, input_spec: InputSpec, out_dir: str | Path = "export", name: str | None = None,
                 classes: Sequence[str] | None = None, formats: str | Sequence[str] = FORMATS,
                 quant: str | Sequence[str] = QUANTS, calib: np.ndarray | None = None,
                 eval_x: np.ndarray | None = None, eval_y: np.ndarray | None = None, int8_io: bool = True,
                 thresholds: dict[str, float] | None = None, force: bool = False, progress: bool = True,
                 num_threads: int = 1) -> dict[str, Any]:
    """Export an in-memory classifier (torch.nn.Module or keras.Model, one input, output [N, classes]) to
    `out_dir/<name>/` (default name: the model's) and return its manifest (also written as manifest.json).

    `input_spec` is the input in the model's own layout, e.g. InputSpec((40, 101), "NCW") for a PyTorch Conv1d
    over 40 mel bands x 101 frames. PyTorch models are taken to return logits: the exported graph ends in softmax;
    Keras models are exported as they are (keras.applications classifiers end in softmax). formats: "tflite",
    "onnx" (PyTorch only); quant: "fp32", "fp16", "dynamic" (int8 weights, float activations; the seed's "uint8"),
    "int8" (full integer from `calib`; int8 I/O unless `int8_io=False`). `calib` and `eval_x` are float samples
    [N, *input_spec.shape]; parity runs every artifact in its runtime on `eval_x` (held-out samples; `eval_y`
    adds accuracy), each runtime fed the layout its file takes. `classes` (optional) are stored as the labels.
    A parity failure moves the artifact into `<bundle>/rejected/` and raises EdgepruneError after the bundle is
    written. Nothing is written at the final path until everything has succeeded or been rejected.
    """
    from edgeprune.frameworks import framework_of

    t0 = time.perf_counter()
    fw = framework_of(model)
    model_name = model.name if fw == "keras" else type(model).__name__
    req = _request(input_spec, fw, Path(out_dir) / (name or model_name), formats, quant, calib, eval_x, eval_y,
                   thresholds, force)
    source = {"checkpoint": None, "checkpoint_framework": None, "framework": fw, "weights_sha256": None,
              "model": model_name, "arch": None, "pruning": None}
    return _export(model, fw, req, classes=None if classes is None else list(classes), source=source,
                   label=f"in-memory {fw} model {model_name}", twin=False, int8_io=int8_io, progress=progress,
                   num_threads=num_threads, t0=t0)


@dataclass
class _Request:
    """The checked arguments of one export: what to write where, and the data (float32, the model's layout)."""

    input: InputSpec  # resolved: tflite_layout is set
    bundle: Path
    force: bool
    formats: list[str]
    quants: list[str]
    thresholds: dict[str, float | None]
    calib: np.ndarray | None
    eval_x: np.ndarray
    eval_y: np.ndarray | None
    notes: list[str]


def _request(input_spec: InputSpec, framework: str, bundle: Path, formats: str | Sequence[str],
             quant: str | Sequence[str], calib: Any, eval_x: Any, eval_y: Any, thresholds: dict[str, float] | None,
             force: bool) -> _Request:
    """Check everything that can be checked without the model: a bad argument or array fails before any
    conversion, and before anything is written."""
    fmts = normalize_list(formats, FORMATS, "format")
    quants = normalize_list(quant, QUANTS, "precision")
    th: dict[str, float | None] = dict(DEFAULT_THRESHOLDS)
    for k, v in (thresholds or {}).items():
        if k not in DEFAULT_THRESHOLDS and not k.endswith(("_cosine", "_top1")):
            raise EdgepruneError(f"unknown threshold '{k}'; expected one of {', '.join(DEFAULT_THRESHOLDS)} "
                                 "(or PRECISION_cosine / PRECISION_top1)")
        th[k] = None if v is None else float(v)
    refuse_overwrite(bundle, force)
    if not isinstance(input_spec, InputSpec):
        raise EdgepruneError(f"input_spec: got {type(input_spec).__name__}; expected an edgeprune InputSpec")
    spec = input_spec.resolve(framework)
    dims = ", ".join(map(str, spec.shape))
    calib32 = spec.check(calib, "calibration data") if calib is not None else None
    if "int8" in quants and calib32 is None:
        raise EdgepruneError(f"int8 export needs calibration data: calib=[N, {dims}] float32 samples "
                             "(CLI: --calib N samples of the training split)")
    notes: list[str] = []
    if eval_x is None:
        if calib32 is None:
            raise EdgepruneError(f"parity needs samples: pass eval_x=[N, {dims}] float32 samples (held-out)")
        eval32, eval_y = calib32[:DEFAULT_EVAL], None
        notes.append("parity ran on calibration samples (no held-out eval_x given)")
    else:
        eval32 = spec.check(eval_x, "evaluation data")
    if eval_y is not None:
        eval_y = np.asarray(eval_y)
        if eval_y.ndim == 2:
            eval_y = eval_y.argmax(1)
        if len(eval_y) != len(eval32):
            raise EdgepruneError(f"eval_y has {len(eval_y)} labels for {len(eval32)} samples")
    return _Request(spec, bundle, force, fmts, quants, th, calib32, eval32, eval_y, notes)


def _export(model: Any, fw: str, req: _Request, *, classes: list[str] | None, source: dict[str, Any], label: str,
            twin: bool, int8_io: bool, progress: bool, num_threads: int, t0: float) -> dict[str, Any]:
    """The one export path: reference outputs, conversion, parity, bundle. `twin` says whether a twin in the
    other framework exists (error messages suggest it; otherwise they suggest another converter)."""
    from edgeprune.export import manifest as mf
    from edgeprune.frameworks import get_adapter

    adapter = get_adapter(fw)
    spec, fmts, quants, notes = req.input, list(req.formats), req.quants, req.notes
    if fw == "keras":
        from edgeprune.export.keras_path import check_model

        check_model(model, spec.shape)
    ref = _reference(adapter, model, req.eval_x, spec)
    if classes is not None and len(classes) != ref.shape[1]:
        raise EdgepruneError(f"{len(classes)} class labels for a model with {ref.shape[1]} outputs")
    params = adapter.count_params(model)
    macs = sum(r["macs"] for r in adapter.layer_rows(model, spec.shape))
    _say(progress, f"{label} ({fw}): {params:,} params, {macs / 1e6:.1f} M MACs; input {spec.layout} "
                   f"{[1, *spec.shape]}; formats {','.join(fmts)}, precisions {','.join(quants)}")
    seconds: dict[str, float] = {"load": round(time.perf_counter() - t0, 2)}
    if fw == "keras" and "onnx" in fmts:
        from edgeprune.export.keras_path import ONNX_NOTE, TWIN_NOTE

        note = ONNX_NOTE + (TWIN_NOTE if twin else "")
        notes.append(note)
        _say(progress, note)
        fmts = [f for f in fmts if f != "onnx"]
        if not fmts:
            raise EdgepruneError(note)

    feeds = {"tflite": spec.to_tflite(req.eval_x), "onnx": req.eval_x}
    layouts = {"tflite": spec.tflite_layout, "onnx": spec.layout}
    artifacts: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    with atomic_path(req.bundle, force=req.force, is_dir=True) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        work = tmp / ".work"
        work.mkdir()
        convert = _convert_torch if fw == "torch" else _convert_keras
        produced = convert(model, req, fmts, tmp, work, int8_io, twin, progress, seconds, notes)
        for fmt, _, path, _ in produced:
            if fmt == "tflite" and not _rename_tflite_io(path, spec.name, "probs"):
                notes.append(f"{path.name}: input/output tensor names left as the converter wrote them")
        t = time.perf_counter()
        for fmt, q, path, converter in produced:
            row = _check_artifact(fmt, q, path, converter, feeds[fmt], layouts[fmt], req.eval_y, ref, req.thresholds,
                                  params, num_threads, int8_io)
            p = row["parity"]
            _say(progress, f"parity {path.name}: cosine {p['cosine']:.6f}, max abs {p['max_abs_error']:.2e}, "
                           f"top-1 {p['top1_agreement']:.3f}" + (f", accuracy {p['accuracy']:.3f}" if "accuracy" in p else "")
                           + ("  OK" if row["passed"] else "  FAILED: " + "; ".join(row["failures"])))
            (artifacts if row["passed"] else rejected).append(row)
        seconds["parity"] = round(time.perf_counter() - t, 2)
        if rejected:
            (tmp / "rejected").mkdir()
            for row in rejected:
                shutil.move(tmp / row["file"], tmp / "rejected" / row["file"])
                row["file_path"] = f"rejected/{row['file']}"
            (tmp / "rejected" / "parity.json").write_text(json.dumps(
                {"thresholds": req.thresholds, "rejected": [
                    {k: r[k] for k in ("file", "format", "precision", "parity", "failures")} for r in rejected]},
                indent=2) + "\n")
        shutil.rmtree(work, ignore_errors=True)
        seconds["total"] = round(time.perf_counter() - t0, 2)
        eval_y = req.eval_y
        manifest = {
            "format": 1, "name": req.bundle.name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": {**source, "params": params, "macs": macs},
            "input": spec.to_dict(),
            "classes": classes,
            "calibration": {"n": 0 if req.calib is None else int(len(req.calib))},
            "evaluation": {"n": int(len(req.eval_x)), "labels": eval_y is not None,
                           "source_accuracy": None if eval_y is None else float((ref.argmax(1) == eval_y).mean())},
            "int8_io": int8_io, "num_threads": num_threads, "thresholds": req.thresholds,
            "artifacts": artifacts + rejected, "notes": notes, "tools": mf.tool_versions(), "seconds": seconds,
        }
        mf.write_manifest(tmp, manifest)
        mf.write_report(tmp, manifest)
    _say(progress, f"bundle {req.bundle} ({len(artifacts)} accepted, {len(rejected)} rejected, {seconds['total']} s)")
    if rejected:
        fp32 = any(r["precision"] == "fp32" for r in rejected)
        err = EdgepruneError(f"parity failed for {', '.join(r['file'] for r in rejected)} "
                             f"({'; '.join(r['failures'][0] for r in rejected)}); moved to {req.bundle / 'rejected'}"
                             + ("; a float32 file should match its source, so this is a converter error, not "
                                "rounding (seen: onnx2tf 1.28 with torch.cumsum): the manifest lists the file's ops"
                                if fp32 else ""))
        err.manifest = manifest  # type: ignore[attr-defined]
        raise err
    return manifest


def _reference(adapter: Any, model: Any, x: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The source model's outputs on the parity samples: [N, classes], or one clear error."""
    try:
        ref = adapter.forward_proba(model, x)
    except EdgepruneError:
        raise
    except Exception as exc:  # noqa: BLE001 - usually an input spec that does not match the model
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise EdgepruneError(f"the model does not run on input {[1, *spec.shape]} ({spec.layout}): {msg}; "
                             "check the input spec") from exc
    if ref.ndim != 2:
        raise EdgepruneError(f"export handles classifiers with one output [N, classes]; the model returns "
                             f"{list(ref.shape)}")
    return ref


Produced = tuple[str, str, Path, str]  # (format, precision, file in the bundle, converter)


def _convert_torch(model: Any, req: _Request, fmts: list[str], tmp: Path, work: Path, int8_io: bool, twin: bool,
                   progress: bool, seconds: dict[str, float], notes: list[str]) -> list[Produced]:
    """PyTorch -> ONNX (dynamic batch, the shipped ONNX files) and, for TFLite, a static-batch ONNX through onnx2tf."""
    from edgeprune.export import torch_path

    spec, quants = req.input, req.quants
    produced: list[Produced] = []
    t = time.perf_counter()
    ship_fp32 = "onnx" in fmts and "fp32" in quants
    onnx32 = torch_path.to_onnx(model, (tmp if ship_fp32 else work) / "model_fp32.onnx", spec.shape,
                                dynamic_batch=True, input_name=spec.name, twin=twin)
    seconds["torch_to_onnx"] = round(time.perf_counter() - t, 2)
    _say(progress, f"PyTorch -> ONNX (opset {torch_path.OPSET}, {seconds['torch_to_onnx']} s)")
    if "tflite" in fmts:
        from edgeprune.export.rewrite import fold_flatten_linear

        t = time.perf_counter()
        tfl_model, folded = fold_flatten_linear(model, spec.shape)
        if folded:
            notes.append(f"TFLite path: flatten -> {', '.join(folded)} exported as a full-map Conv2d (exact) "
                         "so the channels-first flatten needs no TRANSPOSE in NHWC")
        static = torch_path.to_onnx(tfl_model, work / "model.onnx", spec.shape, dynamic_batch=False,
                                    input_name=spec.name, twin=twin)
        _say(progress, f"onnx2tf: converting to TFLite ({spec.tflite_layout} input) at {', '.join(quants)} (one call)")
        # onnx2tf moves a channels-first input to channels-last unless told to keep it (rank 3 and up; it leaves
        # rank-2 inputs alone)
        keep = spec.tflite_layout == spec.layout and len(spec.layout) >= 3
        files = torch_path.onnx_to_tflite(static, work, None if req.calib is None else spec.to_tflite(req.calib),
                                          set(quants), int8_io, keep_layout=keep, twin=twin)
        produced += _ship_tflite(files, quants, tmp, int8_io, "onnx2tf")
        seconds["onnx_to_tflite"] = round(time.perf_counter() - t, 2)
        _say(progress, f"TFLite written ({seconds['onnx_to_tflite']} s)")
    if "onnx" in fmts:
        from edgeprune.export import onnx_quant

        t = time.perf_counter()
        for q in quants:
            if q == "fp32":
                produced.append(("onnx", q, onnx32, "torch.onnx"))
            elif q == "fp16":
                produced.append(("onnx", q, onnx_quant.to_fp16(onnx32, tmp / "model_fp16.onnx"),
                                 "onnxruntime.transformers.float16"))
            elif q == "dynamic":
                produced.append(("onnx", q, onnx_quant.to_int8_dynamic(onnx32, tmp / "model_dynamic.onnx", work),
                                 "onnxruntime.quantization.quantize_dynamic"))
            elif q == "int8":
                produced.append(("onnx", q, onnx_quant.to_int8_static(onnx32, tmp / "model_int8.onnx", req.calib,
                                                                      spec.name, work),
                                 "onnxruntime.quantization.quantize_static (QDQ, per-channel)"))
        seconds["onnx_variants"] = round(time.perf_counter() - t, 2)
        _say(progress, f"ONNX variants written ({seconds['onnx_variants']} s)")
    return produced


def _convert_keras(model: Any, req: _Request, fmts: list[str], tmp: Path, work: Path, int8_io: bool, twin: bool,
                   progress: bool, seconds: dict[str, float], notes: list[str]) -> list[Produced]:
    """Keras -> TFLite through TFLiteConverter (the input keeps the Keras layout; ONNX was dropped earlier)."""
    from edgeprune.export import keras_path

    t = time.perf_counter()
    calib = None if req.calib is None else req.input.to_tflite(req.calib)
    files, route = keras_path.keras_to_tflite(model, work, calib, set(req.quants), int8_io, twin=twin)
    produced = _ship_tflite(files, req.quants, tmp, int8_io, f"tf.lite.TFLiteConverter.{route}")
    seconds["keras_to_tflite"] = round(time.perf_counter() - t, 2)
    _say(progress, f"TFLite written via TFLiteConverter.{route} ({seconds['keras_to_tflite']} s)")
    return produced


def _ship_tflite(files: dict[str, Path], quants: list[str], tmp: Path, int8_io: bool, converter: str) -> list[Produced]:
    """Move the converter's files into the bundle under their final names."""
    produced: list[Produced] = []
    for q in quants:
        dst = tmp / _tflite_name(q, int8_io)
        shutil.move(files[q], dst)
        produced.append(("tflite", q, dst, converter))
    return produced


def _rename_tflite_io(path: Path, input_name: str, output_name: str) -> bool:
    """Give a .tflite's input and output tensors (and its signature's keys) the ONNX names; onnx2tf and the
    TFLiteConverter leave names like 'serving_default_logmel:0' and 'PartitionedCall:0' on some variants."""
    try:
        from tensorflow.lite.tools import flatbuffer_utils as fu

        model = fu.read_model(str(path))
        sg = model.subgraphs[0]
        if len(sg.inputs) != 1 or len(sg.outputs) != 1:
            return False
        sg.tensors[sg.inputs[0]].name = input_name.encode()
        sg.tensors[sg.outputs[0]].name = output_name.encode()
        for sig in model.signatureDefs or []:
            for t in sig.inputs or []:
                t.name = input_name.encode()
            for t in sig.outputs or []:
                t.name = output_name.encode()
        fu.write_model(model, str(path))
        return True
    except Exception:  # noqa: BLE001 - names are cosmetic; parity still checks the file
        return False


def _tflite_name(q: str, int8_io: bool) -> str:
    return f"model_{q}.tflite" if q != "int8" or int8_io else "model_int8_float_io.tflite"


def _check_artifact(fmt: str, q: str, path: Path, converter: str, x: np.ndarray, layout: str,
                    eval_y: np.ndarray | None, ref: np.ndarray, th: dict[str, float | None], params: int,
                    num_threads: int, int8_io: bool) -> dict[str, Any]:
    """Run one file in its runtime on `x` (already in the file's input layout) and judge it against `ref`."""
    from edgeprune.export import parity

    try:
        if fmt == "tflite":
            got = parity.run_tflite(path, x, num_threads)
            io, ops = parity.tflite_io(path, layout), parity.tflite_ops(path)
        else:
            got = parity.run_onnx(path, x, num_threads)
            io, ops = parity.onnx_io(path, layout), parity.onnx_ops(path)
        metrics = parity.compare(ref, got, eval_y)
        failures = parity.check(metrics, q, th)
    except Exception as exc:  # noqa: BLE001 - an artifact its runtime cannot run is rejected, not a crash
        io, ops = {}, {}
        metrics = {"n": 0, "max_abs_error": float("nan"), "cosine": float("nan"), "cosine_min": float("nan"),
                   "top1_agreement": float("nan")}
        failures = [f"does not run in its runtime: {str(exc).splitlines()[0][:200] if str(exc) else repr(exc)}"]
    size = path.stat().st_size
    transposes = int(ops.get("TRANSPOSE", 0) + ops.get("Transpose", 0))
    flex = sorted(k for k in ops if str(k).startswith("Flex") or k == "CUSTOM")
    if flex:
        failures.append(f"needs non-builtin ops {flex}")
    return {"file": path.name, "format": fmt, "precision": q, "converter": converter,
            "int8_io": bool(q == "int8" and int8_io and fmt == "tflite"),
            "size_bytes": size, "sha256": sha256_file(path), "bytes_per_param": size / max(params, 1),
            **io, "ops": dict(sorted(ops.items())), "transpose_ops": transposes,
            "parity": metrics, "passed": not failures, "failures": failures}
