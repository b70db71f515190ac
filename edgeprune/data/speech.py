"""Synthetic speech data sets for the keywords, phones and enhancement tasks, spoken by espeak-ng.

    data = load_speech(SpeechSpec("keywords", 2400, 480, 480))   # generated on first use, then cached
    data["train"].inputs["logmel"]                              # [2400, 40, 100] float32

Speakers are espeak-ng voices (accents) times voice variants (edgeprune.data.espeak). Each split has its own
speakers: the variants are shuffled by the spec's seed and 10 % go to validation, 10 % to test, the rest to train,
with all eight accents each, so no voice quality is heard in two splits (81 x 8 = 648 train speakers, 10 x 8 = 80
each for validation and test). Every clip is drawn from its own generator seeded by (seed, task, split, index):
deterministic, and the same whatever the number of worker processes.

- keywords: 1 s at 16 kHz. The ten keywords, "unknown" (one of `UNKNOWN_WORDS`, the other words of Speech
  Commands plus five) and "silence" (background only), classes balanced (sample i has class i mod 12). Each word
  by a random speaker of the split at its speed x 0.88-1.12 and pitch +-8, trimmed, sped up when longer than
  0.95 s, at a random offset; speech at -30 to -16 dBFS over background noise (white, pink, brown, machinery hum,
  wind) at 5-30 dB SNR; silence is background alone at -60 to -25 dBFS. y: class index; meta "speakers", "words".
- phones: 3 s utterances of 3-6 random words of `WORDS` (503 common English words), starting 0.05-0.3 s in and
  ending at least 0.1 s before the end (sped up, then shortened by a word, when too long), over a noise floor at
  -65 to -50 dBFS. y: phone ids [N, PHONE_CAP] (1..39, -1 pads; PHONE_CAP is fixed, so every split has the same
  width; utterances are at most that long); meta "frames" (log-mel frames up to the utterance's end), "speakers",
  "text". Phones come from espeak's own phoneme output for the audio it rendered; an utterance with a phoneme
  symbol the table lacks is re-drawn, and the symbols are counted in the data set's info.
- enhancement: air + bone conduction pairs, 2 s at 16 kHz, after the published air / bone corpora: ABCS (Mandarin,
  100 speakers, 42 h, an air microphone and a bone-conduction sensor) and Vibravox (French, 188 speakers, in-ear,
  bone and throat sensors beside an air reference), where the body-conducted channel keeps roughly the band below
  1-2 kHz, loses the high band, and hears ambient noise only faintly. Clean speech: 4-8 random words, cropped or
  padded to 2 s, -30 to -20 dBFS. AIR channel: clean + environmental noise at a drawn SNR of -5 to 10 dB over the
  clip: babble (3-6 other speakers of the split at once), machinery (harmonic hum with frequency jitter), wind
  (low-passed noise with gusts), pink or brown noise; clip i gets kind i mod 5. BONE channel (`bone_channel`, with
  the speaker's `BoneSensor`): a 4th-order Butterworth low-pass with its corner at 700-1300 Hz, the high band at
  -35 to -25 dB with noise that follows its level, ambient noise at -35 to -25 dB through the same low-pass, tanh
  soft clipping at 1-2x the peak, sensor noise at -50 to -40 dB. Inputs "noisy" and "bone": log-magnitude STFTs
  (the task's n_fft and hop); y: the clean magnitude |STFT|; meta "noisy_wave", "clean_wave" ([N, 32000] float32,
  for the metrics; the train split keeps them while it has at most TRAIN_WAVES_MAX clips, 256 MB), "speakers",
  "noise", "snr_db". Simplified against the real corpora: synthetic voices, no room acoustics, no body resonances,
  vocal-effort changes or motion artefacts, one static channel per speaker, channels sample-aligned (the sensor
  filter's delay aside), a single language.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from edgeprune.data import espeak
from edgeprune.data.datasets import INFO_FILE, SPLITS, Dataset, Split, cache_root, load_splits, save_splits
from edgeprune.data.features import LogMelConfig, log_mel
from edgeprune.errors import EdgepruneError
from edgeprune.fileio import atomic_path

SPEECH_VERSION = 1  # bump when a generator changes, so old caches are not reused
SAMPLE_RATE = espeak.SAMPLE_RATE
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
TASK_IDS = {"keywords": 1, "phones": 2, "enhancement": 3}
HELD_OUT_VARIANTS = 0.1  # share of the variants (voice qualities) in validation, and in test
PHONE_CAP = 48  # width of the phone targets; the utterances (at most 2.95 s) hold 7-30, mean 17
TRAIN_WAVES_MAX = 1000  # enhancement: the train split keeps its waves up to this many clips (256 MB)

UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin", "nine", "one",
                 "seven", "sheila", "six", "three", "tree", "two", "wow", "zero", "backward", "forward", "follow",
                 "learn", "visual", "water", "music", "yellow", "window", "paper")
WORDS = tuple("""
about above across after again against air all almost alone along already also always among and animal another
answer any apple area around arrive ask autumn away baby back bad bag ball bank basket bath beach bear beautiful
because become bed before begin behind believe bell below best better between big bird black blue boat body book
both bottle bottom box boy bread break bridge bright bring brother brown build busy but butter buy cake call calm
came can car card care carry case cat catch chair change cheap cheese child choose church city class clean clear
climb clock close cloud coat cold colour come corner could country cover cow cup cut dance dark daughter day deep
desk did different dinner doctor dog door double dream dress drink drive dry during each early earth east easy eat
egg eight either empty end enough evening every eye face fall family far farm fast father feel few field find fine
finger fire first fish five floor flower fly follow food foot for forest forget fork found four free fresh friend
from front fruit full funny game garden gate gentle get girl give glass good grass great green ground group grow
guess hair half hand happy hard hat have head hear heart heavy help here high hill hold home hope horse hot hour
house how hundred hungry idea important inside iron island jacket join journey juice jump just keep key kind king
kitchen knee knife know lady lake lamp large last late laugh lazy leaf learn leave leg letter light like line lion
listen little live long look loud love low lunch machine make man many map market measure meet milk minute money
month moon morning mother mountain mouth move much music name narrow near neck need never new next nice night nine
noise north nothing number ocean often oil old only open orange other outside over page paint paper park party path
pay pencil people picture piece place plant play please pocket point poor pretty problem pull push queen question
quick quiet rain read ready red remember rice rich river road rock roof room round rule run salt same sand say
school sea season second see sell send seven shadow shape share sharp sheep shell ship shirt shoe shop short should
shoulder show side sign silver simple sing sister sit six sky sleep slow small smile snow soft some song soon sound
south space speak special spring square star start station stone story street strong student study sugar summer
sun sure sweet table tail take talk tall teacher tell ten thank their thing think three through throw thumb ticket
tiger time tired today together tomorrow tooth top town toy train tree true turn twelve uncle under until usual
valley very village visit voice wait walk wall want warm wash watch water wave way weather week welcome west wet
what wheel when where which white whole why wide wife wind window winter wish with woman wonder wood word work world
write wrong yellow yesterday young zero
""".split())

KEYWORD_NOISES = ("white", "pink", "brown", "machinery", "wind")
NOISE_KINDS = ("babble", "machinery", "wind", "pink", "brown")  # enhancement: clip i gets NOISE_KINDS[i mod 5]
ENH_SNR_DB = (-5.0, 10.0)


@dataclass(frozen=True)
class SpeechSpec:
    """What defines a synthetic speech set: its task, sizes per split and seed."""

    task: str
    n_train: int
    n_validation: int
    n_test: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASK_IDS:
            raise EdgepruneError(f"no synthetic speech for task '{self.task}'; expected one of {', '.join(TASK_IDS)}")
        for split, n in self.sizes.items():
            if int(n) < 1:
                raise EdgepruneError(f"synthetic {self.task} data: {split} size {n}; expected at least 1 clip")

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "validation": self.n_validation, "test": self.n_test}

    def key(self) -> str:
        return f"{self.task}-v{SPEECH_VERSION}-s{self.seed}-{self.n_train}-{self.n_validation}-{self.n_test}"


# --- speakers -------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def split_variants(seed: int) -> dict[str, tuple[str, ...]]:
    """Variants (voice qualities) of each split: a seeded shuffle, 10 % validation, 10 % test, the rest train."""
    order = np.random.default_rng([seed, 9001]).permutation(len(espeak.VARIANTS))
    held = max(1, int(round(HELD_OUT_VARIANTS * len(order))))
    names = [espeak.VARIANTS[i] for i in order]
    return {"train": tuple(names[2 * held:]), "validation": tuple(names[:held]), "test": tuple(names[held:2 * held])}


@functools.lru_cache(maxsize=None)
def split_speakers(seed: int) -> dict[str, tuple[str, ...]]:
    """Speaker names of each split: every accent with each of the split's variants; no speaker in two splits."""
    return {s: tuple(f"{v}+{var}" for var in variants for v in espeak.VOICES)
            for s, variants in split_variants(seed).items()}


