"""Unstructured weight pruning (MelHuBERT, methods.md section 5): one global L1 ranking over every layer's
q/k/v/out_proj and FFN weights and biases, the cumulative schedule, the convergence gate, and the "sparsity"
transform whose zeros travel in the saved weights.

Bounds are hand-worked: a two-tensor mask example, the seed's schedule written out, loss sequences worked by
hand; the rest are exact equivalences (a mask survives apply -> save -> load -> mask_of).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomize

from edgeprune import checkpoint
from edgeprune.errors import EdgepruneError
from edgeprune.models import arch_spec, build
from edgeprune.pruning import transforms
from edgeprune.pruning.sparsity import (
    ConvergenceGate,
    apply_mask,
    global_l1_mask,
    l1_mask,
    mask_of,
    prunable_params,
    schedule,
    size_report,
    sparsity_of,
)
from edgeprune.pruning.transforms import Transform

SIZES = {"layers": 2, "dim": 8, "heads": 2, "ffn": 16}
TINY = {"speech-encoder": {**SIZES, "pos_kernel": 4, "pos_groups": 2},
        "hf-hubert": {**SIZES, "conv_pos": 4, "conv_pos_groups": 2}}


def _tiny(name: str = "speech-encoder") -> tuple[dict, torch.nn.Module]:
    torch.manual_seed(0)
    arch = arch_spec(name, "phones", **TINY[name])
    model = build(arch, "torch").eval()
    randomize(model)  # no zero weights, so a mask and its zeros correspond one to one
    return arch, model


@pytest.mark.parametrize("name,ffn", [("speech-encoder", ("fc1", "fc2")),
                                      ("hf-hubert", ("intermediate_dense", "output_dense"))])
def test_prunable_params_are_every_layers_attention_and_ffn_weights_and_biases(name, ffn):
    _, model = _tiny(name)
    expected = [f"encoder.layers.{i}.{module}.{p}" for i in range(2)
                for module in ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.out_proj",
                               f"feed_forward.{ffn[0]}", f"feed_forward.{ffn[1]}")
                for p in ("weight", "bias")]
    assert prunable_params(model) == expected


def test_one_global_ranking_masks_the_smallest_values_across_both_tensors():
    a = np.array([[0.5, -3.0], [2.0, 0.1]])
    b = np.array([-0.2, 0.3, 1.0, -0.05])
    # 8 entries at 0.5 -> the 4 smallest |values| of both: 0.05 (b), 0.1 (a), 0.2 (b), 0.3 (b). Ranked per
    # tensor, a would lose 0.5 as well; globally it keeps it.
    mask = l1_mask({"a": a, "b": b}, 0.5)
    np.testing.assert_array_equal(mask["a"], [[True, True], [True, False]])
    np.testing.assert_array_equal(mask["b"], [False, False, True, False])


def test_ties_go_to_the_earlier_tensor_and_position():
    mask = l1_mask({"a": np.ones(2), "b": np.ones(2)}, 0.5)
    np.testing.assert_array_equal(mask["a"], [False, False])
    np.testing.assert_array_equal(mask["b"], [True, True])


def test_the_old_mask_is_baked_in_and_the_ranking_redone_globally():
    a = np.array([[0.5, -3.0], [2.0, 0.1]])
    b = np.array([-0.2, 0.3, 1.0, -0.05])
    previous = {"a": np.array([[True, False], [True, True]]), "b": np.ones(4, bool)}  # -3 masked before
    # the baked entry is ranked first, then the 3 smallest others: 0.05, 0.1, 0.2; 0.3 now stays
    mask = l1_mask({"a": a, "b": b}, 0.5, previous)
    np.testing.assert_array_equal(mask["a"], [[True, False], [True, False]])
    np.testing.assert_array_equal(mask["b"], [False, True, True, False])
    # a target below the old sparsity unmasks nothing: 2 entries masked before (-3 and 2), 1 asked (0.125)
    previous["a"][1, 0] = False
    mask = l1_mask({"a": a, "b": b}, 0.125, previous)
    np.testing.assert_array_equal(mask["a"], [[True, False], [False, True]])
    np.testing.assert_array_equal(mask["b"], [True, True, True, True])


@pytest.mark.parametrize("bad", [1.0, -0.1, True, "0.5"])
def test_sparsity_outside_zero_to_one_is_one_clear_error(bad):
    with pytest.raises(EdgepruneError, match=r"sparsity .* outside \[0, 1\)"):
        l1_mask({"a": np.ones(2)}, bad)
    _, model = _tiny()
    with pytest.raises(EdgepruneError, match=r"outside \[0, 1\)"):
        global_l1_mask(model, bad)


def test_global_mask_on_a_model_masks_exactly_the_fraction_asked_and_only_the_smallest():
    _, model = _tiny()
    names = prunable_params(model)
    mask = global_l1_mask(model, 0.5)
    assert list(mask) == names
    n = sum(m.size for m in mask.values())
    assert sparsity_of(mask) == round(0.5 * n) / n
    params = dict(model.named_parameters())
    values = np.concatenate([params[k].detach().numpy().ravel() for k in names])
    kept = np.concatenate([mask[k].ravel() for k in names])
    assert np.abs(values[~kept]).max() <= np.abs(values[kept]).min()
    # the next event keeps the old mask and adds to it
    grown = global_l1_mask(apply_mask(model, mask), 0.75, previous=mask)
    assert all(np.all(grown[k] <= mask[k]) for k in names)
    assert sparsity_of(grown) == round(0.75 * n) / n


def test_apply_mask_zeroes_a_copy_and_mask_of_recovers_the_mask():
    _, model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mask = global_l1_mask(model, 0.3)
    sparse = apply_mask(model, mask)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the input model is untouched
    recovered = mask_of(sparse, list(mask))
    assert all(np.array_equal(recovered[k], mask[k]) for k in mask)
    with pytest.raises(EdgepruneError, match="no parameter encoder.layers.9"):
        apply_mask(model, {"encoder.layers.9.attention.q_proj.weight": np.ones((8, 8), bool)})


def test_the_sparsity_transform_only_checks_names_and_a_checkpoint_carries_the_zeros(tmp_path):
    arch, model = _tiny()
    names = prunable_params(model)
    mask = global_l1_mask(model, 0.5)
    sparse = apply_mask(model, mask)
    t = Transform("sparsity", {"sparsity": 0.5, "params": names})
    copy, notes = transforms.apply(sparse, "torch", arch, t)
    assert copy is not sparse and "nothing changed" in notes[0]
    assert all(torch.equal(v, sparse.state_dict()[k]) for k, v in copy.state_dict().items())
    checkpoint.save(tmp_path / "ck", sparse, "torch", arch, classes=None, transforms=[t])
    loaded = checkpoint.load(tmp_path / "ck").model
    assert all(np.array_equal(m, mask[k]) for k, m in mask_of(loaded, names).items())
    with pytest.raises(EdgepruneError, match="no parameter nope.weight"):
        transforms.apply(model, "torch", arch, Transform("sparsity", {"sparsity": 0.5, "params": ["nope.weight"]}))
    with pytest.raises(EdgepruneError, match="needs"):
        transforms.apply(model, "torch", arch, Transform("sparsity", {"sparsity": 0.5}))


def test_the_seed_schedule_written_out():
    seed = [0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.675,
            0.70, 0.71, 0.72, 0.73, 0.74, 0.75, 0.76, 0.77, 0.78, 0.79, 0.80,
            0.81, 0.82, 0.83, 0.84, 0.85, 0.86, 0.87, 0.88, 0.89, 0.90, 0.91,
            0.915, 0.92, 0.925, 0.93, 0.935, 0.94, 0.945, 0.95]
    assert schedule() == seed
    assert schedule(3) == [0.2, 0.3, 0.4]
    # a single target s over n events: s * (i + 1) / n
    assert schedule(4, 0.5) == [0.125, 0.25, 0.375, 0.5]
    for bad, message in (((39,), "38 events"), ((0,), "positive integer"), ((None, 0.5), "needs a number"),
                         ((2, 1.0), r"outside \[0, 1\)")):
        with pytest.raises(EdgepruneError, match=message):
            schedule(*bad)


def test_the_gate_waits_until_the_loss_stops_improving_over_the_window():
    # no smoothing: the EMA is the loss itself; window 2, tolerance 10 %
    gate = ConvergenceGate(window=2, tolerance=0.1, smoothing=0.0)
    # 10 and 8: fewer than 3 losses; 10 -> 6 improves by 4 > 1.0; 8 -> 6 by 2 > 0.8; 6 -> 6 by 0 <= 0.6
    assert [gate.ready(x) for x in (10, 8, 6, 6, 6)] == [False, False, False, False, True]
    gate.reset()  # after a prune the history starts over
    assert [gate.ready(x) for x in (6, 6)] == [False, False]


def test_the_gate_smooths_with_an_exponential_moving_average():
    raw = ConvergenceGate(window=2, tolerance=0.0, smoothing=0.0)
    gate = ConvergenceGate(window=2, tolerance=0.0, smoothing=0.5)
    # the raw loss 8, 0, 0, 0 is level over the last window (0 -> 0); its EMA 8, 4, 2, 1 (ema = 0.5 * ema + 0.5 *
    # loss) still falls (4 -> 1), so the smoothed gate keeps waiting, until the EMA turns up: loss 3 gives 2 >= 2
    assert [raw.ready(x) for x in (8, 0, 0, 0)] == [False, False, False, True]
    assert [gate.ready(x) for x in (8, 0, 0, 0)] == [False, False, False, False]
    assert gate.smoothed == 1.0
    assert gate.ready(3) and gate.smoothed == 2.0
    with pytest.raises(EdgepruneError, match="not finite"):
        gate.ready(float("nan"))
    with pytest.raises(EdgepruneError, match=r"smoothing 1.0 outside \[0, 1\)"):
        ConvergenceGate(smoothing=1.0)


def test_size_report_shows_that_zeros_compress_and_noise_does_not(tmp_path):
    zeros, noise = tmp_path / "zeros.bin", tmp_path / "noise.bin"
    zeros.write_bytes(bytes(1 << 20))
    noise.write_bytes(np.random.default_rng(0).bytes(1 << 16))
    report = size_report(zeros)
    assert report["bytes"] == 1 << 20 and report["zip_bytes"] < 0.01 * report["bytes"]
    assert size_report(noise)["zip_bytes"] > 0.99 * (1 << 16)
    with pytest.raises(EdgepruneError, match="no such file"):
        size_report(tmp_path / "missing.tflite")


def test_a_factorised_linear_contributes_both_factors():
    _, model = _tiny()
    # what a low_rank transform leaves in place of fc1: Linear(8, 2, no bias) then Linear(2, 16)
    model.encoder.layers[0].feed_forward.fc1 = torch.nn.Sequential(torch.nn.Linear(8, 2, bias=False), torch.nn.Linear(2, 16))
    names = prunable_params(model)
    assert names[8:13] == ["encoder.layers.0.feed_forward.fc1.0.weight", "encoder.layers.0.feed_forward.fc1.1.weight",
                           "encoder.layers.0.feed_forward.fc1.1.bias", "encoder.layers.0.feed_forward.fc2.weight",
                           "encoder.layers.0.feed_forward.fc2.bias"]
    assert list(global_l1_mask(model, 0.5)) == names
