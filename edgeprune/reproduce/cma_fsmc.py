"""`edgeprune reproduce cma-fsmc`: few-sample compression of a residual keyword CNN (seed 003, CMa-FSMC) against
its baselines, at one FLOPs reduction, for several sample counts and seeds; each result an exported, timed model.

Train the parent (resnet-kws with `blocks` shape-preserving residual blocks) on all the training data (the
ceiling) -> plan the budget: removing `drop` blocks sets the FLOPs (MACs) reduction every method meets -> for each
seed and sample count N (drawn by seed, stratified by class):
- cma-block: the `drop` blocks with the smallest DoC on the N samples removed, feature mimicking with CMaMix;
- cma-filter: per-block rates by differential evolution toward the DoC-preferred rates, meeting the MACs reduction
  within 4e-4 on the really pruned model, L1 filters inside blocks, feature mimicking with CMaMix;
- cma-filter-nomix: the same rates, recovered without CMaMix;
- mir: one rate for every block (the width whose MACs reduction is nearest), L1, feature mimicking without mixing;
- practise: a fixed list of `drop` blocks (the last ones) removed, recovered as MiR;
- l1: MiR's L1 pruning with ordinary fine-tuning (cross-entropy on the N labelled samples);
-> test accuracy per row (mean and spread over seeds in the table) -> each method's first-seed model at the
smallest N exported to TFLite float32 and full int8 with parity, timed against the parent in alternating blocks.
Only the MACs target is set for the filter methods: a block's parameters include BN terms that filter cuts do not
scale with, so block removal's exact parameter reduction is not reachable by filter pruning; each row reports both.
"""

from __future__ import annotations

import shlex
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import checkpoint
from edgeprune.data.datasets import Dataset, sample_indices
from edgeprune.errors import EdgepruneError
from edgeprune.pruning.transforms import Transform
from edgeprune.reproduce.shared import cached_data
from edgeprune.reproduce.steps import Step, StepLog, default_threads

MODEL, TASK, OUT_NAME = "resnet-kws", "keywords", "cma_fsmc"
METHODS = ("cma-block", "cma-filter", "cma-filter-nomix", "mir", "practise", "l1")


@dataclass
class Settings:
    """What a run depends on; a work folder holds one run. None: the profile's value (tiny for tests, else quick)."""

    profile: str = "quick"
    seed: int = 0
    samples: list[int] | None = None
    seeds: int | None = None
    blocks: int | None = None  # residual blocks of the parent
    channels: int | None = None
    drop: int = 2  # blocks removed at block level; sets the MACs reduction of every method
    steps: int | None = None  # recovery steps of batch_size samples
    batch_size: int = 16
    threshold: float = 0.2
    population: int = 50
    iterations: int = 100
    latency_rounds: int | None = None
    threads: int | None = None  # threads each step trains on, whichever executor runs it (None: every CPU here)

    def __post_init__(self) -> None:
        tiny = self.profile == "tiny"
        # quick: about 35 min on 2 cores (54 recoveries of ~15 s, 7 exports, timing)
        defaults = {"samples": [12, 24] if tiny else [50, 100, 500], "seeds": 2 if tiny else 3,
                    "blocks": 3 if tiny else 6, "channels": 8 if tiny else 45, "steps": 4 if tiny else 200,
                    "latency_rounds": 4 if tiny else 8}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.samples = sorted(int(n) for n in self.samples)
        if self.threads is None:
            self.threads = default_threads()
        if not 1 <= self.drop < self.blocks:
            raise EdgepruneError(f"drop {self.drop}: the parent has {self.blocks} blocks, so 1..{self.blocks - 1}")
        if self.seeds < 1 or self.steps < 1 or not self.samples:
            raise EdgepruneError("seeds, steps and samples must be positive")
        if self.threads < 1:
            raise EdgepruneError(f"--threads {self.threads}: must be at least 1")

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def arch_args(self) -> dict[str, Any]:
        return {"blocks": tuple(range(1, self.blocks + 1)), "channels": self.channels}


def default_work(settings: Settings) -> Path:
    return Path("runs") / "reproduce" / f"cma-fsmc-{settings.profile}"