# --- signals --------------------------------------------------------------------------------------------------------


def _rng(seed: int, task: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, TASK_IDS[task], SPLIT_IDS[split], index])


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-12


def _db(x: float) -> float:
    return 10 ** (x / 20)


def _smooth(rng: np.random.Generator, n: int, rate_hz: float) -> np.ndarray:
    """A slowly varying random curve (about `rate_hz` knots per second), unit variance."""
    knots = max(2, int(n / SAMPLE_RATE * rate_hz) + 2)
    return np.interp(np.linspace(0, knots - 1, n), np.arange(knots), rng.standard_normal(knots))


def coloured(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power ~ 1 / f^exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE), 20.0)
    out = np.fft.irfft(spec * f ** (-exponent / 2), n)
    return out / _rms(out)


def machinery(rng: np.random.Generator, n: int) -> np.ndarray:
    """A harmonic hum (motor, fan, engine) whose frequency and level wander, over a little broadband noise."""
    f0 = rng.uniform(45, 180)
    freq = f0 * (1 + rng.uniform(0.005, 0.03) * _smooth(rng, n, 1.0))
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    rolloff = rng.uniform(1.5, 5.0)
    out = np.zeros(n)
    for k in range(1, int(4000 / f0) + 1):
        out += _db(-rolloff * (k - 1) + rng.normal(0, 3)) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    out *= 1 + 0.2 * _smooth(rng, n, 2.0)
    out = out / _rms(out) + _db(rng.uniform(-20, -10)) * coloured(rng, n, 1.0)
    return out / _rms(out)


