"""What a task is: its inputs, its output, its loss, its metrics, the metric that picks the best epoch, and how an
exported file is judged against its source.

A task is the ONE place where an input's per-sample shape is written. Data sets check their arrays against it,
models take their shape arguments from it, and every framework layout (a PyTorch 2-D CNN's [N, 1, F, T], its
TFLite file's [N, F, T, 1], a Conv1d's [N, F, T]) is derived from it with `benchmarks.arrays.arrange`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class Feature:
    """One model input as the data holds it: name, per-sample shape, one axis letter per dimension (F frequency,
    T time frames), dtype."""

    name: str
    shape: tuple[int, ...]
    axes: str
    description: str = ""
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if len(self.axes) != len(self.shape) or len(set(self.axes)) != len(self.axes):
            raise EdgepruneError(f"feature '{self.name}': axes '{self.axes}' do not name the {len(self.shape)} "
                                 "axes of its shape once each")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "axes": self.axes, "dtype": self.dtype,
                "description": self.description}


@dataclass(frozen=True)
class Output:
    """The model output the task judges: tensor name, kind, axis letters (N excluded)."""

    name: str
    kind: str  # probs | frame_logits | mask
    axes: str  # K classes, TK frames x classes, FT frequency x frames
    description: str = ""


@dataclass(frozen=True)
class Task:
    """Base class; the concrete tasks fill in the methods. Immutable: a task is a definition, not a state."""

    name: str
    description: str
    inputs: tuple[Feature, ...]
    output: Output
    loss: str  # the adapters' loss name: cross_entropy | ctc | masked_magnitude
    select: str  # the validation metric that picks the best epoch
    select_mode: str  # max | min
    parity: str  # how an export is judged: classification | frames | regression
    kind: str  # what benchmarks.metrics.task_metrics computes: classification | phones | enhancement
    classes: tuple[str, ...] | None = None  # fixed class names, when the task defines them
    n_classes: int | None = None  # classes the output has (None: no classes)
    params: dict[str, Any] = field(default_factory=dict)  # what the suite needs to compute the metric

    # --- data ---
    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.inputs]

    @property
    def stratify(self) -> bool:
        """Whether samples are drawn per class (calibration, parity, held-out splits)."""
        return self.n_classes is not None and self.kind == "classification"

    def check_inputs(self, inputs: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
        """Every input present, float, finite, of the task's per-sample shape, with one sample count; else one
        clear error naming `where`."""
        missing = [f.name for f in self.inputs if f.name not in inputs]
        if missing:
            raise EdgepruneError(f"{where}: missing input(s) {', '.join(missing)}; the {self.name} task takes "
                                 f"{', '.join(self.input_names)}")
        extra = sorted(set(inputs) - set(self.input_names))
        if extra:
            raise EdgepruneError(f"{where}: unexpected input(s) {', '.join(extra)}; the {self.name} task takes "
                                 f"{', '.join(self.input_names)}")
        out, counts = {}, set()
        for f in self.inputs:
            x = np.asarray(inputs[f.name])
            expected = f"[N, {', '.join(map(str, f.shape))}] ({f.axes})"
            if tuple(x.shape[1:]) != f.shape or x.ndim != len(f.shape) + 1:
                raise EdgepruneError(f"{where}: input '{f.name}' has shape {list(x.shape)}; expected {expected}")
            if not np.issubdtype(x.dtype, np.floating):
                raise EdgepruneError(f"{where}: input '{f.name}' has dtype {x.dtype}; expected floating point")
            if not np.isfinite(x).all():
                raise EdgepruneError(f"{where}: input '{f.name}' contains NaN or infinite values")
            out[f.name] = x.astype(np.float32, copy=False)
            counts.add(len(x))
        if len(counts) > 1:
            raise EdgepruneError(f"{where}: the inputs have different sample counts {sorted(counts)}")
        return out

    def check_targets(self, y: np.ndarray, n: int, where: str) -> np.ndarray:
        raise NotImplementedError

    # --- training ---
    def loss_targets(self, inputs: dict[str, np.ndarray], y: np.ndarray, meta: dict[str, np.ndarray]) -> np.ndarray:
        """What the adapters' loss takes as its target for a batch (default: the labels themselves)."""
        return y

    # --- evaluation ---
    def evaluate(self, outputs: np.ndarray, y: np.ndarray | None, meta: dict[str, np.ndarray],
                 classes: list[str] | None = None, full: bool = False) -> dict[str, Any]:
        """Metrics of model outputs (in the task's axes) on a split (`full`: also the slow ones, e.g. STOI and
        PESQ): the suite's `task_metrics`, so a file on a board is scored the same way."""
        from benchmarks.metrics import task_metrics

        try:
            return {"n": int(len(outputs)), **task_metrics(self.describe(), outputs, y, meta)}
        except ValueError as exc:
            raise EdgepruneError(str(exc)) from exc

    def better(self, new: float, best: float | None) -> bool:
        """Whether a validation value beats the best so far (strictly)."""
        if best is None:
            return True
        return new > best if self.select_mode == "max" else new < best

    def headline(self, report: dict[str, Any]) -> dict[str, Any]:
        """The few numbers a summary line shows."""
        return {k: report[k] for k in self.metric_names() if k in report} | {"n": report.get("n")}

    def metric_names(self) -> list[str]:
        return [self.select]

    def describe(self) -> dict[str, Any]:
        """Everything the benchmark suite needs to compute the task's metric (the manifest's "task" section)."""
        return {"name": self.name, "kind": self.kind, "metric": self.select, "select_mode": self.select_mode,
                "parity": self.parity, "inputs": [f.to_dict() for f in self.inputs],
                "output": {"name": self.output.name, "kind": self.output.kind, "axes": self.output.axes},
                **self.params}
