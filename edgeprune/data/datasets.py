"""Data sets as numpy arrays, for any task: named inputs, targets, and per-sample metadata per split.

    data = load_dataset("synthetic", get_task("enhancement"), profile)   # edgeprune.data.sources
    data["train"].inputs["noisy"]     # [N, 129, 251] float32, the task's feature shape
    data["test"].meta["clean_wave"]   # what the task's metrics need besides the outputs

Two on-disk layouts:
- the passive-pruning seed's DCASE layout (scenes only):
    DIR/X_train.npy [N, 40, 500] (or [..., 1]) float log-mel, DIR/Y_train.npy [N] int or [N, 10] one-hot,
    DIR/X_validation.npy, DIR/Y_validation.npy (optional; else a stratified 10 % of train is held out),
    DIR/X_test.npy, DIR/Y_test.npy, DIR/D_*.npy (devices, optional), DIR/classes.json (optional);
- edgeprune's own layout for any task (the speech caches; `save_splits` writes it):
    DIR/info.json {"task", "classes", "generator", ...}; DIR/{train,validation,test}.npz with the arrays
    "input/<name>", "y" and "meta/<key>".
Model selection uses the validation split, never test.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from edgeprune.errors import EdgepruneError
from edgeprune.fileio import atomic_path

if TYPE_CHECKING:
    from edgeprune.tasks import Task

SPLITS = ("train", "validation", "test")
SYNTHETIC_VERSION = 3  # bump when the scene generator changes, so old caches are not reused
INFO_FILE = "info.json"


@dataclass
class Split:
    """Inputs by the task's feature names ([N, *shape] float32 each), targets `y` (class indices, padded phone ids,
    clean magnitudes, ...) and per-sample metadata (devices, speakers, valid frames, waves for metrics)."""

    inputs: dict[str, np.ndarray]
    y: np.ndarray | None
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    @property
    def x(self) -> np.ndarray:
        """The input of a single-input task."""
        if len(self.inputs) != 1:
            raise EdgepruneError(f"this split has {len(self.inputs)} inputs ({', '.join(self.inputs)}); "
                                 "name the one you want (split.inputs[name])")
        return next(iter(self.inputs.values()))

    @property
    def devices(self) -> np.ndarray | None:
        return self.meta.get("devices")

    def take(self, idx: np.ndarray) -> Split:
        """The samples `idx` (in that order), every array sliced alike."""
        return Split({k: v[idx] for k, v in self.inputs.items()}, None if self.y is None else self.y[idx],
                     {k: v[idx] for k, v in self.meta.items()})


@dataclass
class Dataset:
    """Train, validation and test splits, the task they serve, class names (classification) and provenance."""

    name: str
    splits: dict[str, Split]
    classes: list[str] | None
    info: dict = field(default_factory=dict)
    task: str = "scenes"

    def __getitem__(self, split: str) -> Split:
        return self.splits[split]


def sample_indices(split: Split, n: int, seed: int = 0, stratify: bool = False) -> np.ndarray:
    """`n` sample indices drawn across the whole split by `seed` (all of them, in order, if it has no more);
    with `stratify`, each class gets its share (largest remainders), so a class-sorted folder is not calibrated
    on one class. Returned in ascending order."""
    total = len(split)
    if n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    if not stratify or split.y is None or split.y.ndim != 1:
        return np.sort(rng.choice(total, size=n, replace=False))
    classes, counts = np.unique(split.y, return_counts=True)
    quota = counts * n / total
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take), kind="stable")[: n - take.sum()]:
        take[i] += 1
    chosen = [rng.choice(np.flatnonzero(split.y == c), size=k, replace=False) for c, k in zip(classes, take) if k]
    return np.sort(np.concatenate(chosen))


def save_test_data(path: Path, split: Split) -> Path:
    """A split as the benchmark suite's --test-data file: one array per input (feature layout), "y", and
    "meta/<key>" for the numeric metadata the metrics use (frames, waves)."""
    arrays = dict(split.inputs)
    if split.y is not None:
        arrays["y"] = split.y
    arrays.update({f"meta/{k}": v for k, v in split.meta.items() if np.issubdtype(np.asarray(v).dtype, np.number)})
    with atomic_path(Path(path), force=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return Path(path)


# --- synthetic scenes (the DCASE stand-in) ----------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticSpec:
    """What defines a synthetic scene set: its seed, sizes per split and difficulty."""

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
    from edgeprune.data import synthetic

    return synthetic.clip_features(*args)


def generate_synthetic(spec: SyntheticSpec, workers: int | None = None, progress: bool = True) -> dict[str, Split]:
    """Render every clip of every split (parallel over processes); deterministic for a given spec."""
    from edgeprune.data import synthetic

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
            splits[split] = Split({"logmel": np.stack(feats).astype(np.float32)}, labels.astype(np.int64),
                                  {"devices": np.array(devices)})
    return splits


def save_split_arrays(directory: Path, splits: dict[str, Split], classes: list[str]) -> None:
    """Write single-input classification splits in the DCASE layout (the scene cache, `edgeprune features`)."""
    for name, split in splits.items():
        np.save(directory / f"X_{name}.npy", split.x)
        np.save(directory / f"Y_{name}.npy", split.y)
        if split.devices is not None:
            np.save(directory / f"D_{name}.npy", split.devices)
    (directory / "classes.json").write_text(json.dumps(classes) + "\n")


def load_synthetic(spec: SyntheticSpec = SyntheticSpec(), progress: bool = True) -> Dataset:
    """The synthetic scene set for `spec`, generated on first use and cached on disk."""
    from edgeprune.data import synthetic

    directory = cache_root() / "synthetic" / spec.key()
    if not (directory / "Y_test.npy").is_file():
        splits = generate_synthetic(spec, progress=progress)
        with atomic_path(directory, force=True, is_dir=True) as tmp:
            save_split_arrays(tmp, splits, list(synthetic.CLASSES))
    dataset = load_folder(directory)
    dataset.name = "synthetic"
    dataset.info = {"source": "synthetic", "synthetic_spec": spec.__dict__, "cache": str(directory),
                    "generator": f"scenes v{SYNTHETIC_VERSION}"}
    return dataset


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


def _scene_features(x: np.ndarray, path: Path, task: Task) -> np.ndarray:
    shape = task.inputs[0].shape
    if x.ndim == len(shape) + 2 and x.shape[-1] == 1:
        x = x[..., 0]
    if tuple(x.shape[1:]) != shape or x.ndim != len(shape) + 1:
        raise EdgepruneError(f"{path}: features have shape {tuple(x.shape)}; expected [N, {', '.join(map(str, shape))}]"
                             f" or [N, {', '.join(map(str, shape))}, 1] log-mel")
    return task.check_inputs({task.inputs[0].name: x}, str(path))[task.inputs[0].name]


def load_folder(directory: Path, task: Task | str = "scenes") -> Dataset:
    """A folder in either layout (module docstring); a missing validation split is held out of train (stratified
    by class where there are classes, seed 0)."""
    from edgeprune.tasks import get_task

    task = get_task(task)
    directory = Path(directory)
    if not directory.is_dir():
        raise EdgepruneError(f"data folder not found: {directory} (expected X_train.npy, Y_train.npy, ... or "
                             f"{INFO_FILE} with train/validation/test .npz)")
    if (directory / INFO_FILE).is_file():
        return load_splits(directory, task)
    if len(task.inputs) != 1 or task.kind != "classification":
        raise EdgepruneError(f"{directory}: no {INFO_FILE}; the X_/Y_ .npy layout holds one-input classification "
                             f"data, and the {task.name} task needs {', '.join(task.input_names)}")
    splits: dict[str, Split] = {}
    for split in SPLITS:
        xp, yp = directory / f"X_{split}.npy", directory / f"Y_{split}.npy"
        if not xp.exists() and split == "validation":
            continue
        for p in (xp, yp):
            if not p.is_file():
                raise EdgepruneError(f"{directory}: missing {p.name} (expected X_/Y_ train and test .npy files)")
        x = _scene_features(_load_array(xp), xp, task)
        y = task.check_targets(_load_array(yp), len(x), str(yp))
        dp = directory / f"D_{split}.npy"
        meta = {"devices": _load_array(dp)} if dp.is_file() else {}
        splits[split] = Split({task.inputs[0].name: x}, y, meta)
    if "validation" not in splits:
        splits["train"], splits["validation"] = holdout(splits["train"], 0.1, task)
    n_classes = int(max(s.y.max() for s in splits.values())) + 1
    classes_file = directory / "classes.json"
    classes = json.loads(classes_file.read_text()) if classes_file.is_file() else [f"class_{i}" for i in range(n_classes)]
    if len(classes) < n_classes:
        raise EdgepruneError(f"{classes_file}: {len(classes)} class names but labels go up to {n_classes - 1}")
    return Dataset(directory.name, {s: splits[s] for s in SPLITS}, classes, {"source": str(directory)}, task.name)


def holdout(train: Split, fraction: float, task: Task, seed: int = 0) -> tuple[Split, Split]:
    """(rest of train, held-out validation): a `fraction` of train, stratified by class where the task has
    classes, seed `seed`."""
    if task.stratify and train.y is not None:
        keep, held = _stratified_holdout(train.y, fraction, seed)
    else:
        order = np.random.default_rng(seed).permutation(len(train))
        n = max(1, int(round(fraction * len(train))))
        held, keep = np.sort(order[:n]), np.sort(order[n:])
    return train.take(keep), train.take(held)


# --- edgeprune's own layout, for any task -------------------------------------------------------------------------


def save_splits(directory: Path, splits: dict[str, Split], task: Task, classes: list[str] | None,
                info: dict[str, Any]) -> None:
    """Write splits in edgeprune's layout into an existing (temporary) folder; see the module docstring."""
    for name, split in splits.items():
        arrays = {f"input/{k}": v for k, v in split.inputs.items()}
        if split.y is not None:
            arrays["y"] = split.y
        arrays.update({f"meta/{k}": v for k, v in split.meta.items()})
        np.savez(directory / f"{name}.npz", **arrays)
    doc = {"task": task.name, "classes": classes, **info}
    (directory / INFO_FILE).write_text(json.dumps(doc, indent=2) + "\n")