def wind(rng: np.random.Generator, n: int) -> np.ndarray:
    """Low-passed noise with gusts (a slowly varying, log-normal envelope)."""
    from scipy.signal import butter, sosfilt

    sos = butter(2, rng.uniform(150, 600), "low", fs=SAMPLE_RATE, output="sos")
    out = sosfilt(sos, rng.standard_normal(n))
    out *= np.exp(rng.uniform(0.5, 1.2) * _smooth(rng, n, rng.uniform(0.5, 2.0)))
    return out / _rms(out)


def babble(rng: np.random.Generator, n: int, pool: tuple[str, ...], exclude: str) -> np.ndarray:
    """3-6 other speakers of the split talking at once (each a random sentence, repeated to fill the clip)."""
    others = [s for s in pool if s != exclude]
    out = np.zeros(n)
    for name in rng.choice(others, size=int(rng.integers(3, 7)), replace=False):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(4, 9)), replace=False))
        talk = espeak.trimmed(espeak.synthesize(text, espeak.get_speaker(str(name))).wave)
        pieces, total = [], 0
        while total < 2 * n:
            gap = np.zeros(int(rng.uniform(0.1, 0.4) * SAMPLE_RATE), np.float32)
            pieces += [talk, gap]
            total += talk.size + gap.size
        stream = np.concatenate(pieces)
        start = int(rng.integers(0, stream.size - n + 1))
        out += _db(rng.uniform(-3, 3)) * stream[start:start + n] / _rms(talk)
    return out / _rms(out)


