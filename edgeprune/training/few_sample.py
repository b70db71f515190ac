"""Recovery of a pruned CNN from a few samples (CMa-FSMC, MiR): the student mimics the frozen teacher's pre-pooling
feature map, its classifier head frozen, optionally on CMaMix inputs; and ordinary fine-tuning on the same samples
as the plain baseline. PyTorch.

The seed's optimiser throughout: SGD lr 0.02, momentum 0.9, weight decay 1e-4, the rate x0.1 after every 40 % of
the steps. The pre-pooling feature map is the input of the model's last global average pooling (resnet-kws: the
last block's output), where MiR matches features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.scoring.concept_mask import cmamix, feature_concept_mask


@dataclass(frozen=True)
class Schedule:
    """Steps of batch_size samples (drawn in seeded epochs over the few samples) and the seed's SGD settings."""

    steps: int
    batch_size: int = 16
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    decay_every: float = 0.4  # of the steps
    gamma: float = 0.1


def _last(model: Any, kind: type, what: str) -> Any:
    found = [m for m in model.modules() if isinstance(m, kind)]
    if not found:
        raise EdgepruneError(f"{type(model).__name__} has no {what}; feature-mimicking recovery needs one")
    return found[-1]


def pre_pool_features(model: Any, x: Any) -> Any:
    """The input of the model's last global average pooling (AdaptiveAvgPool2d) for input x: [B, C, h, w]."""
    import torch

    pool = _last(model, torch.nn.AdaptiveAvgPool2d, "global average pooling (AdaptiveAvgPool2d)")
    captured = []
    handle = pool.register_forward_hook(lambda module, args, output: captured.append(args[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return captured[0]


def _batches(n: int, schedule: Schedule, rng: np.random.Generator):
    order: list[int] = []
    for _ in range(schedule.steps):
        if len(order) < schedule.batch_size:
            order += rng.permutation(n).tolist()
        idx, order = order[:schedule.batch_size], order[schedule.batch_size:]
        yield np.array(idx)


def _optimiser(params: list[Any], schedule: Schedule) -> tuple[Any, Any]:
    import torch

    opt = torch.optim.SGD(params, lr=schedule.lr, momentum=schedule.momentum, weight_decay=schedule.weight_decay)
    step = max(1, int(round(schedule.decay_every * schedule.steps)))
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=schedule.gamma)


def _check(x: np.ndarray, y: np.ndarray | None = None) -> None:
    if len(x) < 2:
        raise EdgepruneError(f"recovery needs at least 2 samples, got {len(x)}")
    if not np.isfinite(x).all():
        raise EdgepruneError("recovery samples hold NaN or inf")
    if y is not None and len(y) != len(x):
        raise EdgepruneError(f"{len(x)} samples but {len(y)} labels")


def _run(loss_of: Callable[[np.ndarray, np.random.Generator], Any], params: list[Any], n: int, schedule: Schedule,
         seed: int, progress: bool, label: str) -> dict[str, Any]:
    import torch

    opt, sched = _optimiser(params, schedule)
    rng = np.random.default_rng(seed)
    losses, start = [], time.perf_counter()
    report_every = max(1, schedule.steps // 5)
    for step, idx in enumerate(_batches(n, schedule, rng), start=1):
        loss = loss_of(idx, rng)
        if not torch.isfinite(loss):
            raise EdgepruneError(f"{label} loss is {float(loss)} at step {step}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress and step % report_every == 0:
            print(f"[{label}] step {step}/{schedule.steps}: loss {np.mean(losses[-report_every:]):.4f}", flush=True)
    chunks = np.array_split(np.array(losses), min(5, len(losses)))
    return {"loss": [round(float(c.mean()), 6) for c in chunks], "steps": schedule.steps,
            "seconds": round(time.perf_counter() - start, 2)}


def mimic(student: Any, teacher: Any, x: np.ndarray, schedule: Schedule, mix: bool = True, threshold: float = 0.2,
          seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Train the student so its pre-pooling features match the frozen teacher's (MSE), its classifier head frozen;
    with `mix`, each batch is CMaMix-ed first: the teacher's concept mask of its own pre-pooling features (summed
    over channels, upsampled to the input's frequency x time) pastes a permuted sample's masked region into each."""
    import torch
    import torch.nn.functional as F

    _check(x)
    x = np.asarray(x, dtype=np.float32)
    teacher.eval()
    head = _last(student, torch.nn.Linear, "classifier head (Linear)")
    frozen = {id(p) for p in head.parameters()}
    params = [p for p in student.parameters() if id(p) not in frozen]
    for p in head.parameters():
        p.requires_grad_(False)
    student.train()

    def loss_of(idx: np.ndarray, rng: np.random.Generator) -> Any:
        batch = x[idx]
        if mix:
            with torch.no_grad():
                feats = pre_pool_features(teacher, torch.from_numpy(batch)).numpy()
            batch = cmamix(batch, feature_concept_mask(feats, batch.shape[-2:], threshold), rng.permutation(len(idx)))
        xb = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.no_grad():
            target = pre_pool_features(teacher, xb)
        return F.mse_loss(pre_pool_features(student, xb), target)

    try:
        return _run(loss_of, params, len(x), schedule, seed, progress, "mimic" + ("+cmamix" if mix else ""))
    finally:
        for p in head.parameters():
            p.requires_grad_(True)
        student.eval()


def finetune(model: Any, x: np.ndarray, y: np.ndarray, schedule: Schedule, seed: int = 0,
             progress: bool = True) -> dict[str, Any]:
    """Ordinary fine-tuning on the few samples: cross-entropy on the labels, every parameter trained."""
    import torch
    import torch.nn.functional as F

    _check(x, y)
    x = np.asarray(x, dtype=np.float32)
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    model.train()

    def loss_of(idx: np.ndarray, rng: np.random.Generator) -> Any:
        return F.cross_entropy(model(torch.from_numpy(x[idx])), labels[idx])

    try:
        return _run(loss_of, list(model.parameters()), len(x), schedule, seed, progress, "fine-tune")
    finally:
        model.eval()
