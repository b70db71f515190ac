"""`edgeprune reproduce cmc-asp`: CMC-ASP channel scoring on se-crn (air + bone conduction enhancement), taken
where the seed stops: the pruned model, recovered, exported and benchmarked, against other criteria at the same MAC
reductions.

Train (or load) the parent se-crn -> score every conv with cmc_asp, l1, activation_l1 (on both microphones) and
random rankings -> prune each to the same MAC budgets (met within one point) -> fine-tune each on the enhancement
loss (the same recipe for all) -> evaluate before and after, and with either microphone dropped (its input replaced
by exact zeros: what the method claims to protect) -> export each to TFLite and ONNX at four precisions -> benchmark
on the desktop and, checked against it, an emulated Pi 4 -> the table (`cmc_asp_results`).

Resumable through `StepLog`, like the DCASE job. The tiny profile (for tests) keeps one reduction, one random seed,
one training seed, float32 and full int8 TFLite and the desktop only.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import checkpoint
from edgeprune.data.datasets import Dataset, sample_indices
from edgeprune.errors import EdgepruneError
from edgeprune.reproduce.shared import after_desktop, bench, check_devices
from edgeprune.reproduce.steps import StepLog

MODEL, TASK = "se-crn", "enhancement"
CRITERIA = ("cmc_asp", "l1", "activation_l1", "random")
DROPS = {"both": None, "no_bone": "bone", "no_air": "noisy"}
OUT_NAME = "cmc_asp"
EMULATED_CLIPS = 2


@dataclass
class Settings:
    """What a run depends on; a work folder holds one run."""

    profile: str = "quick"
    framework: str = "torch"
    fusion: str = "dual"
    checkpoint: str | None = None
    seed: int = 0
    calib: int = 64
    read: str = "conv"  # where cmc_asp reads each conv: the authors' raw conv output
    finetune_epochs: int | None = None  # None: tiny 1, quick 10, full 20
    # None: the profile's. tiny (for tests) keeps one of each: one reduction, one random and one training seed,
    # float32 and full int8 TFLite, the desktop only.
    reductions: list[float] | None = None
    random_seeds: int | None = None
    training_seeds: int | None = None  # for the 50 % row: mean and spread of the recovered models
    precisions: list[str] | None = None
    formats: list[str] | None = None
    devices: list[str] | None = None
    bench_runs: int | None = None

    def __post_init__(self) -> None:
        tiny = self.profile == "tiny"
        defaults = {"reductions": [0.5] if tiny else [0.3, 0.5], "random_seeds": 1 if tiny else 3,
                    "training_seeds": 1 if tiny else 3,
                    "precisions": ["fp32", "int8"] if tiny else ["fp32", "fp16", "dynamic", "int8"],
                    "formats": ["tflite"] if tiny else ["tflite", "onnx"],
                    "devices": ["desktop"] if tiny else ["desktop", "rpi4-emulated"],
                    "finetune_epochs": {"tiny": 1, "quick": 10, "full": 20}.get(self.profile, 10),
                    "bench_runs": 3 if tiny else 30}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_work(settings: Settings) -> Path:
    return Path("runs") / "reproduce" / f"cmc-asp-{settings.profile}-{settings.fusion}-{settings.framework}"


def run(settings: Settings, work: Path | None = None, out: Path | None = None, force: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole job; write OUT.{md,csv,json,png} (default WORK/cmc_asp); return the document."""
    from edgeprune.reproduce import cmc_asp_results
    from edgeprune.training import run as training
    from edgeprune.training.profiles import for_model, get_profile

    profile = get_profile(settings.profile)
    check_devices(settings.devices)
    if settings.checkpoint is not None:
        spec = checkpoint.read_spec(Path(settings.checkpoint))
        if spec["arch"]["model"] != MODEL or checkpoint.transforms_of(spec):
            raise EdgepruneError(f"{settings.checkpoint}: the job starts from an unpruned {MODEL} checkpoint")
    work = Path(work) if work is not None else default_work(settings)
    out = Path(out) if out is not None else work / OUT_NAME
    if force and work.exists():
        shutil.rmtree(work)
    started = time.time()
    data = training.data_for("synthetic", profile, progress=progress, task=TASK)
    rows = _rows(settings)
    n_scores = len(CRITERIA) - 1 + settings.random_seeds
    n_exports = 1 + sum(r["export"] for r in rows)
    steps = StepLog(work, {k: v for k, v in settings.to_json().items() if k != "devices"}, progress=progress,
                    total=3 + n_scores + 3 * len(rows) + n_exports + len(settings.devices))
    parent = Path(settings.checkpoint) if settings.checkpoint else work / "parent"
    steps.run("train parent", lambda: _train_parent(settings, data, profile, parent, progress), outputs=(parent,),
              inputs=())
    parent_eval = steps.run("evaluate parent", lambda: _evaluate(parent, data, settings.framework),
                            inputs=("train parent",))
    calib = data["train"].take(sample_indices(data["train"], settings.calib, settings.seed))
    cost = steps.run("scoring cost", lambda: _scoring_cost(parent, calib, settings), inputs=("train parent",))
    for criterion in CRITERIA:
        for s in range(settings.random_seeds if criterion == "random" else 1):
            name = _scores_name(criterion, s)
            steps.run(f"score {name}", lambda c=criterion, s=s, n=name: _score(parent, c, s, calib, settings,
                                                                               work / "scores" / f"{n}.json"),
                      outputs=(work / "scores" / f"{name}.json",), inputs=("train parent",))
    ft_profile = replace(for_model(profile, MODEL), epochs=settings.finetune_epochs)
    results: dict[str, Any] = {}
    for row in rows:
        pruned, tuned = work / "pruned" / row["name"], work / "finetuned" / row["name"]
        scores = work / "scores" / f"{_scores_name(row['criterion'], row['random_seed'])}.json"
        pruning = steps.run(f"prune {row['name']}",
                            lambda r=row, p=pruned, sc=scores: _prune(parent, sc, r["reduction"], p, settings),
                            outputs=(pruned,),
                            inputs=("train parent", f"score {_scores_name(row['criterion'], row['random_seed'])}"))
        before = steps.run(f"evaluate {row['name']} before fine-tuning",
                           lambda p=pruned: _evaluate(p, data, settings.framework, drops=("both",)),
                           inputs=(f"prune {row['name']}",))
        after = steps.run(f"fine-tune {row['name']}",
                          lambda r=row, p=pruned, t=tuned: _finetune(p, t, data, ft_profile, r["training_seed"],
                                                                     settings, progress),
                          outputs=(tuned,), inputs=(f"prune {row['name']}",))
        results[row["name"]] = {**row, "pruning": pruning, "before": before, "after": after}
    exports = {}
    for name in ["parent"] + [r["name"] for r in rows if r["export"]]:
        source = parent if name == "parent" else work / "finetuned" / name
        bundle = work / "export" / name
        exports[name] = steps.run(f"export {name}", lambda s=source, b=bundle: _export(s, b, data, settings,
                                                                                          progress),
                                  outputs=(bundle,),
                                  inputs=("train parent" if name == "parent" else f"fine-tune {name}",))
    benches = {}
    for device in sorted(settings.devices, key=lambda d: d != "desktop"):
        stem = work / "bench" / device
        targets = [work / "export" / n for n in exports]
        if device.endswith("-emulated"):  # the files people ship; every precision runs on the desktop
            targets = [work / "export" / n / f"model_{q}.tflite" for n in exports for q in ("fp32", "int8")
                       if q in settings.precisions]
        benches[device] = steps.run(f"benchmark on {device}",
                                    lambda d=device, t=targets, st=stem: bench(d, t, data["test"], st,
                                                                               settings.bench_runs, EMULATED_CLIPS,
                                                                               progress),
                                    outputs=(stem.with_suffix(".json"),),
                                    inputs=(*(f"export {n}" for n in exports),
                                            *after_desktop(device, settings.devices)))
    doc = cmc_asp_results.build(settings, data.info, parent_eval, cost, results, exports, benches, steps.seconds(),
                                round(time.time() - started, 1), command_line(settings, work, out))
    cmc_asp_results.write(doc, out)
    steps.say(f"wrote {out}.md, .csv, .json, .png")
    return doc


