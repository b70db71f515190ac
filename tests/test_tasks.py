"""Tasks and their metrics: each metric against a hand-computed case, the axis bookkeeping, input checks."""

import numpy as np
import pytest

from benchmarks.arrays import LayoutError, arrange
from benchmarks.metrics import (ctc_greedy, edit_distance, enhance, istft, output_lengths, output_snr_db,
                                phone_error_rate, si_sdr, si_sdr_improvement, stft, task_metrics)
from edgeprune.data.datasets import Split, sample_indices
from edgeprune.errors import EdgepruneError
from edgeprune.tasks import PHONES, get_task, list_tasks


# --- metrics -----------------------------------------------------------------------------------------------------

def test_si_sdr_of_a_known_scaling_and_noise():
    t = np.arange(1600) / 1600
    ref = np.sin(2 * np.pi * 5 * t)  # zero mean over whole periods
    noise = 0.1 * np.cos(2 * np.pi * 7 * t)  # orthogonal to ref
    # scaling is forgiven: the target is 2 * ref, the noise is what remains
    expected = 10 * np.log10((4 * np.sum(ref**2)) / np.sum(noise**2))
    assert si_sdr(2 * ref + noise, ref) == pytest.approx(expected, abs=1e-6)
    assert si_sdr(-3 * ref + noise, ref) == pytest.approx(10 * np.log10(9 * np.sum(ref**2) / np.sum(noise**2)), abs=1e-6)
    assert si_sdr(ref + 5.0, ref) > 100  # a DC offset is removed before scoring


