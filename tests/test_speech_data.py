"""The synthetic speech sets (espeak-ng) and the real wav-folder loaders: determinism, disjoint speakers, the task
shapes, the phone mapping, the air / bone channels, and one clear error for each folder mistake."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from benchmarks.metrics import stft
from edgeprune.data import espeak, speech, wavfolders
from edgeprune.data.sources import load_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.tasks import KEYWORD_CLASSES, KEYWORDS, PHONES, get_task
from edgeprune.tasks import enhancement as enh

SIZES = {"keywords": (24, 12, 12), "phones": (8, 4, 4), "enhancement": (10, 5, 5)}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """The three tiny synthetic sets, generated once into a temporary cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEPRUNE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield {t: speech.load_speech(speech.SpeechSpec(t, *n), progress=False) for t, n in SIZES.items()}


# --- espeak and the phone mapping -----------------------------------------------------------------------------------


def _phones(word: str, voice: str) -> list[str]:
    phones, unknown = espeak.arpabet(espeak.phonemize(word, voice), voice)
    assert unknown == []
    return phones


def test_hand_checked_words_map_to_their_arpabet_phones():
    assert _phones("yes", "en-us") == ["Y", "EH", "S"]
    assert _phones("stop", "en-us") == ["S", "T", "AA", "P"]
    assert _phones("five", "en-gb") == ["F", "AY", "V"]
    assert _phones("house", "en-us") == ["HH", "AW", "S"]
    assert _phones("boy", "en-us") == ["B", "OY"]
    assert _phones("go", "en-us") == ["G", "OW"]
    assert _phones("little", "en-us") == ["L", "IH", "T", "AH", "L"]  # syllabic @L -> AH L, flapped t -> T
    assert _phones("church", "en-us") == ["CH", "ER", "CH"]
    # rhotic General American against non-rhotic British English
    assert _phones("water", "en-us") == ["W", "AO", "T", "ER"]
    assert _phones("water", "en-gb") == ["W", "AO", "T", "AH"]
    assert _phones("farm", "en-us") == ["F", "AA", "R", "M"]
    assert _phones("farm", "en-gb") == ["F", "AA", "M"]


def test_stress_and_pauses_are_dropped_and_unknown_symbols_reported():
    assert espeak.arpabet("j+'E+s _: n+,oU", "en-us") == (["Y", "EH", "S", "N", "OW"], [])
    phones, unknown = espeak.arpabet("k+'Q+t+Y", "en-us")
    assert phones == ["K", "T"] and unknown == ["Q", "Y"]  # never mapped to something arbitrary
    assert set(p for ps in espeak.PHONEME_MAP.values() for p in ps) <= set(PHONES)


def test_every_word_of_the_lists_maps_in_every_voice():
    text = "\n".join(speech.WORDS + speech.UNKNOWN_WORDS + KEYWORDS)
    for voice in espeak.VOICES:
        phones, unknown = espeak.arpabet(espeak.phonemize(text, voice), voice)
        assert unknown == [], voice
        assert len(phones) > 2 * len(speech.WORDS)


def test_missing_espeak_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(espeak.shutil, "which", lambda name: None)
    with pytest.raises(EdgepruneError, match=r"^espeak-ng not found: install it \(apt-get install espeak-ng"):
        espeak.synthesize("yes", espeak.get_speaker("en-us+m3"))


def test_synthesis_is_16_khz_float_with_its_phonemes():
    utt = espeak.synthesize("turn the lights off", espeak.get_speaker("en-gb-x-rp+whisper"))
    assert utt.wave.dtype == np.float32 and utt.wave.ndim == 1
    assert 0.5 * espeak.SAMPLE_RATE < utt.wave.size < 4 * espeak.SAMPLE_RATE
    assert np.abs(utt.wave).max() < 1.0 and np.sqrt(np.mean(utt.wave ** 2)) > 1e-3
    assert espeak.arpabet(utt.phonemes, "en-gb-x-rp")[0][:3] == ["T", "ER", "N"]


# --- determinism and speakers ---------------------------------------------------------------------------------------


