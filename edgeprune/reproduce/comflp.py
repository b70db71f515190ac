"""`edgeprune reproduce comflp`: CoMFLP's correlation-based layer-pruning search on the `speech-encoder` (phones
task, PER), against the task-metric greedy search it replaces, taken on to the pruned model fine-tuned, exported
and benchmarked.

Train (or load) the N-layer parent -> hidden states of a fixed calibration set (train split, padding masked) ->
five layer-to-layer matrices (svcca modes U and T, distance correlation, linear CKA, block influence) -> per
measure and K: beam search on the matrix alone, then verify its top candidates by dropping layers (no retraining)
and measuring PER on the VALIDATION split, select the best -> metric-greedy (K rounds, every remaining layer tried
with validation PER) -> 10 random sets -> each distinct chosen set pruned for real (a "layers" transform) and
fine-tuned with the same recipe -> test PER before and after -> the best K=max set and the parent exported (TFLite,
ONNX) and timed in one process in alternating blocks -> a deeper, narrow encoder trained briefly to show how both
searches' time grows with N -> the table (`comflp_results`).

Resumable through `StepLog`. The tiny profile (for tests) uses a 4-layer encoder, K=2, float32 and int8 TFLite
and the desktop only.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

from edgeprune import checkpoint
from edgeprune.data.datasets import Dataset, Split, sample_indices
from edgeprune.errors import EdgepruneError
from edgeprune.reproduce.shared import after_desktop, bench, check_devices
from edgeprune.reproduce.steps import StepLog
from edgeprune.scoring.layer_states import MEASURES

MODEL, TASK = "speech-encoder", "phones"
OUT_NAME = "comflp"
EMULATED_CLIPS = 2
TINY_ARGS = {"layers": 4, "dim": 32, "heads": 2, "ffn": 64, "pos_kernel": 8, "pos_groups": 4}


@dataclass
class Settings:
    """What a run depends on; a work folder holds one run."""

    profile: str = "quick"
    checkpoint: str | None = None
    seed: int = 0
    layers: int | None = None  # the parent's N when the job trains it (None: tiny 4, else 12; a checkpoint's own)
    remove: list[int] | None = None  # K values (None: tiny [2], else [6, 4]); the largest is exported
    # calibration utterances from the train split (None: tiny 60, else 512: svcca-U keeps ~170 of 192 directions
    # per state, and two states' directions must fit in the samples' span or some correlations are 1 by force)
    calib: int | None = None
    measures: list[str] | None = None
    beam: int = 10
    top: int = 10
    random_sets: int = 10
    finetune_epochs: int | None = None  # None: tiny 1, quick 3, full 10
    distill: bool = False  # fine-tune with distillation from the parent's outputs
    deep_layers: int | None = None  # the scaling model (None: tiny 6, else 24), narrow, trained briefly
    precisions: list[str] | None = None
    formats: list[str] | None = None
    devices: list[str] | None = None
    bench_runs: int | None = None
    latency_rounds: int | None = None  # alternating blocks of the parent / pruned timing

    def __post_init__(self) -> None:
        tiny = self.profile == "tiny"
        if self.checkpoint is not None and self.layers is not None:
            raise EdgepruneError(f"--layers {self.layers}: the parent's depth when the job trains it; a --checkpoint "
                                 "parent has its own (drop --layers)")
        defaults = {"layers": None if self.checkpoint is not None else 4 if tiny else 12,
                    "remove": [2] if tiny else [6, 4], "calib": 60 if tiny else 512,
                    "measures": list(MEASURES), "finetune_epochs": {"tiny": 1, "quick": 3}.get(self.profile, 10),
                    "deep_layers": 6 if tiny else 24,
                    "precisions": ["fp32", "int8"] if tiny else ["fp32", "fp16", "dynamic", "int8"],
                    "formats": ["tflite"] if tiny else ["tflite", "onnx"],
                    "devices": ["desktop"] if tiny else ["desktop", "rpi4-emulated"],
                    "bench_runs": 3 if tiny else 30, "latency_rounds": 4 if tiny else 12}
        for name, value in defaults.items():
            if getattr(self, name) is None and value is not None:
                setattr(self, name, value)
        for name in self.measures:
            if name not in MEASURES:
                raise EdgepruneError(f"--measures {name}: expected some of {', '.join(MEASURES)}")
        if self.calib < 2 or self.deep_layers < 2 or min(self.beam, self.top, self.random_sets) < 1:
            raise EdgepruneError("calibration samples and the deep encoder's layers must be at least 2; beam, top and "
                                 "random sets at least 1")
        if not self.remove or any(k < 1 for k in self.remove):
            raise EdgepruneError(f"--remove {self.remove}: give one or more layer counts K >= 1")

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_work(settings: Settings) -> Path:
    return Path("runs") / "reproduce" / f"comflp-{settings.profile}"


def run(settings: Settings, work: Path | None = None, out: Path | None = None, force: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole job; write OUT.{md,csv,json,png} (default WORK/comflp); return the document."""
    from edgeprune.reproduce import comflp_results
    from edgeprune.training.profiles import for_model, get_profile
    from edgeprune.training.run import data_for

    profile = get_profile(settings.profile)
    check_devices(settings.devices)
    n_layers = _check_parent(settings)
    for k in settings.remove:
        if k >= n_layers:
            raise EdgepruneError(f"--remove {k}: K must be below the parent's {n_layers} layers")
    work = Path(work) if work is not None else default_work(settings)
    out = Path(out) if out is not None else work / OUT_NAME
    if force and work.exists():
        shutil.rmtree(work)
    started = time.time()
    data = data_for("synthetic", profile, progress=progress, task=TASK)
    ks = sorted(set(settings.remove), reverse=True)
    steps = StepLog(work, {k: v for k, v in settings.to_json().items() if k != "devices"}, progress=progress)
    parent = Path(settings.checkpoint) if settings.checkpoint else work / "parent"
    base = for_model(profile, MODEL)
    # the parent's 1,000-step warm-up is for training from scratch; a pruned trained model needs a short one
    ft_profile = replace(base, epochs=settings.finetune_epochs, warmup_steps=min(base.warmup_steps, 100))

    steps.run("train parent", lambda: _train(settings.layers, {} if settings.profile != "tiny" else TINY_ARGS,
                                             data, profile, parent, settings.seed, progress,
                                             settings.checkpoint is not None), outputs=(parent,), inputs=())
    parent_eval = steps.run("evaluate parent", lambda: _evaluate(parent, data), inputs=("train parent",))
    calib = data["train"].take(sample_indices(data["train"], settings.calib, settings.seed))
    mats = steps.run("layer matrices", lambda: _matrices(parent, calib, settings.measures), inputs=("train parent",))
    evaluator = _evaluator(parent, data["validation"])
    searches = {}
    for k in ks:
        for name in settings.measures:
            searches[f"{name} K={k}"] = steps.run(
                f"search {name} K={k}", lambda n=name, k=k: _search(mats[n], k, settings, evaluator),
                inputs=("train parent", "layer matrices"))
    greedy = steps.run(f"metric-greedy K={ks[0]}", lambda: _metric_greedy(n_layers, ks[0], evaluator),
                       inputs=("train parent",))
    randoms = {k: steps.run(f"random sets K={k}", lambda k=k: _random_sets(n_layers, k, settings, evaluator,
                                                                            _evaluator(parent, data["test"])),
                                 inputs=("train parent",))
               for k in ks}
    chosen = _chosen_sets(ks, settings.measures, searches, greedy)
    tuned: dict[str, Any] = {}
    for label, drop in chosen.items():
        tuned[label] = steps.run(f"prune and fine-tune {label}",
                                 lambda d=drop, lb=label: _prune_finetune(parent, d, work / "pruned" / lb,
                                                                          work / "finetuned" / lb, data, ft_profile,
                                                                          settings, progress),
                                 outputs=(work / "finetuned" / label,),
                                 inputs=("train parent", *(f"search {n}" for n in searches),
                                         f"metric-greedy K={ks[0]}"))
    best = min((lb for lb in chosen if chosen[lb] and lb.endswith(f"K={ks[0]}")),
               key=lambda lb: tuned[lb]["validation_per"])
    exports = {"parent": steps.run("export parent", lambda: _export(parent, work / "export" / "parent", data,
                                                                    settings, progress),
                                   outputs=(work / "export" / "parent",), inputs=("train parent",))}
    exports["pruned"] = steps.run(f"export {best}", lambda: _export(work / "finetuned" / best,
                                                                    work / "export" / "pruned", data, settings,
                                                                    progress),
                                  outputs=(work / "export" / "pruned",),
                                  inputs=tuple(f"prune and fine-tune {lb}" for lb in chosen))
    latency = steps.run("paired latency", lambda: _paired(work / "export", settings),
                        inputs=("export parent", f"export {best}"))
    benches = {}
    for device in sorted(settings.devices, key=lambda d: d != "desktop"):
        stem = work / "bench" / device
        targets = [work / "export" / n / f"model_{q}.tflite" for n in ("parent", "pruned") for q in ("fp32", "int8")
                   if q in settings.precisions and (work / "export" / n / f"model_{q}.tflite").exists()]
        benches[device] = steps.run(f"benchmark on {device}",
                                    lambda d=device, t=targets, st=stem: bench(d, t, data["test"], st,
                                                                               settings.bench_runs, EMULATED_CLIPS,
                                                                               progress),
                                    outputs=(stem.with_suffix(".json"),),
                                    inputs=("export parent", f"export {best}",
                                            *after_desktop(device, settings.devices)))
    deep = work / "deep"
    deep_args = {"layers": settings.deep_layers, "dim": 96 if settings.profile != "tiny" else 32,
                 "heads": 2, "ffn": 384 if settings.profile != "tiny" else 64,
                 **({"pos_kernel": 8, "pos_groups": 4} if settings.profile == "tiny" else {})}
    # trained as `edgeprune train` trains a speech-encoder (its own epochs and warm-up for the profile)
    deep_train = steps.run("train deep encoder", lambda: _train(settings.deep_layers, deep_args, data, profile, deep,
                                                   settings.seed, progress, False), outputs=(deep,), inputs=())
    scaling = {"parent": _scaling_row(n_layers, ks[0], mats, searches, greedy, settings)}
    scaling["deep"] = {**steps.run("search time, deep encoder",
                                   lambda: _deep_scaling(deep, calib, data["validation"], settings),
                                   inputs=("train deep encoder",)),
                       "trained_epochs": deep_train.get("epochs")}
    doc = comflp_results.build(settings, data.info, n_layers, ks, parent_eval, mats, searches, greedy, randoms,
                               chosen, tuned, best, exports, latency, benches, scaling, steps.seconds(),
                               round(time.time() - started, 1), command_line(settings, work, out))
    comflp_results.write(doc, out)
    steps.say(f"wrote {out}.md, .csv, .json, .png")
    return doc


