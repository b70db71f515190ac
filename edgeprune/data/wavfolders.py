"""Real speech from folders of .wav files, through the same feature code as the synthetic speech sets.

- `load_speech_commands(root)` (keywords task): the Speech Commands layout (Warden 2018),
      ROOT/<word>/*.wav, optional ROOT/validation_list.txt and ROOT/testing_list.txt (paths relative to ROOT, one a
      line; without them, the data set's own rule: a SHA-1 hash of the speaker part of the file name, before
      "_nohash_", puts 10 % of speakers in validation and 10 % in test; when no speaker lands in validation, 10 % of
      train is held out), optional ROOT/_background_noise_/*.wav.
  The ten keywords are classes 0-9; every other word is "unknown", subsampled (seed 0) to the mean count of a
  keyword class (of those with clips) in that split, as the usual Speech Commands recipe keeps unknown near one
  class's share; "silence" clips are 1 s pieces of the background files (each piece in one split) at a random
  gain of 0.1-1, as many as a mean keyword class, when ROOT/_background_noise_ exists. Clips are cropped or
  zero-padded to 1 s.
- `load_airbone(root)` (enhancement task): ROOT/{train,validation,test}/{air,bone,clean}/*.wav, the three folders
  of a split holding the same file names; each file's air, bone and clean recordings have one sample rate and one
  length. Files are cut into consecutive 2 s clips (a last piece of 1 s or more is zero-padded, a file under 2 s is
  one padded clip). Without validation/, 10 % of the train clips are held out (`datasets.holdout`).

Audio: PCM or float .wav at 16 kHz, or at a higher rate (resampled to 16 kHz, polyphase); lower rates lack the
band the features use and are refused. Speech Commands files with several channels are averaged to mono; the
air / bone / clean files must be mono.
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ProcessPoolExecutor
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edgeprune.data.datasets import SPLITS, Dataset, Split, holdout
from edgeprune.data.features import read_wav
from edgeprune.errors import EdgepruneError

SAMPLE_RATE = 16000
BACKGROUND = "_background_noise_"
LISTS = {"validation": "validation_list.txt", "test": "testing_list.txt"}
CHANNELS = ("air", "bone", "clean")
_MAX_WAVS = 2 ** 27 - 1  # Speech Commands' which_set() constant


def _load(path: Path, mono_only: bool = False) -> tuple[np.ndarray, int]:
    """(mono float32 audio, its sample rate); one clear error for a rate below 16 kHz, no samples, or (with
    `mono_only`) several channels."""
    audio, rate = read_wav(path)
    if audio.ndim == 2:
        if mono_only and audio.shape[1] != 1:
            raise EdgepruneError(f"{path}: {audio.shape[1]} channels; expected mono .wav files")
        audio = audio.mean(axis=1)
    if audio.size == 0:
        raise EdgepruneError(f"{path}: no samples; expected audio")
    if rate < SAMPLE_RATE:
        raise EdgepruneError(f"{path}: sample rate {rate} Hz; expected {SAMPLE_RATE} Hz or more (resampled to "
                             f"{SAMPLE_RATE} Hz)")
    return audio, rate


def _to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate != SAMPLE_RATE:
        from scipy.signal import resample_poly

        g = gcd(rate, SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // g, rate // g)
    return np.asarray(audio, dtype=np.float32)


def read_audio(path: Path, mono_only: bool = False) -> np.ndarray:
    """A .wav file as float32 mono at 16 kHz (see `_load` for what is refused)."""
    return _to_16k(*_load(path, mono_only))


def _fit(audio: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    out[: min(n, audio.size)] = audio[:n]
    return out


def _workers() -> int:
    return min(4, os.cpu_count() or 1)


def _map(fn, jobs: list, desc: str, progress: bool) -> list:
    if len(jobs) < 16:
        return [fn(j) for j in tqdm(jobs, desc=desc, disable=not progress, unit="file")]
    with ProcessPoolExecutor(max_workers=_workers()) as pool:
        return list(tqdm(pool.map(fn, jobs, chunksize=8), total=len(jobs), desc=desc, disable=not progress,
                         unit="file"))


# --- Speech Commands ----------------------------------------------------------------------------------------------


def _keyword_config():
    from edgeprune.data.speech import _feature_config

    return _feature_config("keywords")


def _clip_samples() -> int:
    cfg = _keyword_config()
    return int(round(cfg.n_frames * cfg.hop_seconds * SAMPLE_RATE))


def _keyword_features(path: str) -> np.ndarray:
    from edgeprune.data.features import log_mel

    return log_mel(_fit(read_audio(Path(path)), _clip_samples()), _keyword_config())


def _class_share(y: list[int]) -> int:
    """The mean count of the keyword classes (0-9) that have clips; 0 when none has."""
    from edgeprune.tasks import KEYWORDS

    counts = [y.count(c) for c in range(len(KEYWORDS)) if y.count(c)]
    return int(round(np.mean(counts))) if counts else 0


def which_set(name: str, validation_percent: float = 10.0, testing_percent: float = 10.0) -> str:
    """Speech Commands' own split rule: by a hash of the speaker part of the file name (before "_nohash_")."""
    speaker = re.sub(r"_nohash_.*$", "", name)
    digest = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16)
    percent = (digest % (_MAX_WAVS + 1)) * (100.0 / _MAX_WAVS)
    if percent < validation_percent:
        return "validation"
    if percent < validation_percent + testing_percent:
        return "test"
    return "train"


