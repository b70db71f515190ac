"""`edgeprune sweep SPEC.yaml`: every point of a grid over methods x targets x seeds, each scored, pruned,
recovered, exported at the spec's precisions and benchmarked on its devices, as declared steps (so the Ray
executor runs independent points at once); one results table and a Pareto plot. Resumable like the reproduce jobs:
the work folder's state.json holds the spec and every finished step."""

from __future__ import annotations

import re
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

from edgeprune import checkpoint
from edgeprune.reproduce.shared import bench as shared_bench
from edgeprune.reproduce.shared import cached_data, export_or_rejected
from edgeprune.reproduce.steps import Step, StepLog
from edgeprune.sweep.spec import SweepSpec, check_against_checkpoint, target_of

PARENT = "parent"
EMULATED_CLIPS = 8


def default_work(spec_path: Path) -> Path:
    return Path("runs") / "sweep" / Path(spec_path).stem


def points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The grid's points in a fixed order: method, then target, then seed; each with its folder name."""
    return [{"method": m, "target": t, "seed": s, "name": f"{m} {t} seed {s}", "slug": _slug(f"{m}-{t}-s{s}")}
            for m in spec.methods for t in spec.targets for s in spec.seeds]


def run(spec: SweepSpec, spec_path: Path, work: Path | None = None, out: Path | None = None, force: bool = False,
        progress: bool = True, executor=None, checked: bool = False) -> dict[str, Any]:
    """Run (or resume) the sweep; write OUT.{md,csv,json,png} (default WORK/sweep); return the results document.
    `checked`: `check_against_checkpoint` already passed (the CLI runs it before starting an executor)."""
    from edgeprune.reproduce.executors import LocalExecutor
    from edgeprune.sweep import results

    if not checked:
        check_against_checkpoint(spec, f"{spec_path}:")
    work = Path(work) if work is not None else default_work(spec_path)
    out = Path(out) if out is not None else work / "sweep"
    if force and work.exists():
        shutil.rmtree(work)
    executor = executor or LocalExecutor(spec.threads)
    started = time.time()
    task = checkpoint.load(Path(spec.checkpoint)).task.name
    data = cached_data(spec.data, spec.profile, task, progress=progress)
    plan = _plan(spec, task, work, progress)
    identity = {k: v for k, v in spec.to_json().items() if k != "devices"}  # a device more adds only its steps
    steps = StepLog(work, identity, progress=progress, total=len(plan))
    steps.say(f"sweep {spec_path}: {len(points(spec))} points x {len(spec.precisions)} precisions on "
              f"{spec.checkpoint} ({data.info.get('source')}, {spec.profile} profile); work folder {work}; steps "
              f"run by the {executor.name} executor on {spec.threads} thread(s) each")
    got = executor.run(plan, steps)
    doc = results.build(spec, str(spec_path), task, points(spec), got, steps.seconds([s.name for s in plan]),
                        wall_seconds=round(time.time() - started, 1), executor=executor.name)
    results.write(doc, out)
    steps.say(f"wrote {out}.md, .csv, .json, .png")
    return doc


def _plan(spec: SweepSpec, task: str, work: Path, progress: bool) -> list[Step]:
    parent = Path(spec.checkpoint)
    plan = [Step("evaluate parent", partial(_evaluate, parent, spec, task)),
            Step(f"export {PARENT}", partial(_export, parent, work / "export" / PARENT, spec, task, progress),
                 outputs=(work / "export" / PARENT,))]
    bundles = {PARENT: PARENT}  # folder -> name of the steps that make and benchmark it
    for seed in spec.seeds:
        for method in spec.methods:
            scores = work / "scores" / _slug(f"{method}-s{seed}.json")
            plan.append(Step(f"score {method} seed {seed}", partial(_score, parent, spec, task, method, seed, scores),
                             outputs=(scores,)))
    for p in points(spec):
        pruned, recovered = work / "pruned" / p["slug"], work / "recovered" / p["slug"]
        bundle = work / "export" / p["slug"]
        plan += [
            Step(f"prune {p['name']}", partial(_prune, parent, p["target"], pruned),
                 inputs=(f"score {p['method']} seed {p['seed']}",), outputs=(pruned,)),
            Step(f"recover {p['name']}", partial(_recover, pruned, spec, task, p["seed"], recovered, progress),
                 inputs=(f"prune {p['name']}",), outputs=(recovered,)),
            Step(f"export {p['name']}", partial(_export, recovered, bundle, spec, task, progress),
                 inputs=(f"recover {p['name']}",), outputs=(bundle,))]
        bundles[p["slug"]] = p["name"]
    for slug, name in bundles.items():
        for device in sorted(spec.devices, key=lambda d: d != "desktop"):  # desktop first: boards compare with it
            stem = work / "bench" / slug / device
            after = (f"export {name}",) + ((f"benchmark {name} on desktop",)
                                   if device != "desktop" and "desktop" in spec.devices else ())
            plan.append(Step(f"benchmark {name} on {device}",
                             partial(_bench, device, work / "export" / slug, spec, task, stem, progress),
                             inputs=after, outputs=(stem.with_suffix(".json"),), device=device))
    return plan


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text)