def command_line(settings: Settings, work: Path, out: Path) -> str:
    import shlex

    default = Settings(profile=settings.profile)
    parts = ["edgeprune reproduce comflp", f"--profile {settings.profile}"]
    for name, flag in (("checkpoint", "--checkpoint"), ("seed", "--seed"), ("layers", "--layers"),
                       ("calib", "--calib"), ("finetune_epochs", "--finetune-epochs"), ("bench_runs", "--bench-runs")):
        if getattr(settings, name) not in (None, getattr(default, name)):  # a checkpoint run has no --layers
            parts.append(f"{flag} {shlex.quote(str(getattr(settings, name)))}")
    if settings.remove != default.remove:
        parts.append(f"--remove {','.join(map(str, settings.remove))}")
    if settings.measures != default.measures:
        parts.append(f"--measures {','.join(settings.measures)}")
    if settings.distill:
        parts.append("--distill")
    parts.append(f"--devices {','.join(settings.devices)}")
    if work != default_work(settings):
        parts.append(f"--work {shlex.quote(str(work))}")
    if out != work / OUT_NAME:
        parts.append(f"--out {shlex.quote(str(out))}")
    return " ".join(parts)


# --- the steps -------------------------------------------------------------------------------------------------------

def _check_parent(settings: Settings) -> int:
    """The parent's layer count; a given checkpoint must be an unpruned speech-encoder for phones."""
    if settings.checkpoint is None:
        return settings.layers
    spec = checkpoint.read_spec(Path(settings.checkpoint))
    arch = spec["arch"]
    if arch.get("model") != MODEL or arch.get("task") != TASK or checkpoint.transforms_of(spec):
        raise EdgepruneError(f"{settings.checkpoint}: the job starts from an unpruned {MODEL} checkpoint for "
                             f"{TASK}")
    return int(arch["args"]["layers"])


