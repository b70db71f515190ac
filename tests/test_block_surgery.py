"""`pruning.block_surgery`: whole residual blocks replaced by the identity ("blocks" transform), in both twins."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeprune import checkpoint
from edgeprune.errors import EdgepruneError
from edgeprune.models import arch_spec, build
from edgeprune.pruning import block_surgery
from edgeprune.pruning.transforms import Transform

ARCH = arch_spec("resnet-kws", "keywords", channels=8, blocks=(1, 2, 3))


def _identity_block2(model: torch.nn.Module) -> torch.nn.Module:
    """bn2 of block2 outputs exact zeros, so block2 computes relu(x + 0) = x on its non-negative (post-ReLU) input."""
    with torch.no_grad():
        model.block2.bn2.weight.zero_()
        model.block2.bn2.bias.zero_()
    return model.eval()


def _x(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 1, 40, 100)).astype(np.float32)


def test_removing_an_identity_block_leaves_the_outputs_unchanged():
    torch.manual_seed(0)
    model = _identity_block2(build(ARCH, "torch"))
    child = block_surgery.drop_blocks(model, "torch", ARCH, ["block2"])
    x = torch.from_numpy(_x())
    with torch.no_grad():
        np.testing.assert_allclose(child(x).numpy(), model(x).numpy(), atol=1e-5)
    assert child.block_names == ["block1", "block3"] and not hasattr(child, "block2")
    assert hasattr(model, "block2") and model.block_names == ["block1", "block2", "block3"]  # input untouched
    removed = sum(p.numel() for p in model.block2.parameters())
    assert sum(p.numel() for p in child.parameters()) == sum(p.numel() for p in model.parameters()) - removed


def test_keras_twin_removes_the_same_block():
    from edgeprune.transfer import transfer_weights

    torch.manual_seed(0)
    source = _identity_block2(build(ARCH, "torch"))
    model = build(ARCH, "keras")
    transfer_weights(source, model)
    child = block_surgery.drop_blocks(model, "keras", ARCH, ["block2"])
    assert block_surgery.block_names(child, "keras") == ["block1", "block3"]
    x = _x().transpose(0, 2, 3, 1)  # NHWC
    np.testing.assert_allclose(np.asarray(child(x)), np.asarray(model(x)), atol=1e-5)


def test_a_blocks_transform_replays_on_load(tmp_path):
    torch.manual_seed(0)
    model = build(ARCH, "torch")
    child = block_surgery.drop_blocks(model, "torch", ARCH, ["block1", "block3"])
    checkpoint.save(tmp_path / "c", child, "torch", ARCH, None,
                    transforms=[Transform("blocks", {"drop": ["block1", "block3"]})])
    loaded = checkpoint.load(tmp_path / "c", framework="torch").model.eval()
    x = torch.from_numpy(_x())
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), child.eval()(x).numpy(), atol=1e-6)
    assert loaded.block_names == ["block2"]


def test_block_io_gives_each_blocks_input_and_output():
    torch.manual_seed(0)
    model = build(ARCH, "torch").eval()
    io = block_surgery.block_io(model, torch.from_numpy(_x(2)), ["block1", "block2"])
    np.testing.assert_array_equal(io["block1"][1], io["block2"][0])  # block2 reads what block1 wrote
    assert io["block1"][0].shape == (2, 8, 13, 25)


def test_bad_requests_are_one_line():
    model = build(ARCH, "torch")
    with pytest.raises(EdgepruneError, match=r"\['block9'\] are not blocks of this model"):
        block_surgery.drop_blocks(model, "torch", ARCH, ["block9"])
    with pytest.raises(EdgepruneError, match="more than once"):
        block_surgery.drop_blocks(model, "torch", ARCH, ["block1", "block1"])
    with pytest.raises(EdgepruneError, match="non-empty list"):
        block_surgery.drop_blocks(model, "torch", ARCH, [])
    encoder = build(arch_spec("speech-encoder", "phones", layers=1, dim=32, heads=2, ffn=64, pos_kernel=8,
                              pos_groups=4), "torch")
    with pytest.raises(EdgepruneError, match="has no shape-preserving blocks"):
        block_surgery.block_names(encoder)

    class Widening(torch.nn.Module):
        block_names = ["up"]

        def __init__(self):
            super().__init__()
            self.up = torch.nn.Conv2d(1, 2, 1)

        def forward(self, x):
            return self.up(x)

    with pytest.raises(EdgepruneError, match="not a shape-preserving block"):
        block_surgery.block_io(Widening(), torch.zeros(1, 1, 4, 4), ["up"])
    with pytest.raises(EdgepruneError, match="keep at least one"):
        block_surgery.drop_blocks(model, "torch", ARCH, ["block1", "block2", "block3"])
