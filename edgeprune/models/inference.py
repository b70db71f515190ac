"""Running a registered model on a task's data: features in the data's layout in, outputs in the task's axes out.
The one place where arrays are laid out for a model (`model_inputs`) and its outputs read back (`predict`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.arrays import arrange
from edgeprune.errors import EdgepruneError
from edgeprune.frameworks import get_adapter
from edgeprune.models.registry import input_specs, output_axes, task_of


def model_inputs(arch: dict[str, Any], framework: str, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The task's feature arrays (by input name) laid out for the model, in its input order."""
    arrays = []
    for spec in input_specs(arch, framework):
        if spec.name not in inputs:
            raise EdgepruneError(f"input '{spec.name}' missing; the model takes {', '.join(s.name for s in input_specs(arch, framework))}")
        arrays.append(spec.from_features(np.asarray(inputs[spec.name], dtype=np.float32)))
    return arrays


def output_perm(arch: dict[str, Any], framework: str) -> tuple[int, ...]:
    """Permutation (batch first) from the model's output axes to the task's."""
    src, dst = "N" + output_axes(arch, framework), "N" + task_of(arch).output.axes
    if sorted(src) != sorted(dst):
        raise EdgepruneError(f"model '{arch['model']}' outputs axes '{src}', which cannot be read as the task's '{dst}'")
    return tuple(src.index(a) for a in dst)


def predict(model: Any, framework: str, arch: dict[str, Any], inputs: dict[str, np.ndarray],
            batch_size: int = 128) -> np.ndarray:
    """The task's outputs (probabilities, frame logits or masks, in the task's axes) for feature arrays."""
    task = task_of(arch)
    out = get_adapter(framework).predict(model, model_inputs(arch, framework, inputs), task.output.kind, batch_size)
    return arrange(out, "N" + output_axes(arch, framework), "N" + task.output.axes)
