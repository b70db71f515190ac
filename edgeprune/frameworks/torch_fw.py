"""PyTorch adapter: inference on arrays already in the model's layout, one training step for a task's loss,
weights in and out, parameter and MAC counts. PyTorch classifiers return logits; `predict` turns them into
probabilities when the task's output is probabilities."""

from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from edgeprune.errors import EdgepruneError

NAME = "torch"
LOSSES = ("cross_entropy", "ctc", "masked_magnitude")
MAGNITUDE_POWER, MAGNITUDE_EPS = 0.3, 1e-4  # power-law compressed magnitudes, as in speech enhancement practice


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _tensors(inputs: Sequence[np.ndarray], start: int, stop: int) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(x[start:stop], dtype=np.float32)) for x in inputs]


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def forward(model: torch.nn.Module, inputs: Sequence[np.ndarray], batch_size: int = 128) -> np.ndarray:
    """The model's (first) output in eval mode, for inputs already in its own layout, one array per input."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(inputs[0]), batch_size):
            out.append(_first(model(*_tensors(inputs, i, i + batch_size))).numpy())
    return np.concatenate(out).astype(np.float32)


def predict(model: torch.nn.Module, inputs: Sequence[np.ndarray], kind: str, batch_size: int = 128) -> np.ndarray:
    """Outputs of the task's kind: softmax over the classes axis for "probs" (the model returns logits)."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(inputs[0]), batch_size):
            y = _first(model(*_tensors(inputs, i, i + batch_size)))
            out.append((F.softmax(y, dim=1) if kind == "probs" else y).numpy())
    return np.concatenate(out).astype(np.float32)


def _kd(student: torch.Tensor, teacher: torch.Tensor, kind: str, t: float) -> torch.Tensor:
    """The distillation term: KL at temperature t for class or frame distributions (teacher probabilities or
    logits), MSE for masks."""
    if kind == "mask":
        return F.mse_loss(student, teacher)
    if kind == "probs":  # teacher probabilities [N, K]; logits recovered up to a constant
        teacher_log = F.log_softmax(torch.log(teacher.clamp_min(1e-12)) / t, dim=1)
        return t * t * F.kl_div(F.log_softmax(student / t, dim=1), teacher_log, log_target=True, reduction="batchmean")
    s = F.log_softmax(student / t, dim=-1).flatten(0, -2)  # frames: teacher logits [N, T, K]
    teacher_log = F.log_softmax(teacher / t, dim=-1).flatten(0, -2)
    return t * t * F.kl_div(s, teacher_log, log_target=True, reduction="batchmean")


def task_loss(loss: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The task losses, on outputs in the task's axes.

    cross_entropy: logits [N, K], labels [N]. ctc: frame logits [N, T, K] and targets packed as [N, 3 + L]
    (valid input frames, input frames, target length, phone ids padded with -1), blank 0, output lengths scaled
    from input lengths. masked_magnitude: mask [N, F, T] and [N, 2, F, T] (clean magnitude, noisy magnitude):
    MSE of power-compressed magnitudes |mask * noisy|^0.3 vs |clean|^0.3.
    """
    if loss == "cross_entropy":
        return F.cross_entropy(output, target)
    if loss == "ctc":
        n_out = output.shape[1]
        frames, n_in, lengths, ids = target[:, 0], target[:, 1], target[:, 2], target[:, 3:]
        out_len = torch.clamp(torch.ceil(frames.double() * n_out / n_in.double()).long(), max=n_out)
        logp = F.log_softmax(output, dim=-1).transpose(0, 1)  # [T, N, K]
        flat = ids[ids >= 0]
        return F.ctc_loss(logp, flat, out_len, lengths, blank=0, reduction="mean", zero_infinity=True)
    if loss == "masked_magnitude":
        clean, noisy = target[:, 0], target[:, 1]
        est = (output * noisy + MAGNITUDE_EPS) ** MAGNITUDE_POWER
        return F.mse_loss(est, (clean + MAGNITUDE_EPS) ** MAGNITUDE_POWER)
    raise EdgepruneError(f"unknown loss '{loss}'; the PyTorch adapter has {', '.join(LOSSES)}")


class Trainer:
    """Adam and a task loss, one batch at a time (the shared loop drives it).

    output_perm: how to permute the model's output (batch first) into the task's axes before the loss.
    With `temperature` set, teacher outputs come with each batch and the loss becomes
    alpha * distillation + (1 - alpha) * task loss (KL at temperature T with the T^2 factor for probabilities and
    frame logits, as Hinton et al.; MSE for masks). `warmup_steps`: the learning rate rises linearly from lr /
    warmup_steps to lr over that many steps; `clip_norm`: gradients clipped to that global norm.
    """

    def __init__(self, model: torch.nn.Module, lr: float, loss: str = "cross_entropy",
                 output_perm: Sequence[int] | None = None, output_kind: str = "probs",
                 temperature: float | None = None, alpha: float = 0.5, clip_norm: float | None = None,
                 warmup_steps: int = 0) -> None:
        if loss not in LOSSES:
            raise EdgepruneError(f"unknown loss '{loss}'; the PyTorch adapter has {', '.join(LOSSES)}")
        self.model, self.loss, self.kind = model, loss, output_kind
        self.perm = None if output_perm is None or list(output_perm) == sorted(output_perm) else tuple(output_perm)
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.schedule = None
        if warmup_steps > 0:
            self.schedule = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / warmup_steps))
        self.temperature, self.alpha, self.clip_norm = temperature, alpha, clip_norm

    def step(self, inputs: Sequence[np.ndarray], target: np.ndarray, teacher: np.ndarray | None = None) -> float:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        out = _first(self.model(*_tensors(inputs, 0, len(inputs[0]))))
        if self.perm is not None:
            out = out.permute(self.perm)
        loss = task_loss(self.loss, out, torch.from_numpy(np.ascontiguousarray(target)))
        if self.temperature is not None and teacher is not None:
            kd = _kd(out, torch.from_numpy(np.ascontiguousarray(teacher)), self.kind, self.temperature)
            loss = self.alpha * kd + (1 - self.alpha) * loss
        loss.backward()
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.opt.step()
        if self.schedule is not None:
            self.schedule.step()
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


def example_inputs(shapes: Sequence[tuple[int, ...]]) -> tuple[torch.Tensor, ...]:
    """Zeros of batch 1 per input shape (tracing, layer tables)."""
    return tuple(torch.zeros((1, *s)) for s in shapes)


def layer_rows(model: torch.nn.Module, input_shapes: Sequence[tuple[int, ...]]) -> list[dict[str, Any]]:
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
            if isinstance(mod, (torch.nn.Conv1d, torch.nn.Conv2d)):
                macs = first.numel() // first.shape[0] * (mod.weight[0].numel())
            elif isinstance(mod, torch.nn.Linear):
                macs = first.numel() // first.shape[0] * mod.in_features
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
            model(*example_inputs(input_shapes))
    finally:
        for h in hooks:
            h.remove()
    return rows