def _train(layers: int, args: dict[str, Any], data: Dataset, profile, path: Path, seed: int, progress: bool,
           given: bool) -> dict[str, Any]:
    from edgeprune.training import run as training

    if given:
        return {"path": str(path), "trained": False}
    summary = training.train(MODEL, "torch", data, profile, path, seed=seed, force=True, progress=progress,
                             task=TASK, args={**args, "layers": layers})
    return {"path": str(path), "trained": True, "best_epoch": summary["best_epoch"], "epochs": summary["epochs"],
            "train_seconds": summary["train_seconds"]}


def _evaluator(parent: Path, split: Split) -> Callable[[tuple[int, ...]], float]:
    """PER of the parent with some layers dropped (no retraining) on one split: the searches' task metric."""
    from edgeprune.pruning.layer_run import LayerDropEvaluator

    return LayerDropEvaluator(checkpoint.load(parent, framework="torch"), split)


def _evaluate(path: Path, data: Dataset) -> dict[str, Any]:
    from edgeprune.models.inference import predict
    from edgeprune.models.measure import measure

    ckpt = checkpoint.load(path, framework="torch")
    out: dict[str, Any] = dict(measure(ckpt.model, ckpt.framework, ckpt.arch))
    for split in ("validation", "test"):
        s = data[split]
        out[f"{split}_per"] = float(ckpt.task.evaluate(predict(ckpt.model, "torch", ckpt.arch, s.inputs,
                                                               batch_size=64), s.y, s.meta)["per"])
    out["layers"] = len(_layers(ckpt.model))
    return out


