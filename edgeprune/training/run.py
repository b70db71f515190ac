"""High-level train and evaluate for any registered model and task, used by the CLI and the pipeline stages."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgeprune import checkpoint
from edgeprune.data.datasets import Dataset
from edgeprune.data.sources import load_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.fileio import refuse_overwrite
from edgeprune.frameworks import get_adapter
from edgeprune.machine import machine_description
from edgeprune.models import arch_spec, build, task_of
from edgeprune.models.registry import has_twin
from edgeprune.tasks import Task, get_task
from edgeprune.training.loop import fit, validation_report
from edgeprune.training.profiles import Profile, for_model


def data_for(source: str, profile: Profile, progress: bool = True, task: Task | str = "scenes") -> Dataset:
    """The data set a run uses: `synthetic` at the profile's size for the task, or a folder of real data."""
    return load_dataset(source, get_task(task), profile, progress=progress)


def check_data(data: Dataset, arch: dict[str, Any], where: str = "") -> None:
    """The data must serve the model's task and, for classifiers, have its number of classes."""
    task = task_of(arch)
    source = data.info.get("source")
    if data.task != task.name:
        raise EdgepruneError(f"{where or 'the model'} is a {task.name} model; data '{source}' is {data.task} data "
                             f"(--task {task.name})")
    n = arch["args"].get("n_classes")
    if task.kind == "classification" and n is not None and data.classes is not None and len(data.classes) != n:
        raise EdgepruneError(f"data '{source}' has {len(data.classes)} classes; the model expects {n}")


def train(model_name: str, framework: str, data: Dataset, profile: Profile, out: Path, seed: int = 0,
          force: bool = False, progress: bool = True, task: str | None = None,
          args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a registered model from scratch for `task` (default: the data's), with architecture arguments `args`
    (e.g. {"fusion": "dual"}), save the best-validation checkpoint at `out`, return its summary."""
    out = Path(out)
    refuse_overwrite(out, force)  # fail before minutes of training, not after
    arch = arch_spec(model_name, task or data.task, **(args or {}))
    check_data(data, arch)
    profile = for_model(profile, model_name)
    adapter = get_adapter(framework)
    adapter.seed_everything(seed)
    model = _initial_model(arch, framework, seed)
    result = fit(framework, model, arch, data, profile, seed=seed, progress=progress)
    val = validation_report(model, framework, arch, data)
    summary = {
        "model": model_name, "task": arch["task"], "framework": framework, "profile": profile.name, "seed": seed,
        "epochs": profile.epochs, "batch_size": profile.batch_size, "lr": profile.lr,
        "data": data.info, "best_epoch": result.best_epoch, "validation": task_of(arch).headline(val),
        "train_seconds": round(result.seconds, 2), "train_samples_per_second": round(result.samples_per_second, 2),
        "history": result.history, "machine": machine_description(),
    }
    checkpoint.save(out, model, framework, arch, data.classes, extra={"training": summary}, force=force)
    return summary


def _initial_model(arch: dict[str, Any], framework: str, seed: int) -> Any:
    """A fresh model; a Keras twin starts from the PyTorch twin's seeded initial weights, so the two differ only
    in framework numerics (Keras' Glorot initialisation trains the DCASE baseline markedly slower in a quick run)."""
    model = build(arch, framework)
    if framework == "keras" and has_twin(arch):
        from edgeprune.transfer import transfer_weights

        torch_adapter = get_adapter("torch")
        torch_adapter.seed_everything(seed)
        transfer_weights(build(arch, "torch"), model)
    return model


def evaluate(ckpt: checkpoint.Checkpoint, data: Dataset, split: str = "test", full: bool = True) -> dict[str, Any]:
    """The task's metrics of a loaded checkpoint on one split (`full`: the slow ones too, e.g. STOI and PESQ)."""
    if split not in data.splits:
        raise EdgepruneError(f"unknown split '{split}'; expected one of {', '.join(data.splits)}")
    check_data(data, ckpt.arch, str(ckpt.path))
    classes = ckpt.classes or data.classes
    if ckpt.classes and data.classes and len(data.classes) != len(ckpt.classes):
        raise EdgepruneError(
            f"{ckpt.path}: trained on {len(ckpt.classes)} classes, data '{data.info.get('source')}' has {len(data.classes)}"
        )
    start = time.perf_counter()
    part = data[split]
    from edgeprune.models.inference import predict

    outputs = predict(ckpt.model, ckpt.framework, ckpt.arch, part.inputs)
    report = ckpt.task.evaluate(outputs, part.y, part.meta, classes, full=full)
    report.update({"checkpoint": str(ckpt.path), "framework": ckpt.framework, "task": ckpt.task.name, "split": split,
                   "data": data.info, "seconds": round(time.perf_counter() - start, 3)})
    return report
