"""Log-mel extraction with the DCASE 2021 1a settings."""

import numpy as np
import pytest
from scipy.io import wavfile

from edgeprune.data.features import LogMelConfig, log_mel, mel_filterbank, wav_log_mel
from edgeprune.errors import EdgepruneError


def test_dcase_settings_give_40_by_500_for_ten_seconds():
    cfg = LogMelConfig()
    assert (cfg.win_length, cfg.hop_length, cfg.n_fft) == (1764, 882, 2048)
    feats = log_mel(np.random.default_rng(0).normal(0, 0.1, 441000), cfg)
    assert feats.shape == (40, 500) and feats.dtype == np.float32


def test_a_tone_lights_up_the_band_that_holds_its_frequency():
    cfg = LogMelConfig(sample_rate=16000)
    t = np.arange(160000) / 16000
    feats = log_mel(0.5 * np.sin(2 * np.pi * 1000 * t), cfg)
    fb = mel_filterbank(16000, cfg.n_fft, 40)
    bin_1k = int(round(1000 / (16000 / cfg.n_fft)))
    assert feats.mean(axis=1).argmax() == fb[:, bin_1k].argmax()


def test_short_clips_are_padded_to_500_frames():
    assert log_mel(np.ones(16000, dtype=np.float32) * 0.1, LogMelConfig(sample_rate=16000)).shape == (40, 500)


def test_wav_files_are_read_and_resampled(tmp_path):
    rate = 22050
    t = np.arange(rate * 10) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    wavfile.write(tmp_path / "a.wav", rate, pcm)
    feats = wav_log_mel(tmp_path / "a.wav", LogMelConfig(sample_rate=16000))
    direct = log_mel(0.3 * np.sin(2 * np.pi * 440 * np.arange(160000) / 16000), LogMelConfig(sample_rate=16000))
    assert feats.shape == (40, 500)
    assert feats.mean(axis=1).argmax() == direct.mean(axis=1).argmax()


def test_bad_audio_is_a_clear_error(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"not a wav at all")
    with pytest.raises(EdgepruneError, match="bad.wav: not a readable .wav"):
        wav_log_mel(tmp_path / "bad.wav")
    with pytest.raises(EdgepruneError, match="audio file not found"):
        wav_log_mel(tmp_path / "missing.wav")