def _layers(model: Any) -> Any:
    from edgeprune.models.encoder import encoder_layers

    return encoder_layers(model)


def _states(path: Path, calib: Split) -> tuple[list[np.ndarray], np.ndarray, float]:
    from edgeprune.models.inference import model_inputs
    from edgeprune.scoring.layer_states import collect_states

    ckpt = checkpoint.load(path, framework="torch")
    start = time.perf_counter()
    states, mask = collect_states(ckpt.model, model_inputs(ckpt.arch, "torch", calib.inputs),
                                  calib.meta.get("frames"))
    return states, mask, time.perf_counter() - start


def _matrices(parent: Path, calib: Split, measures: list[str]) -> dict[str, Any]:
    """Every measure's matrix; each one's time includes the hidden-state pass it needs (the same for all)."""
    from edgeprune.scoring.layer_states import matrices

    states, mask, states_s = _states(parent, calib)
    out = {}
    for name, m in matrices(states, mask, tuple(measures)).items():
        out[name] = {"matrix": np.round(m["matrix"], 6).tolist(), "measure_s": round(m["seconds"], 3),
                     "states_s": round(states_s, 3), "seconds": round(m["seconds"] + states_s, 3)}
    return out


def _search(mat: dict[str, Any], k: int, settings: Settings, evaluate: Callable) -> dict[str, Any]:
    """Beam search on the matrix alone, then the fine-grained verify of its top candidates on validation PER."""
    from edgeprune.search.layer_sets import search, verify

    start = time.perf_counter()
    candidates = search(np.asarray(mat["matrix"]), k, mode="beam", beam=settings.beam, top=settings.top)
    search_s = time.perf_counter() - start
    start = time.perf_counter()
    checked = verify(candidates, evaluate, lower_is_better=True)
    verify_s = time.perf_counter() - start
    coarse = candidates[0][0]
    return {"coarse": list(coarse), "coarse_score": candidates[0][1], "removed": list(checked["best"]),
            "validation_per": checked["value"],
            "candidates": [{"removed": list(c["removed"]), "score": c["score"], "validation_per": c["value"]}
                           for c in checked["all"]],
            "matrix_s": mat["seconds"], "search_s": round(search_s, 4), "verify_s": round(verify_s, 3),
            "total_s": round(mat["seconds"] + search_s + verify_s, 3), "evaluations": len(candidates)}