def _read_list(path: Path) -> set[str]:
    return {line.strip().replace("\\", "/") for line in path.read_text().splitlines() if line.strip()}


def load_speech_commands(root: Path, progress: bool = True, seed: int = 0) -> Dataset:
    """A Speech Commands folder as a keywords data set (module docstring)."""
    from edgeprune.tasks import KEYWORD_CLASSES, KEYWORDS, get_task

    task = get_task("keywords")
    root = Path(root)
    layout = (f"expected the Speech Commands layout {root}/<word>/*.wav (optional validation_list.txt, "
              f"testing_list.txt, {BACKGROUND}/*.wav)")
    if not root.is_dir():
        raise EdgepruneError(f"data folder not found: {root}; {layout}")
    files = sorted(p.relative_to(root).as_posix() for d in root.iterdir() if d.is_dir() and not d.name.startswith("_")
                   for p in d.glob("*.wav") if p.is_file())
    if not files:
        raise EdgepruneError(f"{root}: no .wav files in word folders; {layout}")
    listed = {s: _read_list(root / f) for s, f in LISTS.items() if (root / f).is_file()}
    assign: dict[str, list[str]] = {s: [] for s in SPLITS}
    for rel in files:
        if listed:
            split = next((s for s, names in listed.items() if rel in names), "train")
        else:
            split = which_set(Path(rel).name)
        assign[split].append(rel)
    rng = np.random.default_rng(seed)
    labels: dict[str, list[int]] = {}
    for split, rels in assign.items():
        y = [KEYWORDS.index(r.split("/")[0]) if r.split("/")[0] in KEYWORDS else len(KEYWORDS) for r in rels]
        share = _class_share(y)
        unknown = [i for i, c in enumerate(y) if c == len(KEYWORDS)]
        if share and len(unknown) > share:
            drop = set(rng.choice(unknown, size=len(unknown) - share, replace=False).tolist())
            rels[:] = [r for i, r in enumerate(rels) if i not in drop]
            y = [c for i, c in enumerate(y) if i not in drop]
        labels[split] = y
    for split in ("train", "test"):
        if not assign[split]:
            where = f"listed in {LISTS['test']}" if split == "test" and listed else "assigned to it"
            raise EdgepruneError(f"{root}: no clips for the {split} split ({len(files)} .wav files, none {where}); "
                                 f"{layout}")
    silence = _silence_clips(root, labels, seed, progress)
    splits = {}
    for split in SPLITS:
        rels = assign[split]
        if not rels:
            continue
        feats = _map(_keyword_features, [str(root / r) for r in rels], f"reading {root.name} {split}", progress)
        y = list(labels[split])
        words = [r.split("/")[0] for r in rels]
        speakers = [re.sub(r"_nohash_.*$", "", Path(r).stem) for r in rels]
        extra = silence.get(split, [])
        feats += extra
        y += [KEYWORD_CLASSES.index("silence")] * len(extra)
        words += ["_silence_"] * len(extra)
        speakers += [""] * len(extra)
        x = task.check_inputs({"logmel": np.stack(feats)}, f"{root} ({split})")
        splits[split] = Split(x, np.asarray(y, dtype=np.int64),
                              {"speakers": np.array(speakers), "words": np.array(words),
                               "files": np.array(rels + [""] * len(extra))})
    if "validation" not in splits:  # a small folder: no speaker hashed into validation
        splits["train"], splits["validation"] = holdout(splits["train"], 0.1, task)
    info = {"source": str(root), "layout": "speech commands", "split_rule": "lists" if listed else "hash",
            "counts": {s: np.bincount(splits[s].y, minlength=len(KEYWORD_CLASSES)).tolist() for s in SPLITS}}
    return Dataset(root.name, {s: splits[s] for s in SPLITS}, list(KEYWORD_CLASSES), info, task.name)


