"""`edgeprune reproduce dcase-table`: from the DCASE 2021 1a baseline to the seed's quantization table.

Train (or load) the baseline -> passive importance for C1, C2, C3 (the authors' keep rule) -> prune the six
combinations in the table's order -> fine-tune each (Adam, cross-entropy, best validation epoch) -> export each to
TFLite at float32, float16, dynamic-range int8 (the seed's "uint8") and full-integer int8, with parity checks ->
benchmark each artifact on the devices asked -> the table, ours beside the seed's, as MD / CSV / JSON and a plot.

Every step goes through `StepLog`, so a second run with the same settings resumes where the first stopped.
Accuracy per precision is the exporter's: each .tflite run in LiteRT, one clip at a time, on the whole test split
(the seed measured it the same way); the benchmark suite adds latency per device.
"""

from __future__ import annotations

import shlex
import shutil
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import checkpoint
from edgeprune.data.datasets import sample_indices
from edgeprune.errors import EdgepruneError
from edgeprune.reproduce.seed_table import LAYERS, ROWS
from edgeprune.reproduce.shared import bench as shared_bench
from edgeprune.reproduce.shared import after_desktop, cached_data, check_devices
from edgeprune.reproduce.steps import Step, StepLog, default_threads

MODEL = "dcase2021_baseline"
PRECISIONS = ("fp32", "fp16", "dynamic", "int8")
BASELINE = "baseline"
# The seed fine-tunes for 30 epochs. In the quick profile the pruned models reach their best validation accuracy
# by epoch 2-3 of 6 (measured on the synthetic scenes), so quick stops at 3 and keeps the whole job under 15
# minutes on 2 cores; full fine-tunes 10 (six 30-epoch runs on 5,000 clips would take about 2.5 hours on 2 cores).
# --finetune-epochs 30 gives the seed's count.
FINETUNE_EPOCHS = {"quick": 3, "full": 10}
EMULATED_CLIPS = 8
OUT_NAME = "dcase_table"  # the results stem inside the work folder unless --out says otherwise


@dataclass
class Settings:
    """What a run depends on; a work folder holds one run, so changing any of these needs another folder."""

    data: str = "synthetic"
    profile: str = "quick"
    framework: str = "keras"  # the seed's framework and converter (TFLiteConverter)
    checkpoint: str | None = None  # a trained baseline to start from instead of training one
    seed: int = 0
    calib: int = 200
    finetune_epochs: int | None = None  # None: FINETUNE_EPOCHS for the profile, else the profile's epochs
    devices: list[str] = field(default_factory=lambda: ["desktop"])
    bench_runs: int = 30
    thresholds: dict[str, float] = field(default_factory=dict)
    latency_rows: bool = True  # with desktop: a latency-aware twin of every seed row (same MAC budget)
    # Threads each step trains and converts on, whichever executor runs it: results depend on the thread count.
    # None: every CPU of this machine, resolved (and recorded) when the run starts.
    threads: int | None = None

    def __post_init__(self) -> None:
        # Resolved here, so the work folder records the number actually used.
        if self.finetune_epochs is None and self.profile in FINETUNE_EPOCHS:
            self.finetune_epochs = FINETUNE_EPOCHS[self.profile]
        if self.threads is None:
            self.threads = default_threads()

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_work(settings: Settings) -> Path:
    data = "synthetic" if settings.data == "synthetic" else Path(settings.data).name
    return Path("runs") / "reproduce" / f"dcase-table-{data}-{settings.profile}-{settings.framework}"


