"""Tasks: what a model is for. The one place where an input's shape is written.

    from edgeprune.tasks import get_task
    task = get_task("enhancement")
    [f.name for f in task.inputs]   # ['noisy', 'bone']
    task.inputs[0].shape            # (129, 251): STFT bins x frames

Tasks: scenes (DCASE 2021 1a acoustic scenes), keywords (spoken words), phones (per-frame phone recognition, CTC,
PER), enhancement (air + bone conduction microphones, SI-SDR improvement, STOI, PESQ).
"""

from __future__ import annotations

from edgeprune.errors import EdgepruneError
from edgeprune.tasks import enhancement as _enh
from edgeprune.tasks.base import Feature, Output, Task
from edgeprune.tasks.classification import ClassificationTask, classification_report
from edgeprune.tasks.enhancement import EnhancementTask
from edgeprune.tasks.phones import BLANK, PHONES, PhonesTask

SCENE_CLASSES = ("airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
                 "street_pedestrian", "street_traffic", "tram")
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
KEYWORD_CLASSES = KEYWORDS + ("unknown", "silence")

_ENH_FRAMES = 1 + int(_enh.CLIP_SECONDS * _enh.SAMPLE_RATE) // _enh.HOP
_ENH_SHAPE = (_enh.N_FFT // 2 + 1, _ENH_FRAMES)

TASKS: dict[str, Task] = {
    "scenes": ClassificationTask(
        "scenes", "acoustic scene classification, DCASE 2021 task 1a (10 s clips, 10 classes)",
        inputs=(Feature("logmel", (40, 500), "FT", "log-mel, 40 bands x 500 frames (44.1 kHz, 40 ms window, 20 ms "
                                                   "hop; the synthetic scenes at 16 kHz)"),),
        output=Output("probs", "probs", "K", "class probabilities"), loss="cross_entropy", select="accuracy",
        select_mode="max", parity="classification", kind="classification", n_classes=len(SCENE_CLASSES)),
    "keywords": ClassificationTask(
        "keywords", "spoken keywords, Speech Commands style (1 s, 10 words + unknown + silence)",
        inputs=(Feature("logmel", (40, 100), "FT", "log-mel, 40 bands x 100 frames (16 kHz, 25 ms window, 10 ms "
                                                   "hop)"),),
        output=Output("probs", "probs", "K", "class probabilities"), loss="cross_entropy", select="accuracy",
        select_mode="max", parity="classification", kind="classification", classes=KEYWORD_CLASSES,
        n_classes=len(KEYWORD_CLASSES)),
    "phones": PhonesTask(
        "phones", "per-frame phone recognition (3 s utterances, 39 phones + CTC blank, phone error rate)",
        inputs=(Feature("logmel", (40, 300), "FT", "log-mel, 40 bands x 300 frames (16 kHz, 25 ms window, 10 ms "
                                                   "hop); meta 'frames' holds each utterance's valid frames"),),
        output=Output("phone_logits", "frame_logits", "TK", "logits per output frame over blank + phones"),
        loss="ctc", select="per", select_mode="min", parity="frames", kind="phones", classes=(BLANK,) + PHONES,
        n_classes=1 + len(PHONES), params={"blank": 0, "frames": 300}),
    "enhancement": EnhancementTask(
        "enhancement", "speech enhancement from an air-conduction and a bone-conduction microphone (2 s, 16 kHz)",
        inputs=(Feature("noisy", _ENH_SHAPE, "FT", "log-magnitude STFT of the noisy air-conduction microphone "
                                                   f"(n_fft {_enh.N_FFT}, hop {_enh.HOP}, periodic Hann)"),
                Feature("bone", _ENH_SHAPE, "FT", "log-magnitude STFT of the bone-conduction microphone")),
        output=Output("mask", "mask", "FT", "magnitude mask for the noisy STFT, in [0, 1]"),
        loss="masked_magnitude", select="si_sdri", select_mode="max", parity="regression", kind="enhancement",
        params={"n_fft": _enh.N_FFT, "hop": _enh.HOP, "sample_rate": _enh.SAMPLE_RATE,
                "samples": int(_enh.CLIP_SECONDS * _enh.SAMPLE_RATE), "log_floor": _enh.LOG_FLOOR}),
}


def get_task(name: str) -> Task:
    """The task called `name`, or one clear error listing the tasks."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise EdgepruneError(f"unknown task '{name}'; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def list_tasks() -> list[Task]:
    return list(TASKS.values())


__all__ = ["BLANK", "ClassificationTask", "EnhancementTask", "Feature", "KEYWORDS", "KEYWORD_CLASSES", "Output",
           "PHONES", "PhonesTask", "SCENE_CLASSES", "TASKS", "Task", "classification_report", "get_task", "list_tasks"]
