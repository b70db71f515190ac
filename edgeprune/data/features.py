"""Log-mel features with the DCASE 2021 task 1a baseline settings, in numpy.

The baseline (dcase_util) uses: 40 mel bands, 40 ms asymmetric Hamming window, 20 ms hop, magnitude spectrum,
Slaney-style mel filters from 0 Hz to Nyquist, natural log with a tiny floor, 500 frames for a 10 s clip.
Real recordings and the synthetic scenes go through this same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError

N_MELS = 40
N_FRAMES = 500
FEATURE_SHAPE = (N_MELS, N_FRAMES)


@dataclass(frozen=True)
class LogMelConfig:
    """Extraction settings; the defaults are the DCASE 2021 1a baseline's."""

    sample_rate: int = 44100
    n_mels: int = N_MELS
    win_seconds: float = 0.04
    hop_seconds: float = 0.02
    n_frames: int = N_FRAMES

    @property
    def win_length(self) -> int:
        return int(round(self.win_seconds * self.sample_rate))

    @property
    def hop_length(self) -> int:
        return int(round(self.hop_seconds * self.sample_rate))

    @property
    def n_fft(self) -> int:
        return int(2 ** np.ceil(np.log2(self.win_length)))


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney's scale: linear below 1 kHz, logarithmic above (librosa's default, htk=False).
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mel = f / f_sp
    log_part = f >= min_log_hz
    mel[log_part] = min_log_hz / f_sp + np.log(f[log_part] / min_log_hz) / logstep
    return mel


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    f = f_sp * m
    log_part = m >= min_log_mel
    f[log_part] = min_log_hz * np.exp(logstep * (m[log_part] - min_log_mel))
    return f


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """[n_mels, n_fft//2+1] triangular filters, area-normalised (Slaney), 0 Hz to Nyquist."""
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sample_rate / 2]))[0], n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_pts[2:] - hz_pts[:-2]))[:, None]
    return weights.astype(np.float32)


_FB_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def log_mel(audio: np.ndarray, config: LogMelConfig = LogMelConfig()) -> np.ndarray:
    """Mono waveform -> [n_mels, n_frames] float32 log-mel (cropped or edge-padded to n_frames)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:  # [samples, channels] -> mono, as the baseline does
        audio = audio.mean(axis=1)
    if audio.ndim != 1 or audio.size == 0:
        raise EdgepruneError(f"expected a mono waveform (1-D array), got shape {audio.shape}")
    win, hop, n_fft = config.win_length, config.hop_length, config.n_fft
    # Centred frames (reflect padding), as librosa/dcase_util compute them.
    padded = np.pad(audio, (n_fft // 2, n_fft // 2), mode="reflect" if audio.size > n_fft // 2 else "constant")
    n = 1 + (padded.size - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n, n_fft), strides=(padded.strides[0] * hop, padded.strides[0]), writeable=False
    )
    # Asymmetric (periodic) Hamming window of win samples, centred in the n_fft frame.
    window = np.zeros(n_fft, dtype=np.float32)
    offset = (n_fft - win) // 2
    window[offset : offset + win] = np.hamming(win + 1)[:-1]
    spectrum = np.abs(np.fft.rfft(frames * window, axis=1)).astype(np.float32)
    key = (config.sample_rate, n_fft, config.n_mels)
    if key not in _FB_CACHE:
        _FB_CACHE[key] = mel_filterbank(*key)
    mel = spectrum @ _FB_CACHE[key].T
    feats = np.log(mel + np.finfo(np.float32).eps).T  # [n_mels, frames]
    if feats.shape[1] >= config.n_frames:
        return np.ascontiguousarray(feats[:, : config.n_frames], dtype=np.float32)
    pad = config.n_frames - feats.shape[1]
    return np.pad(feats, ((0, 0), (0, pad)), mode="edge").astype(np.float32)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Read a PCM or float .wav as float32 in [-1, 1]; returns (audio, sample_rate)."""
    from scipy.io import wavfile

    path = Path(path)
    if not path.is_file():
        raise EdgepruneError(f"audio file not found: {path}")
    try:
        rate, data = wavfile.read(path)
    except (ValueError, EOFError) as exc:
        raise EdgepruneError(f"{path}: not a readable .wav file ({exc})") from exc
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        data = (data.astype(np.float32) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
    return data.astype(np.float32), int(rate)


def wav_log_mel(path: Path, config: LogMelConfig | None = None) -> np.ndarray:
    """Log-mel of a .wav file, resampling to the config's rate when the file's rate differs."""
    audio, rate = read_wav(path)
    config = config or LogMelConfig()
    if rate != config.sample_rate:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(rate, config.sample_rate)
        audio = resample_poly(audio, config.sample_rate // g, rate // g, axis=0).astype(np.float32)
    return log_mel(audio, config)
