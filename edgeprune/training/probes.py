"""SUPERB-style downstream probes on a frozen encoder: a learned softmax-weighted sum of its N + 1 hidden states
and a linear head, trained on cached features (the encoder runs once per split).

- phone recognition: per-frame linear head over 39 phones + blank, CTC, PER by greedy decoding (the phones task);
- keyword spotting: mean over the real frames, linear head, accuracy (the keywords task);
- speaker identification: mean over the real frames, linear head, accuracy over espeak voice + variant speakers.
  The corpus keeps speakers apart between splits, so SID is probed within the train split: each speaker with at
  least two utterances gives its last one to the test side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError


@dataclass
class Features:
    """Hidden states [L+1, N, T', d] (float16 to halve the cache), the real-frame mask [N, T'] and targets."""

    states: np.ndarray
    mask: np.ndarray
    y: np.ndarray
    meta: dict[str, np.ndarray]


def features(model: Any, logmel: np.ndarray, frames: np.ndarray | None, y: np.ndarray,
             meta: dict[str, np.ndarray] | None = None, batch_size: int = 32) -> Features:
    """The encoder's hidden states on `logmel` [N, F, T] (the model in eval mode, no gradients)."""
    from edgeprune.scoring.layer_states import collect_states

    states, mask = collect_states(model, [np.asarray(logmel, dtype=np.float32)], frames, batch_size)
    return Features(np.stack(states).astype(np.float16), mask, np.asarray(y), dict(meta or {}))


def speaker_split(speakers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train indices, test indices, speaker ids): every speaker with >= 2 utterances, its last one held out."""
    names = np.asarray(speakers).astype(str)
    uniq, counts = np.unique(names, return_counts=True)
    kept = uniq[counts >= 2]
    if len(kept) < 2:
        raise EdgepruneError(f"speaker identification needs at least two speakers with two utterances; found "
                             f"{len(kept)}")
    ids = {s: i for i, s in enumerate(kept)}
    train, test = [], []
    for s in kept:
        idx = np.flatnonzero(names == s)
        train += idx[:-1].tolist()
        test.append(idx[-1])
    labels = np.array([ids.get(s, -1) for s in names])
    return np.array(train), np.array(test), labels


def train_probe(train: Features, test: Features, kind: str, n_classes: int, epochs: int = 20,
                batch_size: int = 32, lr: float = 1e-3, seed: int = 0, task: Any = None,
                layer: int | None = None) -> tuple[dict[str, Any], Any]:
    """Fit layer weights + a linear head on `train`, score `test`: ({"per" or "accuracy", "layer_weights"}, the
    head). kind: "frames" (CTC; `task` is the phones task, whose evaluate gives PER) or "clip". `layer`: read only
    that hidden state (e.g. -1, the last: a head the model itself can carry) instead of a learned weighted sum."""
    import torch
    import torch.nn.functional as F

    from edgeprune.frameworks.torch_fw import task_loss

    torch.manual_seed(seed)
    n_states, dim = train.states.shape[0], train.states.shape[-1]
    weights = torch.nn.Parameter(torch.zeros(n_states), requires_grad=layer is None)
    if layer is not None:  # a one-hot weighting, fixed
        with torch.no_grad():
            weights.fill_(-1e4)
            weights[layer] = 0.0
    head = torch.nn.Linear(dim, n_classes)
    opt = torch.optim.Adam([weights, *head.parameters()] if layer is None else list(head.parameters()), lr=lr)
    rng = np.random.default_rng(seed)

    def forward(f: Features, idx: np.ndarray):
        h = torch.from_numpy(f.states[:, idx].astype(np.float32))  # [L+1, B, T, d]
        h = (torch.softmax(weights, 0)[:, None, None, None] * h).sum(0)
        if kind == "frames":
            return head(h)
        m = torch.from_numpy(f.mask[idx].astype(np.float32))[..., None]
        return head((h * m).sum(1) / m.sum(1).clamp_min(1))

    for _ in range(epochs):
        order = rng.permutation(train.states.shape[1])
        for b in range(0, len(order), batch_size):
            idx = np.sort(order[b:b + batch_size])
            out = forward(train, idx)
            if kind == "frames":
                target = task.loss_targets({}, train.y[idx], {k: v[idx] for k, v in train.meta.items()})
                loss = task_loss("ctc", out, torch.from_numpy(target))
            else:
                loss = F.cross_entropy(out, torch.from_numpy(train.y[idx].astype(np.int64)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        outs = np.concatenate([forward(test, np.arange(b, min(b + 64, test.states.shape[1]))).numpy()
                               for b in range(0, test.states.shape[1], 64)])
    result: dict[str, Any] = {"layer_weights": [round(float(w), 4) for w in torch.softmax(weights.detach(), 0)]}
    if kind == "frames":
        result["per"] = float(task.evaluate(outs, test.y, test.meta)["per"])
    else:
        result["accuracy"] = float((outs.argmax(1) == test.y).mean())
    return result, head
