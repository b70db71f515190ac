"""The score -> prune -> finetune stages on checkpoints, as the CLI runs them. Each reads the previous stage's
files: a checkpoint, a scores JSON, a pruned checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import checkpoint
from edgeprune.data.datasets import Dataset
from edgeprune.errors import EdgepruneError
from edgeprune.fileio import refuse_overwrite
from edgeprune.frameworks import get_adapter
from edgeprune.pruning import api
from edgeprune.pruning.targets import Target, resolve
from edgeprune.scoring import Scores, get_criterion, score
from edgeprune.training.loop import fit
from edgeprune.training.profiles import Profile
from edgeprune.training.run import machine_description


def calibration_set(data: Dataset | None, n: int) -> np.ndarray | None:
    """The first `n` training clips (deterministic: every pass of a criterion sees the same samples)."""
    if data is None:
        return None
    if n <= 0:
        raise EdgepruneError(f"--calib {n}: the number of calibration samples must be positive")
    return data["train"].x[:n]


def score_checkpoint(ckpt: checkpoint.Checkpoint, criterion: str, layers: list[str] | None = None,
                     calib: np.ndarray | None = None, **options: Any) -> Scores:
    """Score a loaded checkpoint's channels; data-driven criteria need `calib`."""
    entry = get_criterion(criterion)
    if entry.needs_data and calib is None:
        raise EdgepruneError(f"criterion '{criterion}' needs calibration data (--data and --calib N)")
    result = score(ckpt.model, criterion, layers=layers, data=calib if entry.needs_data else None,
                   model_name=ckpt.arch["model"], **options)
    result.record["checkpoint"] = str(ckpt.path)
    result.record["checkpoint_weights_sha256"] = ckpt.spec.get("weights_sha256")
    return result


def prune_checkpoint(ckpt: checkpoint.Checkpoint, target: Target, scores: Scores | None, out: Path,
                     force: bool = False) -> api.PruneResult:
    """Prune a loaded checkpoint to `target` and save the result (keep-lists replayable, table beside it)."""
    out = Path(out)
    refuse_overwrite(out, force)
    if ckpt.spec.get("pruning"):
        raise EdgepruneError(f"{ckpt.path} is already pruned; prune its parent again with the combined keep-lists")
    fw, arch, model = ckpt.framework, ckpt.arch, ckpt.model
    channels = api.prunable_channels(model, fw, arch)

    def measure(keep: dict[str, list[int]]) -> dict[str, float]:
        return api.measure(api.apply_keep(model, fw, arch, keep)[0], fw, arch)

    keep = resolve(target, scores, channels, measure=measure)
    criterion = scores.criterion if scores is not None and target.keep is None else "explicit"
    result = api.prune(model, fw, arch, keep, criterion=criterion)
    before, after = api.measure(model, fw, arch), api.measure(result.model, fw, arch)
    pruning = {
        "keep": keep, "criterion": criterion, "target": target.describe(),
        "parent": {"path": str(ckpt.path), "weights_sha256": ckpt.spec.get("weights_sha256"),
                   "params": before["params"], "macs": before["macs"]},
        "params": after["params"], "macs": after["macs"], "notes": result.notes,
        "seconds": round(result.seconds, 4), "table": result.table,
    }
    extra = {k: v for k, v in ckpt.spec.items() if k in ("training",)}
    checkpoint.save(out, result.model, fw, arch, ckpt.classes, extra={**extra, "pruning": pruning}, force=force,
                    files={"pruning.json": pruning})
    return result


def finetune_checkpoint(ckpt: checkpoint.Checkpoint, data: Dataset, profile: Profile, out: Path,
                        teacher: checkpoint.Checkpoint | None = None, temperature: float = 4.0, alpha: float = 0.5,
                        seed: int = 0, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Recover a pruned model's accuracy; optional distillation from `teacher` (usually the unpruned parent).
    The saved model is the epoch with the best validation accuracy."""
    out = Path(out)
    refuse_overwrite(out, force)
    adapter = get_adapter(ckpt.framework)
    teacher_probs = None
    if teacher is not None:
        teacher_probs = get_adapter(teacher.framework).predict_proba(teacher.model, data["train"].x)
    result = fit(adapter, ckpt.model, data, profile, seed=seed, progress=progress, teacher_probs=teacher_probs,
                 temperature=temperature, alpha=alpha)
    summary = {
        "profile": profile.name, "epochs": profile.epochs, "seed": seed, "data": data.info,
        "distillation": None if teacher is None else {"teacher": str(teacher.path), "temperature": temperature,
                                                      "alpha": alpha},
        "best_epoch": result.best_epoch, "validation": {"accuracy": result.best_val_accuracy},
        "train_seconds": round(result.seconds, 2), "history": result.history, "machine": machine_description(),
    }
    extra = {k: v for k, v in ckpt.spec.items() if k in ("training", "pruning")}
    checkpoint.save(out, ckpt.model, ckpt.framework, ckpt.arch, ckpt.classes,
                    extra={**extra, "finetune": summary}, force=force)
    return summary