def test_generation_is_deterministic_and_independent_of_worker_count():
    spec = speech.SpeechSpec("phones", 5, 3, 3, seed=4)
    one, _ = speech.generate_speech(spec, workers=1, progress=False)
    two, _ = speech.generate_speech(spec, workers=2, progress=False)
    for split in one:
        assert np.array_equal(one[split].x, two[split].x)
        assert np.array_equal(one[split].y, two[split].y)
        for key in one[split].meta:
            assert np.array_equal(one[split].meta[key], two[split].meta[key])
    other = speech.phone_clip(5, "train", 0)
    assert other["text"] != one["train"].meta["text"][0] or not np.array_equal(other["logmel"], one["train"].x[0])


def test_speakers_are_disjoint_between_splits_and_cover_the_inventory():
    for seed in (0, 1):
        split = {s: set(v) for s, v in speech.split_speakers(seed).items()}
        assert not split["train"] & split["validation"]
        assert not split["train"] & split["test"]
        assert not split["validation"] & split["test"]
        assert set().union(*split.values()) == set(espeak.all_speakers())
        assert min(len(v) for v in split.values()) >= 8 * 10  # ten voice variants x eight accents each
        variants = {s: {n.split("+")[1] for n in v} for s, v in split.items()}
        assert not variants["train"] & (variants["validation"] | variants["test"])  # no voice quality in two splits
    assert speech.split_speakers(0) != speech.split_speakers(1)


def test_generated_clips_use_their_own_splits_speakers(sets):
    for data in sets.values():
        for split in ("train", "validation", "test"):
            used = {s for s in data[split].meta["speakers"] if s}
            assert used and used <= set(speech.split_speakers(0)[split])


# --- shapes, caching ------------------------------------------------------------------------------------------------


def test_sets_have_the_tasks_shapes_and_dtypes(sets):
    for name, data in sets.items():
        task = get_task(name)
        assert data.task == name and data.info["generator"] == f"speech v{speech.SPEECH_VERSION}"
        assert data.info["unknown_phonemes"] == {}
        for split, n in zip(("train", "validation", "test"), SIZES[name]):
            part = data[split]
            inputs = task.check_inputs(part.inputs, f"{name} {split}")
            assert all(v.dtype == np.float32 and len(v) == n for v in inputs.values())
            task.check_targets(part.y, n, f"{name} {split}")
            assert all(len(v) == n for v in part.meta.values())


def test_load_speech_reads_the_cache_on_the_second_call(sets, monkeypatch, tmp_path):
    cache = Path(sets["keywords"].info["cache"])
    assert cache.name == speech.SpeechSpec("keywords", *SIZES["keywords"]).key()
    assert f"v{speech.SPEECH_VERSION}" in cache.name
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(cache.parent.parent))
    monkeypatch.setattr(speech, "generate_speech", lambda *a, **k: pytest.fail("regenerated a cached set"))
    profile = types.SimpleNamespace(speech={"keywords": SIZES["keywords"]})
    again = load_dataset("synthetic", "keywords", profile, progress=False)
    assert np.array_equal(again["test"].x, sets["keywords"]["test"].x)


# --- keywords -------------------------------------------------------------------------------------------------------


def test_keyword_classes_are_balanced_and_labelled_by_their_words(sets):
    train = sets["keywords"]["train"]
    assert np.array_equal(np.bincount(train.y, minlength=12), np.full(12, 2))
    for y, word, spk in zip(train.y, train.meta["words"], train.meta["speakers"]):
        cls = KEYWORD_CLASSES[y]
        if cls == "silence":
            assert word == "_silence_" and spk == ""
        elif cls == "unknown":
            assert word in speech.UNKNOWN_WORDS and spk
        else:
            assert word == cls and spk


# --- phones ---------------------------------------------------------------------------------------------------------


def test_phone_targets_are_padded_ids_and_frames_cover_the_utterance(sets):
    part = sets["phones"]["train"]
    assert part.y.shape[1] == speech.PHONE_CAP
    cfg = speech._feature_config("phones")
    last = (speech._samples("phones") - int(0.1 * speech.SAMPLE_RATE)) // int(cfg.hop_seconds * speech.SAMPLE_RATE) + 1
    for x, ids, frames in zip(part.x, part.y, part.meta["frames"]):
        n = int((ids >= 0).sum())
        assert n >= 1 and (ids[:n] >= 1).all() and (ids[:n] <= len(PHONES)).all() and (ids[n:] == -1).all()
        assert 5 < frames <= last  # starts >= 0.05 s in, ends >= 0.1 s before the end
        # speech (-30 to -16 dBFS) against the floor (-65 to -50 dBFS): the loudest frame after the utterance is
        # at least 15 dB below the loudest frame of it
        level = 0.5 * np.log(np.exp(2 * x.astype(np.float64)).sum(axis=0))  # log amplitude per frame
        assert level[frames + 3:].max() < level[:frames].max() - np.log(10 ** (15 / 20))


