"""Synthetic acoustic scenes: ten DCASE-style classes generated at waveform level.

Each clip is a 10 s mix of a spectrally shaped background texture, tonal sources (engines, motors, hum) and
discrete events (speech babble, footsteps, birds, car pass-bys, chimes, brake screech, rail rattle, door thuds,
music), put in a room (exponentially decaying reverb tail) and recorded through one of nine devices (band limits,
EQ ripples, gain, self-noise), as in DCASE 2020/2021 task 1a: training uses devices A, B, C, S1-S3 with A
dominant; S4-S6 appear only in the test split. The waveform then goes through the same log-mel extraction as real
audio (edgeprune.data.features) at 16 kHz.

Classes share their sources and differ in how often and how strongly each appears. `difficulty` is the share of
ambiguous clips, each leaning past half-way toward another class's recipe, so the task can be made as hard as
the real one (baseline near 48.6 %) while each class's own cues stay learnable from little data.
Every clip is drawn from its own generator seeded by (seed, split, index): deterministic and order-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from edgeprune.data.features import LogMelConfig, log_mel

SAMPLE_RATE = 16000
DURATION_S = 10.0
N_SAMPLES = int(SAMPLE_RATE * DURATION_S)
FEATURE_CONFIG = LogMelConfig(sample_rate=SAMPLE_RATE)

CLASSES = (
    "airport", "bus", "metro", "metro_station", "park",
    "public_square", "shopping_mall", "street_pedestrian", "street_traffic", "tram",
)
TRAIN_DEVICES = ("A", "B", "C", "S1", "S2", "S3")
ALL_DEVICES = TRAIN_DEVICES + ("S4", "S5", "S6")
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}

EVENT_TYPES = ("speech", "footstep", "bird", "car", "chime", "brake", "rattle", "door", "music")

# Per class: machinery signature tones (Hz), background (tilt dB/octave, bump centre Hz, bump gain dB), slow modulation depth, engine hum
# (probability, f0 range Hz, level dB rel. background), reverb RT60 range s, and event rates per 10 s.
RECIPES: dict[str, dict] = {
    "airport": dict(signature=(180, 2400), tilt=-3.5, bump=(400, 4), mod=0.1, hum=(0.3, (50, 70), -8), rt60=(1.0, 2.0),
                    events=dict(speech=3, footstep=3, chime=0.8, rattle=0.6, music=0.2)),
    "bus": dict(signature=(70, 900), tilt=-7.0, bump=(90, 8), mod=0.3, hum=(0.9, (25, 55), 0), rt60=(0.2, 0.4),
                events=dict(speech=1.2, chime=0.5, door=0.6, rattle=0.3)),
    "metro": dict(signature=(110, 1500), tilt=-3.0, bump=(700, 6), mod=0.3, hum=(0.5, (60, 120), -4), rt60=(0.3, 0.6),
                  events=dict(speech=0.6, rattle=2.5, brake=0.7, chime=0.3, door=0.2)),
    "metro_station": dict(signature=(150, 3200), tilt=-3.0, bump=(500, 3), mod=0.2, hum=(0.4, (50, 100), -8), rt60=(1.5, 2.5),
                          events=dict(speech=2, footstep=2.5, chime=0.6, brake=0.5, car=0.6, rattle=0.6)),
    "park": dict(signature=(4200, 6100), tilt=-6.5, bump=(200, 3), mod=0.5, hum=(0.05, (40, 80), -14), rt60=(0.05, 0.15),
                 events=dict(bird=3.5, speech=0.6, footstep=0.8, car=0.3)),
    "public_square": dict(signature=(520, 5000), tilt=-5.0, bump=(300, 3), mod=0.3, hum=(0.1, (40, 80), -12), rt60=(0.2, 0.5),
                          events=dict(speech=2.2, bird=1.2, footstep=1.5, car=0.6, music=0.3)),
    "shopping_mall": dict(signature=(240, 1900), tilt=-4.0, bump=(600, 4), mod=0.1, hum=(0.3, (50, 70), -10), rt60=(0.8, 1.5),
                          events=dict(speech=4, footstep=2.5, music=1.2, chime=0.4)),
    "street_pedestrian": dict(signature=(330, 3800), tilt=-5.0, bump=(250, 4), mod=0.3, hum=(0.2, (30, 60), -10), rt60=(0.15, 0.4),
                              events=dict(speech=3, footstep=4, car=0.9, bird=0.4)),
    "street_traffic": dict(signature=(95, 1200), tilt=-6.0, bump=(150, 7), mod=0.6, hum=(0.6, (25, 60), -4), rt60=(0.1, 0.3),
                           events=dict(car=3.5, speech=0.4, brake=0.3, door=0.2)),
    "tram": dict(signature=(420, 2800), tilt=-4.5, bump=(250, 5), mod=0.3, hum=(0.9, (120, 300), -2), rt60=(0.3, 0.6),
                 events=dict(rattle=1.6, brake=0.6, speech=1.0, chime=0.6, door=0.3)),
}


@dataclass(frozen=True)
class Device:
    """A recording device: band limits, a tilt, EQ ripples, gain and self-noise."""

    name: str
    low_hz: float
    high_hz: float
    tilt_db: float
    ripples: tuple[tuple[float, float, float], ...]  # (centre Hz, width octaves, gain dB)
    gain_db: float
    noise_db: float


def _make_devices() -> dict[str, Device]:
    # Fixed seed: devices are part of the simulated world, not of a data set's seed.
    rng = np.random.default_rng(2021)
    devices = {"A": Device("A", 20.0, 7800.0, 0.0, ((1000.0, 1.0, 0.5),), 0.0, -75.0)}
    for name in ALL_DEVICES[1:]:
        ripples = tuple(
            (float(np.exp(rng.uniform(np.log(150), np.log(6000)))), float(rng.uniform(0.3, 1.2)),
             float(rng.uniform(-5, 5)))
            for _ in range(3)
        )
        devices[name] = Device(
            name, float(rng.uniform(80, 400)), float(rng.uniform(3500, 7800)), float(rng.uniform(-2.5, 2.5)),
            ripples, float(rng.uniform(-6, 6)), float(rng.uniform(-65, -50)),
        )
    return devices


DEVICES = _make_devices()


def _freqs(n: int) -> np.ndarray:
    return np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)


def _log_bump(freqs: np.ndarray, centre: float, width_oct: float, gain_db: float) -> np.ndarray:
    octaves = np.log2(np.maximum(freqs, 1.0) / centre)
    return gain_db * np.exp(-0.5 * (octaves / width_oct) ** 2)


def _shaped_noise(rng: np.random.Generator, n: int, gain_db_fn) -> np.ndarray:
    """White noise coloured in the frequency domain by gain_db_fn(freqs); unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    spec *= 10 ** (gain_db_fn(_freqs(n)) / 20)
    out = np.fft.irfft(spec, n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _smooth_envelope(rng: np.random.Generator, n: int, rate_hz: float, depth: float) -> np.ndarray:
    """Slowly varying gain around 1 (random, band-limited to about rate_hz)."""
    knots = max(2, int(DURATION_S * rate_hz) + 2)
    values = rng.standard_normal(knots)
    env = np.interp(np.linspace(0, knots - 1, n), np.arange(knots), values)
    return np.clip(1.0 + depth * env, 0.05, None)


def _harmonic(rng: np.random.Generator, n: int, f0: float, n_harm: int, rolloff_db: float, wobble: float):
    t = np.arange(n) / SAMPLE_RATE
    freq = f0 * (1 + wobble * _smooth_envelope(rng, n, 0.5, 1.0) - wobble)
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    out = np.zeros(n)
    for k in range(1, n_harm + 1):
        if f0 * k >= SAMPLE_RATE / 2 - 200:
            break
        out += 10 ** (-rolloff_db * (k - 1) / 20) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    del t
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _event(rng: np.random.Generator, kind: str) -> np.ndarray:
    """One event waveform of unit peak-ish RMS."""
    sr = SAMPLE_RATE
    if kind == "speech":
        n = int(sr * rng.uniform(0.6, 2.0))
        formants = [(rng.uniform(300, 900), 0.5, 12), (rng.uniform(1000, 2200), 0.4, 9), (rng.uniform(2300, 3300), 0.3, 6)]
        f0 = rng.uniform(90, 240)
        voiced = _harmonic(rng, n, f0, 25, 1.0, 0.05)
        shape = np.fft.rfft(voiced + 0.3 * rng.standard_normal(n))
        shape *= 10 ** (sum(_log_bump(_freqs(n), c, w, g) for c, w, g in formants) / 20)
        wave = np.fft.irfft(shape, n)
        wave *= 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(3, 6) * np.arange(n) / sr + rng.uniform(0, 6))
    elif kind == "footstep":
        n = int(sr * rng.uniform(0.03, 0.09))
        wave = rng.standard_normal(n) * np.exp(-np.arange(n) / (n / 5))
        wave = np.convolve(wave, np.ones(int(rng.integers(2, 8))) / 4, mode="same")
    elif kind == "bird":
        n = int(sr * rng.uniform(0.05, 0.25))
        f_start, f_end = rng.uniform(2000, 7000, size=2)
        freq = np.linspace(f_start, f_end, n) + 300 * np.sin(2 * np.pi * rng.uniform(20, 60) * np.arange(n) / sr)
        wave = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.hanning(n)
        reps = int(rng.integers(1, 5))
        wave = np.concatenate([np.concatenate([wave, np.zeros(int(n * rng.uniform(0.2, 1.0)))]) for _ in range(reps)])
    elif kind == "car":
        n = int(sr * rng.uniform(2.0, 5.0))
        centre = rng.uniform(150, 900)
        wave = _shaped_noise(rng, n, lambda f: _log_bump(f, centre, 1.2, 18) - 6 * np.log2(np.maximum(f, 50) / 50))
        wave += 0.4 * _harmonic(rng, n, rng.uniform(30, 90), 8, 3.0, 0.1)
        env = np.exp(-0.5 * ((np.arange(n) - n / 2) / (n / 6)) ** 2)
        wave *= env
    elif kind == "chime":
        notes = rng.uniform(400, 1400, size=int(rng.integers(2, 4)))
        parts = []
        for f in notes:
            m = int(sr * rng.uniform(0.25, 0.5))
            parts.append(_harmonic(rng, m, f, 4, 10.0, 0.0) * np.exp(-np.arange(m) / (m / 3)))
        wave = np.concatenate(parts)
    elif kind == "brake":
        n = int(sr * rng.uniform(0.5, 2.0))
        wave = _harmonic(rng, n, rng.uniform(1800, 5000), 2, 12.0, 0.03) * np.hanning(n)
    elif kind == "rattle":
        n = int(sr * rng.uniform(1.0, 3.0))
        wave = np.zeros(n)
        period = int(sr / rng.uniform(1.5, 6.0))
        click = rng.standard_normal(int(sr * 0.02)) * np.exp(-np.arange(int(sr * 0.02)) / (sr * 0.004))
        for start in range(0, n - click.size, period):
            wave[start : start + click.size] += click * rng.uniform(0.5, 1.0)
    elif kind == "door":
        n = int(sr * rng.uniform(0.15, 0.4))
        wave = np.sin(2 * np.pi * rng.uniform(60, 160) * np.arange(n) / sr) * np.exp(-np.arange(n) / (n / 6))
        wave += 0.3 * rng.standard_normal(n) * np.exp(-np.arange(n) / (n / 20))
    elif kind == "music":
        beats = int(rng.integers(4, 12))
        beat = int(sr * rng.uniform(0.25, 0.5))
        root = rng.uniform(110, 330)
        parts = []
        for _ in range(beats):
            chord = root * 2 ** (rng.choice([0, 3, 4, 5, 7, 9, 12], size=3) / 12)
            parts.append(sum(_harmonic(rng, beat, f, 6, 6.0, 0.0) for f in chord) * np.exp(-np.arange(beat) / beat))
        wave = np.concatenate(parts)
    else:  # pragma: no cover - EVENT_TYPES is closed
        raise ValueError(kind)
    return wave / (np.sqrt(np.mean(wave**2)) + 1e-12)


