"""export(): one call, every format and precision, every artifact checked against its source model."""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.fileio import atomic_path, refuse_overwrite, sha256_file

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


def check_features(x: Any, arch_args: dict[str, Any], what: str) -> np.ndarray:
    """Features [N, n_mels, n_frames] (or [..., 1]) of a floating dtype -> float32 [N, n_mels, n_frames]."""
    want = (int(arch_args.get("n_mels", 40)), int(arch_args.get("n_frames", 500)))
    expected = f"a float32 array [N, {want[0]}, {want[1]}] of log-mel features"
    if not isinstance(x, np.ndarray):
        raise EdgepruneError(f"{what}: got {type(x).__name__}; expected {expected}")
    if not np.issubdtype(x.dtype, np.floating):
        raise EdgepruneError(f"{what}: dtype {x.dtype}; expected {expected}")
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or tuple(x.shape[1:]) != want or len(x) == 0:
        raise EdgepruneError(f"{what}: shape {list(x.shape)}; expected {expected} (N >= 1)")
    if not np.isfinite(x).all():
        raise EdgepruneError(f"{what}: contains NaN or infinite values; expected finite features")
    return np.ascontiguousarray(x, dtype=np.float32)


def export(checkpoint_path: str | Path, out_dir: str | Path = "export", formats: str | Sequence[str] = FORMATS,
           quant: str | Sequence[str] = QUANTS, calib: np.ndarray | None = None, eval_x: np.ndarray | None = None,
           eval_y: np.ndarray | None = None, int8_io: bool = True, thresholds: dict[str, float] | None = None,
           force: bool = False, progress: bool = True, name: str | None = None, framework: str | None = None,
           num_threads: int = 1) -> dict[str, Any]:
    """Export a checkpoint to `out_dir/<name>/` and return its manifest (also written as manifest.json).

    formats: "tflite", "onnx"; quant: "fp32", "fp16", "dynamic" (int8 weights, float activations; the seed's
    "uint8"), "int8" (full integer from `calib`; int8 I/O unless `int8_io=False`). `calib` and `eval_x` are
    float features [N, 40, 500]; parity runs on `eval_x` (held-out samples; `eval_y` adds accuracy).
    `framework` picks the twin to export (default: the checkpoint's; weights transfer exactly).
    A parity failure moves the artifact into `<bundle>/rejected/` and raises EdgepruneError after the bundle
    is written. Nothing is written at the final path until everything has succeeded or been rejected.
    """
    from edgeprune import checkpoint as ckpt_mod
    from edgeprune.export import manifest as mf
    from edgeprune.frameworks import get_adapter
    from edgeprune.training.run import describe

    t0 = time.perf_counter()
    fmts = normalize_list(formats, FORMATS, "format")
    quants = normalize_list(quant, QUANTS, "precision")
    th = dict(DEFAULT_THRESHOLDS)
    for k, v in (thresholds or {}).items():
        if k not in DEFAULT_THRESHOLDS and not k.endswith(("_cosine", "_top1")):
            raise EdgepruneError(f"unknown threshold '{k}'; expected one of {', '.join(DEFAULT_THRESHOLDS)} "
                                 "(or PRECISION_cosine / PRECISION_top1)")
        th[k] = None if v is None else float(v)
    checkpoint_path = Path(checkpoint_path)
    spec = ckpt_mod.read_spec(checkpoint_path)
    name = name or checkpoint_path.resolve().name
    bundle = Path(out_dir) / name
    refuse_overwrite(bundle, force)

    # data first: a bad array must fail before any conversion, and before anything is written
    args = spec["arch"]["args"]
    calib32 = check_features(calib, args, "calibration data") if calib is not None else None
    if "int8" in quants and calib32 is None:
        raise EdgepruneError("int8 export needs calibration data: calib=[N, 40, 500] float32 features "
                             "(CLI: --calib N samples of the training split)")
    notes: list[str] = []
    if eval_x is None:
        if calib32 is None:
            raise EdgepruneError("parity needs samples: pass eval_x=[N, 40, 500] float32 features (held-out)")
        eval32, eval_y = calib32[:DEFAULT_EVAL], None
        notes.append("parity ran on calibration samples (no held-out eval_x given)")
    else:
        eval32 = check_features(eval_x, args, "evaluation data")
    if eval_y is not None:
        eval_y = np.asarray(eval_y)
        if eval_y.ndim == 2:
            eval_y = eval_y.argmax(1)
        if len(eval_y) != len(eval32):
            raise EdgepruneError(f"eval_y has {len(eval_y)} labels for {len(eval32)} samples")

    ckpt = ckpt_mod.load(checkpoint_path, framework=framework)
    fw = ckpt.framework
    adapter = get_adapter(fw)
    info = describe(ckpt.model, fw, ckpt.arch)
    _say(progress, f"{checkpoint_path} ({fw}): {info['params']:,} params, {info['macs'] / 1e6:.1f} M MACs; "
                   f"formats {','.join(fmts)}, precisions {','.join(quants)}")
    ref = adapter.predict_proba(ckpt.model, eval32)
    seconds: dict[str, float] = {"load": round(time.perf_counter() - t0, 2)}
    if fw == "keras" and "onnx" in fmts:
        from edgeprune.export.keras_path import ONNX_NOTE

        notes.append(ONNX_NOTE)
        _say(progress, ONNX_NOTE)
        fmts = [f for f in fmts if f != "onnx"]
        if not fmts:
            raise EdgepruneError(ONNX_NOTE)

    nchw = lambda x: x[:, None]  # noqa: E731
    nhwc = lambda x: x[..., None]  # noqa: E731
    artifacts: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    with atomic_path(bundle, force=force, is_dir=True) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        work = tmp / ".work"
        work.mkdir()
        produced: list[tuple[str, str, Path, str]] = []  # (format, precision, path, converter)
        if fw == "torch":
            from edgeprune.export import torch_path

            t = time.perf_counter()
            shape = get_adapter("torch").input_shape(args)
            ship_fp32 = "onnx" in fmts and "fp32" in quants
            onnx32 = torch_path.to_onnx(ckpt.model, (tmp if ship_fp32 else work) / "model_fp32.onnx", shape,
                                        dynamic_batch=True)
            seconds["torch_to_onnx"] = round(time.perf_counter() - t, 2)
            _say(progress, f"PyTorch -> ONNX (opset {torch_path.OPSET}, {seconds['torch_to_onnx']} s)")
            if "tflite" in fmts:
                t = time.perf_counter()
                from edgeprune.export.rewrite import fold_flatten_linear

                tfl_model, folded = fold_flatten_linear(ckpt.model, shape)
                if folded:
                    notes.append(f"TFLite path: flatten -> {', '.join(folded)} exported as a full-map Conv2d (exact) "
                                 "so the channels-first flatten needs no TRANSPOSE in NHWC")
                static = torch_path.to_onnx(tfl_model, work / "model.onnx", shape, dynamic_batch=False)
                _say(progress, "onnx2tf: converting to TFLite at " + ", ".join(quants) + " (one call)")
                files = torch_path.onnx_to_tflite(static, work, nhwc(calib32) if calib32 is not None else None,
                                                  set(quants), int8_io)
                for q in quants:
                    dst = tmp / _tflite_name(q, int8_io)
                    shutil.move(files[q], dst)
                    produced.append(("tflite", q, dst, "onnx2tf"))
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
                        produced.append(("onnx", q, onnx_quant.to_int8_static(onnx32, tmp / "model_int8.onnx",
                                                                              nchw(calib32), torch_path.INPUT_NAME, work),
                                         "onnxruntime.quantization.quantize_static (QDQ, per-channel)"))
                seconds["onnx_variants"] = round(time.perf_counter() - t, 2)
                _say(progress, f"ONNX variants written ({seconds['onnx_variants']} s)")
        elif fw == "keras":
            from edgeprune.export import keras_path

            t = time.perf_counter()
            files, route = keras_path.keras_to_tflite(ckpt.model, work, nhwc(calib32) if calib32 is not None else None,
                                                      set(quants), int8_io)
            for q in quants:
                dst = tmp / _tflite_name(q, int8_io)
                shutil.move(files[q], dst)
                produced.append(("tflite", q, dst, f"tf.lite.TFLiteConverter.{route}"))
            seconds["keras_to_tflite"] = round(time.perf_counter() - t, 2)
            _say(progress, f"TFLite written via TFLiteConverter.{route} ({seconds['keras_to_tflite']} s)")
        else:
            raise EdgepruneError(f"cannot export framework '{fw}'")

        for fmt, _, path, _ in produced:
            if fmt == "tflite" and not _rename_tflite_io(path, "logmel", "probs"):
                notes.append(f"{path.name}: input/output tensor names left as the converter wrote them")
        t = time.perf_counter()
        for fmt, q, path, converter in produced:
            row = _check_artifact(fmt, q, path, converter, eval32, eval_y, ref, th, info["params"], num_threads,
                                  int8_io, nchw, nhwc)
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
                {"thresholds": th, "rejected": [{k: r[k] for k in ("file", "format", "precision", "parity", "failures")}
                                                for r in rejected]}, indent=2) + "\n")
        shutil.rmtree(work, ignore_errors=True)
        seconds["total"] = round(time.perf_counter() - t0, 2)
        manifest = {
            "format": 1, "name": name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": {"checkpoint": str(checkpoint_path), "checkpoint_framework": spec["framework"], "framework": fw,
                       "weights_sha256": spec.get("weights_sha256"), "model": spec["arch"]["model"], "arch": spec["arch"],
                       "pruning": (spec.get("pruning") or {}).get("keep"), "params": info["params"], "macs": info["macs"]},
            "classes": list(ckpt.classes),
            "calibration": {"n": 0 if calib32 is None else int(len(calib32))},
            "evaluation": {"n": int(len(eval32)), "labels": eval_y is not None,
                           "source_accuracy": None if eval_y is None else float((ref.argmax(1) == eval_y).mean())},
            "int8_io": int8_io, "num_threads": num_threads, "thresholds": th,
            "artifacts": artifacts + rejected, "notes": notes, "tools": mf.tool_versions(), "seconds": seconds,
        }
        mf.write_manifest(tmp, manifest)
        mf.write_report(tmp, manifest)
    _say(progress, f"bundle {bundle} ({len(artifacts)} accepted, {len(rejected)} rejected, {seconds['total']} s)")
    if rejected:
        err = EdgepruneError(f"parity failed for {', '.join(r['file'] for r in rejected)} "
                             f"({'; '.join(r['failures'][0] for r in rejected)}); moved to {bundle / 'rejected'}")
        err.manifest = manifest  # type: ignore[attr-defined]
        raise err
    return manifest


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


def _check_artifact(fmt, q, path, converter, eval32, eval_y, ref, th, params, num_threads, int8_io, nchw, nhwc):
    from edgeprune.export import parity

    try:
        if fmt == "tflite":
            got = parity.run_tflite(path, nhwc(eval32), num_threads)
            io, ops = parity.tflite_io(path), parity.tflite_ops(path)
        else:
            got = parity.run_onnx(path, nchw(eval32), num_threads)
            io, ops = parity.onnx_io(path), parity.onnx_ops(path)
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