# --- enhancement ----------------------------------------------------------------------------------------------------


def _band(power: np.ndarray, lo: float, hi: float) -> float:
    f = np.fft.rfftfreq(enh.N_FFT, 1 / enh.SAMPLE_RATE)
    return float(power[(f >= lo) & (f < hi)].sum())


def test_enhancement_features_are_the_stft_of_the_stored_waves(sets):
    part = sets["enhancement"]["test"]
    assert part.meta["noisy_wave"].shape == (5, int(enh.CLIP_SECONDS * enh.SAMPLE_RATE))
    assert part.meta["noisy_wave"].dtype == np.float32 and part.meta["clean_wave"].dtype == np.float32
    np.testing.assert_allclose(part.inputs["noisy"], enh.log_magnitude(stft(part.meta["noisy_wave"], enh.N_FFT,
                                                                            enh.HOP)), atol=1e-5)
    np.testing.assert_allclose(part.y, np.abs(stft(part.meta["clean_wave"], enh.N_FFT, enh.HOP)), rtol=1e-5,
                               atol=1e-6)
    assert list(sets["enhancement"]["train"].meta["noise"]) == [speech.NOISE_KINDS[i % 5] for i in range(10)]


def test_noisy_channel_snr_is_the_drawn_one_within_the_range(sets):
    lo, hi = speech.ENH_SNR_DB
    for split in ("train", "validation", "test"):
        part = sets["enhancement"][split]
        clean = part.meta["clean_wave"].astype(np.float64)
        noise = part.meta["noisy_wave"] - clean
        snr = 10 * np.log10((clean ** 2).sum(axis=1) / (noise ** 2).sum(axis=1))
        np.testing.assert_allclose(snr, part.meta["snr_db"], atol=0.05)
        assert (snr > lo - 0.05).all() and (snr < hi + 0.05).all()


def test_bone_channel_keeps_the_low_band_and_loses_the_high_band(sets):
    """Bounds from the channel: a 4th-order low-pass with its corner at 700-1300 Hz takes >= 15 dB off at 2 kHz and
    more above; the high band enters at -35 to -25 dB, ambient noise at -35 to -25 dB through the same low-pass,
    sensor noise at -50 to -40 dB, and the tanh limit sits at 1-2x the peak. So the energy above 2 kHz over the
    energy below 1 kHz falls by well over 6 dB per clip (voices with little high band meet the floors first), and
    below 500 Hz the bone keeps the clean speech at its gain of -6 to 0 dB (+-3 dB for the filter's edge, the
    soft clipping and the leaking noise)."""
    drops = []
    for split in ("train", "test"):
        part = sets["enhancement"][split]
        for bone_log, clean_mag in zip(part.inputs["bone"], part.y):
            bone = enh.magnitude(bone_log).astype(np.float64) ** 2
            clean = clean_mag.astype(np.float64) ** 2
            ratio_bone = _band(bone, 2000, 8001) / _band(bone, 0, 1000)
            ratio_clean = _band(clean, 2000, 8001) / _band(clean, 0, 1000)
            drops.append(10 * np.log10(ratio_clean / ratio_bone))
            low = 10 * np.log10(_band(bone, 0, 500) / _band(clean, 0, 500))
            assert -9 < low < 3
    assert min(drops) > 6 and np.median(drops) > 10


# --- real folders: Speech Commands ------------------------------------------------------------------------------------


