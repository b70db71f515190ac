"""Where a run's data comes from: generated for its task (the synthetic scenes, the espeak-ng speech sets) or read
from a folder of real data in the layout that task's data is published in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune.data import speech, wavfolders
from edgeprune.data.datasets import INFO_FILE, Dataset, SyntheticSpec, load_folder, load_synthetic
from edgeprune.errors import EdgepruneError
from edgeprune.tasks import Task, get_task


def load_dataset(source: str, task: Task | str = "scenes", profile: Any = None, progress: bool = True) -> Dataset:
    """The data a run uses: `synthetic` (generated for the task at the profile's size, cached) or a folder of real
    data (the DCASE layout for scenes, a Speech Commands folder for keywords, paired air / bone / clean .wav
    folders for enhancement, or edgeprune's own layout for any task)."""
    task = get_task(task)
    if source == "synthetic":
        if task.name == "scenes":
            return load_synthetic(profile.synthetic if profile is not None else SyntheticSpec(), progress=progress)
        if profile is None:
            raise EdgepruneError(f"synthetic {task.name} data needs a profile (its split sizes)")
        return speech.load_speech(speech.SpeechSpec(task.name, *profile.speech[task.name]), progress=progress)
    path = Path(source)
    if not path.is_dir():
        raise EdgepruneError(f"data folder not found: {source} (expected 'synthetic' or a folder)")
    if (path / INFO_FILE).is_file() or task.name == "scenes":
        return load_folder(path, task)
    if task.name == "keywords":
        return wavfolders.load_speech_commands(path, progress=progress)
    if task.name == "enhancement":
        return wavfolders.load_airbone(path, progress=progress)
    raise EdgepruneError(f"{source}: the {task.name} task reads real data only in edgeprune's layout ({INFO_FILE} "
                         "with train/validation/test .npz); synthetic data: --data synthetic")
