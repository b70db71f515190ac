"""Checkpoints: a folder with the weights as named numpy arrays and a JSON spec. Never a pickle.

    CKPT/spec.json    {"format": 2, "framework": "torch", "arch": {"model": ..., "task": ..., "args": {...}},
                       "classes": [...] or null, "transforms": [...], "params": ..., "weights_sha256": ...,
                       plus free-form provenance: data, profile, training and fine-tuning history}
    CKPT/weights.npz  every weight and statistic, by the framework's own names (state_dict keys, Keras paths)
    CKPT/scores_K.json the scores that chose transform K (when it was chosen by a criterion)

"arch" is the PARENT architecture, "transforms" the ordered compression steps applied to it (see
`edgeprune.pruning.transforms`); loading builds the parent, replays the transforms, then loads the weights. A
compressed checkpoint compressed again appends to the list. Format-1 checkpoints (a "pruning" entry with keep-lists,
no task) still load: their keep-lists are one channels transform and their task is the model's default.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.fileio import atomic_path, read_json, sha256_file
from edgeprune.frameworks import get_adapter
from edgeprune.models import build, input_specs, task_of
from edgeprune.models.input_spec import InputSpec
from edgeprune.pruning.transforms import Transform, replay
from edgeprune.tasks import Task

FORMAT = 2
SPEC_FILE, WEIGHTS_FILE = "spec.json", "weights.npz"


@dataclass
class Checkpoint:
    """A loaded model with its spec."""

    model: Any
    framework: str
    spec: dict[str, Any]
    path: Path

    @property
    def arch(self) -> dict[str, Any]:
        return self.spec["arch"]

    @property
    def task(self) -> Task:
        return task_of(self.arch)

    @property
    def classes(self) -> list[str] | None:
        return self.spec.get("classes")

    @property
    def transforms(self) -> list[Transform]:
        return transforms_of(self.spec, self.path)

    @property
    def inputs(self) -> list[InputSpec]:
        """The model's inputs in its framework's layout."""
        return input_specs(self.arch, self.framework)


def transforms_of(spec: dict[str, Any], where: Path | str = "") -> list[Transform]:
    """The transform list of a spec (format 1: its keep-lists as one channels transform)."""
    items = spec.get("transforms")
    if items is None:
        pruning = spec.get("pruning") or {}
        if not pruning.get("keep"):
            return []
        record = {k: v for k, v in pruning.items() if k != "keep"}
        return [Transform("channels", {"keep": pruning["keep"]}, record)]
    if not isinstance(items, list):
        raise EdgepruneError(f"{where}: 'transforms' must be a list")
    return [Transform.from_json(t, f"{where}: transforms[{i}]") for i, t in enumerate(items)]


def save(path: Path, model: Any, framework: str, arch: dict[str, Any], classes: list[str] | None,
         transforms: list[Transform] | None = None, extra: dict[str, Any] | None = None, force: bool = False,
         files: dict[str, Any] | None = None, copies: dict[str, Path] | None = None) -> Path:
    """Write a checkpoint folder atomically; refuses to replace an existing one unless `force`.

    `extra` is merged into the spec (training history, data provenance); `files` are written beside it as JSON
    (e.g. the pruning table, computed scores); `copies` are files copied in under the given names (a scores file).
    """
    adapter = get_adapter(framework)
    path = Path(path)
    with atomic_path(path, force=force, is_dir=True) as tmp:
        np.savez(tmp / WEIGHTS_FILE, **adapter.get_weights(model))
        spec = {"format": FORMAT, "framework": framework, "arch": {**arch, "task": task_of(arch).name},
                "classes": None if classes is None else list(classes),
                "transforms": [t.to_json() for t in transforms or []],
                "params": adapter.count_params(model), "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
                **(extra or {})}
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        for name, content in (files or {}).items():
            (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
        for name, src in (copies or {}).items():
            shutil.copyfile(src, tmp / name)
    return path


def save_model(path: Path, model: Any, inputs: InputSpec | list[InputSpec], task: str | Task,
               builder: str | None = None, args: dict[str, Any] | None = None, classes: list[str] | None = None,
               output_axes: str | None = None, force: bool = False) -> Path:
    """Save a model edgeprune did not write as a checkpoint the CLI works on (info, prune, finetune, export, eval):
    its weights, how to rebuild it (`builder`, an importable 'module:function' called with the JSON `args`; for
    Keras without a builder, the model's own config), the task it serves and its inputs (in the task's input
    order, with their feature axes so the task's data can be laid out for it). Never pickles the model."""
    from edgeprune.frameworks import framework_of
    from edgeprune.models.registry import user_arch

    specs = [inputs] if isinstance(inputs, InputSpec) else list(inputs)
    arch = user_arch(model, specs, task, builder, args, output_axes)
    rebuilt = build(arch, arch["framework"])  # refuse now what could not be loaded later
    adapter = get_adapter(framework_of(model))
    if set(adapter.get_weights(rebuilt)) != set(adapter.get_weights(model)):
        raise EdgepruneError(f"the builder '{arch['model']}' does not rebuild this model (its weights differ in "
                             "names); give the function and arguments that built it")
    return save(path, model, arch["framework"], arch, classes, force=force)


def read_spec(path: Path) -> dict[str, Any]:
    """The spec of a checkpoint folder, checked for the fields loading needs."""
    path = Path(path)
    if not path.is_dir():
        raise EdgepruneError(f"checkpoint not found: {path} (expected a folder with {SPEC_FILE} and {WEIGHTS_FILE})")
    spec = read_json(path / SPEC_FILE, what="checkpoint spec")
    for key in ("framework", "arch"):
        if not isinstance(spec, dict) or key not in spec:
            raise EdgepruneError(f"{path / SPEC_FILE}: missing '{key}'; not an edgeprune checkpoint spec")
    if not isinstance(spec["arch"], dict) or "model" not in spec["arch"]:
        raise EdgepruneError(f"{path / SPEC_FILE}: 'arch' has no 'model'; not an edgeprune checkpoint spec")
    if spec.get("format", FORMAT) > FORMAT:
        raise EdgepruneError(f"{path / SPEC_FILE}: format {spec['format']} is newer than this edgeprune reads ({FORMAT})")
    return spec


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The named arrays of a checkpoint's weights file, with a clear error for a corrupt file."""
    wpath = Path(path) / WEIGHTS_FILE
    if not wpath.is_file():
        raise EdgepruneError(f"{path}: missing {WEIGHTS_FILE}")
    try:
        with np.load(wpath, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise EdgepruneError(f"{wpath}: corrupt or unreadable weights file ({exc})") from exc


def load(path: Path, framework: str | None = None) -> Checkpoint:
    """Rebuild the model from its spec and load its weights. With another `framework` than the checkpoint's,
    the weights are transferred to that framework's twin."""
    path = Path(path)
    spec = read_spec(path)
    weights = read_weights(path)
    saved_fw = spec["framework"]
    target = framework or saved_fw
    model = rebuild(spec, saved_fw, path)
    get_adapter(saved_fw).set_weights(model, weights, source=str(path / WEIGHTS_FILE))
    if target != saved_fw:
        from edgeprune.transfer import transfer_weights

        twin = rebuild(spec, target, path)
        transfer_weights(model, twin)
        model = twin
    return Checkpoint(model, target, spec, path)


def rebuild(spec: dict[str, Any], framework: str, where: Path | str = "") -> Any:
    """The architecture of a checkpoint with its transforms replayed (weights not loaded)."""
    model = build(spec["arch"], framework)
    return replay(model, framework, spec["arch"], transforms_of(spec, where), where=str(where))