def _data(spec: SweepSpec, task: str):
    return cached_data(spec.data, spec.profile, task)


def _evaluate(path: Path, spec: SweepSpec, task: str) -> dict[str, Any]:
    from edgeprune.models.measure import describe
    from edgeprune.training import run as training

    ckpt = checkpoint.load(path)
    report = training.evaluate(ckpt, _data(spec, task), "test")
    info = describe(ckpt.model, ckpt.framework, ckpt.arch)
    return {"metrics": {k: v for k, v in report.items() if isinstance(v, (int, float))},
            "params": info["params"], "macs": info["macs"]}


def _score(parent: Path, spec: SweepSpec, task: str, method: str, seed: int, out: Path) -> dict[str, Any]:
    from edgeprune.pruning.run import calibration_set, score_checkpoint
    from edgeprune.scoring import get_criterion

    calib = calibration_set(_data(spec, task), spec.calib, seed) if get_criterion(method).needs_data else None
    scores = score_checkpoint(checkpoint.load(parent), method, spec.layers, calib)
    out.parent.mkdir(parents=True, exist_ok=True)
    scores.save(out, force=True)
    return {"file": str(out), "layers": list(scores.layers)}


def _prune(parent: Path, target: str, out: Path, scored: dict[str, Any]) -> dict[str, Any]:
    from edgeprune.pruning.run import prune_checkpoint
    from edgeprune.scoring import Scores

    scores_file = Path(scored["file"])
    result = prune_checkpoint(checkpoint.load(parent), target_of(target), Scores.load(scores_file), out, force=True,
                              scores_file=scores_file)
    return {"kept": {n: len(k) for n, k in result.keep.items()}}


def _recover(pruned: Path, spec: SweepSpec, task: str, seed: int, out: Path, progress: bool,
             _pruned: Any) -> dict[str, Any]:
    from dataclasses import replace

    from edgeprune.pruning.run import finetune_checkpoint
    from edgeprune.training.profiles import get_profile

    profile = get_profile(spec.profile)
    if spec.finetune_epochs is not None:
        profile = replace(profile, epochs=spec.finetune_epochs)
    summary = finetune_checkpoint(checkpoint.load(pruned), _data(spec, task), profile, out, seed=seed, force=True,
                                  progress=progress)
    return {"best_epoch": summary["best_epoch"], "epochs": summary["epochs"], "validation": summary["validation"]}


def _export(path: Path, bundle: Path, spec: SweepSpec, task: str, progress: bool, *_after: Any) -> dict[str, Any]:
    from edgeprune.pruning.run import calibration_set

    data = _data(spec, task)
    calib = calibration_set(data, spec.calib, 0)
    test = data["test"]
    inputs = list(test.inputs)
    manifest = export_or_rejected(path, bundle.parent, formats="tflite", quant=",".join(spec.precisions),
                                  calib=calib[inputs[0]], eval_x=test.inputs[inputs[0]], eval_y=test.y, force=True,
                                  progress=progress, name=bundle.name)
    return {"params": manifest["source"]["params"], "macs": manifest["source"]["macs"],
            "artifacts": {a["precision"]: {"file": a["file"], "size_bytes": a["size_bytes"], "passed": a["passed"]}
                          for a in manifest["artifacts"]}}


def _bench(device: str, bundle: Path, spec: SweepSpec, task: str, stem: Path, progress: bool,
           *_after: Any) -> dict[str, Any]:
    result = shared_bench(device, [bundle], _data(spec, task)["test"], stem, spec.bench_runs, EMULATED_CLIPS,
                          progress)
    return {"emulated": result["emulated"],
            "files": {Path(k).name: {"ok": v["ok"], "median_ms": v["median_ms"], "metrics": v["metrics"],
                                     "error": v["error"]} for k, v in result["results"].items()}}