def _wav(path: Path, seconds: float, rate: int = 16000, freq: float = 440.0, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(len(path.name)).standard_normal(t.size)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    wavfile.write(path, rate, (x * 32767).astype(np.int16))


def _speech_commands(root: Path) -> Path:
    for word in ("yes", "no", "cat"):
        for spk in ("aa", "bb", "cc"):
            _wav(root / word / f"{spk}_nohash_0.wav", 1.0)
    _wav(root / "yes" / "dd_nohash_0.wav", 0.6, rate=44100)  # resampled and padded
    _wav(root / "_background_noise_" / "hum.wav", 12.0, freq=60)
    (root / "validation_list.txt").write_text("yes/bb_nohash_0.wav\nno/bb_nohash_0.wav\ncat/bb_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/cc_nohash_0.wav\nno/cc_nohash_0.wav\ncat/cc_nohash_0.wav\n")
    return root


def test_speech_commands_folder_loads_with_keywords_unknown_and_silence(tmp_path):
    data = wavfolders.load_speech_commands(_speech_commands(tmp_path / "sc"), progress=False)
    task = get_task("keywords")
    assert data.classes == list(KEYWORD_CLASSES)
    for split in ("train", "validation", "test"):
        task.check_inputs(data[split].inputs, split)
        task.check_targets(data[split].y, len(data[split]), split)
    train = data["train"]
    by_word = dict(zip(train.meta["files"], train.y))
    assert by_word["yes/aa_nohash_0.wav"] == 0 and by_word["no/aa_nohash_0.wav"] == 1
    assert by_word["cat/aa_nohash_0.wav"] == KEYWORD_CLASSES.index("unknown")
    assert "yes/dd_nohash_0.wav" in by_word
    assert KEYWORD_CLASSES.index("silence") in set(data["test"].y)
    assert set(data["test"].meta["speakers"]) - {""} == {"cc"}


def test_empty_speech_commands_folder_is_one_clear_error(tmp_path):
    (tmp_path / "sc" / "yes").mkdir(parents=True)
    with pytest.raises(EdgepruneError, match=r"sc: no \.wav files in word folders; expected the Speech Commands"):
        wavfolders.load_speech_commands(tmp_path / "sc", progress=False)


def test_unusable_sample_rate_names_the_file_and_what_is_accepted(tmp_path):
    root = _speech_commands(tmp_path / "sc")
    _wav(root / "no" / "ee_nohash_0.wav", 1.0, rate=8000)
    with pytest.raises(EdgepruneError, match=r"no/ee_nohash_0\.wav: sample rate 8000 Hz; expected 16000 Hz or more"):
        wavfolders.load_speech_commands(root, progress=False)


# --- real folders: air / bone / clean -------------------------------------------------------------------------------


def _airbone(root: Path) -> Path:
    for split, names, seconds in (("train", ("p1.wav", "p2.wav"), 3.0), ("test", ("q1.wav",), 1.5)):
        for name in names:
            for i, channel in enumerate(wavfolders.CHANNELS):
                _wav(root / split / channel / name, seconds, freq=300.0 * (i + 1))
    return root


def test_air_bone_folder_loads_as_enhancement_clips(tmp_path):
    data = wavfolders.load_airbone(_airbone(tmp_path / "ab"), progress=False)
    task = get_task("enhancement")
    # 3 s files give a 2 s clip and a padded 1 s clip each; 10 % of the four train clips are held out
    assert (len(data["train"]), len(data["validation"]), len(data["test"])) == (3, 1, 1)
    for split in ("train", "validation", "test"):
        task.check_inputs(data[split].inputs, split)
        task.check_targets(data[split].y, len(data[split]), split)
    test = data["test"]
    np.testing.assert_allclose(test.inputs["noisy"], enh.log_magnitude(stft(test.meta["noisy_wave"], enh.N_FFT,
                                                                            enh.HOP)), atol=1e-5)


@pytest.mark.parametrize("mistake, message", [
    ("missing", r"ab/train: p2\.wav is in air/, clean/ but not in bone/; expected the same \.wav names"),
    ("length", r"ab/train/\*/p2\.wav: lengths differ \(air 48000, bone 40000, clean 48000 samples\)"),
    ("rate", r"ab/train/\*/p2\.wav: sample rates differ \(air 16000 Hz, bone 22050 Hz, clean 16000 Hz\)"),
])
def test_mismatched_air_bone_pair_is_one_clear_error(tmp_path, mistake, message):
    root = _airbone(tmp_path / "ab")
    bone = root / "train" / "bone" / "p2.wav"
    if mistake == "missing":
        bone.unlink()
    elif mistake == "length":
        _wav(bone, 2.5)
    else:
        _wav(bone, 3.0, rate=22050)
    with pytest.raises(EdgepruneError, match=message):
        wavfolders.load_airbone(root, progress=False)