def run(settings: Settings, work: Path | None = None, out: Path | None = None, force: bool = False,
        progress: bool = True, executor=None) -> dict[str, Any]:
    """Run (or resume) the whole job; write OUT.{md,csv,json,png} (default WORK/cma_fsmc). `executor` runs the
    steps (default: in this process, one at a time)."""
    from edgeprune.reproduce import cma_fsmc_results
    from edgeprune.reproduce.executors import LocalExecutor

    check_settings(settings)
    work = Path(work) if work is not None else default_work(settings)
    out = Path(out) if out is not None else work / OUT_NAME
    if force and work.exists():
        shutil.rmtree(work)
    executor = executor or LocalExecutor(settings.threads)
    started = time.time()
    data = _data(settings, progress)
    plan = _steps(settings, work, progress)
    steps = StepLog(work, settings.to_json(), progress=progress, total=len(plan))
    steps.say(f"work folder {work}; steps run by the {executor.name} executor on {settings.threads} thread(s) each")
    got = executor.run(plan, steps)
    rows, choices = [], {}
    for s in range(settings.seeds):
        for n in settings.samples:
            tag = f"{n}-s{s}"
            choices[tag] = {k: v for k, v in got[f"score {tag}"].items() if k != "samples"}
            rows += [{"method": method, "samples": n, "seed": s, **got[f"recover {method} {tag}"]}
                     for method in METHODS]
    exports = {name: got[f"export {name}"] for name in _exported(settings)}
    doc = cma_fsmc_results.build(settings, data.info, got["train parent"], got["evaluate parent"],
                                 got["plan the budget"], choices, rows, exports, got["paired latency"],
                                 steps.seconds([s.name for s in plan]), round(time.time() - started, 1),
                                 command_line(settings, work, out))
    cma_fsmc_results.write(doc, out)
    steps.say(f"wrote {out}.md, .csv, .json, .png")
    return doc


def check_settings(settings: Settings) -> None:
    """What can be refused before any step runs (and before an executor starts): the sample counts."""
    from edgeprune.training.profiles import get_profile

    get_profile(settings.profile)
    data = _data(settings, progress=True)
    for n in (settings.samples[0], settings.samples[-1]):
        _few(data, n, 0, settings)


def _steps(settings: Settings, work: Path, progress: bool) -> list[Step]:
    """The job's steps and what each takes: the recoveries of every method, sample count and seed are independent."""
    parent = work / "parent"
    plan = [Step("train parent", partial(_train_parent, settings, parent, progress), outputs=(parent,)),
            Step("evaluate parent", partial(_evaluate_step, parent, settings), inputs=("train parent",)),
            Step("plan the budget", partial(_plan, parent, settings), inputs=("train parent",))]
    for s in range(settings.seeds):
        for n in settings.samples:
            tag = f"{n}-s{s}"
            plan.append(Step(f"score {tag}", partial(_choose, parent, n, s, settings), inputs=("plan the budget",)))
            for method in METHODS:
                path = work / "models" / f"{method}-{tag}"
                plan.append(Step(f"recover {method} {tag}", partial(_recover, parent, method, n, s, settings, path,
                                                                   progress),
                                 inputs=(f"score {tag}", "plan the budget"), outputs=(path,)))
    for name, source in _exported(settings).items():
        model = parent if name == "parent" else work / "models" / name
        plan.append(Step(f"export {name}", partial(_export, model, work / "export" / name, settings, progress),
                         inputs=(source,), outputs=(work / "export" / name,)))
    plan.append(Step("paired latency", partial(_latency, work / "export", list(_exported(settings))[1:], settings),
                     inputs=tuple(f"export {name}" for name in _exported(settings)), alone=True))
    return plan


def _exported(settings: Settings) -> dict[str, str]:
    """The parent and each method's first-seed model at the smallest sample count, with the steps that make them."""
    first = f"{settings.samples[0]}-s0"
    return {"parent": "train parent", **{f"{m}-{first}": f"recover {m} {first}" for m in METHODS}}


def _data(settings: Settings, progress: bool = False) -> Dataset:
    return cached_data("synthetic", settings.profile, TASK, progress=progress)