def _rows(settings: Settings) -> list[dict[str, Any]]:
    """One row per (reduction, criterion, random seed, training seed); only seed 0 of each is exported."""
    rows = []
    for reduction in settings.reductions:
        for criterion in CRITERIA:
            randoms = range(settings.random_seeds) if criterion == "random" else [0]
            for rs in randoms:
                extra = range(settings.training_seeds) if reduction == 0.5 and criterion != "random" else [0]
                for ts in extra:
                    name = f"{int(round(reduction * 100))}-{criterion}" + (f"-r{rs}" if criterion == "random" else "")
                    name += f"-s{ts}" if ts else ""
                    rows.append({"name": name, "reduction": reduction, "criterion": criterion, "random_seed": rs,
                                 "training_seed": ts if criterion != "random" else rs,
                                 "export": ts == 0 and rs == 0})
    return rows


def _scores_name(criterion: str, seed: int) -> str:
    return f"{criterion}-{seed}" if criterion == "random" else criterion


def command_line(settings: Settings, work: Path, out: Path) -> str:
    import shlex

    default = Settings(profile=settings.profile)
    parts = ["edgeprune reproduce cmc-asp", f"--profile {settings.profile}"]
    for name, flag in (("framework", "--framework"), ("fusion", "--fusion"), ("checkpoint", "--checkpoint"),
                       ("seed", "--seed"), ("calib", "--calib"), ("finetune_epochs", "--finetune-epochs"),
                       ("bench_runs", "--bench-runs")):
        if getattr(settings, name) != getattr(default, name):
            parts.append(f"{flag} {shlex.quote(str(getattr(settings, name)))}")
    parts.append(f"--devices {','.join(settings.devices)}")
    if work != default_work(settings):
        parts.append(f"--work {shlex.quote(str(work))}")
    if out != work / OUT_NAME:
        parts.append(f"--out {shlex.quote(str(out))}")
    return " ".join(parts)