def background(rng: np.random.Generator, kind: str, n: int, speakers: tuple[str, ...] = (), speaker: str = ""):
    """Unit-RMS noise of `kind`."""
    if kind in ("white", "pink", "brown"):
        return coloured(rng, n, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])
    if kind == "machinery":
        return machinery(rng, n)
    if kind == "wind":
        return wind(rng, n)
    if kind == "babble":
        return babble(rng, n, speakers, speaker)
    raise ValueError(kind)  # pragma: no cover - the kinds are closed


def _speak(rng: np.random.Generator, text: str, speaker: espeak.Speaker, speed_factor: float = 1.0):
    """`text` by `speaker` with this utterance's speed and pitch jitter: (espeak utterance, speed, pitch)."""
    speed = int(round(speaker.speed * rng.uniform(0.88, 1.12) * speed_factor))
    pitch = speaker.pitch + int(rng.integers(-8, 9))
    return espeak.synthesize(text, speaker, speed, pitch), speed, pitch


def _feature_config(task_name: str) -> LogMelConfig:
    from edgeprune.tasks import get_task

    feat = get_task(task_name).inputs[0]
    return LogMelConfig(sample_rate=SAMPLE_RATE, n_mels=feat.shape[feat.axes.index("F")], win_seconds=0.025,
                        hop_seconds=0.01, n_frames=feat.shape[feat.axes.index("T")])


def _samples(task_name: str) -> int:
    cfg = _feature_config(task_name)
    return int(round(cfg.n_frames * cfg.hop_seconds * SAMPLE_RATE))


# --- keywords -------------------------------------------------------------------------------------------------------


def keyword_clip(seed: int, split: str, index: int, label: int) -> dict[str, Any]:
    """One keywords clip: {"logmel", "word", "speaker"}; the same arguments always give the same clip."""
    from edgeprune.tasks import KEYWORD_CLASSES, KEYWORDS

    rng = _rng(seed, "keywords", split, index)
    n = _samples("keywords")
    cls = KEYWORD_CLASSES[label]
    noise = background(rng, str(rng.choice(KEYWORD_NOISES)), n)
    if cls == "silence":
        wave = _db(rng.uniform(-60, -25)) * noise
        word, name = "_silence_", ""
    else:
        word = cls if cls in KEYWORDS else str(rng.choice(UNKNOWN_WORDS))
        name = str(rng.choice(split_speakers(seed)[split]))
        speaker = espeak.get_speaker(name)
        longest = int(0.95 * n)
        utt, speed, pitch = _speak(rng, word, speaker)
        speech = espeak.trimmed(utt.wave)
        if speech.size > longest:  # a slow speaker: say it faster
            utt = espeak.synthesize(word, speaker, int(np.ceil(speed * speech.size / longest * 1.05)), pitch)
            speech = espeak.trimmed(utt.wave)[:longest]
        level = _db(rng.uniform(-30, -16))
        speech = speech * (level / _rms(speech))
        start = int(rng.integers(0, n - speech.size + 1))
        wave = (level / _db(rng.uniform(5, 30))) * noise
        wave[start:start + speech.size] += speech
    wave = np.clip(wave, -1.0, 1.0).astype(np.float32)
    return {"logmel": log_mel(wave, _feature_config("keywords")), "word": word, "speaker": name}