def command_line(settings: Settings, work: Path, out: Path) -> str:
    parts = ["edgeprune reproduce cma-fsmc", f"--profile {settings.profile}"]
    if settings.seed:
        parts.append(f"--seed {settings.seed}")
    if settings.threads != default_threads():
        parts.append(f"--threads {settings.threads}")
    if settings.samples != Settings(profile=settings.profile).samples:
        parts.append(f"--samples {','.join(str(n) for n in settings.samples)}")
    if work != default_work(settings):
        parts.append(f"--work {shlex.quote(str(work))}")
    if out != work / OUT_NAME:
        parts.append(f"--out {shlex.quote(str(out))}")
    return " ".join(parts)


# --- steps ---------------------------------------------------------------------------------------------------------

def _train_parent(settings: Settings, path: Path, progress: bool) -> dict[str, Any]:
    from edgeprune.training import run as training
    from edgeprune.training.profiles import get_profile

    data = _data(settings)
    summary = training.train(MODEL, "torch", data, get_profile(settings.profile), path, seed=settings.seed, force=True, progress=progress,
                             task=TASK, args=settings.arch_args())
    return {"epochs": summary["epochs"], "best_epoch": summary["best_epoch"],
            "train_seconds": summary["train_seconds"], "train_samples": len(data["train"])}


def _evaluate_step(path: Path, settings: Settings, _trained: Any) -> dict[str, Any]:
    return _evaluate(path, _data(settings))


def _evaluate(path: Path, data: Dataset) -> dict[str, Any]:
    from edgeprune.models.measure import measure
    from edgeprune.training.run import evaluate

    ckpt = checkpoint.load(path, framework="torch")
    return {"accuracy": round(evaluate(ckpt, data, full=False)["accuracy"], 6),
            **measure(ckpt.model, "torch", ckpt.arch)}


def _plan(parent: Path, settings: Settings, _trained: Any) -> dict[str, Any]:
    """The MACs reduction of removing `drop` blocks (every block costs the same, so any `drop` of them), MiR's
    uniform width nearest to it, PRACTISE's fixed list, and the cost model's per-channel terms."""
    from edgeprune.pruning import block_surgery, cma

    ckpt = checkpoint.load(parent, framework="torch")
    names = block_surgery.block_names(ckpt.model)
    practise = names[-settings.drop:]
    dropped = block_surgery.drop_blocks(ckpt.model, "torch", ckpt.arch, practise)
    target = cma.measured_reductions(ckpt.model, dropped, "torch", ckpt.arch)
    internal = cma.internal_layers(ckpt.model, "torch", ckpt.arch)
    cost = cma.CostModel.measured(ckpt.model, "torch", ckpt.arch, [n for b in names for n in internal[b]])
    layers = [n for b in names for n in internal[b]]
    best = min(range(1, settings.channels + 1),
               key=lambda w: abs(cost.reductions({n: w for n in layers})["macs"] - target["macs"]))
    uniform = {n: best for n in layers}
    return {"blocks": names, "internal": internal, "target": {k: round(v, 6) for k, v in target.items()},
            "practise": practise, "mir_width": best,
            "mir_rate": round(1 - best / settings.channels, 6),
            "mir_predicted": {k: round(v, 6) for k, v in cost.reductions(uniform).items()},
            "cost": {"base": cost.base, "channels": cost.channels, "per_channel": cost.per_channel}}


