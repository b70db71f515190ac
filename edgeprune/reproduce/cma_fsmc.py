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
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import checkpoint
from edgeprune.data.datasets import Dataset, sample_indices
from edgeprune.errors import EdgepruneError
from edgeprune.pruning.transforms import Transform
from edgeprune.reproduce.steps import StepLog

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
        if not 1 <= self.drop < self.blocks:
            raise EdgepruneError(f"drop {self.drop}: the parent has {self.blocks} blocks, so 1..{self.blocks - 1}")
        if self.seeds < 1 or self.steps < 1 or not self.samples:
            raise EdgepruneError("seeds, steps and samples must be positive")

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def arch_args(self) -> dict[str, Any]:
        return {"blocks": tuple(range(1, self.blocks + 1)), "channels": self.channels}


def default_work(settings: Settings) -> Path:
    return Path("runs") / "reproduce" / f"cma-fsmc-{settings.profile}"


def run(settings: Settings, work: Path | None = None, out: Path | None = None, force: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole job; write OUT.{md,csv,json,png} (default WORK/cma_fsmc)."""
    from edgeprune.reproduce import cma_fsmc_results
    from edgeprune.training.profiles import get_profile
    from edgeprune.training.run import data_for

    profile = get_profile(settings.profile)
    work = Path(work) if work is not None else default_work(settings)
    out = Path(out) if out is not None else work / OUT_NAME
    if force and work.exists():
        shutil.rmtree(work)
    started = time.time()
    data = data_for("synthetic", profile, progress=progress, task=TASK)
    for n in (settings.samples[0], settings.samples[-1]):  # bad counts fail before any step runs
        _few(data, n, 0, settings)
    steps = StepLog(work, settings.to_json(), progress=progress)
    parent = work / "parent"
    trained = steps.run("train parent", lambda: _train_parent(settings, data, profile, parent, progress),
                        outputs=(parent,))
    parent_eval = steps.run("evaluate parent", lambda: _evaluate(parent, data))
    plan = steps.run("plan the budget", lambda: _plan(parent, settings))
    rows, choices = [], {}
    for s in range(settings.seeds):
        for n in settings.samples:
            tag = f"{n}-s{s}"
            choice = steps.run(f"score {tag}", lambda n=n, s=s: _choose(parent, data, n, s, plan, settings))
            choices[tag] = {k: v for k, v in choice.items() if k != "samples"}
            for method in METHODS:
                path = work / "models" / f"{method}-{tag}"
                result = steps.run(f"recover {method} {tag}",
                                   lambda m=method, n=n, s=s, c=choice, p=path: _recover(
                                       parent, m, data, n, s, c, plan, settings, p, progress),
                                   outputs=(path,))
                rows.append({"method": method, "samples": n, "seed": s, **result})
    exported = ["parent"] + [f"{m}-{settings.samples[0]}-s0" for m in METHODS]
    exports = {name: steps.run(f"export {name}",
                               lambda nm=name: _export(parent if nm == "parent" else work / "models" / nm,
                                                       work / "export" / nm, data, settings, progress),
                               outputs=(work / "export" / name,))
               for name in exported}
    latency = steps.run("paired latency", lambda: _latency(work / "export", exported[1:], settings))
    doc = cma_fsmc_results.build(settings, data.info, trained, parent_eval, plan, choices, rows, exports, latency,
                                 steps.seconds(), round(time.time() - started, 1), command_line(settings, work, out))
    cma_fsmc_results.write(doc, out)
    steps.say(f"wrote {out}.md, .csv, .json, .png")
    return doc


def command_line(settings: Settings, work: Path, out: Path) -> str:
    parts = ["edgeprune reproduce cma-fsmc", f"--profile {settings.profile}"]
    if settings.seed:
        parts.append(f"--seed {settings.seed}")
    if settings.samples != Settings(profile=settings.profile).samples:
        parts.append(f"--samples {','.join(str(n) for n in settings.samples)}")
    if work != default_work(settings):
        parts.append(f"--work {shlex.quote(str(work))}")
    if out != work / OUT_NAME:
        parts.append(f"--out {shlex.quote(str(out))}")
    return " ".join(parts)


# --- steps ---------------------------------------------------------------------------------------------------------

def _train_parent(settings: Settings, data: Dataset, profile, path: Path, progress: bool) -> dict[str, Any]:
    from edgeprune.training import run as training

    summary = training.train(MODEL, "torch", data, profile, path, seed=settings.seed, force=True, progress=progress,
                             task=TASK, args=settings.arch_args())
    return {"epochs": summary["epochs"], "best_epoch": summary["best_epoch"],
            "train_seconds": summary["train_seconds"], "train_samples": len(data["train"])}


def _evaluate(path: Path, data: Dataset) -> dict[str, Any]:
    from edgeprune.models.measure import measure
    from edgeprune.training.run import evaluate

    ckpt = checkpoint.load(path, framework="torch")
    return {"accuracy": round(evaluate(ckpt, data, full=False)["accuracy"], 6),
            **measure(ckpt.model, "torch", ckpt.arch)}


def _plan(parent: Path, settings: Settings) -> dict[str, Any]:
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


def _choose(parent: Path, data: Dataset, n: int, seed: int, plan: dict[str, Any],
            settings: Settings) -> dict[str, Any]:
    """DoC of every block on the N samples, the blocks CMa removes, and the filter-level rates searched to the
    plan's MACs cut (checked on the really pruned model)."""
    from edgeprune.pruning import block_run, cma

    ckpt = checkpoint.load(parent, framework="torch")
    x, _, idx = _few(data, n, seed, settings)
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


def _recover(parent_path: Path, method: str, data: Dataset, n: int, seed: int, choice: dict[str, Any],
             plan: dict[str, Any], settings: Settings, out: Path, progress: bool) -> dict[str, Any]:
    import torch

    from edgeprune.models.measure import measure
    from edgeprune.training import few_sample

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


def _export(path: Path, bundle: Path, data: Dataset, settings: Settings, progress: bool) -> dict[str, Any]:
    from edgeprune.reproduce.shared import export_or_rejected

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


def _latency(exports: Path, names: list[str], settings: Settings) -> dict[str, Any]:
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
