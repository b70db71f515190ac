"""Turn a folder of .wav files and file lists into the feature layout `--data` reads (X_/Y_/D_ .npy)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgeprune.data.datasets import Split, save_split_arrays
from edgeprune.data.features import LogMelConfig, wav_log_mel
from edgeprune.errors import EdgepruneError
from edgeprune.fileio import atomic_path


def read_file_list(path: Path) -> list[tuple[str, str]]:
    """(filename, scene_label) rows of a DCASE-style list: tab or comma separated, header optional."""
    path = Path(path)
    if not path.is_file():
        raise EdgepruneError(f"file list not found: {path}")
    text = path.read_text()
    delimiter = "\t" if "\t" in text.splitlines()[0] else ","
    rows = [r for r in csv.reader(text.splitlines(), delimiter=delimiter) if r]
    if not rows:
        raise EdgepruneError(f"{path}: empty file list")
    header = [c.strip().lower() for c in rows[0]]
    if "filename" in header:
        fi = header.index("filename")
        if "scene_label" not in header:
            raise EdgepruneError(f"{path}: has a 'filename' column but no 'scene_label' column")
        li = header.index("scene_label")
        rows = rows[1:]
    else:
        fi, li = 0, 1
    out = []
    for n, row in enumerate(rows, start=2 if "filename" in header else 1):
        if len(row) <= max(fi, li):
            raise EdgepruneError(f"{path}:{n}: expected a filename and a scene label, got {row}")
        out.append((row[fi].strip(), row[li].strip()))
    return out


def _device_of(filename: str) -> str:
    # DCASE names end in -<device>.wav, e.g. airport-lisbon-1000-40000-a.wav
    stem = Path(filename).stem
    return stem.rsplit("-", 1)[-1] if "-" in stem else ""


def extract_folder(audio_root: Path, lists: dict[str, Path], out: Path, sample_rate: int = 44100,
                   force: bool = False) -> Path:
    """Extract log-mel features for every split's list; writes `out` atomically."""
    for name in lists:
        if name not in ("train", "validation", "test"):
            raise EdgepruneError(f"unknown split '{name}'; expected train, validation or test")
    for name in ("train", "test"):
        if name not in lists:
            raise EdgepruneError(f"a '{name}' file list is required (--split {name}=LIST)")
    entries = {name: read_file_list(path) for name, path in lists.items()}
    classes = sorted({label for rows in entries.values() for _, label in rows})
    config = LogMelConfig(sample_rate=sample_rate)
    splits = {}
    for name, rows in entries.items():
        feats = [wav_log_mel(Path(audio_root) / f, config) for f, _ in tqdm(rows, desc=f"extracting {name}", unit="file")]
        labels = np.array([classes.index(label) for _, label in rows], dtype=np.int64)
        splits[name] = Split({"logmel": np.stack(feats)}, labels, {"devices": np.array([_device_of(f) for f, _ in rows])})
    with atomic_path(Path(out), force=force, is_dir=True) as tmp:
        save_split_arrays(tmp, splits, classes)
    return Path(out)