def _few(data: Dataset, n: int, seed: int, settings: Settings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from edgeprune.models import arch_spec
    from edgeprune.pruning.block_run import few_samples

    return few_samples(data["train"], n, settings.seed + seed, arch_spec(MODEL, TASK, **settings.arch_args()),
                       len(data.classes))


def _choose(parent: Path, n: int, seed: int, settings: Settings, plan: dict[str, Any]) -> dict[str, Any]:
    """DoC of every block on the N samples, the blocks CMa removes, and the filter-level rates searched to the
    plan's MACs cut (checked on the really pruned model)."""
    from edgeprune.pruning import block_run, cma

    ckpt = checkpoint.load(parent, framework="torch")
    x, _, idx = _few(_data(settings), n, seed, settings)
    found = block_run.choose(ckpt, x, targets={"macs": plan["target"]["macs"]}, threshold=settings.threshold,
                             population=settings.population, iterations=settings.iterations,
                             seed=settings.seed + seed)
    return {"samples": idx.tolist(), "drop": cma.blocks_to_drop(found["doc"], settings.drop), **found}


def _student(parent: checkpoint.Checkpoint, method: str, choice: dict[str, Any],
             plan: dict[str, Any]) -> tuple[Any, Transform]:
    from edgeprune.pruning import block_run

    if method == "cma-block":
        return block_run.block_student(parent, choice["drop"], {"criterion": "doc", "doc": choice["doc"]})
    if method == "practise":
        return block_run.block_student(parent, plan["practise"], {"criterion": "fixed list"})
    if method.startswith("cma-filter"):
        return block_run.filter_student(parent, choice["widths"], {"rates": choice["rates"], "search": "doc + DE"})
    widths = {n: plan["mir_width"] for b in plan["blocks"] for n in plan["internal"][b]}
    return block_run.filter_student(parent, widths, {"rate": plan["mir_rate"], "search": "uniform"})


def _recover(parent_path: Path, method: str, n: int, seed: int, settings: Settings, out: Path, progress: bool,
             choice: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    import torch

    from edgeprune.models.measure import measure
    from edgeprune.training import few_sample

    data = _data(settings)
    parent = checkpoint.load(parent_path, framework="torch")
    teacher = parent.model  # the surgeries copy it; mimicking only reads it
    student, transform = _student(parent, method, choice, plan)
    x, y, _ = _few(data, n, seed, settings)
    torch.manual_seed(settings.seed + seed)
    schedule = few_sample.Schedule(settings.steps, settings.batch_size)
    if method == "l1":
        summary = few_sample.finetune(student, x, y, schedule, seed=settings.seed + seed, progress=progress)
    else:
        summary = few_sample.mimic(student, teacher, x, schedule, mix=method in ("cma-block", "cma-filter"),
                                   threshold=settings.threshold, seed=settings.seed + seed, progress=progress)
    checkpoint.save(out, student, "torch", parent.arch, parent.classes, transforms=[transform], force=True,
                    extra={"recovery": {**summary, "method": method, "samples": n, "seed": seed}})
    sizes, base = measure(student, "torch", parent.arch), measure(parent.model, "torch", parent.arch)
    return {"accuracy": _evaluate(out, data)["accuracy"], "params": sizes["params"], "macs": sizes["macs"],
            "macs_reduction": round(1 - sizes["macs"] / base["macs"], 6),
            "params_reduction": round(1 - sizes["params"] / base["params"], 6),
            "loss": summary["loss"], "seconds": summary["seconds"]}


def _export(path: Path, bundle: Path, settings: Settings, progress: bool, _model: Any) -> dict[str, Any]:
    from edgeprune.reproduce.shared import export_or_rejected

    data = _data(settings)
    train, test = data["train"], data["test"]
    calib = train.take(sample_indices(train, 16 if settings.profile == "tiny" else 200, settings.seed,
                                      stratify=True))
    manifest = export_or_rejected(path, bundle.parent, formats="tflite", quant="fp32,int8", calib=calib.inputs,
                                  eval_x=test.inputs, eval_y=test.y, eval_meta=test.meta, force=True,
                                  progress=progress, name=bundle.name, framework="torch")
    return {"seconds": manifest["seconds"]["total"],
            "artifacts": {a["file"]: {"precision": a["precision"], "size_bytes": a["size_bytes"],
                                      "passed": a["passed"],
                                      "accuracy": (a["parity"].get("metric") or {}).get("accuracy"),
                                      "top1_agreement": a["parity"].get("top1_agreement")}
                          for a in manifest["artifacts"]}}


def _latency(exports: Path, names: list[str], settings: Settings, *_exported: Any) -> dict[str, Any]:
    """Each exported model's TFLite time against the parent's, per precision, in alternating blocks."""
    from edgeprune.paired import paired_latency

    out: dict[str, Any] = {}
    for name in names:
        for q in ("fp32", "int8"):
            a, b = exports / "parent" / f"model_{q}.tflite", exports / name / f"model_{q}.tflite"
            if a.exists() and b.exists():  # a file parity rejected is not timed
                out.setdefault(name, {})[q] = paired_latency(str(a), str(b), rounds=settings.latency_rounds,
                                                             block=10 if settings.profile == "tiny" else 50)
    return out