def _metric_greedy(n_layers: int, k: int, evaluate: Callable) -> dict[str, Any]:
    """The baseline; each round's cumulative wall time, so a smaller K's time is read off the same run."""
    from edgeprune.search.layer_sets import metric_greedy

    marks: list[float] = []
    start = time.perf_counter()

    def timed(drop: tuple[int, ...]) -> float:
        value = evaluate(drop)
        marks.append(time.perf_counter() - start)
        return value

    result = metric_greedy(n_layers, k, timed, lower_is_better=True)
    done, ends = 0, []
    for i in range(k):
        done += n_layers - i
        ends.append(round(marks[done - 1], 3))
    return {"removed": list(result["removed"]), "evaluations": result["evaluations"],
            "rounds": [{"removed": list(r["removed"]), "validation_per": r["value"], "seconds": ends[i]}
                       for i, r in enumerate(result["rounds"])],
            "total_s": ends[-1]}


def _random_sets(n_layers: int, k: int, settings: Settings, validation: Callable, test: Callable) -> dict[str, Any]:
    from math import comb

    rng = np.random.default_rng(1000 + settings.seed + k)
    sets: list[tuple[int, ...]] = []
    while len(sets) < min(settings.random_sets, comb(n_layers, k)):  # a small N has fewer distinct sets
        drop = tuple(sorted(int(v) + 1 for v in rng.choice(n_layers, size=k, replace=False)))
        if drop not in sets:
            sets.append(drop)
    rows = [{"removed": list(d), "validation_per": validation(d), "test_per": test(d)} for d in sets]
    per = [r["test_per"] for r in rows]
    return {"sets": rows, "test_per_min": min(per), "test_per_median": float(np.median(per)),
            "test_per_max": max(per)}