def run(settings: Settings, work: Path, out: Path | None = None, force: bool = False, progress: bool = True,
        executor=None) -> dict[str, Any]:
    """Run (or resume) the whole job; write OUT.{md,csv,json,png} (default WORK/dcase_table); return the results
    document. `executor` runs the steps (default: `LocalExecutor`, in this process, one at a time)."""
    from edgeprune.reproduce import dcase_results
    from edgeprune.reproduce.executors import LocalExecutor

    check_settings(settings)
    work = Path(work)
    out = Path(out) if out is not None else work / OUT_NAME
    if force and work.exists():
        shutil.rmtree(work)
    executor = executor or LocalExecutor(settings.threads)
    started = time.time()
    data = _data(settings, progress)
    plan = _plan(settings, work, progress)
    # Devices are not part of the run's identity: each is its own step, so asking for another adds only that.
    identity = {k: v for k, v in settings.to_json().items() if k != "devices"}
    steps = StepLog(work, identity, progress=progress, total=len(plan))
    steps.say(f"work folder {work}; {settings.profile} profile, {settings.framework}, data: {data.info.get('source')} "
              f"({len(data['train'])} train / {len(data['validation'])} validation / {len(data['test'])} test clips); "
              f"steps run by the {executor.name} executor on {settings.threads} thread(s) each")
    got = executor.run(plan, steps)

    names = [BASELINE] + [row for row, _ in ROWS] + ([f"{row} (latency)" for row, _ in ROWS]
                                                     if _latency_rows(settings) else [])
    recovery = {n: got[f"fine-tune {n}"] for n in names[1:]}
    choices = {f"{row} (latency)": got[f"latency-aware counts {row}"] for row, _ in ROWS if _latency_rows(settings)}
    exports = {n: got[f"export {n}"] for n in names}
    bench = {d: got[f"benchmark on {d}"] for d in _bench_order(settings)}
    doc = dcase_results.build(settings, data.info, got["evaluate baseline"], got["passive importance (C1, C2, C3)"],
                              recovery, exports, bench, steps.seconds([s.name for s in plan]),
                              wall_seconds=round(time.time() - started, 1),
                              command=command_line(settings, work, out),
                              paired=got.get("paired latency against the baseline"), choices=choices,
                              executor=executor.name, padded=got.get("paired latency of the padded files"))
    dcase_results.write(doc, Path(out))
    steps.say(f"wrote {out}.md, .csv, .json, .png")
    return doc


def check_settings(settings: Settings) -> None:
    """Every setting a run can be refused for, checked before any work (and before an executor starts)."""
    from edgeprune.training.profiles import get_profile

    if settings.framework not in ("keras", "torch"):
        raise EdgepruneError(f"--framework {settings.framework}: expected keras or torch")
    get_profile(settings.profile)  # an unknown profile fails here
    if settings.finetune_epochs is not None and settings.finetune_epochs < 1:
        raise EdgepruneError(f"--finetune-epochs {settings.finetune_epochs}: must be at least 1")
    if settings.calib < 1:
        raise EdgepruneError(f"--calib {settings.calib}: must be at least 1")
    if settings.threads < 1:
        raise EdgepruneError(f"--threads {settings.threads}: must be at least 1")
    check_devices(settings.devices)
    if settings.checkpoint is not None:
        _check_baseline(Path(settings.checkpoint))


