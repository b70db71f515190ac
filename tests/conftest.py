"""Shared fixtures. Generated data is cached under $EDGEPRUNE_CACHE (default ~/.cache/edgeprune), so only the
first run on a machine pays for synthesis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeprune.training.profiles import get_profile
from edgeprune.training.run import data_for

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_data():
    """The tiny synthetic set (100 train / 40 validation / 60 test clips)."""
    return data_for("synthetic", get_profile("tiny"), progress=False)


def randomize(model) -> None:
    """Give a PyTorch model non-trivial weights and BN statistics, so parity tests can fail."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def quick_baseline(tmp_path_factory):
    """The quick-profile torch baseline, seed 0, trained once per session (minutes): (checkpoint path, data)."""
    from edgeprune.training import run

    profile = get_profile("quick")
    data = data_for("synthetic", profile, progress=False)
    path = tmp_path_factory.mktemp("quick") / "baseline"
    run.train("dcase2021_baseline", "torch", data, profile, path, seed=0, progress=False)
    return path, data