def load_splits(directory: Path, task: Task | str) -> Dataset:
    """A folder written by `save_splits`, checked against `task`."""
    from edgeprune.fileio import read_json
    from edgeprune.tasks import get_task

    task = get_task(task)
    directory = Path(directory)
    info = read_json(directory / INFO_FILE, "data set description")
    if not isinstance(info, dict) or info.get("task") != task.name:
        raise EdgepruneError(f"{directory / INFO_FILE}: holds '{info.get('task') if isinstance(info, dict) else info}'"
                             f" data; expected the {task.name} task")
    splits = {}
    for name in SPLITS:
        path = directory / f"{name}.npz"
        if not path.is_file():
            raise EdgepruneError(f"{directory}: missing {path.name}")
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (ValueError, OSError, EOFError) as exc:
            raise EdgepruneError(f"{path}: not a readable .npz file ({exc})") from exc
        inputs = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("input/")}
        inputs = task.check_inputs(inputs, str(path))
        n = len(next(iter(inputs.values())))
        y = task.check_targets(arrays["y"], n, str(path)) if "y" in arrays else None
        meta = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("meta/")}
        for k, v in meta.items():
            if len(v) != n:
                raise EdgepruneError(f"{path}: meta/{k} has {len(v)} rows for {n} samples")
        splits[name] = Split(inputs, y, meta)
    classes = info.get("classes")
    return Dataset(directory.name, splits, None if classes is None else list(classes),
                   {k: v for k, v in info.items() if k not in ("task", "classes")} | {"source": str(directory)},
                   task.name)