def _plan(settings: Settings, work: Path, progress: bool) -> list[Step]:
    """Every step of the job with the steps whose results (or files) it takes; independent ones (the rows'
    fine-tunes and exports) may run at once."""
    base_path = Path(settings.checkpoint) if settings.checkpoint else work / BASELINE
    plan = [Step("train baseline", partial(_train_baseline, settings, base_path, progress), outputs=(base_path,)),
            Step("evaluate baseline", partial(_evaluate_step, base_path, settings), inputs=("train baseline",)),
            Step("passive importance (C1, C2, C3)", partial(_passive_keep, base_path, settings.framework,
                                                            work / "scores.json"),
                 inputs=("train baseline",), outputs=(work / "scores.json",))]
    models = {BASELINE: "train baseline"}

    def recover(name: str, keep_from: str) -> None:
        pruned, tuned = work / "pruned" / name, work / "finetuned" / name
        plan.append(Step(f"prune {name}", partial(_prune_step, base_path, settings.framework, pruned),
                         inputs=(keep_from,), outputs=(pruned,)))
        plan.append(Step(f"fine-tune {name}", partial(_finetune, pruned, settings, tuned, progress),
                         inputs=(f"prune {name}",), outputs=(tuned,)))
        models[name] = f"fine-tune {name}"

    for row, layers in ROWS:
        plan.append(Step(f"keep-lists {row}", partial(_row_keep, layers), inputs=("passive importance (C1, C2, C3)",)))
        recover(row, f"keep-lists {row}")
    if _latency_rows(settings):
        plan.append(Step("latency table on desktop", partial(_latency_table, base_path, settings, work),
                         inputs=("train baseline",), alone=True))
        for row, layers in ROWS:
            plan.append(Step(f"latency-aware counts {row}", partial(_latency_counts, base_path, settings, work, row,
                                                                    layers),
                             inputs=("latency table on desktop", f"prune {row}", "passive importance (C1, C2, C3)")))
            recover(f"{row} (latency)", f"latency-aware counts {row}")
    for name, source in models.items():
        model = work / "finetuned" / name if name != BASELINE else base_path
        bundle = work / "export" / name
        plan.append(Step(f"export {name}", partial(_export, model, bundle, settings, progress), inputs=(source,),
                         outputs=(bundle,)))
    exported = tuple(f"export {name}" for name in models)
    if "desktop" in settings.devices:  # latency cut against MAC cut: pairs timed in one process, not one-shot numbers
        plan.append(Step("paired latency against the baseline",
                         partial(_paired_latency, work / "export", list(models), settings), inputs=exported, alone=True))
    if _latency_rows(settings):  # what `edgeprune export --pad-for desktop` ships, timed the same way
        pruned = [name for name in models if name != BASELINE]
        for name in pruned:
            plan.append(Step(f"export {name} padded for desktop",
                             partial(_export_padded, base_path, work / "finetuned" / name,
                                     work / "export-padded" / name, settings, progress),
                             inputs=("latency table on desktop", models[name])))
        plan.append(Step("paired latency of the padded files",
                         partial(_paired_padded, work / "export", work / "export-padded", pruned, settings),
                         inputs=("export baseline", *(f"export {n} padded for desktop" for n in pruned)), alone=True))
    for device in _bench_order(settings):
        stem = work / "bench" / device
        after = exported + after_desktop(device, settings.devices)
        plan.append(Step(f"benchmark on {device}",
                         partial(_bench, device, [work / "export" / n for n in models], settings, stem, progress),
                         inputs=after, outputs=(stem.with_suffix(".json"),), device=device))
    return plan


def _bench_order(settings: Settings) -> list[str]:
    return sorted(settings.devices, key=lambda d: d != "desktop")  # desktop first


def _data(settings: Settings, progress: bool = False):
    return cached_data(settings.data, settings.profile, progress=progress)


def _finetune_profile(settings: Settings):
    from edgeprune.training.profiles import get_profile

    profile = get_profile(settings.profile)
    return profile if settings.finetune_epochs is None else replace(profile, epochs=settings.finetune_epochs)


def _calib(settings: Settings) -> np.ndarray:
    train = _data(settings)["train"]
    return train.x[sample_indices(train, settings.calib, settings.seed, stratify=True)]


