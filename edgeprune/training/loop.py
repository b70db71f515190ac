"""The training loop, shared by both frameworks and every task: shuffle, batch, step, validate on the task's
selection metric, keep the best epoch."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from edgeprune.data.datasets import Dataset
from edgeprune.errors import EdgepruneError
from edgeprune.frameworks import get_adapter
from edgeprune.models.inference import model_inputs, output_perm, predict
from edgeprune.models.registry import task_of
from edgeprune.training.profiles import Profile


@dataclass
class TrainResult:
    best_epoch: int
    best_value: float  # the task's selection metric on the validation split at the best epoch
    metric: str
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    samples_per_second: float = 0.0


def validation_report(model: Any, framework: str, arch: dict[str, Any], data: Dataset, split: str = "validation",
                      full: bool = False) -> dict[str, Any]:
    """The task's metrics of `model` on one split."""
    part = data[split]
    outputs = predict(model, framework, arch, part.inputs)
    return task_of(arch).evaluate(outputs, part.y, part.meta, data.classes, full=full)


def fit(framework: str, model: Any, arch: dict[str, Any], data: Dataset, profile: Profile, seed: int = 0,
        progress: bool = True, teacher_outputs: np.ndarray | None = None, temperature: float = 4.0,
        alpha: float = 0.5) -> TrainResult:
    """Train `model` in place; on return it holds the weights of the epoch with the best validation value of the
    task's selection metric (accuracy, PER, SI-SDR improvement, ...).

    With `teacher_outputs` (a frozen teacher's outputs on every training sample, in order, in the task's axes),
    the loss adds distillation at `temperature` with weight `alpha`.
    """
    adapter = get_adapter(framework)
    task = task_of(arch)
    adapter.seed_everything(seed)
    distill = teacher_outputs is not None
    trainer = adapter.Trainer(model, profile.lr, loss=task.loss, output_perm=output_perm(arch, framework),
                              output_kind=task.output.kind, temperature=temperature if distill else None, alpha=alpha,
                              clip_norm=profile.clip_norm, warmup_steps=profile.warmup_steps)
    rng = np.random.default_rng(seed)
    train = data["train"]
    inputs = model_inputs(arch, framework, train.inputs)  # laid out once, sliced per batch
    targets = task.loss_targets(train.inputs, train.y, train.meta)
    best, best_epoch, best_weights = None, -1, None
    history, trained, train_time = [], 0, 0.0
    for epoch in range(1, profile.epochs + 1):
        order = rng.permutation(len(train))
        batches = [order[i : i + profile.batch_size] for i in range(0, len(order), profile.batch_size)]
        losses = []
        start = time.perf_counter()
        with tqdm(batches, desc=f"epoch {epoch}/{profile.epochs}", disable=not progress, unit="batch", leave=False) as bar:
            for b, idx in enumerate(bar, start=1):
                loss = trainer.step([x[idx] for x in inputs], targets[idx], teacher_outputs[idx] if distill else None)
                if not math.isfinite(loss):
                    raise EdgepruneError(f"training diverged: the loss is {loss} at epoch {epoch}, batch {b}; lower "
                                         "the learning rate or check the data")
                losses.append(loss)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        train_time += time.perf_counter() - start
        trained += len(train)
        report = validation_report(model, framework, arch, data)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        row.update({f"val_{k}": report[k] for k in task.metric_names() if report.get(k) is not None})
        history.append(row)
        if progress:
            shown = ", ".join(f"{k.removeprefix('val_').replace('_', '-')} {v:.3f}" for k, v in row.items()
                              if k.startswith("val_"))
            print(f"epoch {epoch}/{profile.epochs}: train loss {row['train_loss']:.3f}, val {shown}", flush=True)
        value = report[task.select]
        if task.better(value, best):
            best, best_epoch, best_weights = value, epoch, adapter.get_weights(model)
    adapter.set_weights(model, best_weights)
    return TrainResult(best_epoch, float(best), task.select, history, train_time, trained / max(train_time, 1e-9))