def test_stft_round_trip_and_an_all_pass_mask_improves_nothing():
    rng = np.random.default_rng(0)
    wave = rng.normal(size=(2, 4000))
    spec = stft(wave, 256, 128)
    assert spec.shape == (2, 129, 1 + 4000 // 128)
    np.testing.assert_allclose(istft(spec, 256, 128, 4000), wave, atol=1e-10)
    clean = rng.normal(size=(2, 4000))
    noisy = clean + 0.5 * rng.normal(size=(2, 4000))
    ones = np.ones((2, 129, 1 + 4000 // 128))
    np.testing.assert_allclose(enhance(ones, noisy, 256, 128), noisy, atol=1e-10)
    assert si_sdr_improvement(ones, noisy, clean, 256, 128)["si_sdri"] == pytest.approx(0.0, abs=1e-8)
    # the ideal ratio mask on an additive mixture makes things better, never worse
    ideal = np.abs(stft(clean, 256, 128)) / np.maximum(np.abs(stft(noisy, 256, 128)), 1e-9)
    assert si_sdr_improvement(np.minimum(ideal, 1.0), noisy, clean, 256, 128)["si_sdri"] > 0


def test_edit_distance_and_greedy_ctc_decoding():
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 2, 3, 4], [1, 3, 4, 5]) == 2  # delete 2, insert 5
    assert edit_distance([], [7, 7]) == 2 and edit_distance([7, 7], []) == 2
    frames = np.eye(6)[[1, 1, 0, 3, 0, 4, 4, 5]]
    assert ctc_greedy(frames) == [1, 3, 4, 5]
    assert ctc_greedy(np.eye(3)[[1, 0, 1, 1]]) == [1, 1]  # a blank separates a repeated phone
    assert ctc_greedy(frames, length=4) == [1, 3]  # only the valid frames count


def test_phone_error_rate_of_a_known_edit():
    logits = np.eye(6)[[[1, 1, 0, 3, 0, 4, 4, 5], [2, 2, 2, 0, 0, 0, 0, 0]]]  # decodes to [1,3,4,5] and [2]
    targets = np.array([[1, 2, 3, 4], [2, -1, -1, -1]])
    res = phone_error_rate(logits, targets)
    assert (res["edits"], res["phones"]) == (2, 5) and res["per"] == pytest.approx(2 / 5)
    # valid output frames follow the valid input frames (300 input frames -> 150 output frames)
    assert output_lengths(np.array([300, 151, 10]), 300, 150).tolist() == [150, 76, 5]


def test_output_snr():
    ref = np.array([[3.0, 4.0]])
    assert output_snr_db(ref, ref) == float("inf")
    assert output_snr_db(ref, ref + np.array([[0.0, 0.5]])) == pytest.approx(10 * np.log10(25 / 0.25))


def test_task_metrics_dispatch_and_refuse_non_finite_outputs():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert task_metrics({"kind": "classification"}, probs, np.array([0, 0]), {})["accuracy"] == 0.5
    with pytest.raises(ValueError, match="NaN"):
        task_metrics({"kind": "classification"}, np.full((2, 2), np.nan), np.array([0, 0]), {})
    with pytest.raises(ValueError, match="unknown task kind"):
        task_metrics({"kind": "poetry"}, probs, None, {})


# --- axes --------------------------------------------------------------------------------------------------------

def test_arrange_moves_and_inserts_axes():
    x = np.arange(24).reshape(2, 3, 4)  # N F T
    assert arrange(x, "NFT", "N1FT").shape == (2, 1, 3, 4)
    assert arrange(x, "NFT", "NFT1").shape == (2, 3, 4, 1)
    np.testing.assert_array_equal(arrange(x, "NFT", "NTF"), x.transpose(0, 2, 1))
    np.testing.assert_array_equal(arrange(arrange(x, "NFT", "NT1F"), "NT1F", "NFT"), x)
    assert arrange(x, "NFT", "NFT") is x
    with pytest.raises(LayoutError, match="unit axis"):
        arrange(x, "N1T", "NT")
    with pytest.raises(LayoutError, match="cannot rearrange"):
        arrange(x, "NFT", "NKT")


# --- tasks ------------------------------------------------------------------------------------------------------

def test_every_task_names_inputs_output_loss_and_selection():
    names = {t.name for t in list_tasks()}
    assert names == {"scenes", "keywords", "phones", "enhancement"}
    enh = get_task("enhancement")
    assert [f.name for f in enh.inputs] == ["noisy", "bone"] and enh.inputs[0].shape == (129, 251)
    assert enh.describe()["n_fft"] == 256 and enh.select_mode == "max"
    phones = get_task("phones")
    assert phones.n_classes == len(PHONES) + 1 and phones.select == "per" and phones.select_mode == "min"
    assert get_task("keywords").classes[-2:] == ("unknown", "silence")
    with pytest.raises(EdgepruneError, match="unknown task 'music'.*scenes"):
        get_task("music")


def test_task_input_checks_name_the_problem():
    task = get_task("enhancement")
    good = np.zeros((2, 129, 251), np.float32)
    with pytest.raises(EdgepruneError, match="missing input\\(s\\) bone"):
        task.check_inputs({"noisy": good}, "here")
    with pytest.raises(EdgepruneError, match="input 'bone' has shape \\[2, 129, 250\\]"):
        task.check_inputs({"noisy": good, "bone": good[:, :, :250]}, "here")
    bad = good.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(EdgepruneError, match="here: input 'bone' contains NaN"):
        task.check_inputs({"noisy": good, "bone": bad}, "here")


def test_phone_targets_and_the_ctc_packing():
    task = get_task("phones")
    y = np.array([[3, 4, -1], [5, -1, -1]])
    with pytest.raises(EdgepruneError, match="0 is the CTC blank"):
        task.check_targets(np.array([[0, 1, -1]]), 1, "t")
    packed = task.loss_targets({}, y, {"frames": np.array([120, 300])})
    assert packed.tolist() == [[120, 300, 2, 3, 4, -1], [300, 300, 1, 5, -1, -1]]


def test_samples_are_drawn_across_the_split_and_per_class():
    y = np.repeat(np.arange(4), 25)  # a class-sorted folder: the first 40 are classes 0 and 1 only
    split = Split({"x": np.zeros((100, 1), np.float32)}, y)
    idx = sample_indices(split, 40, seed=1, stratify=True)
    assert np.bincount(y[idx]).tolist() == [10, 10, 10, 10]
    assert np.array_equal(idx, sample_indices(split, 40, seed=1, stratify=True))  # deterministic by seed
    assert not np.array_equal(idx, sample_indices(split, 40, seed=2, stratify=True))
    assert len(set(sample_indices(split, 40, seed=1).tolist())) == 40
    assert sample_indices(split, 500).tolist() == list(range(100))  # asking for more gives the whole split