def command_line(settings: Settings, work: Path | None, out: Path | None) -> str:
    """The command line that reproduces this run: every setting that differs from its default, as a flag."""
    default = Settings(profile=settings.profile)
    parts = ["edgeprune reproduce dcase-table", f"--profile {settings.profile}"]
    for name, flag in (("data", "--data"), ("checkpoint", "--checkpoint"), ("framework", "--framework"),
                       ("finetune_epochs", "--finetune-epochs"), ("calib", "--calib"), ("bench_runs", "--bench-runs"),
                       ("seed", "--seed"), ("threads", "--threads")):
        if getattr(settings, name) != getattr(default, name):
            parts.append(f"{flag} {shlex.quote(str(getattr(settings, name)))}")
    parts += [f"--threshold {k}={v}" for k, v in sorted(settings.thresholds.items())]
    parts.append(f"--devices {','.join(settings.devices)}")
    work = Path(work) if work is not None else default_work(settings)
    if work != default_work(settings):
        parts.append(f"--work {shlex.quote(str(work))}")
    if out is not None and Path(out) != work / OUT_NAME:
        parts.append(f"--out {shlex.quote(str(out))}")
    return " ".join(parts)


def _check_baseline(path: Path) -> None:
    spec = checkpoint.read_spec(path)
    if spec["arch"]["model"] != MODEL:
        raise EdgepruneError(f"{path}: a {spec['arch']['model']} checkpoint; the table needs a {MODEL} baseline")
    if checkpoint.transforms_of(spec, path):
        raise EdgepruneError(f"{path} is already pruned; the table starts from the unpruned baseline")


def _train_baseline(settings: Settings, path: Path, progress: bool) -> dict[str, Any]:
    from edgeprune.training import run as training
    from edgeprune.training.profiles import get_profile

    if settings.checkpoint is not None:
        return {"path": str(path), "trained": False}
    summary = training.train(MODEL, settings.framework, _data(settings), get_profile(settings.profile), path,
                             seed=settings.seed, force=True, progress=progress)
    return {"path": str(path), "trained": True, "best_epoch": summary["best_epoch"],
            "validation": summary["validation"], "train_seconds": summary["train_seconds"]}


def _evaluate_step(path: Path, settings: Settings, _trained: Any) -> dict[str, Any]:
    return _evaluate(path, _data(settings), settings.framework)


def _evaluate(path: Path, data, framework: str) -> dict[str, Any]:
    from edgeprune.models.measure import describe
    from edgeprune.training import run as training

    ckpt = checkpoint.load(path, framework=framework)
    report = training.evaluate(ckpt, data, "test")
    info = describe(ckpt.model, ckpt.framework, ckpt.arch)
    return {"accuracy": report["accuracy"], "log_loss": report["log_loss"], "n": report["n"],
            "params": info["params"], "macs": info["macs"]}


def _passive_keep(base_path: Path, framework: str, out: Path, _trained: Any) -> dict[str, list[int]]:
    from edgeprune.pruning.run import score_checkpoint

    scores = score_checkpoint(checkpoint.load(base_path, framework=framework), "passive", list(LAYERS))
    scores.save(out, force=True)
    return scores.keep_sets()


def _row_keep(layers: tuple[str, ...], kept: dict[str, list[int]]) -> dict[str, Any]:
    """The seed row's keep-lists: the passive rule's for the row's layers."""
    return {"keep": {layer: kept[layer] for layer in layers}}


def _prune_step(base_path: Path, framework: str, out: Path, choice: dict[str, Any]) -> dict[str, Any]:
    return _prune(base_path, framework, choice["keep"], out)


def _prune(base_path: Path, framework: str, keep: dict[str, list[int]], out: Path) -> dict[str, Any]:
    from edgeprune.pruning.run import prune_checkpoint
    from edgeprune.pruning.targets import Target

    result = prune_checkpoint(checkpoint.load(base_path, framework=framework), Target(keep=keep), None, out,
                              force=True)
    return {"params": sum(r["params_after"] for r in result.table), "seconds": round(result.seconds, 4)}


