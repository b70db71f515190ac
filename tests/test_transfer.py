"""Weights move between the PyTorch and Keras twins without changing what the model computes."""

import numpy as np
import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.frameworks import get_adapter
from edgeprune.models import arch_spec, build
from edgeprune.transfer import _nhwc_rows_from_nchw, transfer_weights

from conftest import randomize, probs

T, K = get_adapter("torch"), get_adapter("keras")


@pytest.fixture(scope="module")
def twins():
    arch = arch_spec("dcase2021_baseline")
    tm = build(arch, "torch")
    randomize(tm)
    return arch, tm


def test_torch_to_keras_outputs_match(twins, rng):
    arch, tm = twins
    km = build(arch, "keras")
    transfer_weights(tm, km)
    x = rng.normal(-3, 1.5, size=(8, 40, 500)).astype(np.float32)
    pt, pk = probs(tm, x), probs(km, x)
    assert np.abs(pt - pk).max() < 1e-4
    assert len(set(pt.argmax(1))) > 1  # a degenerate (constant) output would make the check meaningless


def test_keras_to_torch_outputs_match(twins, rng):
    arch, tm = twins
    km = build(arch, "keras")
    transfer_weights(tm, km)
    back = build(arch, "torch")
    transfer_weights(km, back)
    x = rng.normal(-3, 1.5, size=(8, 40, 500)).astype(np.float32)
    assert np.abs(probs(back, x) - probs(km, x)).max() < 1e-4
    for name, w in T.get_weights(tm).items():
        if not name.endswith("num_batches_tracked"):
            np.testing.assert_allclose(T.get_weights(back)[name], w, atol=1e-7, err_msg=name)


def test_pruned_widths_transfer_too(rng):
    arch = arch_spec("dcase2021_baseline", conv1=11, conv2=11, conv3=22)
    tm, km = build(arch, "torch"), build(arch, "keras")
    randomize(tm)
    transfer_weights(tm, km)
    x = rng.normal(-3, 1.5, size=(4, 40, 500)).astype(np.float32)
    assert np.abs(probs(tm, x) - probs(km, x)).max() < 1e-4


def test_flatten_row_order_is_channels_last():
    # A (H=2, W=1, C=3) map: Keras row (h*W + w)*C + c holds PyTorch row c*H*W + h*W + w.
    assert _nhwc_rows_from_nchw((2, 1, 3)).tolist() == [0, 2, 4, 1, 3, 5]


def test_mismatched_twins_are_refused():
    tm = build(arch_spec("dcase2021_baseline"), "torch")
    km = build(arch_spec("dcase2021_baseline", conv3=8), "keras")
    with pytest.raises(EdgepruneError, match="conv3"):
        transfer_weights(tm, km)