def _silence_clips(root: Path, labels: dict[str, list[int]], seed: int, progress: bool) -> dict[str, list[np.ndarray]]:
    """1 s pieces of the background files, each piece in one split, as many per split as a mean keyword class."""
    from edgeprune.data.features import log_mel

    folder = root / BACKGROUND
    paths = sorted(folder.glob("*.wav")) if folder.is_dir() else []
    if not paths:
        return {}
    n = _clip_samples()
    pieces = []
    for path in tqdm(paths, desc="reading background noise", disable=not progress, unit="file"):
        audio = read_audio(path)
        pieces += [audio[i:i + n] for i in range(0, audio.size - n + 1, n)]
    if not pieces:
        raise EdgepruneError(f"{folder}: no background file lasts 1 s; expected longer noise recordings")
    rng = np.random.default_rng([seed, 1])
    order = rng.permutation(len(pieces))
    held = max(1, len(pieces) // 10) if len(pieces) >= 3 else 0
    owner = {"validation": order[:held], "test": order[held:2 * held], "train": order[2 * held:]}
    out = {}
    for split in SPLITS:
        pool = owner[split] if len(owner[split]) else order
        want = _class_share(labels[split])
        if want == 0:
            continue
        chosen = rng.choice(pool, size=want, replace=want > len(pool))
        gains = rng.uniform(0.1, 1.0, size=want)
        out[split] = [log_mel((g * pieces[i]).astype(np.float32), _keyword_config()) for i, g in zip(chosen, gains)]
    return out


# --- air + bone conduction pairs ------------------------------------------------------------------------------------


def _pair_job(args: tuple[str, str]) -> dict[str, Any]:
    """Clips of one air / bone / clean triple."""
    from benchmarks.metrics import stft
    from edgeprune.tasks import enhancement as enh

    split_dir, name = Path(args[0]), args[1]
    raw = {c: _load(split_dir / c / name, mono_only=True) for c in CHANNELS}
    rates = {c: r for c, (_, r) in raw.items()}
    if len(set(rates.values())) > 1:
        raise EdgepruneError(f"{split_dir}/*/{name}: sample rates differ ("
                             f"{', '.join(f'{c} {r} Hz' for c, r in rates.items())}); expected one rate for the "
                             "air, bone and clean recordings of a pair")
    lengths = {c: a.size for c, (a, _) in raw.items()}
    if len(set(lengths.values())) > 1:
        raise EdgepruneError(f"{split_dir}/*/{name}: lengths differ ("
                             f"{', '.join(f'{c} {n}' for c, n in lengths.items())} samples); expected one length "
                             "for the air, bone and clean recordings of a pair")
    waves = {c: _to_16k(a, r) for c, (a, r) in raw.items()}
    n = int(enh.CLIP_SECONDS * enh.SAMPLE_RATE)
    size = waves["air"].size
    starts = [0] if size <= n else [s for s in range(0, size, n) if size - s >= n // 2]
    out: dict[str, list] = {k: [] for k in ("noisy", "bone", "clean_mag", "noisy_wave", "clean_wave", "files",
                                             "snr_db")}
    for s in starts:
        air, bone, clean = (_fit(waves[c][s:s + n], n) for c in CHANNELS)
        out["noisy"].append(enh.log_magnitude(stft(air, enh.N_FFT, enh.HOP)))
        out["bone"].append(enh.log_magnitude(stft(bone, enh.N_FFT, enh.HOP)))
        out["clean_mag"].append(np.abs(stft(clean, enh.N_FFT, enh.HOP)).astype(np.float32))
        out["noisy_wave"].append(air)
        out["clean_wave"].append(clean)
        out["files"].append(f"{name}@{s / enh.SAMPLE_RATE:.1f}s")
        err = float(np.sum((air.astype(np.float64) - clean) ** 2))
        out["snr_db"].append(10 * np.log10(max(float(np.sum(clean.astype(np.float64) ** 2)), 1e-20) / max(err, 1e-20)))
    return out


def load_airbone(root: Path, progress: bool = True) -> Dataset:
    """Paired air / bone / clean .wav folders as an enhancement data set (module docstring)."""
    from edgeprune.data.speech import TRAIN_WAVES_MAX
    from edgeprune.tasks import get_task

    task = get_task("enhancement")
    root = Path(root)
    layout = f"expected {root}/{{train,validation,test}}/{{air,bone,clean}}/*.wav with the same names in each"
    if not root.is_dir():
        raise EdgepruneError(f"data folder not found: {root}; {layout}")
    splits: dict[str, Split] = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            if split == "validation":
                continue
            raise EdgepruneError(f"{root}: missing {split}/; {layout} (validation/ optional)")
        names = {}
        for c in CHANNELS:
            folder = split_dir / c
            if not folder.is_dir():
                raise EdgepruneError(f"{split_dir}: missing {c}/; {layout}")
            names[c] = {p.name for p in folder.glob("*.wav") if p.is_file()}
        everything = set().union(*names.values())
        if not everything:
            raise EdgepruneError(f"{split_dir}: no .wav files in air/, bone/, clean/; {layout}")
        for name in sorted(everything):
            lacking = [c for c in CHANNELS if name not in names[c]]
            if lacking:
                having = [c for c in CHANNELS if c not in lacking]
                raise EdgepruneError(f"{split_dir}: {name} is in {', '.join(f'{c}/' for c in having)} but not in "
                                     f"{', '.join(f'{c}/' for c in lacking)}; expected the same .wav names in air/, "
                                     "bone/ and clean/")
        ordered = sorted(everything)
        parts = _map(_pair_job, [(str(split_dir), n) for n in ordered], f"reading {root.name} {split}", progress)
        merged = {k: [v for p in parts for v in p[k]] for k in parts[0]}
        n = len(merged["noisy"])
        meta = {"speakers": np.array([f.split("@")[0] for f in merged["files"]]), "files": np.array(merged["files"]),
                "noise": np.array(["recorded"] * n), "snr_db": np.array(merged["snr_db"], dtype=np.float32),
                "noisy_wave": np.stack(merged["noisy_wave"]), "clean_wave": np.stack(merged["clean_wave"])}
        inputs = task.check_inputs({"noisy": np.stack(merged["noisy"]), "bone": np.stack(merged["bone"])},
                                   str(split_dir))
        y = task.check_targets(np.stack(merged["clean_mag"]), n, str(split_dir))
        splits[split] = Split(inputs, y, meta)
    if "validation" not in splits:
        splits["train"], splits["validation"] = holdout(splits["train"], 0.1, task)
    if len(splits["train"]) > TRAIN_WAVES_MAX:  # as the synthetic sets: train keeps its waves while they are small
        for key in ("noisy_wave", "clean_wave"):
            splits["train"].meta.pop(key)
    info = {"source": str(root), "layout": "air/bone/clean", "clips": {s: len(splits[s]) for s in SPLITS}}
    return Dataset(root.name, {s: splits[s] for s in SPLITS}, None, info, task.name)
