"""The score -> prune -> finetune stages on checkpoints, as the CLI runs them. Each reads the previous stage's
files: a checkpoint, a scores JSON, a pruned checkpoint. Pruning a pruned checkpoint appends to its transforms."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import checkpoint
from edgeprune.data.datasets import Dataset, sample_indices
from edgeprune.errors import EdgepruneError
from edgeprune.fileio import refuse_overwrite, sha256_file
from edgeprune.machine import machine_description
from edgeprune.models.inference import model_inputs, predict
from edgeprune.models.measure import measure
from edgeprune.pruning import api
from edgeprune.pruning.prune import PruneResult, prune
from edgeprune.pruning.targets import Target
from edgeprune.pruning.transforms import Transform
from edgeprune.scoring import Scores, get_criterion, score
from edgeprune.training.loop import fit
from edgeprune.training.profiles import Profile
from edgeprune.training.run import check_data


def calibration_set(data: Dataset | None, n: int, seed: int = 0) -> dict[str, np.ndarray] | None:
    """`n` training samples drawn across the split by `seed`, stratified by class where the task has classes
    (every pass of a criterion sees the same samples, in the same order): the task's inputs by name."""
    if data is None:
        return None
    if n <= 0:
        raise EdgepruneError(f"--calib {n}: the number of calibration samples must be positive")
    from edgeprune.tasks import get_task

    train = data["train"]
    idx = sample_indices(train, n, seed, stratify=get_task(data.task).stratify)
    return {k: v[idx] for k, v in train.inputs.items()}


def score_checkpoint(ckpt: checkpoint.Checkpoint, criterion: str, layers: list[str] | None = None,
                     calib: dict[str, np.ndarray] | None = None, **options: Any) -> Scores:
    """Score a loaded checkpoint's channels; data-driven criteria need `calib` (the task's inputs by name)."""
    entry = get_criterion(criterion)
    if entry.needs_data and calib is None:
        raise EdgepruneError(f"criterion '{criterion}' needs calibration data (--data and --calib N)")
    data = None
    if entry.needs_data:
        arrays = model_inputs(ckpt.arch, ckpt.framework, calib)
        data = arrays[0] if len(arrays) == 1 else arrays
    result = score(ckpt.model, criterion, layers=layers, data=data, model_name=ckpt.arch["model"], **options)
    result.record["checkpoint"] = str(ckpt.path)
    result.record["checkpoint_weights_sha256"] = ckpt.spec.get("weights_sha256")
    result.record["inputs"] = [s.name for s in ckpt.inputs]
    return result


def prune_checkpoint(ckpt: checkpoint.Checkpoint, target: Target, scores: Scores | None, out: Path,
                     force: bool = False, scores_file: Path | None = None, group_reduction: str = "mean",
                     ignored_layers: list[str] | None = None) -> PruneResult:
    """Prune a loaded checkpoint to `target` (coupled layers share one keep-list, ranked on their members' scores;
    see `pruning.prune`) and save the result: the checkpoint's transforms plus one channels transform (keep-lists
    replayable, with the criterion and the scores that chose them; table beside it). `scores_file`: where `scores`
    were read from (copied into the checkpoint); computed scores are written there."""
    out = Path(out)
    refuse_overwrite(out, force)
    fw, arch, model = ckpt.framework, ckpt.arch, ckpt.model
    if target.keep is None and scores is None:
        raise EdgepruneError(f"pruning to {target.describe()} needs scores (--scores FILE or --criterion NAME)")
    examples = api.example_inputs(fw, arch) if fw == "torch" else None
    result = prune(model, examples, target=target, scores=scores, group_reduction=group_reduction,
                   ignored_layers=ignored_layers)
    keep = result.keep
    criterion = scores.criterion if scores is not None and target.keep is None else "explicit"
    before, after = measure(model, fw, arch), measure(result.model, fw, arch)
    previous = ckpt.transforms
    step = len(previous) + 1
    files: dict[str, Any] = {}
    copies = carried_files(ckpt)
    scores_ref = None
    if scores is not None and target.keep is None:
        name = f"scores_{step}.json"
        if scores_file is not None:
            copies[name] = Path(scores_file)
            scores_ref = {"file": name, "source": str(scores_file), "sha256": sha256_file(Path(scores_file))}
        else:
            files[name] = scores.to_json()
            scores_ref = {"file": name}
    record = {
        "criterion": criterion, "scores": scores_ref, "target": target.describe(),
        "parent": {"path": str(ckpt.path), "weights_sha256": ckpt.spec.get("weights_sha256"),
                   "params": before["params"], "macs": before["macs"]},
        "params": after["params"], "macs": after["macs"], "notes": result.notes, "groups": result.groups,
        "seconds": round(result.seconds, 4), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    transforms = previous + [Transform("channels", {"keep": keep}, record)]
    extra = {k: v for k, v in ckpt.spec.items() if k in ("training", "finetune")}
    files["pruning.json"] = {**record, "keep": keep, "step": step, "table": result.table}
    checkpoint.save(out, result.model, fw, arch, ckpt.classes, transforms=transforms, extra=extra, force=force,
                    files=files, copies=copies)
    return result


def carried_files(ckpt: checkpoint.Checkpoint) -> dict[str, Path]:
    """The scores files an earlier transform refers to, to copy into a checkpoint derived from this one."""
    return {p.name: p for p in sorted(Path(ckpt.path).glob("scores_*.json"))}


def parent_of(ckpt: checkpoint.Checkpoint) -> str | None:
    """The checkpoint the last transform was applied to (the natural teacher), if recorded."""
    transforms = ckpt.transforms
    return (transforms[-1].record.get("parent") or {}).get("path") if transforms else None


def finetune_checkpoint(ckpt: checkpoint.Checkpoint, data: Dataset, profile: Profile, out: Path,
                        teacher: checkpoint.Checkpoint | None = None, temperature: float = 4.0, alpha: float = 0.5,
                        seed: int = 0, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Recover a pruned model's task metric; optional distillation from `teacher` (usually the unpruned parent).
    The saved model is the epoch with the best validation value of the task's selection metric."""
    out = Path(out)
    refuse_overwrite(out, force)
    check_data(data, ckpt.arch, str(ckpt.path))
    teacher_outputs = None
    if teacher is not None:
        if teacher.task.name != ckpt.task.name:
            raise EdgepruneError(f"teacher {teacher.path} is a {teacher.task.name} model; {ckpt.path} is {ckpt.task.name}")
        teacher_outputs = predict(teacher.model, teacher.framework, teacher.arch, data["train"].inputs)
    result = fit(ckpt.framework, ckpt.model, ckpt.arch, data, profile, seed=seed, progress=progress,
                 teacher_outputs=teacher_outputs, temperature=temperature, alpha=alpha)
    summary = {
        "profile": profile.name, "epochs": profile.epochs, "seed": seed, "data": data.info,
        "distillation": None if teacher is None else {"teacher": str(teacher.path), "temperature": temperature,
                                                      "alpha": alpha},
        "best_epoch": result.best_epoch, "validation": {result.metric: result.best_value},
        "train_seconds": round(result.seconds, 2), "history": result.history, "machine": machine_description(),
    }
    extra = {k: v for k, v in ckpt.spec.items() if k in ("training",)}
    checkpoint.save(out, ckpt.model, ckpt.framework, ckpt.arch, ckpt.classes, transforms=ckpt.transforms,
                    extra={**extra, "finetune": summary}, force=force, copies=carried_files(ckpt))
    return summary
