"""export() and export_model(): one call, every format and precision, every artifact checked against its source.

export(checkpoint) is a thin wrapper: it reads an edgeprune checkpoint, takes the model's inputs and task from its
architecture, and hands the loaded model to the same code as export_model(model, input_spec(s)), which exports any
PyTorch or Keras model held in memory (a classifier unless told its task).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from benchmarks.arrays import arrange
from edgeprune.errors import EdgepruneError
from edgeprune.fileio import atomic_path, refuse_overwrite, sha256_file
from edgeprune.models.input_spec import InputSpec
from edgeprune.tasks import Task, get_task

FORMATS = ("tflite", "onnx")
QUANTS = ("fp32", "fp16", "dynamic", "int8")
QUANT_ALIASES = {"float32": "fp32", "float16": "fp16", "uint8": "dynamic", "dynamic_range": "dynamic", "all": "all"}
# Per parity kind: float files must compute the same function (cosine / output SNR); quantized files must agree
# on what the task reads (top-1, frame argmax) or stay close (SNR). Override with thresholds={...} / --threshold.
THRESHOLDS = {
    "classification": {"fp32_cosine": 0.9999, "fp16_cosine": 0.999, "dynamic_top1": 0.95, "int8_top1": 0.95},
    "frames": {"fp32_cosine": 0.9999, "fp16_cosine": 0.999, "dynamic_frame_agreement": 0.9,
               "int8_frame_agreement": 0.9},
    "regression": {"fp32_snr_db": 40.0, "fp16_snr_db": 30.0, "dynamic_snr_db": 20.0, "int8_snr_db": 15.0},
}
DEFAULT_THRESHOLDS = THRESHOLDS["classification"]
THRESHOLD_SUFFIXES = ("_cosine", "_top1", "_frame_agreement", "_snr_db")
DEFAULT_CALIB, DEFAULT_EVAL = 200, 200
# A model edgeprune did not register is taken to be a classifier with one output [N, classes].
FOREIGN_TASK = {"name": None, "kind": "classification", "metric": "accuracy", "select_mode": "max",
                "parity": "classification", "output": {"name": "probs", "kind": "probs", "axes": "K"}}

Arrays = np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray]


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
           quant: str | Sequence[str] = QUANTS, calib: Arrays | None = None, eval_x: Arrays | None = None,
           eval_y: np.ndarray | None = None, int8_io: bool = True, thresholds: dict[str, float] | None = None,
           force: bool = False, progress: bool = True, name: str | None = None, framework: str | None = None,
           num_threads: int = 1, eval_meta: Mapping[str, np.ndarray] | None = None,
           fold_convs: bool = True, pad: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, Any]:
    """Export a checkpoint to `out_dir/<name>/` and return its manifest (also written as manifest.json).

    The model's inputs and task come from its architecture. `calib` / `eval_x` hold the task's inputs: one array
    for a single-input model or {input name: array}, in the data's feature layout (e.g. log-mel [N, 40, 500]) or
    already in the model's. `eval_y` and `eval_meta` (what the task's metric needs besides labels, e.g. the noisy
    and clean waves of enhancement) add the task metric of every file. `framework` picks the twin to export
    (default: the checkpoint's; weights transfer exactly). `pad`: per TFLite precision, {layer: width} to pad the
    checkpoint's pruned layers back to with zero channels in that file (`pruning.pad`: the same outputs, a width
    the target runs faster; `latency.padding.pad_plan` says which). Everything else is as in export_model().
    """
    from edgeprune import checkpoint as ckpt_mod
    from edgeprune.models import input_specs, output_axes, task_of
    from edgeprune.models.registry import has_twin

    t0 = time.perf_counter()
    checkpoint_path = Path(checkpoint_path)
    spec = ckpt_mod.read_spec(checkpoint_path)
    fw = framework or spec["framework"]
    task = task_of(spec["arch"])
    req = _request(input_specs(spec["arch"], fw), fw, Path(out_dir) / (name or checkpoint_path.resolve().name),
                   formats, quant, calib, eval_x, eval_y, eval_meta, thresholds, force, task,
                   output_axes(spec["arch"], fw), fold_convs)
    ckpt = ckpt_mod.load(checkpoint_path, framework=framework)
    source = {"checkpoint": str(checkpoint_path), "checkpoint_framework": spec["framework"], "framework": fw,
              "weights_sha256": spec.get("weights_sha256"), "model": spec["arch"]["model"], "arch": spec["arch"],
              "transforms": [t.to_json() for t in ckpt.transforms]}
    twin = has_twin(spec["arch"])
    padded = _padded(ckpt.model, fw, spec, req, pad or {})
    return _export(ckpt.model, fw, req, classes=ckpt.classes, source=source, label=str(checkpoint_path),
                   twin=twin, int8_io=int8_io, progress=progress, num_threads=num_threads, t0=t0, padded=padded)


def _padded(model: Any, fw: str, spec: dict[str, Any], req: _Request, pad: Mapping[str, Mapping[str, int]]
            ) -> list[tuple[list[str], Any, list[str]]]:
    """The padded models of `pad`, one per distinct set of widths: (its TFLite precisions, model, notes)."""
    from edgeprune.pruning.pad import pad_channels

    bad = sorted(set(pad) - set(req.quants))
    if bad:
        raise EdgepruneError(f"padding for {', '.join(bad)}: not among the precisions exported "
                             f"({', '.join(req.quants)})")
    if pad and "tflite" not in req.formats:
        raise EdgepruneError("padding applies to the TFLite files; add tflite to the formats")
    by_widths: dict[tuple[tuple[str, int], ...], list[str]] = {}  # one padded model serves equal widths
    for q in req.quants:
        if pad.get(q):
            by_widths.setdefault(tuple(sorted(pad[q].items())), []).append(q)
    return [(qs, *pad_channels(model, fw, spec, dict(widths))) for widths, qs in by_widths.items()]


def export_model(model: Any, input_spec: InputSpec | Sequence[InputSpec], out_dir: str | Path = "export",
                 name: str | None = None, classes: Sequence[str] | None = None, formats: str | Sequence[str] = FORMATS,
                 quant: str | Sequence[str] = QUANTS, calib: Arrays | None = None, eval_x: Arrays | None = None,
                 eval_y: np.ndarray | None = None, int8_io: bool = True, thresholds: dict[str, float] | None = None,
                 force: bool = False, progress: bool = True, num_threads: int = 1, task: Task | str | None = None,
                 model_output_axes: str | None = None,
                 eval_meta: Mapping[str, np.ndarray] | None = None, fold_convs: bool = True) -> dict[str, Any]:
    """Export an in-memory model (torch.nn.Module or keras.Model) to `out_dir/<name>/` (default name: the
    model's) and return its manifest (also written as manifest.json).

    `input_spec` is the input in the model's own layout, e.g. InputSpec((40, 101), "NCW") for a PyTorch Conv1d
    over 40 mel bands x 101 frames; a list of specs for a model with several inputs (in its call order). Without
    `task` the model is a classifier with one output [N, classes]: PyTorch models are taken to return logits (the
    exported graph ends in softmax), Keras models are exported as they are (keras.applications classifiers end in
    softmax). With a `task` (an edgeprune task or its name) the output is the task's (`model_output_axes` says
    how the model lays it out, default the task's axes). formats: "tflite", "onnx" (PyTorch only); quant:
    "fp32", "fp16", "dynamic" (int8 weights, float activations; the seed's "uint8"), "int8" (full integer from
    `calib`; int8 I/O unless `int8_io=False`). `calib` and `eval_x` are float samples, one array per input (a
    list or {name: array}); parity runs every artifact in its runtime on `eval_x` (held-out samples; `eval_y` and
    `eval_meta` add the task metric), each runtime fed the layout its file takes. `classes` (optional) are stored
    as the labels. `fold_convs` (default on) rewrites each conv over one input channel for the TFLite files:
    its kernel rows stacked as channels, then a one-row conv (exact; XNNPACK's int8 conv costs 8 channels' work
    for one otherwise). A parity failure moves the artifact into `<bundle>/rejected/` and raises EdgepruneError after
    the bundle is written. Nothing is written at the final path until everything has succeeded or been rejected.
    """
    from edgeprune.frameworks import framework_of

    t0 = time.perf_counter()
    fw = framework_of(model)
    model_name = model.name if fw == "keras" else type(model).__name__
    specs = [input_spec] if isinstance(input_spec, InputSpec) else list(input_spec)
    task_obj = None if task is None else get_task(task)
    req = _request(specs, fw, Path(out_dir) / (name or model_name), formats, quant, calib, eval_x, eval_y, eval_meta,
                   thresholds, force, task_obj, model_output_axes, fold_convs)
    source = {"checkpoint": None, "checkpoint_framework": None, "framework": fw, "weights_sha256": None,
              "model": model_name, "arch": None, "transforms": []}
    return _export(model, fw, req, classes=None if classes is None else list(classes), source=source,
                   label=f"in-memory {fw} model {model_name}", twin=False, int8_io=int8_io, progress=progress,
                   num_threads=num_threads, t0=t0)


@dataclass
class _Request:
    """The checked arguments of one export: what to write where, and the data (float32, the model's layout)."""

    inputs: list[InputSpec]  # resolved: tflite_layout is set
    bundle: Path
    force: bool
    formats: list[str]
    quants: list[str]
    thresholds: dict[str, float | None]
    calib: list[np.ndarray] | None
    eval_x: list[np.ndarray]
    eval_y: np.ndarray | None
    eval_meta: dict[str, np.ndarray]
    task: dict[str, Any]  # the manifest's task section
    task_obj: Task | None
    model_axes: str  # the model's output axes (no batch), in the task's letters
    notes: list[str]
    fold_convs: bool = True
    rewrites: dict[str, list[str]] = field(default_factory=dict)  # TFLite-path rewrite -> the layers it changed
    tflite_quants: list[str] | None = None  # the TFLite precisions of this conversion (None: all of `quants`)
    padded: dict[str, list[str]] = field(default_factory=dict)  # TFLite precision -> its padded layers, in words

    def tflite(self) -> list[str]:
        return self.quants if self.tflite_quants is None else self.tflite_quants

    @property
    def parity_kind(self) -> str:
        return self.task["parity"]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.inputs]


def _arrays(given: Arrays, specs: list[InputSpec], what: str) -> list[np.ndarray]:
    """One checked float32 array per input, in the model's layout, from an array, a list or a {name: array}."""
    if isinstance(given, np.ndarray) or not isinstance(given, (Mapping, list, tuple)):
        given = [given]
    if isinstance(given, Mapping):
        missing = [s.name for s in specs if s.name not in given]
        if missing:
            raise EdgepruneError(f"{what}: missing input(s) {', '.join(missing)}; the model takes "
                                 f"{', '.join(s.name for s in specs)}")
        extra = sorted(set(given) - {s.name for s in specs})
        if extra:
            raise EdgepruneError(f"{what}: unexpected input(s) {', '.join(extra)}; the model takes "
                                 f"{', '.join(s.name for s in specs)}")
        given = [given[s.name] for s in specs]
    if len(given) != len(specs):
        raise EdgepruneError(f"{what}: {len(given)} array(s) for a model with {len(specs)} input(s) "
                             f"({', '.join(s.name for s in specs)})")
    arrays = [s.check(x, f"{what}" + (f" '{s.name}'" if len(specs) > 1 else "")) for s, x in zip(specs, given)]
    if len({len(a) for a in arrays}) > 1:
        raise EdgepruneError(f"{what}: the inputs have different sample counts {[len(a) for a in arrays]}")
    return arrays


def _request(input_specs: list[InputSpec], framework: str, bundle: Path, formats: str | Sequence[str],
             quant: str | Sequence[str], calib: Any, eval_x: Any, eval_y: Any, eval_meta: Any,
             thresholds: dict[str, float] | None, force: bool, task: Task | None,
             model_axes: str | None, fold_convs: bool = True) -> _Request:
    """Check everything that can be checked without the model: a bad argument or array fails before any
    conversion, and before anything is written."""
    fmts = normalize_list(formats, FORMATS, "format")
    quants = normalize_list(quant, QUANTS, "precision")
    task_doc = task.describe() if task is not None else dict(FOREIGN_TASK)
    th: dict[str, float | None] = dict(THRESHOLDS[task_doc["parity"]])
    for k, v in (thresholds or {}).items():
        if k not in th and not (k.split("_", 1)[0] in QUANTS and k.endswith(THRESHOLD_SUFFIXES)):
            raise EdgepruneError(f"unknown threshold '{k}'; expected one of {', '.join(th)} "
                                 "(or PRECISION_cosine / _top1 / _frame_agreement / _snr_db)")
        th[k] = None if v is None else float(v)
    refuse_overwrite(bundle, force)
    if not input_specs or not all(isinstance(s, InputSpec) for s in input_specs):
        raise EdgepruneError("input_spec: expected an edgeprune InputSpec (or a list of them, one per input)")
    if len({s.name for s in input_specs}) != len(input_specs):
        raise EdgepruneError(f"input names repeat: {[s.name for s in input_specs]}; give each input its own name")
    specs = [s.resolve(framework) for s in input_specs]
    dims = "; ".join(f"{s.name} [N, {', '.join(map(str, s.shape))}]" for s in specs)
    calib32 = _arrays(calib, specs, "calibration data") if calib is not None else None
    if "int8" in quants and calib32 is None:
        raise EdgepruneError(f"int8 export needs calibration data: {dims} float32 samples "
                             "(CLI: --calib N samples of the training split)")
    notes: list[str] = []
    meta = {k: np.asarray(v) for k, v in (eval_meta or {}).items()}
    if eval_x is None:
        if calib32 is None:
            raise EdgepruneError(f"parity needs samples: pass eval_x ({dims}) float32 samples (held-out)")
        eval32, eval_y, meta = [a[:DEFAULT_EVAL] for a in calib32], None, {}
        notes.append("parity ran on calibration samples (no held-out eval_x given)")
    else:
        eval32 = _arrays(eval_x, specs, "evaluation data")
    n = len(eval32[0])
    if eval_y is not None:
        eval_y = np.asarray(eval_y)
        if task_doc["kind"] == "classification" and eval_y.ndim == 2:
            eval_y = eval_y.argmax(1)
        if len(eval_y) != n:
            raise EdgepruneError(f"eval_y has {len(eval_y)} rows for {n} samples")
    for k, v in meta.items():
        if len(v) != n:
            raise EdgepruneError(f"eval_meta['{k}'] has {len(v)} rows for {n} samples")
        if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            raise EdgepruneError(f"eval_meta['{k}'] contains NaN or infinite values")
    axes = model_axes or task_doc["output"]["axes"]
    if sorted(axes) != sorted(task_doc["output"]["axes"]):
        raise EdgepruneError(f"model output axes '{axes}' are not an arrangement of the task's "
                             f"'{task_doc['output']['axes']}'")
    return _Request(specs, bundle, force, fmts, quants, th, calib32, eval32, eval_y, meta, task_doc, task, axes, notes,
                    fold_convs)


def _export(model: Any, fw: str, req: _Request, *, classes: list[str] | None, source: dict[str, Any], label: str,
            twin: bool, int8_io: bool, progress: bool, num_threads: int, t0: float,
            padded: list[tuple[list[str], Any, list[str]]] = ()) -> dict[str, Any]:
    """The one export path: reference outputs, conversion, parity, bundle. `twin` says whether a twin in the
    other framework exists (error messages suggest it; otherwise they suggest another converter). `padded`: the
    TFLite precisions made from a padded model instead (each checked against `model`'s outputs like the rest)."""
    from edgeprune.export import manifest as mf
    from edgeprune.frameworks import get_adapter

    adapter = get_adapter(fw)
    specs, fmts, quants, notes = req.inputs, list(req.formats), req.quants, req.notes
    if fw == "keras":
        from edgeprune.export.keras_path import check_model

        check_model(model, specs)
    ref = _reference(adapter, model, req)
    out_axes = req.task["output"]["axes"]
    if req.task["kind"] == "classification":
        if ref.ndim != 2:
            raise EdgepruneError(f"export handles classifiers with one output [N, classes]; the model returns "
                                 f"{list(ref.shape)} (give its task to export other outputs)")
        if classes is not None and len(classes) != ref.shape[1]:
            raise EdgepruneError(f"{len(classes)} class labels for a model with {ref.shape[1]} outputs")
    source_metric = _task_metric(req, ref)
    params = adapter.count_params(model)
    macs = sum(r["macs"] for r in adapter.layer_rows(model, [s.shape for s in specs]))
    shown = ", ".join(f"{s.name} {s.layout} {[1, *s.shape]}" for s in specs)
    _say(progress, f"{label} ({fw}): {params:,} params, {macs / 1e6:.1f} M MACs; input {shown}; formats "
                   f"{','.join(fmts)}, precisions {','.join(quants)}")
    seconds: dict[str, float] = {"load": round(time.perf_counter() - t0, 2)}
    if fw == "keras" and "onnx" in fmts:
        from edgeprune.export.keras_path import ONNX_NOTE, TWIN_NOTE

        note = ONNX_NOTE + (TWIN_NOTE if twin else "")
        notes.append(note)
        _say(progress, note)
        fmts = [f for f in fmts if f != "onnx"]
        if not fmts:
            raise EdgepruneError(note)

    feeds = {"tflite": [s.to_tflite(x) for s, x in zip(specs, req.eval_x)], "onnx": req.eval_x}
    layouts = {"tflite": [s.tflite_layout for s in specs], "onnx": [s.layout for s in specs]}
    axes = {fmt: [s.file_axes(fmt) for s in specs] for fmt in FORMATS}
    artifacts: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    with atomic_path(req.bundle, force=req.force, is_dir=True) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        work = tmp / ".work"
        work.mkdir()
        convert = _convert_torch if fw == "torch" else _convert_keras
        by_pad = {q for qs, _, _ in padded for q in qs}
        req.tflite_quants = [q for q in req.quants if q not in by_pad]
        produced = convert(model, req, fmts, tmp, work, int8_io, twin, progress, seconds, notes)
        for i, (qs, padded_model, pad_notes) in enumerate(padded):
            t = time.perf_counter()
            (work / f"padded-{i}").mkdir()
            _say(progress, f"TFLite {', '.join(qs)} from the model padded for speed: {'; '.join(pad_notes)}")
            produced += convert(padded_model, replace(req, tflite_quants=qs), ["tflite"], tmp, work / f"padded-{i}",
                                int8_io, twin, progress, {}, notes)
            for q in qs:
                req.padded[q] = pad_notes
            seconds[f"padded_tflite_{i}"] = round(time.perf_counter() - t, 2)
        for q, pad_notes in req.padded.items():
            notes.append(f"TFLite {q}: pruned layers padded back with zero channels, the same outputs at widths the "
                         f"target runs faster ({'; '.join(pad_notes)})")
        for fmt, _, path, _ in produced:
            if fmt == "tflite" and not _rename_tflite_io(path, req.names, req.task["output"]["name"]):
                notes.append(f"{path.name}: input/output tensor names left as the converter wrote them")
        t = time.perf_counter()
        for fmt, q, path, converter in produced:
            row = _check_artifact(fmt, q, path, converter, feeds[fmt], req, layouts[fmt], axes[fmt], ref, params,
                                  num_threads, int8_io)
            _say(progress, _parity_line(path.name, row))
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
        inputs = [s.to_dict() for s in specs]
        manifest = {
            "format": 2, "name": req.bundle.name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": {**source, "params": params, "macs": macs},
            "task": req.task,
            "inputs": inputs, "input": inputs[0],
            "output": {"name": req.task["output"]["name"], "axes": out_axes, "shape": [1, *ref.shape[1:]]},
            "classes": classes,
            "calibration": {"n": 0 if req.calib is None else int(len(req.calib[0]))},
            "evaluation": {"n": int(len(req.eval_x[0])), "labels": req.eval_y is not None, "metric": source_metric,
                           "source_accuracy": source_metric.get("accuracy")},
            "int8_io": int8_io, "num_threads": num_threads, "thresholds": req.thresholds,
            "artifacts": artifacts + rejected, "notes": notes, "tflite_rewrites": req.rewrites,
            "padded": req.padded,
            "tools": mf.tool_versions(), "seconds": seconds,
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


def _parity_line(name: str, row: dict[str, Any]) -> str:
    p = row["parity"]
    parts = [f"cosine {p['cosine']:.6f}", f"max abs {p['max_abs_error']:.2e}"]
    for key, label in (("top1_agreement", "top-1"), ("frame_agreement", "frames"), ("snr_db", "SNR dB")):
        if key in p:
            parts.append(f"{label} {p[key]:.3f}")
    metric = p.get("metric") or {}
    parts += [f"{k} {v:.3f}" for k, v in metric.items() if isinstance(v, float) and k != "log_loss"]
    return f"parity {name}: {', '.join(parts)}" + ("  OK" if row["passed"] else "  FAILED: " + "; ".join(row["failures"]))


def _reference(adapter: Any, model: Any, req: _Request) -> np.ndarray:
    """The source model's outputs on the parity samples, in the task's axes, or one clear error."""
    try:
        ref = adapter.predict(model, req.eval_x, req.task["output"]["kind"])
    except EdgepruneError:
        raise
    except Exception as exc:  # noqa: BLE001 - usually an input spec that does not match the model
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        shown = ", ".join(f"'{s.name}' {[1, *s.shape]} ({s.layout})" for s in req.inputs)
        raise EdgepruneError(f"the model does not run on its input(s) {shown}: {msg}; check the input spec") from exc
    if not np.isfinite(ref).all():
        raise EdgepruneError("the source model's outputs on the evaluation data contain NaN or infinite values")
    if ref.ndim != len(req.model_axes) + 1:
        raise EdgepruneError(f"the model returns {list(ref.shape)}; its output axes are '{req.model_axes}' "
                             f"({len(req.model_axes)} besides the batch)")
    return arrange(ref, "N" + req.model_axes, "N" + req.task["output"]["axes"])


def _task_metric(req: _Request, outputs: np.ndarray) -> dict[str, Any]:
    """The task's metric of outputs on the parity samples ({} without labels or the data it needs)."""
    from benchmarks.metrics import task_metrics

    if req.eval_y is None and not req.eval_meta:
        return {}
    try:
        return task_metrics(req.task, outputs, req.eval_y, req.eval_meta)
    except (ValueError, KeyError, IndexError) as exc:
        raise EdgepruneError(f"the {req.task['kind']} metric cannot be computed on the evaluation data: {exc}") from exc


Produced = tuple[str, str, Path, str]  # (format, precision, file in the bundle, converter)


def _convert_torch(model: Any, req: _Request, fmts: list[str], tmp: Path, work: Path, int8_io: bool, twin: bool,
                   progress: bool, seconds: dict[str, float], notes: list[str]) -> list[Produced]:
    """PyTorch -> ONNX (dynamic batch, the shipped ONNX files) and, for TFLite, a static-batch ONNX through onnx2tf."""
    from edgeprune.export import torch_path

    specs, quants = req.inputs, req.quants
    shapes = [s.shape for s in specs]
    out_name = req.task["output"]["name"]
    softmax = req.task["output"]["kind"] == "probs"  # PyTorch classifiers return logits
    produced: list[Produced] = []
    t = time.perf_counter()
    ship_fp32 = "onnx" in fmts and "fp32" in quants
    onnx32 = torch_path.to_onnx(model, (tmp if ship_fp32 else work) / "model_fp32.onnx", shapes, req.names, out_name,
                                dynamic_batch=True, twin=twin, softmax=softmax)
    seconds["torch_to_onnx"] = round(time.perf_counter() - t, 2)
    _say(progress, f"PyTorch -> ONNX (opset {torch_path.OPSET}, {seconds['torch_to_onnx']} s)")
    tflite_quants = req.tflite()
    if "tflite" in fmts and tflite_quants:
        from edgeprune.export.rewrite import fold_flatten_linear, fold_one_channel_convs

        t = time.perf_counter()
        tfl_model, folded = fold_flatten_linear(model, shapes)
        if folded:
            req.rewrites["flatten_linear_as_conv"] = folded
            notes.append(f"TFLite path: flatten -> {', '.join(folded)} exported as a full-map Conv2d (exact) "
                         "so the channels-first flatten needs no TRANSPOSE in NHWC")
        if req.fold_convs:
            tfl_model, rows = fold_one_channel_convs(tfl_model, shapes)
            _note_folded(req, rows)
        static = torch_path.to_onnx(tfl_model, work / "model.onnx", shapes, req.names, out_name, dynamic_batch=False,
                                    twin=twin, softmax=softmax)
        _say(progress, f"onnx2tf: converting to TFLite ({', '.join(s.tflite_layout for s in specs)} input) at "
                       f"{', '.join(tflite_quants)} (one call)")
        # onnx2tf moves a channels-first input to channels-last unless told to keep it (rank 3 and up; it leaves
        # rank-2 inputs alone). It also checks its conversion on sample inputs: always give it real ones.
        keep = [s.name for s in specs if s.tflite_layout == s.layout and len(s.layout) >= 3]
        samples = req.calib if req.calib is not None else req.eval_x
        files = torch_path.onnx_to_tflite(static, work, {s.name: s.to_tflite(x) for s, x in zip(specs, samples)},
                                          set(tflite_quants), int8_io, keep_layout=keep, twin=twin)
        produced += _ship_tflite(files, tflite_quants, tmp, int8_io, "onnx2tf")
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
                calib = dict(zip(req.names, req.calib))
                produced.append(("onnx", q, onnx_quant.to_int8_static(onnx32, tmp / "model_int8.onnx", calib, work),
                                 "onnxruntime.quantization.quantize_static (QDQ, per-channel)"))
        seconds["onnx_variants"] = round(time.perf_counter() - t, 2)
        _say(progress, f"ONNX variants written ({seconds['onnx_variants']} s)")
    return produced


def _convert_keras(model: Any, req: _Request, fmts: list[str], tmp: Path, work: Path, int8_io: bool, twin: bool,
                   progress: bool, seconds: dict[str, float], notes: list[str]) -> list[Produced]:
    """Keras -> TFLite through TFLiteConverter (the input keeps the Keras layout; ONNX was dropped earlier)."""
    from edgeprune.export import keras_path

    quants = req.tflite()
    if not quants:
        return []
    t = time.perf_counter()
    calib = None if req.calib is None else [s.to_tflite(x) for s, x in zip(req.inputs, req.calib)]
    if req.fold_convs:
        from edgeprune.export.keras_rewrite import fold_one_channel_convs

        model, rows = fold_one_channel_convs(model)
        _note_folded(req, rows)
    files, route = keras_path.keras_to_tflite(model, work, calib, set(quants), int8_io, twin=twin)
    produced = _ship_tflite(files, quants, tmp, int8_io, f"tf.lite.TFLiteConverter.{route}")
    seconds["keras_to_tflite"] = round(time.perf_counter() - t, 2)
    _say(progress, f"TFLite written via TFLiteConverter.{route} ({seconds['keras_to_tflite']} s)")
    return produced


def _note_folded(req: _Request, layers: list[str]) -> None:
    if layers:
        req.rewrites["one_channel_conv_rows_as_channels"] = layers
        req.notes.append(f"TFLite path: {', '.join(layers)} (one input channel) computed as its kernel rows stacked "
                         "as channels, then a one-row conv (exact; XNNPACK's int8 conv does 8 channels' work for "
                         "one otherwise; fold_convs=False / --no-fold keeps it)")


def _ship_tflite(files: dict[str, Path], quants: list[str], tmp: Path, int8_io: bool, converter: str) -> list[Produced]:
    """Move the converter's files into the bundle under their final names."""
    produced: list[Produced] = []
    for q in quants:
        dst = tmp / _tflite_name(q, int8_io)
        shutil.move(files[q], dst)
        produced.append(("tflite", q, dst, converter))
    return produced


def _rename_tflite_io(path: Path, input_names: list[str], output_name: str) -> bool:
    """Give a .tflite's input and output tensors (and its signature's keys) the model's names; onnx2tf and the
    TFLiteConverter leave names like 'serving_default_logmel:0' and 'PartitionedCall:0' on some variants.
    Inputs are matched by name (exact, then a unique substring; a single input by position)."""
    try:
        from tensorflow.lite.tools import flatbuffer_utils as fu

        from edgeprune.export.parity import match_inputs

        model = fu.read_model(str(path))
        sg = model.subgraphs[0]
        if len(sg.outputs) != 1:
            return False
        tensors = [{"name": sg.tensors[i].name.decode(), "index": int(i)} for i in sg.inputs]
        names = {d["index"]: n for d, n in zip(match_inputs(input_names, tensors, path.name), input_names)}
        names[int(sg.outputs[0])] = output_name
        for index, name in names.items():
            sg.tensors[index].name = name.encode()
        for sig in model.signatureDefs or []:
            for t in list(sig.inputs or []) + list(sig.outputs or []):
                if int(t.tensorIndex) in names:
                    t.name = names[int(t.tensorIndex)].encode()
        fu.write_model(model, str(path))
        return True
    except Exception:  # noqa: BLE001 - names are cosmetic; parity still checks the file
        return False


def _tflite_name(q: str, int8_io: bool) -> str:
    return f"model_{q}.tflite" if q != "int8" or int8_io else "model_int8_float_io.tflite"


def _check_artifact(fmt: str, q: str, path: Path, converter: str, x: list[np.ndarray], req: _Request,
                    layouts: list[str], axes: list[str | None], ref: np.ndarray, params: int, num_threads: int,
                    int8_io: bool) -> dict[str, Any]:
    """Run one file in its runtime on `x` (already in the file's input layouts) and judge it against `ref`."""
    from edgeprune.export import parity

    task_axes = req.task["output"]["axes"]
    try:
        raw = (parity.run_tflite if fmt == "tflite" else parity.run_onnx)(path, x, req.names, num_threads)
        file_axes = parity.output_axes(raw.shape, task_axes, ref.shape[1:])
        got = parity.to_task_axes(raw, file_axes, task_axes)
        io_fn = parity.tflite_io if fmt == "tflite" else parity.onnx_io
        io = io_fn(path, req.names, layouts, axes, file_axes)
        ops = parity.tflite_ops(path) if fmt == "tflite" else parity.onnx_ops(path)
        labels = req.eval_y if req.task["kind"] == "classification" else None
        metrics = parity.compare(ref, got, req.parity_kind, labels)
        failures = parity.check(metrics, q, req.thresholds, req.parity_kind)
        if not metrics.get("non_finite"):
            metric = _task_metric(req, got)
            if metric:
                metrics["metric"] = metric
    except Exception as exc:  # noqa: BLE001 - an artifact its runtime cannot run is rejected, not a crash
        io, ops = {}, {}
        metrics = {"n": 0, "max_abs_error": float("nan"), "cosine": float("nan"), "cosine_min": float("nan")}
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