def _blend(a: float, b: float, w: float) -> float:
    return (1 - w) * a + w * b


def _confuser(label: int, rng: np.random.Generator, difficulty: float) -> tuple[dict, float]:
    """Another class's recipe and how far this clip leans toward it.

    With probability `difficulty` the clip is ambiguous: it leans past half-way toward a random other class (a quiet
    street that sounds like a park). Otherwise it leans only slightly. This caps the reachable accuracy near
    1 - difficulty while keeping every class's own cues strong enough to learn from little data.
    """
    other = int(rng.integers(0, len(CLASSES) - 1))
    other += other >= label
    w = rng.uniform(0.5, 0.9) if rng.random() < difficulty else rng.uniform(0.0, 0.3)
    return RECIPES[CLASSES[other]], float(w)


def render_scene(label: int, device: str, rng: np.random.Generator, difficulty: float) -> np.ndarray:
    """One 10 s waveform of class `label` recorded on `device`."""
    recipe, n = RECIPES[CLASSES[label]], N_SAMPLES
    other, w = _confuser(label, rng, difficulty)
    # Background texture: class tilt and bump (leaning toward the confuser), with per-clip jitter.
    tilt = _blend(recipe["tilt"], other["tilt"], w) + rng.normal(0, 0.5)
    bump_hz = np.exp(_blend(np.log(recipe["bump"][0]), np.log(other["bump"][0]), w)) * 2 ** rng.normal(0, 0.3)
    bump_db = 1.5 * _blend(recipe["bump"][1], other["bump"][1], w) + rng.normal(0, 1.0)
    mix = _shaped_noise(rng, n, lambda f: tilt * np.log2(np.maximum(f, 30) / 1000) + _log_bump(f, bump_hz, 1.0, bump_db))
    mix *= _smooth_envelope(rng, n, 0.3, _blend(recipe["mod"], other["mod"], w))

    # Each kind of place has its own machinery (ventilation, escalators, motors): two steady narrow-band tones.
    sig = recipe if rng.random() > w else other
    for f_sig in sig["signature"]:
        tone = _harmonic(rng, n, f_sig * 2 ** rng.normal(0, 0.03), 3, 8.0, 0.005)
        mix += 10 ** ((-9 + rng.normal(0, 2)) / 20) * tone

    hum = recipe["hum"] if rng.random() > w else other["hum"]
    hum_p, (f_lo, f_hi), hum_db = hum
    if rng.random() < hum_p:
        mix += 10 ** ((hum_db + rng.normal(0, 3)) / 20) * _harmonic(rng, n, rng.uniform(f_lo, f_hi), 12, 2.5, 0.02)

    # Discrete events: Poisson counts with class rates, foreground SNR drawn per event.
    for kind in EVENT_TYPES:
        rate = _blend(recipe["events"].get(kind, 0.0), other["events"].get(kind, 0.0), w)
        for _ in range(rng.poisson(rate)):
            wave = _event(rng, kind)[: n // 2]
            start = int(rng.integers(0, n - wave.size))
            mix[start : start + wave.size] += 10 ** (rng.uniform(-4, 6) / 20) * wave

    # Room: exponentially decaying noise tail with the class's RT60.
    rt60 = rng.uniform(*(recipe if rng.random() > w else other)["rt60"])
    ir_len = int(min(rt60, 1.5) * SAMPLE_RATE)
    if ir_len > 16:
        t = np.arange(ir_len) / SAMPLE_RATE
        ir = rng.standard_normal(ir_len) * np.exp(-6.9 * t / rt60) * 0.5
        ir[0] = 1.0
        mix = fftconvolve(mix, ir)[:n]

    # Device: band limits, tilt and ripples as a frequency response; gain; self-noise.
    dev = DEVICES[device]
    spec = np.fft.rfft(mix / (np.sqrt(np.mean(mix**2)) + 1e-12))
    freqs = _freqs(n)
    response_db = dev.tilt_db * np.log2(np.maximum(freqs, 30) / 1000) + sum(_log_bump(freqs, *r) for r in dev.ripples)
    response = 10 ** (response_db / 20)
    response /= np.sqrt(1 + (dev.low_hz / np.maximum(freqs, 1.0)) ** 4)
    response /= np.sqrt(1 + (freqs / dev.high_hz) ** 8)
    audio = np.fft.irfft(spec * response, n)
    scene_db = rng.uniform(-32, -18) + dev.gain_db
    audio *= 10 ** (scene_db / 20) / (np.sqrt(np.mean(audio**2)) + 1e-12)
    audio += 10 ** (dev.noise_db / 20) * rng.standard_normal(n)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def device_plan(split: str, n: int) -> list[str]:
    """Devices for a split: train and validation mostly A plus B, C, S1-S3; test every device evenly."""
    if split == "test":
        return [ALL_DEVICES[i % len(ALL_DEVICES)] for i in range(n)]
    weights = np.array([5, 1, 1, 1, 1, 1], dtype=float)
    counts = np.floor(weights / weights.sum() * n).astype(int)
    counts[0] += n - counts.sum()
    return [d for d, c in zip(TRAIN_DEVICES, counts) for _ in range(c)]


def clip_features(seed: int, split: str, index: int, label: int, device: str, difficulty: float) -> np.ndarray:
    """Log-mel features [40, 500] of one clip; the same arguments always give the same array."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    return log_mel(render_scene(label, device, rng, difficulty), FEATURE_CONFIG)