# --- phones ---------------------------------------------------------------------------------------------------------


def phone_clip(seed: int, split: str, index: int) -> dict[str, Any]:
    """One phones clip: {"logmel", "phones" (ids), "frames", "speaker", "text", "unknown" (symbol counts)}."""
    rng = _rng(seed, "phones", split, index)
    cfg = _feature_config("phones")
    n = _samples("phones")
    hop = int(round(cfg.hop_seconds * SAMPLE_RATE))
    name = str(rng.choice(split_speakers(seed)[split]))
    speaker = espeak.get_speaker(name)
    lead = int(rng.uniform(0.05, 0.3) * SAMPLE_RATE)
    longest = n - lead - int(0.1 * SAMPLE_RATE)
    words = list(rng.choice(WORDS, size=int(rng.integers(3, 7)), replace=False))
    unknown: Counter = Counter()
    factor = 1.0
    for _ in range(20):
        text = " ".join(words)
        utt, _, _ = _speak(rng, text, speaker, factor)
        phones, bad = espeak.arpabet(utt.phonemes, speaker.voice)
        speech = espeak.trimmed(utt.wave)
        if bad:
            unknown.update(bad)
            words = list(rng.choice(WORDS, size=int(rng.integers(3, 7)), replace=False))
            factor = 1.0
        elif speech.size > longest and factor == 1.0:
            factor = min(1.6, speech.size / longest * 1.05)
        elif (speech.size > longest or len(phones) > PHONE_CAP) and len(words) > 1:
            words = words[:-1]
        else:
            break
    else:  # pragma: no cover - the word list maps completely (tests check it)
        raise EdgepruneError(f"phones: no utterance without unknown phoneme symbols after 20 tries "
                             f"({', '.join(sorted(unknown))}); the table in edgeprune/data/espeak.py lacks them")
    speech = speech[:longest]
    level = _db(rng.uniform(-30, -16))
    wave = _db(rng.uniform(-65, -50)) * background(rng, str(rng.choice(("white", "pink"))), n)
    wave[lead:lead + speech.size] += speech * (level / _rms(speech))
    wave = np.clip(wave, -1.0, 1.0).astype(np.float32)
    ids = np.full(PHONE_CAP, -1, dtype=np.int64)
    ids[:len(phones)] = espeak.phone_ids(phones)
    frames = min(cfg.n_frames, (lead + speech.size) // hop + 1)
    return {"logmel": log_mel(wave, cfg), "phones": ids, "frames": frames, "speaker": name, "text": text,
            "unknown": dict(unknown)}


# --- enhancement ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoneSensor:
    """How one speaker's body and bone-conduction sensor colour their speech (drawn from the speaker's name)."""

    corner_hz: float  # 4th-order Butterworth low-pass corner
    high_db: float  # the weak, noisy high band, relative to the air speech above the corner
    sensor_db: float  # sensor self-noise, relative to the bone signal
    gain_db: float  # bone speech level relative to the air speech
    clip: float  # soft-clipping limit, relative to the bone signal's peak (tanh: mild, only peaks bend)

    @classmethod
    def of(cls, speaker: str) -> BoneSensor:
        rng = np.random.default_rng([espeak._stable_seed(speaker), 2])
        return cls(corner_hz=float(rng.uniform(700, 1300)), high_db=float(rng.uniform(-35, -25)),
                   sensor_db=float(rng.uniform(-50, -40)), gain_db=float(rng.uniform(-6, 0)),
                   clip=float(rng.uniform(1.0, 2.0)))


def bone_channel(clean: np.ndarray, ambient: np.ndarray, sensor: BoneSensor, rng: np.random.Generator) -> np.ndarray:
    """The bone-conduction microphone: clean speech low-passed by the body, a weak noisy high band, ambient noise
    at -35 to -25 dB through the same low-pass, a mild soft clipping and the sensor's own noise."""
    from scipy.signal import butter, sosfilt

    low = butter(4, sensor.corner_hz, "low", fs=SAMPLE_RATE, output="sos")
    high = butter(4, sensor.corner_hz, "high", fs=SAMPLE_RATE, output="sos")
    n = clean.size
    above = sosfilt(high, clean)
    envelope = np.convolve(np.abs(above), np.ones(160) / 160, mode="same")  # 10 ms
    hiss = sosfilt(high, rng.standard_normal(n)) * envelope  # noise that follows the high band's level
    body = (sosfilt(low, clean) + _db(sensor.high_db) * (above + 0.5 * hiss)
            + _db(rng.uniform(-35, -25)) * sosfilt(low, ambient))
    body *= _db(sensor.gain_db)
    limit = sensor.clip * np.abs(body).max()
    body = limit * np.tanh(body / limit)
    body += _db(sensor.sensor_db) * _rms(body) * coloured(rng, n, 0.5)
    return body


def enhancement_clip(seed: int, split: str, index: int) -> dict[str, Any]:
    """One air + bone pair, 2 s at 16 kHz (module docstring): {"noisy", "bone"} log-magnitude STFTs, "clean_mag"
    (|STFT| of clean), "noisy_wave", "clean_wave", "speaker", "noise", "snr_db"."""
    from benchmarks.metrics import stft
    from edgeprune.tasks import enhancement as enh

    rng = _rng(seed, "enhancement", split, index)
    n = int(enh.CLIP_SECONDS * enh.SAMPLE_RATE)
    pool = split_speakers(seed)[split]
    name = str(rng.choice(pool))
    speaker = espeak.get_speaker(name)
    text = " ".join(rng.choice(WORDS, size=int(rng.integers(4, 9)), replace=False))
    speech = espeak.trimmed(_speak(rng, text, speaker)[0].wave)
    clean = np.zeros(n)
    if speech.size >= n:
        start = int(rng.integers(0, speech.size - n + 1))
        clean[:] = speech[start:start + n]
    else:
        start = int(rng.integers(0, n - speech.size + 1))
        clean[start:start + speech.size] = speech
    clean *= _db(rng.uniform(-30, -20)) / _rms(clean)
    kind = NOISE_KINDS[index % len(NOISE_KINDS)]
    snr = float(rng.uniform(*ENH_SNR_DB))
    noise = background(rng, kind, n, pool, name) * (_rms(clean) / _db(snr))
    noisy = clean + noise
    peak = np.abs(noisy).max()
    if peak > 0.95:  # keep it in range; one gain for both keeps the SNR
        clean, noise, noisy = (a * (0.95 / peak) for a in (clean, noise, noisy))
    bone = bone_channel(clean, noise, BoneSensor.of(name), rng)
    clean32, noisy32 = clean.astype(np.float32), noisy.astype(np.float32)
    return {"noisy": enh.log_magnitude(stft(noisy32, enh.N_FFT, enh.HOP)),
            "bone": enh.log_magnitude(stft(bone.astype(np.float32), enh.N_FFT, enh.HOP)),
            "clean_mag": np.abs(stft(clean32, enh.N_FFT, enh.HOP)).astype(np.float32),
            "noisy_wave": noisy32, "clean_wave": clean32, "speaker": name, "noise": kind, "snr_db": snr}


# --- data sets ------------------------------------------------------------------------------------------------------


def _clip_job(args: tuple) -> dict[str, Any]:
    task, seed, split, index = args
    if task == "keywords":
        from edgeprune.tasks import KEYWORD_CLASSES

        return keyword_clip(seed, split, index, index % len(KEYWORD_CLASSES))
    if task == "phones":
        return phone_clip(seed, split, index)
    return enhancement_clip(seed, split, index)


def _assemble(task: str, split: str, clips: list[dict[str, Any]], n_train: int) -> Split:
    if task == "keywords":
        from edgeprune.tasks import KEYWORD_CLASSES

        y = np.arange(len(clips), dtype=np.int64) % len(KEYWORD_CLASSES)
        return Split({"logmel": np.stack([c["logmel"] for c in clips])}, y,
                     {"speakers": np.array([c["speaker"] for c in clips]),
                      "words": np.array([c["word"] for c in clips])})
    if task == "phones":
        return Split({"logmel": np.stack([c["logmel"] for c in clips])}, np.stack([c["phones"] for c in clips]),
                     {"frames": np.array([c["frames"] for c in clips], dtype=np.int64),
                      "speakers": np.array([c["speaker"] for c in clips]),
                      "text": np.array([c["text"] for c in clips])})
    meta = {"speakers": np.array([c["speaker"] for c in clips]), "noise": np.array([c["noise"] for c in clips]),
            "snr_db": np.array([c["snr_db"] for c in clips], dtype=np.float32)}
    if split != "train" or n_train <= TRAIN_WAVES_MAX:
        meta["noisy_wave"] = np.stack([c["noisy_wave"] for c in clips])
        meta["clean_wave"] = np.stack([c["clean_wave"] for c in clips])
    return Split({"noisy": np.stack([c["noisy"] for c in clips]), "bone": np.stack([c["bone"] for c in clips])},
                 np.stack([c["clean_mag"] for c in clips]), meta)


def generate_speech(spec: SpeechSpec, workers: int | None = None,
                    progress: bool = True) -> tuple[dict[str, Split], dict[str, Any]]:
    """Render every clip of every split (parallel over processes): (splits, info). Deterministic for a spec."""
    version = espeak.check_inventory()
    workers = workers or min(4, os.cpu_count() or 1)
    splits: dict[str, Split] = {}
    unknown: Counter = Counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for split, n in spec.sizes.items():
            jobs = [(spec.task, spec.seed, split, i) for i in range(n)]
            clips = list(tqdm(pool.map(_clip_job, jobs, chunksize=4), total=n, unit="clip", disable=not progress,
                              desc=f"speaking {spec.task} {split}"))
            for c in clips:
                unknown.update(c.get("unknown", {}))
            splits[split] = _assemble(spec.task, split, clips, spec.n_train)
    if unknown and progress:
        tqdm.write(f"phoneme symbols without an ARPAbet entry (utterances re-drawn): {dict(unknown)}")
    speakers = split_speakers(spec.seed)
    info = {"generator": f"speech v{SPEECH_VERSION}", "speech_spec": asdict(spec), "espeak": f"espeak-ng {version}",
            "speakers": {s: len(v) for s, v in speakers.items()}, "variants": split_variants(spec.seed),
            "unknown_phonemes": dict(unknown)}
    if spec.task == "phones":
        info["phone_cap"] = PHONE_CAP
    if spec.task == "enhancement":
        info["train_waves"] = spec.n_train <= TRAIN_WAVES_MAX
    return splits, info


def _classes(task_name: str) -> list[str] | None:
    from edgeprune.tasks import get_task

    task = get_task(task_name)
    return None if task.classes is None else list(task.classes)


def load_speech(spec: SpeechSpec, progress: bool = True, workers: int | None = None) -> Dataset:
    """The synthetic speech set for `spec`, generated on first use and cached under cache_root()/speech."""
    from edgeprune.tasks import get_task

    task = get_task(spec.task)
    directory = cache_root() / "speech" / spec.key()
    if not (directory / INFO_FILE).is_file() or not all((directory / f"{s}.npz").is_file() for s in SPLITS):
        splits, info = generate_speech(spec, workers=workers, progress=progress)
        with atomic_path(directory, force=True, is_dir=True) as tmp:
            save_splits(tmp, splits, task, _classes(spec.task), info)
    dataset = load_splits(directory, task)
    dataset.name = "synthetic"
    dataset.info.update({"source": "synthetic", "cache": str(directory)})
    return dataset