def _finetune(pruned: Path, settings: Settings, out: Path, progress: bool, _pruned: Any) -> dict[str, Any]:
    from edgeprune.pruning.run import finetune_checkpoint

    data, profile = _data(settings), _finetune_profile(settings)
    before = _evaluate(pruned, data, settings.framework)
    # The seed fine-tunes with plain cross-entropy (no distillation); so do we, to stay comparable.
    summary = finetune_checkpoint(checkpoint.load(pruned, framework=settings.framework), data, profile, out,
                                  seed=settings.seed, force=True, progress=progress)
    after = _evaluate(out, data, settings.framework)
    return {"test_accuracy_before": before["accuracy"], "test_accuracy_after": after["accuracy"],
            "test_log_loss_after": after["log_loss"], "best_epoch": summary["best_epoch"],
            "epochs": summary["epochs"], "validation_accuracy": summary["validation"]["accuracy"],
            "params": after["params"], "macs": after["macs"]}


def _export(path: Path, bundle: Path, settings: Settings, progress: bool, _model: Any) -> dict[str, Any]:
    from edgeprune.reproduce.shared import export_or_rejected

    test = _data(settings)["test"]
    manifest = export_or_rejected(path, bundle.parent, formats="tflite", quant=",".join(PRECISIONS),
                                  calib=_calib(settings),
                      eval_x=test.x, eval_y=test.y, thresholds=settings.thresholds or None, force=True,
                      progress=progress, name=bundle.name, framework=settings.framework)
    return {"seconds": manifest["seconds"], "params": manifest["source"]["params"], "macs": manifest["source"]["macs"],
            "artifacts": {a["precision"]: {"file": a["file"], "size_bytes": a["size_bytes"],
                                           "accuracy": a["parity"]["accuracy"], "top1_agreement": a["parity"]["top1_agreement"],
                                           "cosine": a["parity"]["cosine"], "transpose_ops": a["transpose_ops"],
                                           "passed": a["passed"]}
                          for a in manifest["artifacts"]},
            "tflite_rewrites": manifest.get("tflite_rewrites", {})}


def _bench(device: str, targets: list[Path], settings: Settings, stem: Path, progress: bool,
           *_exported: Any) -> dict[str, Any]:
    return shared_bench(device, targets, _data(settings)["test"], stem, settings.bench_runs, EMULATED_CLIPS, progress)


def _paired_latency(exports_dir: Path, names: list[str], settings: Settings, *exported: Any) -> dict[str, Any]:
    """Each pruned row's file against the baseline's at every precision, in alternating blocks in one process
    (1 thread, XNNPACK): the medians and the median per-round ratio."""
    from edgeprune.paired import paired_latency

    exports = dict(zip(names, exported))
    tiny = settings.profile == "tiny"
    out: dict[str, Any] = {}
    for name, ex in exports.items():
        if name == BASELINE:
            continue
        for q, art in ex["artifacts"].items():
            base = exports_dir / BASELINE / exports[BASELINE]["artifacts"][q]["file"]
            pruned = exports_dir / name / art["file"]
            if not (base.exists() and pruned.exists()):  # a file parity rejected is not timed
                continue
            timed = paired_latency(str(base), str(pruned), rounds=2 if tiny else 12, block=5 if tiny else 50)
            out.setdefault(name, {})[q] = {"parent_ms": round(timed["parent_ms"], 4),
                                           "pruned_ms": round(timed["pruned_ms"], 4), "ratio": round(timed["ratio"], 4),
                                           "ratio_spread": [round(v, 4) for v in timed["ratio_spread"]]}
    return out


def _export_padded(base_path: Path, path: Path, bundle: Path, settings: Settings, progress: bool,
                   table: dict[str, Any], _model: Any) -> dict[str, Any]:
    """The row's float32, float16 and int8 files with its pruned layers padded back where the baseline's latency table
    predicts the wider count faster (`latency.padding`), as `edgeprune export --pad-for desktop` writes them; no
    bundle where nothing would be padded."""
    from edgeprune.latency import table as tables
    from edgeprune.latency.padding import plan_from_table
    from edgeprune.reproduce.shared import export_or_rejected

    base = checkpoint.load(base_path, framework=settings.framework)
    pad = plan_from_table(tables.load(Path(table["path"])), checkpoint.read_spec(path), base.model, base.framework)
    if not pad:
        return {"padded": {}}
    test = _data(settings)["test"]
    manifest = export_or_rejected(path, bundle.parent, formats="tflite", quant=",".join(pad), calib=_calib(settings),
                                  eval_x=test.x, eval_y=test.y, thresholds=settings.thresholds or None, force=True,
                                  progress=progress, name=bundle.name, framework=settings.framework, pad=pad)
    return {"padded": pad, "artifacts": {a["precision"]: {"file": a["file"], "size_bytes": a["size_bytes"],
                                                          "passed": a["passed"]} for a in manifest["artifacts"]}}