def _train_parent(settings: Settings, data: Dataset, profile, path: Path, progress: bool) -> dict[str, Any]:
    from edgeprune.training import run as training

    if settings.checkpoint is not None:
        return {"path": str(path), "trained": False}
    summary = training.train(MODEL, settings.framework, data, profile, path, seed=settings.seed, force=True,
                             progress=progress, task=TASK, args={"fusion": settings.fusion})
    return {"path": str(path), "trained": True, "best_epoch": summary["best_epoch"], "epochs": summary["epochs"],
            "train_seconds": summary["train_seconds"]}


def _evaluate(path: Path, data: Dataset, framework: str, drops: tuple[str, ...] = tuple(DROPS)) -> dict[str, Any]:
    """The task's metrics on the test split, with both microphones and with each dropped (its input replaced by
    exact zeros at the model input)."""
    from edgeprune.models.inference import predict
    from edgeprune.models.measure import measure

    ckpt = checkpoint.load(path, framework=framework)
    test = data["test"]
    out: dict[str, Any] = dict(measure(ckpt.model, ckpt.framework, ckpt.arch))
    for label in drops:
        inputs = dict(test.inputs)
        if DROPS[label] is not None:
            inputs[DROPS[label]] = np.zeros_like(inputs[DROPS[label]])
        outputs = predict(ckpt.model, ckpt.framework, ckpt.arch, inputs)
        report = ckpt.task.evaluate(outputs, test.y, test.meta, full=True)
        out[label] = {k: report.get(k) for k in ("si_sdri", "si_sdr", "stoi", "pesq", "si_sdr_noisy", "stoi_noisy",
                                                 "pesq_noisy")}
    return out


