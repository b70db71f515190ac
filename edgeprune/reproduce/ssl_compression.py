"""`edgeprune reproduce ssl-compression`: the MelHuBERT compression study (seed 004) at CPU scale on
`speech-encoder`, each compressed model an exported, timed edge model.

Pre-train the teacher (masked prediction of k-means cluster ids of log-mel frames; `training.ssl`) -> compress it
five ways, each step followed by continued pre-training on the same loss:
- weight: one global L1 mask over q/k/v/out and both FFN weights and biases, along the seed's cumulative schedule
  (every event up to each level), zeros held during recovery (a "sparsity" transform);
- heads-l1: the lowest-l1 head of every layer per event (by_layer); heads-data: the data-driven metric, each layer's
  top head protected, as many heads per event removed globally (by_whole); heads removed for real ("heads");
- ffn: FFN rows by the official "low-rank" metric, to fixed widths ("ffn");
- low-rank: a true SVD factorisation of both FFN linears of every layer to a parameter budget ("low_rank");
- distill: a student with half the layers, initialised from the teacher's odd layers or at random, pure KL on the
  teacher's cluster predictions (T 1, as the seed), or DistilHuBERT's hidden-layer prediction
  (`--distill-objective hidden`);
-> every model evaluated: parameters, MACs, the pre-training loss on validation, SUPERB-style probes on the frozen
encoder (phone recognition PER, keyword accuracy, speaker identification; `training.probes`) -> a phones head on
its last layer makes each an edge model, exported to TFLite float32 and full int8 with parity, zip size beside file
size, latency paired with the teacher's in alternating blocks -> the table (`ssl_compression_results`).
"""

from __future__ import annotations

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

MODEL = "speech-encoder"
OUT_NAME = "ssl_compression"
METHODS = ("weight", "heads-l1", "heads-data", "ffn", "low-rank", "distill")


@dataclass
class Settings:
    """What a run depends on; a work folder holds one run. None: the profile's value (tiny for tests, else quick)."""

    profile: str = "quick"
    seed: int = 0
    layers: int | None = None
    dim: int | None = None
    heads: int | None = None
    ffn: int | None = None
    clusters: int | None = None
    loss_type: str = "masked"
    pretrain_epochs: int | None = None
    recover_epochs: int | None = None  # continued pre-training after each compression event
    distill_epochs: int | None = None
    distill_objective: str = "kl"  # "kl" (the seed's) or "hidden" (DistilHuBERT's layer prediction)
    probe_epochs: int | None = None
    probe_lr: float = 1e-2  # Adam; at 1e-3 the linear CTC probe stays on blanks for tens of epochs (PER ~0.99)
    probe_utterances: int | None = None  # phones train utterances for the PR probe
    sparsities: list[float] | None = None
    head_events: int | None = None  # levels after 1 .. head_events events
    ffn_widths: list[int] | None = None
    lowrank_budgets: list[float] | None = None
    latency_rounds: int | None = None

    def __post_init__(self) -> None:
        tiny = self.profile == "tiny"
        # quick: about 55 min on 2 cores (a 4-layer teacher: pre-training 8 epochs of ~50 s; ~25 epochs of recovery
        # and distillation; probes (~70 s a model), exports and timing of 13 models)
        defaults = {"layers": 2 if tiny else 4, "dim": 32 if tiny else 192, "heads": 4 if tiny else 6,
                    "ffn": 64 if tiny else 768, "clusters": 8 if tiny else 50, "pretrain_epochs": 1 if tiny else 8,
                    "recover_epochs": 1, "distill_epochs": 1 if tiny else 4, "probe_epochs": 2 if tiny else 30,
                    "probe_utterances": 40 if tiny else 1500, "sparsities": [0.5] if tiny else [0.5, 0.7],
                    "head_events": 2, "ffn_widths": [32] if tiny else [384, 192],
                    "lowrank_budgets": [0.5] if tiny else [0.5, 0.25], "latency_rounds": 4 if tiny else 8}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.distill_objective not in ("kl", "hidden"):
            raise EdgepruneError(f"distillation objective '{self.distill_objective}'; expected kl or hidden")
        if any(not 0 <= s < 1 for s in self.sparsities):
            raise EdgepruneError(f"sparsities {self.sparsities}: each must be in [0, 1)")
        if self.layers < 2:
            raise EdgepruneError(f"layers {self.layers}: the teacher needs at least 2 (students get half)")
        if self.head_events > self.heads - 2:
            raise EdgepruneError(f"head events {self.head_events}: at most {self.heads - 2} (one head per layer per "
                                 "event, and every layer keeps two: onnx2tf cannot convert a one-head layer)")
        if any(not 1 <= w < self.ffn for w in self.ffn_widths):
            raise EdgepruneError(f"FFN widths {self.ffn_widths}: each must be in 1..{self.ffn - 1}")

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def arch_args(self) -> dict[str, Any]:
        tiny = self.profile == "tiny"
        return {"layers": self.layers, "dim": self.dim, "heads": self.heads, "ffn": self.ffn,
                **({"pos_kernel": 8, "pos_groups": 4} if tiny else {})}