def _paired_padded(exports_dir: Path, padded_dir: Path, names: list[str], settings: Settings, baseline: Any,
                   *padded: Any) -> dict[str, Any]:
    """Each padded file against the baseline's of its precision, as `_paired_latency` times the others."""
    from edgeprune.paired import paired_latency

    tiny = settings.profile == "tiny"
    out: dict[str, Any] = {}
    for name, result in zip(names, padded):
        for q, art in (result.get("artifacts") or {}).items():
            if not art["passed"]:
                continue
            timed = paired_latency(str(exports_dir / BASELINE / baseline["artifacts"][q]["file"]),
                                   str(padded_dir / name / art["file"]), rounds=2 if tiny else 12,
                                   block=5 if tiny else 50)
            out.setdefault(name, {})[q] = {"widths": result["padded"][q], "size_bytes": art["size_bytes"],
                                           "ratio": round(timed["ratio"], 4),
                                           "ratio_spread": [round(v, 4) for v in timed["ratio_spread"]]}
    return out


def _latency_rows(settings: Settings) -> bool:
    return settings.latency_rows and "desktop" in settings.devices


def _latency_table(base_path: Path, settings: Settings, work: Path, _trained: Any) -> dict[str, Any]:
    """The baseline's latency table on this machine for conv1..3 (tiny: a coarse grid, one round)."""
    from edgeprune.bench import load_devices
    from edgeprune.latency import build
    from edgeprune.latency.layer_grid import GRID_PRECISIONS

    tiny = settings.profile == "tiny"
    runner = load_devices().make_runner("desktop", log=lambda line: None)
    _, path = build.build(base_path, runner, GRID_PRECISIONS, rounds=1 if tiny else 8, block=2 if tiny else 30,
                          cache=work / "latency", force=True, log=lambda line: None, layers=list(LAYERS),
                          max_points=4 if tiny else 48)
    return {"path": str(path)}


def _latency_counts(base_path: Path, settings: Settings, work: Path, row: str, layers: tuple[str, ...],
                    table: dict[str, Any], _seed_row: Any, _kept: Any) -> dict[str, Any]:
    """The seed row's MAC budget met by counts on the measured full-int8 steps with the lowest predicted int8
    latency; each layer keeps its best channels by the same passive scores."""
    from edgeprune.latency import table as tables
    from edgeprune.latency.choose import counts_for_macs
    from edgeprune.models.measure import measure
    from edgeprune.scoring import Scores

    base = checkpoint.load(base_path, framework=settings.framework)
    seed_row = checkpoint.load(work / "pruned" / row, framework=settings.framework)
    budget = measure(seed_row.model, seed_row.framework, seed_row.arch)["macs"]
    doc = tables.load(Path(table["path"]))
    counts = counts_for_macs(doc, "int8", base.model, base.framework, base.arch, list(layers), budget)
    scores = Scores.load(work / "scores.json")
    keep = {n: sorted(int(i) for i in np.argsort(-scores.layers[n].scores, kind="stable")[:c])
            for n, c in counts.items()}
    return {"counts": counts, "keep": keep, "macs_budget": budget,
            "seed_counts": {n: len(k) for n, k in seed_row.transforms[-1].params["keep"].items()}}