def _chosen_sets(ks: list[int], measures: list[str], searches: dict[str, Any],
                 greedy: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """One label per distinct (K, set), naming every method that chose it: 'svcca-U+dc K=6', the metric-greedy set,
    and for the largest K each measure's coarse set (the matrix's best, unverified: 'svcca-U (coarse) K=6')."""
    chosen: dict[str, tuple[int, ...]] = {}
    for k in ks:
        by_set: dict[tuple[int, ...], list[str]] = {}
        for name in measures:
            by_set.setdefault(tuple(searches[f"{name} K={k}"]["removed"]), []).append(name)
        by_set.setdefault(tuple(greedy["rounds"][k - 1]["removed"]), []).append("metric-greedy")
        if k == ks[0]:
            for name in measures:
                by_set.setdefault(tuple(searches[f"{name} K={k}"]["coarse"]), []).append(f"{name} (coarse)")
        for drop, names in by_set.items():
            chosen["+".join(names) + f" K={k}"] = drop
    return chosen


def _prune_finetune(parent: Path, drop: tuple[int, ...], pruned: Path, out: Path, data: Dataset, profile,
                    settings: Settings, progress: bool) -> dict[str, Any]:
    from edgeprune.pruning.layer_run import save_layer_drop
    from edgeprune.pruning.run import finetune_checkpoint

    ckpt = checkpoint.load(parent, framework="torch")
    save_layer_drop(ckpt, list(drop), pruned, {"criterion": "comflp"}, force=True)
    before = _evaluate(pruned, data)
    summary = finetune_checkpoint(checkpoint.load(pruned, framework="torch"), data, profile, out,
                                  teacher=ckpt if settings.distill else None, seed=settings.seed, force=True,
                                  progress=progress)
    after = _evaluate(out, data)
    return {"removed": list(drop), "params": after["params"], "layers": after["layers"],
            "test_per_before": before["test_per"], "validation_per_before": before["validation_per"],
            "test_per": after["test_per"], "validation_per": after["validation_per"],
            "best_epoch": summary["best_epoch"], "train_seconds": summary["train_seconds"]}


def _export(path: Path, bundle: Path, data: Dataset, settings: Settings, progress: bool) -> dict[str, Any]:
    from edgeprune.reproduce.shared import export_or_rejected

    train, test = data["train"], data["test"]
    calib = train.take(sample_indices(train, 64 if settings.profile != "tiny" else 16, settings.seed))
    manifest = export_or_rejected(path, bundle.parent, formats=",".join(settings.formats),
                                  quant=",".join(settings.precisions), calib=calib.inputs, eval_x=test.inputs,
                                  eval_y=test.y, eval_meta=test.meta, force=True, progress=progress,
                                  name=bundle.name, framework="torch")
    return {"seconds": manifest["seconds"]["total"], "params": manifest["source"]["params"],
            "artifacts": {a["file"]: {"format": a["format"], "precision": a["precision"], "size_bytes": a["size_bytes"],
                                      "passed": a["passed"], "parity": a["parity"]}
                          for a in manifest["artifacts"]}}


def _paired(exports: Path, settings: Settings) -> dict[str, Any]:
    """The pruned file's time against the parent's, per precision, in alternating blocks in one process."""
    from edgeprune.paired import paired_latency

    out = {}
    for q in ("fp32", "int8"):
        a, b = exports / "parent" / f"model_{q}.tflite", exports / "pruned" / f"model_{q}.tflite"
        if a.exists() and b.exists():
            out[q] = paired_latency(str(a), str(b), rounds=settings.latency_rounds,
                                    block=20 if settings.profile == "tiny" else 50)
    return out


def _scaling_row(n_layers: int, k: int, mats: dict[str, Any], searches: dict[str, Any], greedy: dict[str, Any],
                 settings: Settings) -> dict[str, Any]:
    name = settings.measures[0]
    s = searches[f"{name} K={k}"]
    return {"layers": n_layers, "remove": k, "measure": name, "matrix_s": s["matrix_s"], "search_s": s["search_s"],
            "verify_s": s["verify_s"], "correlation_s": s["total_s"], "correlation_evaluations": s["evaluations"],
            "greedy_s": greedy["total_s"], "greedy_evaluations": greedy["evaluations"],
            "speedup": round(greedy["total_s"] / s["total_s"], 2)}


def _deep_scaling(deep: Path, calib: Split, validation: Split, settings: Settings) -> dict[str, Any]:
    """Both searches on the deeper encoder at K = N / 2, timed the same way as on the parent."""
    n = settings.deep_layers
    k = n // 2
    mats = _matrices(deep, calib, [settings.measures[0]])
    evaluator = _evaluator(deep, validation)
    search = _search(mats[settings.measures[0]], k, settings, evaluator)
    greedy = _metric_greedy(n, k, evaluator)
    row = _scaling_row(n, k, mats, {f"{settings.measures[0]} K={k}": search}, greedy, settings)
    return {**row, "correlation_set": search["removed"], "correlation_validation_per": search["validation_per"],
            "greedy_set": greedy["removed"], "greedy_validation_per": greedy["rounds"][-1]["validation_per"],
            "parent_validation_per": evaluator(())}