def default_work(settings: Settings) -> Path:
    return Path("runs") / "reproduce" / f"ssl-compression-{settings.profile}"


def run(settings: Settings, work: Path | None = None, out: Path | None = None, force: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole job; write OUT.{md,csv,json,png} (default WORK/ssl_compression)."""
    from edgeprune.reproduce import ssl_compression_results
    from edgeprune.training.profiles import get_profile
    from edgeprune.training.run import data_for

    profile = get_profile(settings.profile)
    work = Path(work) if work is not None else default_work(settings)
    out = Path(out) if out is not None else work / OUT_NAME
    if force and work.exists():
        shutil.rmtree(work)
    started = time.time()
    phones = data_for("synthetic", profile, progress=progress, task="phones")
    keywords = data_for("synthetic", profile, progress=progress, task="keywords")
    steps = StepLog(work, settings.to_json(), progress=progress)
    teacher = work / "models" / "teacher"
    steps.run("pre-train teacher", lambda: _pretrain(teacher, phones, settings, progress), outputs=(teacher,),
              inputs=())
    models: dict[str, dict[str, Any]] = {"teacher": {"method": "teacher", "level": None, "path": teacher}}

    def chain(method: str, levels: list[Any], step_fn) -> None:
        previous, before = teacher, "pre-train teacher"
        for level in levels:
            name = f"{method}-{level}"
            path = work / "models" / name
            info = steps.run(f"compress {name}", lambda p=previous, lv=level, o=path: step_fn(p, lv, o),
                             outputs=(path,), inputs=(before,))
            models[name] = {"method": method, "level": level, "path": path, "compression": info}
            previous, before = path, f"compress {name}"

    sparsities = sorted(settings.sparsities)
    chain("weight", sparsities, lambda p, s, o: _weight(p, s, sparsities, o, phones, settings, progress))
    chain("heads-l1", list(range(1, settings.head_events + 1)),
          lambda p, _, o: _heads(p, "l1", o, phones, settings, progress))
    chain("heads-data", list(range(1, settings.head_events + 1)),
          lambda p, _, o: _heads(p, "data", o, phones, settings, progress))
    for width in sorted(settings.ffn_widths, reverse=True):  # each width straight from the teacher
        name = f"ffn-{width}"
        path = work / "models" / name
        models[name] = {"method": "ffn", "level": width, "path": path, "compression": steps.run(
            f"compress {name}", lambda w=width, o=path: _ffn(teacher, w, o, phones, settings, progress),
            outputs=(path,), inputs=("pre-train teacher",))}
    for budget in sorted(settings.lowrank_budgets, reverse=True):
        name = f"low-rank-{budget}"
        path = work / "models" / name
        models[name] = {"method": "low-rank", "level": budget, "path": path, "compression": steps.run(
            f"compress {name}", lambda b=budget, o=path: _low_rank(teacher, b, o, phones, settings, progress),
            outputs=(path,), inputs=("pre-train teacher",))}
    for init in ("teacher-layers", "random"):
        name = f"distill-{init}"
        path = work / "models" / name
        models[name] = {"method": "distill", "level": init, "path": path, "compression": steps.run(
            f"compress {name}", lambda i=init, o=path: _distill(teacher, i, o, phones, settings, progress),
            outputs=(path,), inputs=("pre-train teacher",))}
    results = {}
    for name, m in models.items():
        edge = work / "edge" / name
        results[name] = steps.run(f"evaluate {name}", lambda p=m["path"], e=edge: _evaluate(p, e, phones, keywords,
                                                                                            settings),
                                  outputs=(edge,),
                                  inputs=("pre-train teacher" if name == "teacher" else f"compress {name}",))
    exports = {name: steps.run(f"export {name}", lambda n=name: _export(work / "edge" / n, work / "export" / n,
                                                                        phones, settings, progress),
                               outputs=(work / "export" / name,), inputs=(f"evaluate {name}",))
               for name in models}
    latency = steps.run("paired latency", lambda: _latency(work / "export", list(models), settings),
                        inputs=tuple(f"export {name}" for name in models))
    doc = ssl_compression_results.build(settings, phones.info, models, results, exports, latency, steps.seconds(),
                                        round(time.time() - started, 1), command_line(settings, work, out))
    ssl_compression_results.write(doc, out)
    steps.say(f"wrote {out}.md, .csv, .json, .png")
    return doc


def command_line(settings: Settings, work: Path, out: Path) -> str:
    import shlex

    parts = ["edgeprune reproduce ssl-compression", f"--profile {settings.profile}"]
    if settings.seed:
        parts.append(f"--seed {settings.seed}")
    if settings.loss_type != "masked":
        parts.append(f"--loss-type {settings.loss_type}")
    if settings.distill_objective != "kl":
        parts.append(f"--distill-objective {settings.distill_objective}")
    if work != default_work(settings):
        parts.append(f"--work {shlex.quote(str(work))}")
    if out != work / OUT_NAME:
        parts.append(f"--out {shlex.quote(str(out))}")
    return " ".join(parts)


# --- compression steps ------------------------------------------------------------------------------------------------

def _train_data(phones: Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    train = phones["train"]
    return train.inputs["logmel"], train.meta.get("frames")


def _recover(state, phones: Dataset, epochs: int, settings: Settings, progress: bool,
             keep: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    from edgeprune.training import ssl

    logmel, frames = _train_data(phones)
    # a short warm-up: the model is trained already
    return ssl.pretrain(state, logmel, frames, epochs, warmup_steps=100, seed=settings.seed, progress=progress,
                        keep=keep)


def _pretrain(path: Path, phones: Dataset, settings: Settings, progress: bool) -> dict[str, Any]:
    from edgeprune.frameworks.torch_fw import seed_everything
    from edgeprune.models import arch_spec, build
    from edgeprune.training import ssl

    seed_everything(settings.seed)
    arch = arch_spec(MODEL, "phones", **settings.arch_args())
    logmel, frames = _train_data(phones)
    clusters = ssl.fit_clusters(logmel, frames, settings.clusters, settings.seed)
    state = ssl.SSLState.new(build(arch, "torch"), clusters, settings.loss_type, settings.seed)
    summary = ssl.pretrain(state, logmel, frames, settings.pretrain_epochs, seed=settings.seed, progress=progress)
    ssl.save(path, state, None, arch, extra={"pretraining": summary}, force=True)
    return {"history": summary["history"], "seconds": summary["seconds"]}


def _seeded(settings: Settings) -> None:
    """Every step starts from the same random state, so a resumed run computes what an uninterrupted one does."""
    from edgeprune.frameworks.torch_fw import seed_everything

    seed_everything(settings.seed)


def _save(path: Path, ckpt, state, transform: Transform, summary: dict[str, Any]) -> dict[str, Any]:
    from edgeprune.training import ssl

    ssl.save(path, state, ckpt, ckpt.arch, transforms=[*ckpt.transforms, transform], force=True,
             extra={"recovery": summary})
    return {"transform": transform.kind, "params": transform.params if transform.kind != "sparsity" else
            {"sparsity": transform.params["sparsity"]}, "recovery_loss": summary["history"],
            "seconds": summary["seconds"]}


def _weight(previous: Path, level: float, levels: list[float], out: Path, phones: Dataset, settings: Settings,
            progress: bool) -> dict[str, Any]:
    """Every schedule event above the previous level up to this one: global L1 mask, then recovery with the zeros
    held."""
    from edgeprune.pruning.sparsity import apply_mask, global_l1_mask, mask_of, prunable_params, schedule
    from edgeprune.training import ssl

    _seeded(settings)
    ckpt, state = ssl.load(previous)
    names = prunable_params(state.model)
    below = max([s for s in levels if s < level], default=0.0)
    events = [s for s in schedule() if below < s <= level + 1e-9]
    if not events or abs(events[-1] - level) > 1e-9:
        events.append(level)  # a level between the schedule's steps ends on itself
    mask = mask_of(state.model, names) if below > 0 else None
    losses, seconds = [], 0.0
    for s in events:
        mask = global_l1_mask(state.model, s, previous=mask)
        state.model = apply_mask(state.model, mask)
        summary = _recover(state, phones, settings.recover_epochs, settings, progress, keep=mask)
        losses += summary["history"]
        seconds += summary["seconds"]
    transform = Transform("sparsity", {"sparsity": level, "params": names}, {"criterion": "global_l1",
                                                                            "events": events})
    return {**_save(out, ckpt, state, transform, {"history": losses, "seconds": seconds}), "events": events}


def _heads(previous: Path, metric: str, out: Path, phones: Dataset, settings: Settings,
           progress: bool) -> dict[str, Any]:
    """One event: l1 removes the lowest head of every layer; data-driven removes as many heads globally, each
    layer's top head protected."""
    from edgeprune.pruning.transformer_surgery import remove_heads
    from edgeprune.scoring.transformer_scores import head_data_driven, head_l1, heads_to_remove
    from edgeprune.training import ssl

    _seeded(settings)
    ckpt, state = ssl.load(previous)
    if metric == "l1":
        keep = heads_to_remove(head_l1(state.model), 1, "by_layer")
    else:
        logmel, frames = _train_data(phones)
        idx = sample_indices(phones["train"], min(len(logmel), 64), settings.seed)
        targets = ssl.cluster_targets(state.clusters, logmel[idx], None if frames is None else frames[idx])
        rng = np.random.default_rng(settings.seed)
        batches = [(logmel[idx[b:b + 16]], targets[b:b + 16], None if frames is None else frames[idx[b:b + 16]])
                   for b in range(0, len(idx), 16)]
        keep = heads_to_remove(head_data_driven(state.model, batches,
                                                lambda _, batch: state.loss(batch[0], batch[1], batch[2], rng)),
                               settings.layers, "by_whole", protect=2)
    state.model = remove_heads(state.model, keep)
    summary = _recover(state, phones, settings.recover_epochs, settings, progress)
    return _save(out, ckpt, state, Transform("heads", {"keep": keep}, {"criterion": f"heads-{metric}"}), summary)


def _ffn(teacher: Path, width: int, out: Path, phones: Dataset, settings: Settings, progress: bool) -> dict[str, Any]:
    from edgeprune.pruning.transformer_surgery import keep_ffn_units
    from edgeprune.scoring.transformer_scores import ffn_keep, ffn_l1
    from edgeprune.training import ssl

    _seeded(settings)
    ckpt, state = ssl.load(teacher)
    keep = ffn_keep(ffn_l1(state.model), settings.ffn - width)
    state.model = keep_ffn_units(state.model, keep)
    summary = _recover(state, phones, settings.recover_epochs, settings, progress)
    return _save(out, ckpt, state, Transform("ffn", {"keep": keep}, {"criterion": "ffn_l1"}), summary)


def _low_rank(teacher: Path, budget: float, out: Path, phones: Dataset, settings: Settings,
              progress: bool) -> dict[str, Any]:
    """fc1 and fc2 of every layer factorised by SVD to `budget` of their parameters."""
    from edgeprune.models.encoder import encoder_layers
    from edgeprune.pruning.transformer_surgery import factorize, rank_for_budget
    from edgeprune.training import ssl

    _seeded(settings)
    ckpt, state = ssl.load(teacher)
    ranks = {}
    for i, _ in enumerate(encoder_layers(state.model)):
        for fc in ("fc1", "fc2"):
            name = f"encoder.layers.{i}.feed_forward.{fc}"
            linear = state.model.get_submodule(name)
            ranks[name] = rank_for_budget(linear.in_features, linear.out_features, budget)
    state.model = factorize(state.model, ranks)
    summary = _recover(state, phones, settings.recover_epochs, settings, progress)
    return _save(out, ckpt, state, Transform("low_rank", {"ranks": ranks}, {"criterion": "svd", "budget": budget}),
                 summary)


def _distill(teacher: Path, init: str, out: Path, phones: Dataset, settings: Settings,
             progress: bool) -> dict[str, Any]:
    """A student of half the layers: the teacher's odd layers (a "layers" transform) or a fresh random encoder;
    the teacher's cluster head copied as the student's starting head."""
    import copy

    from edgeprune.models import arch_spec, build
    from edgeprune.pruning.layer_surgery import drop_layers
    from edgeprune.training import ssl

    _seeded(settings)
    ckpt, teacher_state = ssl.load(teacher)
    n = settings.layers
    if init == "teacher-layers":
        kept = list(range(1, n + 1, 2))[:n // 2]  # layers 1, 3, 5, ...: n // 2 of them, as the random student
        drop = [i for i in range(1, n + 1) if i not in kept]
        model, arch = drop_layers(ckpt.model, drop), ckpt.arch
        transforms = [Transform("layers", {"drop": drop}, {"criterion": "distillation-init"})]
    else:
        arch = arch_spec(MODEL, "phones", **{**settings.arch_args(), "layers": n // 2})
        model, transforms = build(arch, "torch"), []
    student = ssl.SSLState(model, copy.deepcopy(teacher_state.head), teacher_state.clusters, "nomasked")
    logmel, frames = _train_data(phones)
    summary = ssl.distill(student, teacher_state, logmel, frames, settings.distill_epochs, seed=settings.seed,
                          progress=progress, objective=settings.distill_objective)
    ssl.save(out, student, ckpt, arch, transforms=transforms, force=True, extra={"distillation": summary})
    return {"transform": "distill", "params": {"init": init, "layers": n // 2},
            "recovery_loss": summary["history"], "seconds": summary["seconds"]}


# --- evaluation, export, latency ---------------------------------------------------------------------------------

def _evaluate(path: Path, edge: Path, phones: Dataset, keywords: Dataset, settings: Settings) -> dict[str, Any]:
    """Sizes, the pre-training loss on validation, the three probes; a phones head fitted on the last layer is
    saved with the model as its edge checkpoint."""
    import torch

    from edgeprune.models.measure import measure
    from edgeprune.training import probes, ssl

    _seeded(settings)
    ckpt, state = ssl.load(path)
    model = state.model.eval()
    out: dict[str, Any] = dict(measure(model, "torch", ckpt.arch))
    val = phones["validation"]
    state.loss_type = settings.loss_type  # students train unmasked; every model is scored on the same masks
    out["ssl_loss"] = ssl.evaluate_loss(state, val.inputs["logmel"], val.meta.get("frames"), seed=settings.seed)
    out["nonzero_params"] = int(sum(int((p != 0).sum()) for p in model.parameters()))
    tr = phones["train"]
    idx = sample_indices(tr, settings.probe_utterances, settings.seed)
    pr_train = probes.features(model, tr.inputs["logmel"][idx], tr.meta.get("frames")[idx], tr.y[idx],
                               {"frames": tr.meta["frames"][idx]})
    te = phones["test"]
    pr_test = probes.features(model, te.inputs["logmel"], te.meta.get("frames"), te.y, {"frames": te.meta["frames"]})
    task = ckpt.task
    pr, _ = probes.train_probe(pr_train, pr_test, "frames", task.n_classes, settings.probe_epochs,
                               lr=settings.probe_lr, seed=settings.seed, task=task)
    last, head = probes.train_probe(pr_train, pr_test, "frames", task.n_classes, settings.probe_epochs,
                                    lr=settings.probe_lr, seed=settings.seed, task=task, layer=-1)
    del pr_train, pr_test
    ks_tr, ks_te = keywords["train"], keywords["test"]
    ks = probes.train_probe(_pooled(model, ks_tr), _pooled(model, ks_te), "clip", len(keywords.classes),
                            settings.probe_epochs, lr=settings.probe_lr, seed=settings.seed)[0]
    tr_idx, te_idx, speakers = probes.speaker_split(tr.meta["speakers"])
    sid_all = _pooled(model, tr, speakers)
    sid = probes.train_probe(_take(sid_all, tr_idx), _take(sid_all, te_idx), "clip", int(speakers.max()) + 1,
                             settings.probe_epochs, lr=settings.probe_lr, seed=settings.seed)[0]
    with torch.no_grad():
        model.head.load_state_dict(head.state_dict())
    checkpoint.save(edge, model, "torch", ckpt.arch, ckpt.classes, transforms=ckpt.transforms, force=True,
                    extra={"edge_head": "phones, fitted on the last layer of the frozen encoder"})
    return {**out, "per": pr["per"], "per_last_layer": last["per"], "layer_weights": pr["layer_weights"],
            "keyword_accuracy": ks["accuracy"], "speaker_accuracy": sid["accuracy"],
            "speakers": int(speakers.max()) + 1, "sid_test": len(te_idx)}


def _pooled(model, split, y: np.ndarray | None = None):
    """Clip features: each hidden state's mean over the real frames, kept as one frame."""
    from edgeprune.training import probes

    f = probes.features(model, split.inputs["logmel"], split.meta.get("frames"), split.y if y is None else y)
    m = f.mask[None, :, :, None].astype(np.float32)
    pooled = (f.states.astype(np.float32) * m).sum(2, keepdims=True) / np.maximum(m.sum(2, keepdims=True), 1)
    return probes.Features(pooled.astype(np.float16), np.ones((f.mask.shape[0], 1), dtype=bool), f.y, {})


def _take(f, idx: np.ndarray):
    from edgeprune.training import probes

    return probes.Features(f.states[:, idx], f.mask[idx], f.y[idx], {})


def _export(edge: Path, bundle: Path, phones: Dataset, settings: Settings, progress: bool) -> dict[str, Any]:
    from edgeprune.pruning.sparsity import size_report
    from edgeprune.reproduce.shared import export_or_rejected

    train, test = phones["train"], phones["test"]
    calib = train.take(sample_indices(train, 16 if settings.profile == "tiny" else 64, settings.seed))
    manifest = export_or_rejected(edge, bundle.parent, formats="tflite", quant="fp32,int8", calib=calib.inputs,
                      eval_x=test.inputs, eval_y=test.y, eval_meta=test.meta, force=True, progress=progress,
                      name=bundle.name, framework="torch")
    arts = {}
    for a in manifest["artifacts"]:
        if not (bundle / a["file"]).exists():  # rejected by parity: moved to rejected/
            arts[a["file"]] = {"precision": a["precision"], "size_bytes": a["size_bytes"], "zip_bytes": None,
                               "passed": False, "per": (a["parity"].get("metric") or {}).get("per")}
            continue
        size = size_report(bundle / a["file"])
        arts[a["file"]] = {"precision": a["precision"], "size_bytes": a["size_bytes"], "zip_bytes": size["zip_bytes"],
                           "passed": a["passed"], "per": (a["parity"].get("metric") or {}).get("per")}
    return {"artifacts": arts, "seconds": manifest["seconds"]["total"]}


def _latency(exports: Path, names: list[str], settings: Settings) -> dict[str, Any]:
    """Every model's TFLite time against the teacher's, per precision, in alternating blocks in one process."""
    from edgeprune.paired import paired_latency

    out: dict[str, Any] = {}
    for name in names:
        if name == "teacher":
            continue
        for q in ("fp32", "int8"):
            a, b = exports / "teacher" / f"model_{q}.tflite", exports / name / f"model_{q}.tflite"
            if not (a.exists() and b.exists()):  # a file parity rejected is not timed
                continue
            out.setdefault(name, {})[q] = paired_latency(str(a), str(b), rounds=settings.latency_rounds,
                                                         block=10 if settings.profile == "tiny" else 20)
    return out