def _scoring_cost(parent: Path, calib, settings: Settings) -> dict[str, Any]:
    """cmc_asp's time against three plain inference passes over the same samples (what its hooks add), measured in
    alternation, median of nine."""
    from edgeprune.frameworks import get_adapter
    from edgeprune.models.inference import model_inputs
    from edgeprune.pruning.run import score_checkpoint

    ckpt = checkpoint.load(parent, framework=settings.framework)
    arrays = model_inputs(ckpt.arch, ckpt.framework, calib.inputs)
    adapter = get_adapter(ckpt.framework)
    plain, scored = [], []
    for _ in range(9):  # alternating, median of nine
        t = time.perf_counter()
        for _ in range(3):
            adapter.forward(ckpt.model, arrays, batch_size=32)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        score_checkpoint(ckpt, "cmc_asp", None, calib.inputs, read=settings.read)
        scored.append(time.perf_counter() - t)
    p, s = float(np.median(plain)), float(np.median(scored))
    return {"samples": len(calib), "three_passes_s": round(p, 4), "cmc_asp_s": round(s, 4),
            "overhead": round(s / p - 1, 4)}


def _score(parent: Path, criterion: str, seed: int, calib, settings: Settings, out: Path) -> dict[str, Any]:
    from edgeprune.pruning.run import score_checkpoint
    from edgeprune.scoring import LayerScores, Scores

    ckpt = checkpoint.load(parent, framework=settings.framework)
    if criterion == "random":  # a seeded random ranking of every conv's channels
        base = score_checkpoint(ckpt, "l1")
        rng = np.random.default_rng(1000 + seed)
        scores = Scores("random", {n: LayerScores(n, rng.random(ls.channels)) for n, ls in base.layers.items()},
                        {"criterion": "random", "seed": seed, "layers": list(base.layers)})
    else:
        options = {"read": settings.read} if criterion == "cmc_asp" else {}
        scores = score_checkpoint(ckpt, criterion, None, calib.inputs if criterion != "l1" else None, **options)
    scores.save(out, force=True)
    summary = {"layers": len(scores.layers), "seconds": scores.record.get("seconds")}
    if criterion == "cmc_asp":
        summary["roles"] = {n: ls.extra["roles"] for n, ls in scores.layers.items()}
    return summary


def _prune(parent: Path, scores_file: Path, reduction: float, out: Path, settings: Settings) -> dict[str, Any]:
    from edgeprune.pruning.run import prune_checkpoint
    from edgeprune.pruning.targets import Target
    from edgeprune.scoring import Scores

    ckpt = checkpoint.load(parent, framework=settings.framework)
    target = Target(budget=("macs", round(1 - reduction, 6)))
    result = prune_checkpoint(ckpt, target, Scores.load(scores_file), out, force=True, scores_file=scores_file)
    record = checkpoint.transforms_of(checkpoint.read_spec(out))[-1].record
    return {"params": record["params"], "macs": record["macs"], "parent_macs": record["parent"]["macs"],
            "macs_kept": round(record["macs"] / record["parent"]["macs"], 4), "groups": result.groups,
            "kept": {n: len(k) for n, k in result.keep.items()}}


def _finetune(pruned: Path, out: Path, data: Dataset, profile, seed: int, settings: Settings,
              progress: bool) -> dict[str, Any]:
    from edgeprune.pruning.run import finetune_checkpoint

    summary = finetune_checkpoint(checkpoint.load(pruned, framework=settings.framework), data, profile, out,
                                  seed=seed, force=True, progress=progress)
    return {"best_epoch": summary["best_epoch"], "epochs": summary["epochs"], "seed": seed,
            "train_seconds": summary["train_seconds"], **_evaluate(out, data, settings.framework)}


def _export(path: Path, bundle: Path, data: Dataset, settings: Settings, progress: bool) -> dict[str, Any]:
    from edgeprune.export import export

    train, test = data["train"], data["test"]
    calib = train.take(sample_indices(train, 200, settings.seed))
    manifest = export(path, bundle.parent, formats=",".join(settings.formats), quant=",".join(settings.precisions),
                      calib=calib.inputs, eval_x=test.inputs, eval_y=test.y, eval_meta=test.meta, force=True,
                      progress=progress, name=bundle.name, framework=settings.framework)
    return {"seconds": manifest["seconds"]["total"], "params": manifest["source"]["params"],
            "artifacts": {a["file"]: {"format": a["format"], "precision": a["precision"], "size_bytes": a["size_bytes"],
                                      "snr_db": a["parity"].get("snr_db"), "passed": a["passed"],
                                      "si_sdri": (a["parity"].get("metric") or {}).get("si_sdri")}
                          for a in manifest["artifacts"]}}
