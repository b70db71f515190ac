"""The training loop, shared by both frameworks: shuffle, batch, step, validate, keep the best epoch."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from edgeprune.data.datasets import Dataset
from edgeprune.training.metrics import classification_report
from edgeprune.training.profiles import Profile


@dataclass
class TrainResult:
    best_epoch: int
    best_val_accuracy: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    samples_per_second: float = 0.0


def fit(adapter, model, data: Dataset, profile: Profile, seed: int = 0, progress: bool = True,
        teacher_probs: np.ndarray | None = None, temperature: float = 4.0, alpha: float = 0.5) -> TrainResult:
    """Train `model` in place; on return it holds the weights of the epoch with the best validation accuracy.

    With `teacher_probs` (the frozen teacher's probabilities on every training clip, in order), the loss adds
    knowledge distillation at `temperature` with weight `alpha`.
    """
    adapter.seed_everything(seed)
    distill = teacher_probs is not None
    trainer = adapter.Trainer(model, profile.lr, temperature=temperature if distill else None, alpha=alpha)
    rng = np.random.default_rng(seed)
    train, val = data["train"], data["validation"]
    best_acc, best_epoch, best_weights = -1.0, -1, None
    history, trained, train_time = [], 0, 0.0
    for epoch in range(1, profile.epochs + 1):
        order = rng.permutation(len(train))
        batches = [order[i : i + profile.batch_size] for i in range(0, len(order), profile.batch_size)]
        losses = []
        start = time.perf_counter()
        with tqdm(batches, desc=f"epoch {epoch}/{profile.epochs}", disable=not progress, unit="batch", leave=False) as bar:
            for idx in bar:
                losses.append(trainer.step(train.x[idx], train.y[idx], teacher_probs[idx] if distill else None))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        train_time += time.perf_counter() - start
        trained += len(train)
        report = classification_report(adapter.predict_proba(model, val.x), val.y, data.classes)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_accuracy": report["accuracy"],
               "val_log_loss": report["log_loss"]}
        history.append(row)
        if progress:
            print(f"epoch {epoch}/{profile.epochs}: train loss {row['train_loss']:.3f}, "
                  f"val accuracy {row['val_accuracy']:.3f}, val log-loss {row['val_log_loss']:.3f}", flush=True)
        if report["accuracy"] > best_acc:
            best_acc, best_epoch, best_weights = report["accuracy"], epoch, adapter.get_weights(model)
    adapter.set_weights(model, best_weights)
    return TrainResult(best_epoch, best_acc, history, train_time, trained / max(train_time, 1e-9))
