"""PyTorch adapter. Training and evaluation take log-mel features [N, 40, 500] and make them channels-first
[N, 1, 40, 500]; export feeds inputs already in the model's own layout (forward_proba)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgeprune.errors import EdgepruneError

NAME = "torch"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_input(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x[:, None], dtype=np.float32))


def predict_proba(model: torch.nn.Module, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Class probabilities [N, classes] in eval mode, from log-mel features [N, 40, 500]."""
    return forward_proba(model, x[:, None], batch_size)


def forward_proba(model: torch.nn.Module, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Softmax of the model's outputs in eval mode, for inputs already in its own layout [N, *input shape]."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32))
            out.append(F.softmax(model(batch), dim=1).numpy())
    return np.concatenate(out).astype(np.float32)


class Trainer:
    """Adam + cross-entropy, one batch at a time (the shared loop drives it).

    With `temperature` set, the loss is alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE, the teacher's
    probabilities coming with each batch (Hinton et al.; T^2 keeps the gradient scale independent of T).
    """

    def __init__(self, model: torch.nn.Module, lr: float, temperature: float | None = None, alpha: float = 0.5) -> None:
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.temperature, self.alpha = temperature, alpha

    def step(self, x: np.ndarray, y: np.ndarray, teacher_probs: np.ndarray | None = None) -> float:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        logits = self.model(to_input(x))
        loss = F.cross_entropy(logits, torch.from_numpy(y))
        if self.temperature is not None and teacher_probs is not None:
            t = self.temperature
            teacher_log = F.log_softmax(torch.log(torch.from_numpy(teacher_probs).clamp_min(1e-12)) / t, dim=1)
            kd = F.kl_div(F.log_softmax(logits / t, dim=1), teacher_log, log_target=True, reduction="batchmean")
            loss = self.alpha * t * t * kd + (1 - self.alpha) * loss
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def get_weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Every parameter and buffer (BN running statistics included) as numpy, by state_dict name."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def set_weights(model: torch.nn.Module, weights: dict[str, np.ndarray], source: str = "weights") -> None:
    """Load named arrays; any missing, extra or mis-shaped entry is one clear error."""
    state = model.state_dict()
    missing, extra = sorted(set(state) - set(weights)), sorted(set(weights) - set(state))
    if missing or extra:
        raise EdgepruneError(f"{source}: does not match the model (missing {missing[:5]}, unexpected {extra[:5]})")
    for k, v in state.items():
        if tuple(weights[k].shape) != tuple(v.shape):
            raise EdgepruneError(f"{source}: '{k}' has shape {tuple(weights[k].shape)}; the model expects {tuple(v.shape)}")
    model.load_state_dict({k: torch.from_numpy(np.asarray(weights[k])).to(v.dtype) for k, v in state.items()})


def count_params(model: torch.nn.Module) -> int:
    """Parameters plus BN running mean/var (as Keras counts them); num_batches_tracked is not a weight."""
    n = sum(p.numel() for p in model.parameters())
    return n + sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))


def layer_rows(model: torch.nn.Module, input_shape: tuple[int, ...]) -> list[dict[str, Any]]:
    """One row per leaf module that ran: name, type, output shape (the first of several), params and MACs (conv and
    linear only: recurrent and attention arithmetic is not counted)."""
    rows: list[dict[str, Any]] = []
    hooks = []

    def hook(name):
        def fn(mod, inp, out):
            first = out[0] if isinstance(out, (tuple, list)) else out  # LSTM / GRU return (output, state)
            if not isinstance(first, torch.Tensor):
                return
            shape = tuple(first.shape[1:])
            macs = 0
            if isinstance(mod, torch.nn.Conv2d) or isinstance(mod, torch.nn.Conv1d):
                macs = out.numel() // out.shape[0] * (mod.weight[0].numel())
            elif isinstance(mod, torch.nn.Linear):
                macs = out.numel() // out.shape[0] * mod.in_features
            params = sum(p.numel() for p in mod.parameters(recurse=False))
            params += sum(b.numel() for n, b in mod.named_buffers(recurse=False) if n.startswith("running_"))
            rows.append({"name": name, "type": type(mod).__name__, "output": list(shape), "params": params, "macs": macs})
        return fn

    for name, mod in model.named_modules():
        if name and not list(mod.children()):
            hooks.append(mod.register_forward_hook(hook(name)))
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        for h in hooks:
            h.remove()
    return rows


def input_shape(arch: dict[str, Any]) -> tuple[int, ...]:
    return (1, arch["n_mels"], arch["n_frames"])
