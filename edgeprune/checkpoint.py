"""Checkpoints: a folder with the weights as named numpy arrays and a JSON architecture spec. Never a pickle.

    CKPT/spec.json    {"format": 1, "framework": "torch", "arch": {"model": ..., "args": {...}}, "classes": [...],
                       "weights_sha256": ..., plus free-form provenance: data, profile, training history}
    CKPT/weights.npz  every weight and statistic, by the framework's own names (state_dict keys, Keras paths)

A pruned model keeps its parent's "arch" and adds "pruning": {"keep": {layer: [kept channel indices]}, ...};
loading builds the parent architecture, replays the keep-lists with the same surgery, then loads the weights.
That works for any model the surgery can prune, in either framework, and never pickles a module.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.fileio import atomic_path, read_json, sha256_file
from edgeprune.frameworks import get_adapter
from edgeprune.models import build

FORMAT = 1
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
    def classes(self) -> list[str]:
        return self.spec["classes"]


def save(path: Path, model: Any, framework: str, arch: dict[str, Any], classes: list[str],
         extra: dict[str, Any] | None = None, force: bool = False, files: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint folder atomically; refuses to replace an existing one unless `force`.

    `extra` is merged into the spec (training history, data provenance, and "pruning" for pruned models);
    `files` are written beside it as JSON (e.g. the pruning table).
    """
    import json

    adapter = get_adapter(framework)
    path = Path(path)
    with atomic_path(path, force=force, is_dir=True) as tmp:
        np.savez(tmp / WEIGHTS_FILE, **adapter.get_weights(model))
        spec = {"format": FORMAT, "framework": framework, "arch": arch, "classes": list(classes),
                "params": adapter.count_params(model), "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
                **(extra or {})}
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        for name, content in (files or {}).items():
            (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
    return path


def read_spec(path: Path) -> dict[str, Any]:
    """The spec of a checkpoint folder, checked for the fields loading needs."""
    path = Path(path)
    if not path.is_dir():
        raise EdgepruneError(f"checkpoint not found: {path} (expected a folder with {SPEC_FILE} and {WEIGHTS_FILE})")
    spec = read_json(path / SPEC_FILE, what="checkpoint spec")
    for key in ("framework", "arch", "classes"):
        if not isinstance(spec, dict) or key not in spec:
            raise EdgepruneError(f"{path / SPEC_FILE}: missing '{key}'; not an edgeprune checkpoint spec")
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
    source = str(path / WEIGHTS_FILE)
    model = _rebuild(spec, saved_fw)
    get_adapter(saved_fw).set_weights(model, weights, source=source)
    if target != saved_fw:
        from edgeprune.transfer import transfer_weights

        twin = _rebuild(spec, target)
        transfer_weights(model, twin)
        model = twin
    return Checkpoint(model, target, spec, path)


def _rebuild(spec: dict[str, Any], framework: str) -> Any:
    """The architecture of a checkpoint, pruned by its keep-lists when it has them (weights not loaded)."""
    model = build(spec["arch"], framework)
    keep = spec.get("pruning", {}).get("keep")
    if keep:
        from edgeprune.pruning.api import apply_keep

        model, _ = apply_keep(model, framework, spec["arch"], keep)
    return model
