"""Data sets as numpy arrays: the real DCASE feature layout, and synthetic scenes cached in that same layout.

On disk (the passive-pruning seed's layout, plus an optional validation split):
    DIR/X_train.npy  [N, 40, 500] or [N, 40, 500, 1] float log-mel    DIR/Y_train.npy  [N] int or [N, 10] one-hot
    DIR/X_validation.npy, DIR/Y_validation.npy (optional; else a stratified 10 % of train is held out)
    DIR/X_test.npy, DIR/Y_test.npy
    DIR/classes.json (optional list of class names)
Model selection uses the validation split, never test.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgeprune.data import synthetic
from edgeprune.data.features import FEATURE_SHAPE
from edgeprune.errors import EdgepruneError
from edgeprune.fileio import atomic_path

SPLITS = ("train", "validation", "test")
SYNTHETIC_VERSION = 3  # bump when the generator changes, so old caches are not reused


@dataclass
class Split:
    """Features [N, 40, 500] float32 and integer labels [N]; `devices` when known."""

    x: np.ndarray
    y: np.ndarray
    devices: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    """Train, validation and test splits plus the class names and where they came from."""

    name: str
    splits: dict[str, Split]
    classes: list[str]
    info: dict = field(default_factory=dict)

    def __getitem__(self, split: str) -> Split:
        return self.splits[split]


@dataclass(frozen=True)
class SyntheticSpec:
    """What defines a synthetic set: its seed, sizes per split and difficulty."""

    seed: int = 0
    n_train: int = 1200
    n_validation: int = 300
    n_test: int = 600
    difficulty: float = 0.3

    def key(self) -> str:
        return (
            f"v{SYNTHETIC_VERSION}-s{self.seed}-d{self.difficulty:.3f}-"
            f"{self.n_train}-{self.n_validation}-{self.n_test}"
        )


def cache_root() -> Path:
    """Where generated data is cached: $EDGEPRUNE_CACHE, else ~/.cache/edgeprune."""
    return Path(os.environ.get("EDGEPRUNE_CACHE", Path.home() / ".cache" / "edgeprune"))


def _clip_job(args: tuple) -> np.ndarray:
    return synthetic.clip_features(*args)


def generate_synthetic(spec: SyntheticSpec, workers: int | None = None, progress: bool = True) -> dict[str, Split]:
    """Render every clip of every split (parallel over processes); deterministic for a given spec."""
    workers = workers or min(4, os.cpu_count() or 1)
    sizes = {"train": spec.n_train, "validation": spec.n_validation, "test": spec.n_test}
    splits = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for split, n in sizes.items():
            labels = np.arange(n) % len(synthetic.CLASSES)
            devices = synthetic.device_plan(split, n)
            jobs = [(spec.seed, split, i, int(labels[i]), devices[i], spec.difficulty) for i in range(n)]
            feats = list(
                tqdm(pool.map(_clip_job, jobs, chunksize=8), total=n, desc=f"synthesising {split}",
                     disable=not progress, unit="clip")
            )
            splits[split] = Split(np.stack(feats).astype(np.float32), labels.astype(np.int64), np.array(devices))
    return splits


def save_split_arrays(directory: Path, splits: dict[str, Split], classes: list[str]) -> None:
    """Write splits in the on-disk layout (used for the synthetic cache and by `edgeprune features`)."""
    for name, split in splits.items():
        np.save(directory / f"X_{name}.npy", split.x)
        np.save(directory / f"Y_{name}.npy", split.y)
        if split.devices is not None:
            np.save(directory / f"D_{name}.npy", split.devices)
    (directory / "classes.json").write_text(json.dumps(classes) + "\n")


def load_synthetic(spec: SyntheticSpec = SyntheticSpec(), progress: bool = True) -> Dataset:
    """The synthetic set for `spec`, generated on first use and cached on disk."""
    directory = cache_root() / "synthetic" / spec.key()
    if not (directory / "Y_test.npy").is_file():
        splits = generate_synthetic(spec, progress=progress)
        with atomic_path(directory, force=True, is_dir=True) as tmp:
            save_split_arrays(tmp, splits, list(synthetic.CLASSES))
    dataset = load_folder(directory)
    dataset.name = "synthetic"
    dataset.info = {"source": "synthetic", "synthetic_spec": spec.__dict__, "cache": str(directory)}
    return dataset


def _check_features(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or tuple(x.shape[1:]) != FEATURE_SHAPE:
        raise EdgepruneError(
            f"{path}: features have shape {tuple(x.shape)}; expected [N, 40, 500] or [N, 40, 500, 1] log-mel"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise EdgepruneError(f"{path}: features have dtype {x.dtype}; expected floating point")
    return x.astype(np.float32, copy=False)


def _check_labels(y: np.ndarray, n: int, path: Path) -> np.ndarray:
    if y.ndim == 2:  # one-hot, as the seed stores them for Keras
        y = y.argmax(axis=1)
    if y.ndim != 1 or len(y) != n:
        raise EdgepruneError(f"{path}: labels have shape {tuple(y.shape)}; expected [{n}] or [{n}, classes]")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise EdgepruneError(f"{path}: labels must be integer class indices")
    return y.astype(np.int64)


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise EdgepruneError(f"{path}: not a readable .npy array ({exc})") from exc


def _stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        held.extend(idx[: max(1, int(round(fraction * len(idx))))])
    held_mask = np.zeros(len(y), dtype=bool)
    held_mask[held] = True
    return np.flatnonzero(~held_mask), np.flatnonzero(held_mask)


def load_folder(directory: Path) -> Dataset:
    """Load a folder in the layout above; missing validation is held out of train (stratified, seed 0)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EdgepruneError(f"data folder not found: {directory} (expected X_train.npy, Y_train.npy, ...)")
    splits: dict[str, Split] = {}
    for split in SPLITS:
        xp, yp = directory / f"X_{split}.npy", directory / f"Y_{split}.npy"
        if not xp.exists() and split == "validation":
            continue
        for p in (xp, yp):
            if not p.is_file():
                raise EdgepruneError(f"{directory}: missing {p.name} (expected X_/Y_ train and test .npy files)")
        x = _check_features(_load_array(xp), xp)
        y = _check_labels(_load_array(yp), len(x), yp)
        dp = directory / f"D_{split}.npy"
        splits[split] = Split(x, y, _load_array(dp) if dp.is_file() else None)
    if "validation" not in splits:
        tr = splits["train"]
        keep, held = _stratified_holdout(tr.y, 0.1, seed=0)
        dev = tr.devices
        splits["validation"] = Split(tr.x[held], tr.y[held], None if dev is None else dev[held])
        splits["train"] = Split(tr.x[keep], tr.y[keep], None if dev is None else dev[keep])
    n_classes = int(max(s.y.max() for s in splits.values())) + 1
    classes_file = directory / "classes.json"
    classes = json.loads(classes_file.read_text()) if classes_file.is_file() else [f"class_{i}" for i in range(n_classes)]
    if len(classes) < n_classes:
        raise EdgepruneError(f"{classes_file}: {len(classes)} class names but labels go up to {n_classes - 1}")
    return Dataset(directory.name, {s: splits[s] for s in SPLITS}, classes, {"source": str(directory)})


def load_dataset(source: str, spec: SyntheticSpec | None = None, progress: bool = True) -> Dataset:
    """`synthetic` (with the profile's spec) or a folder of real features."""
    if source == "synthetic":
        return load_synthetic(spec or SyntheticSpec(), progress=progress)
    return load_folder(Path(source))
