"""MelHuBERT-style self-supervised pre-training of a transformer encoder on log-mel frames: masked prediction of
k-means cluster ids (seed 004, after HuBERT), at CPU scale.

- Targets: k-means (scipy's kmeans2, seeded) on the encoder's own 20 ms frames (two 10 ms log-mel frames stacked,
  80-d, standardised), fitted on the train split's real frames; every encoder frame gets its nearest centroid's id,
  padding gets -100 (ignored).
- Masking ("masked" loss type): spans of `span` encoder frames start at random so that about `mask_prob` of the
  real frames are covered; the log-mel frames under them are replaced by zeros at the input (the model sees no
  mask embedding; MelHuBERT masks its Mel input too) and the loss is the cross-entropy on the masked frames only.
  "nomasked": the input is left whole and every real frame counts.
- The prediction head (Linear d -> k) lives beside the encoder: `SSLState` holds the encoder, the head, the
  centroids and the loss type; a pre-trained checkpoint is the encoder's ordinary checkpoint plus `ssl.json`
  (settings, centroids) and `ssl_head.npz`, so every edgeprune transform and export applies to the encoder as is.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import checkpoint
from edgeprune.errors import EdgepruneError

SSL_FILE, HEAD_FILE = "ssl.json", "ssl_head.npz"
LOSS_TYPES = ("masked", "nomasked")
DISTILL_OBJECTIVES = ("kl", "hidden")
IGNORE = -100


@dataclass
class Clusters:
    centroids: np.ndarray  # [k, 80] in standardised units
    mean: np.ndarray
    std: np.ndarray

    def to_json(self) -> dict[str, Any]:
        return {"centroids": self.centroids.tolist(), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Clusters:
        return cls(*(np.asarray(d[k], dtype=np.float32) for k in ("centroids", "mean", "std")))


def stacked_frames(logmel: np.ndarray) -> np.ndarray:
    """[N, F, T] log-mel -> [N, T // 2, 2F]: two consecutive 10 ms frames per 20 ms encoder frame (as the front
    end's kernel-2, stride-2 conv reads them)."""
    n, f, t = logmel.shape
    t2 = t // 2
    return logmel[:, :, :2 * t2].reshape(n, f, t2, 2).transpose(0, 2, 3, 1).reshape(n, t2, 2 * f)


def real_frames(frames: np.ndarray | None, n: int, t_in: int) -> np.ndarray:
    """[n, t_in // 2] bool: encoder frames made only of real input frames."""
    from edgeprune.scoring.layer_states import encoder_frames

    return encoder_frames(frames, n, t_in, t_in // 2)


def fit_clusters(logmel: np.ndarray, frames: np.ndarray | None, k: int, seed: int = 0,
                 max_frames: int = 50_000) -> Clusters:
    """k-means on up to `max_frames` real stacked frames drawn by seed."""
    from scipy.cluster.vq import kmeans2

    x = stacked_frames(logmel)[real_frames(frames, len(logmel), logmel.shape[-1])]
    if not np.isfinite(x).all():
        raise EdgepruneError("k-means targets: the log-mel frames hold NaN or inf")
    if len(x) < k:
        raise EdgepruneError(f"k-means targets: {len(x)} real frames for {k} clusters; give more data or fewer "
                             "clusters")
    rng = np.random.default_rng(seed)
    if len(x) > max_frames:
        x = x[rng.choice(len(x), max_frames, replace=False)]
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-5
    centroids, _ = kmeans2((x - mean) / std, k, iter=20, minit="++", seed=seed)
    return Clusters(centroids.astype(np.float32), mean.astype(np.float32), std.astype(np.float32))


def cluster_targets(clusters: Clusters, logmel: np.ndarray, frames: np.ndarray | None) -> np.ndarray:
    """[N, T // 2] int64: each encoder frame's nearest centroid, IGNORE on padding."""
    x = (stacked_frames(logmel) - clusters.mean) / clusters.std
    d = (x ** 2).sum(-1, keepdims=True) - 2 * x @ clusters.centroids.T + (clusters.centroids ** 2).sum(-1)
    ids = d.argmin(-1).astype(np.int64)
    ids[~real_frames(frames, len(logmel), logmel.shape[-1])] = IGNORE
    return ids


def span_mask(real: np.ndarray, mask_prob: float, span: int, rng: np.random.Generator) -> np.ndarray:
    """[N, T'] bool: random spans of `span` frames covering about `mask_prob` of each utterance's real frames (as
    HuBERT's compute_mask_indices: mask_prob * length / span starts, overlaps allowed)."""
    n, t = real.shape
    mask = np.zeros_like(real)
    for i in range(n):
        length = int(real[i].sum())
        if length <= span:
            continue
        starts = rng.choice(length - span, size=max(1, int(round(mask_prob * length / span))), replace=False)
        for s in starts:
            mask[i, s:s + span] = True
    return mask & real


class SSLState:
    """An encoder under pre-training: the model, its cluster prediction head and the targets' clusters."""

    def __init__(self, model: Any, head: Any, clusters: Clusters, loss_type: str = "masked"):
        if loss_type not in LOSS_TYPES:
            raise EdgepruneError(f"loss type '{loss_type}'; expected one of {', '.join(LOSS_TYPES)}")
        self.model, self.head, self.clusters, self.loss_type = model, head, clusters, loss_type

    @classmethod
    def new(cls, model: Any, clusters: Clusters, loss_type: str = "masked", seed: int = 0) -> SSLState:
        import torch

        torch.manual_seed(seed)
        dim = model.head.in_features
        return cls(model, torch.nn.Linear(dim, len(clusters.centroids)), clusters, loss_type)

    def logits(self, x: Any) -> Any:
        """[N, T', k] cluster logits from the last layer for log-mel x [N, F, T]."""
        return self.head(self.model.encoder(self.model.front_end(x)))

    def loss(self, logmel: np.ndarray, targets: np.ndarray, frames: np.ndarray | None,
             rng: np.random.Generator, mask_prob: float = 0.5, span: int = 5) -> Any:
        """The pre-training loss of one batch (a torch scalar with its graph)."""
        import torch
        import torch.nn.functional as F

        x = np.array(logmel, dtype=np.float32)
        real = real_frames(frames, len(x), x.shape[-1])
        t = np.array(targets)
        if self.loss_type == "masked":
            mask = span_mask(real, mask_prob, span, rng)
            x[:, :, :2 * mask.shape[1]] *= ~np.repeat(mask, 2, axis=1)[:, None, :]
            t[~mask] = IGNORE
        out = self.logits(torch.from_numpy(x))
        if not (t != IGNORE).any():  # nothing to predict (utterances no longer than one span): a zero loss
            return out.sum() * 0.0
        return F.cross_entropy(out.flatten(0, 1), torch.from_numpy(t).flatten(), ignore_index=IGNORE)

    def parameters(self) -> list[Any]:
        return list(self.model.parameters()) + list(self.head.parameters())


def pretrain(state: SSLState, logmel: np.ndarray, frames: np.ndarray | None, epochs: int, batch_size: int = 8,
             lr: float = 2e-4, warmup_steps: int = 500, clip_norm: float = 5.0, seed: int = 0,
             progress: bool = True, keep: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Train encoder + head on the masked-prediction loss; returns the per-epoch mean losses and the time.
    `keep`: {parameter name: bool mask} whose False entries are held at zero (sparse continued pre-training)."""
    import torch

    targets = cluster_targets(state.clusters, logmel, frames)
    params = state.parameters()
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup_steps)))
    rng = np.random.default_rng(seed)
    named = dict(state.model.named_parameters())
    masks = {n: torch.from_numpy(m) for n, m in (keep or {}).items()}
    history, start = [], time.perf_counter()
    for epoch in range(epochs):
        state.model.train()
        state.head.train()
        order = rng.permutation(len(logmel))
        losses = []
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            loss = state.loss(logmel[idx], targets[idx], None if frames is None else frames[idx], rng)
            if not torch.isfinite(loss):
                raise EdgepruneError(f"pre-training loss is {float(loss)} at epoch {epoch + 1}; lower the learning "
                                     "rate or lengthen the warm-up")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
            opt.step()
            sched.step()
            with torch.no_grad():
                for n, m in masks.items():
                    named[n].mul_(m)
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
        if progress:
            print(f"[ssl] epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f}", flush=True)
    return {"history": history, "seconds": round(time.perf_counter() - start, 2)}


def hidden_targets(n_layers: int) -> list[int]:
    """DistilHuBERT's teacher layers scaled to an n-layer teacher (4, 8, 12 of 12): n/3, 2n/3 and n, 1-based."""
    return sorted({max(1, n_layers // 3), max(1, 2 * n_layers // 3), n_layers})


class HiddenPrediction:
    """DistilHuBERT's objective: one linear head per teacher layer predicts that layer's output from the student's
    last hidden state; loss per layer = mean |h - h_hat| - cos_weight * log sigmoid(cos(h, h_hat)) over the real
    frames, summed over layers. The heads exist only for training and are not saved with the student."""

    def __init__(self, student_dim: int, teacher_dim: int, layers: list[int], cos_weight: float = 1.0):
        import torch

        self.layers, self.cos_weight = list(layers), cos_weight
        self.heads = torch.nn.ModuleList(torch.nn.Linear(student_dim, teacher_dim) for _ in self.layers)

    def loss(self, student_last: Any, teacher_states: list[Any]) -> Any:
        """student_last [M, D_s] and teacher_states (index i: the output of layer i, each [M, D_t]) on real frames."""
        import torch.nn.functional as F

        total = 0.0
        for layer, head in zip(self.layers, self.heads):
            pred, target = head(student_last), teacher_states[layer]
            cos = F.cosine_similarity(pred, target, dim=-1)
            total = total + (pred - target).abs().mean() - self.cos_weight * F.logsigmoid(cos).mean()
        return total


def distill(student: SSLState, teacher: SSLState, logmel: np.ndarray, frames: np.ndarray | None, epochs: int,
            temperature: float = 1.0, alpha: float = 1.0, batch_size: int = 8, lr: float = 2e-4,
            warmup_steps: int = 100, clip_norm: float = 5.0, seed: int = 0, progress: bool = True,
            objective: str = "kl") -> dict[str, Any]:
    """Train the student from the frozen teacher on the real frames; inputs are not masked (the "nomasked" type).
    objective "kl", the seed's: (1 - alpha) * CE(student, cluster targets) + alpha * KL(softmax(t / T) ||
    softmax(s / T)) (batchmean over frames); alpha 1 and T 1 as the original (pure KL).
    objective "hidden", DistilHuBERT's: the student's last layer predicts the teacher's `hidden_targets` layers
    (`HiddenPrediction`); the cluster head is left as it was."""
    import torch
    import torch.nn.functional as F

    if objective not in DISTILL_OBJECTIVES:
        raise EdgepruneError(f"distillation objective '{objective}'; expected one of {', '.join(DISTILL_OBJECTIVES)}")
    targets = cluster_targets(student.clusters, logmel, frames)
    params = student.parameters()
    hidden = None
    if objective == "hidden":
        from edgeprune.models.encoder import encoder_layers, hidden_states

        hidden = HiddenPrediction(student.head.in_features, teacher.head.in_features,
                                  hidden_targets(len(encoder_layers(teacher.model))))
        params = list(student.model.parameters()) + list(hidden.heads.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup_steps)))
    rng = np.random.default_rng(seed)
    teacher.model.eval()
    teacher.head.eval()
    history, start = [], time.perf_counter()
    for epoch in range(epochs):
        student.model.train()
        student.head.train()
        order = rng.permutation(len(logmel))
        losses = []
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            x = torch.from_numpy(np.asarray(logmel[idx], dtype=np.float32))
            real = torch.from_numpy(real_frames(None if frames is None else frames[idx], len(idx), x.shape[-1]))
            if hidden is not None:
                with torch.no_grad():
                    t_states = [h[real] for h in hidden_states(teacher.model, x)]
                loss = hidden.loss(hidden_states(student.model, x)[-1][real], t_states)
            else:
                with torch.no_grad():
                    t_logits = teacher.logits(x)[real]
                s_logits = student.logits(x)[real]
                loss = alpha * F.kl_div(F.log_softmax(s_logits / temperature, -1),
                                        F.log_softmax(t_logits / temperature, -1),
                                        log_target=True, reduction="batchmean") * temperature ** 2
            if hidden is None and alpha < 1:
                t = torch.from_numpy(targets[idx])[real]
                loss = loss + (1 - alpha) * F.cross_entropy(s_logits, t, ignore_index=IGNORE)
            if not torch.isfinite(loss):
                raise EdgepruneError(f"distillation loss is {float(loss)} at epoch {epoch + 1}; lower the learning "
                                     "rate or lengthen the warm-up")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
        if progress:
            print(f"[ssl] distillation epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f}", flush=True)
    return {"history": history, "seconds": round(time.perf_counter() - start, 2)}


def evaluate_loss(state: SSLState, logmel: np.ndarray, frames: np.ndarray | None, seed: int = 0,
                  batch_size: int = 32) -> float:
    """The pre-training loss on held-out data (masks drawn by seed, so every model sees the same ones)."""
    import torch

    targets = cluster_targets(state.clusters, logmel, frames)
    rng = np.random.default_rng(seed)
    state.model.eval()
    state.head.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b in range(0, len(logmel), batch_size):
            sl = slice(b, b + batch_size)
            loss = state.loss(logmel[sl], targets[sl], None if frames is None else frames[sl], rng)
            total += float(loss) * len(logmel[sl])
            count += len(logmel[sl])
    return total / count


def save(path: Path, state: SSLState, ckpt_like: checkpoint.Checkpoint | None, arch: dict[str, Any],
         transforms: list | None = None, extra: dict[str, Any] | None = None, force: bool = False) -> Path:
    """The encoder's checkpoint plus ssl.json (loss type, clusters) and ssl_head.npz."""
    with tempfile.TemporaryDirectory(prefix="edgeprune-ssl-") as tmp:
        head = Path(tmp) / HEAD_FILE
        np.savez(head, **{k: v.detach().numpy() for k, v in state.head.state_dict().items()})
        classes = None if ckpt_like is None else ckpt_like.classes
        return checkpoint.save(path, state.model, "torch", arch, classes, transforms=transforms, extra=extra,
                               force=force, files={SSL_FILE: {"loss_type": state.loss_type,
                                                              "clusters": state.clusters.to_json()}},
                               copies={HEAD_FILE: head})


def load(path: Path) -> tuple[checkpoint.Checkpoint, SSLState]:
    """A pre-trained encoder checkpoint and its SSL state (head and clusters)."""
    import torch

    path = Path(path)
    ckpt = checkpoint.load(path, framework="torch")
    if not (path / SSL_FILE).exists() or not (path / HEAD_FILE).exists():
        raise EdgepruneError(f"{path}: not a pre-trained encoder (no {SSL_FILE} / {HEAD_FILE})")
    meta = json.loads((path / SSL_FILE).read_text())
    clusters = Clusters.from_json(meta["clusters"])
    weights = np.load(path / HEAD_FILE)
    head = torch.nn.Linear(weights["weight"].shape[1], weights["weight"].shape[0])
    head.load_state_dict({k: torch.from_numpy(weights[k]) for k in ("weight", "bias")})
    return ckpt, SSLState(ckpt.model, head, clusters, meta["loss_type"])
