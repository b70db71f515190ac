"""`edgeprune prune-layers` and `pruning.layer_run`: search on a layer matrix, verify on the validation split, and
the chosen layers removed for real in a checkpoint that records how they were chosen; bad requests are one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeprune import checkpoint
from edgeprune.models import arch_spec, build

CLI = [sys.executable, "-m", "edgeprune"]
TINY = {"layers": 4, "dim": 32, "heads": 2, "ffn": 64, "pos_kernel": 8, "pos_groups": 4}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True)


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """An untrained 4-layer speech-encoder checkpoint for phones (the search and surgery do not need training)."""
    import torch

    torch.manual_seed(0)
    arch = arch_spec("speech-encoder", "phones", **TINY)
    path = tmp_path_factory.mktemp("layers") / "parent"
    checkpoint.save(path, build(arch, "torch"), "torch", arch, None)
    return path


def test_prune_layers_removes_the_verified_best_set(parent, tmp_path):
    out = tmp_path / "pruned"
    proc = _cli("prune-layers", str(parent), "--remove", "2", "--measure", "cka", "--profile", "tiny", "--calib",
                "16", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    search = json.loads((out / "layer_search.json").read_text())
    # C(4, 2) = 6 candidate sets, every one verified on validation PER; the lowest is chosen
    assert len(search["candidates"]) == 6 and search["metric"] == "per"
    best = min(search["candidates"], key=lambda c: c["per"])
    assert search["removed"] == best["removed"]
    ckpt = checkpoint.load(out)
    (t,) = ckpt.transforms
    assert t.kind == "layers" and t.params["drop"] == best["removed"]
    assert t.record["measure"] == "cka" and t.record["layers_before"] == 4 and t.record["layers_after"] == 2
    assert t.record["parent"]["path"] == str(parent) and t.record["params"] < t.record["parent"]["params"]
    assert len(ckpt.model.encoder.layers) == 2


def test_the_loaded_checkpoint_computes_the_parents_kept_layers(parent, tmp_path):
    """Replaying the transform on load gives the model run with the parent's surviving layers, in order."""
    import torch

    from edgeprune.pruning.layer_run import save_layer_drop

    ckpt = checkpoint.load(parent)
    save_layer_drop(ckpt, [1, 3], tmp_path / "p13")
    child = checkpoint.load(tmp_path / "p13").model.eval()
    model = ckpt.model.eval()
    x = torch.randn(2, 40, 300, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = model.encoder.pos_conv(model.front_end(x))[:, :, :-1]  # pos_kernel 8 is even: one frame too many
        h = model.encoder.layer_norm((model.front_end(x) + model.encoder.pos_act(h)).transpose(1, 2))
        for i in (2, 4):
            h = model.encoder.layers[i - 1](h)
        np.testing.assert_allclose(child(x).numpy(), model.head(h).numpy(), atol=1e-5)


def test_without_verify_the_matrix_best_is_taken(parent, tmp_path):
    from edgeprune.data.datasets import sample_indices
    from edgeprune.pruning.layer_run import search_layers
    from edgeprune.search.layer_sets import run_score
    from edgeprune.training.profiles import get_profile
    from edgeprune.training.run import data_for

    data = data_for("synthetic", get_profile("tiny"), task="phones", progress=False)
    calib = data["train"].take(sample_indices(data["train"], 16, 0))
    found = search_layers(checkpoint.load(parent), "dc", 2, calib, None, mode="exhaustive")
    assert "metric" not in found and found["verify_s"] == 0.0
    m = np.asarray(found["matrix"])
    scores = {(a, b): run_score(m, (a, b)) for a in range(1, 5) for b in range(a + 1, 5)}
    assert tuple(found["removed"]) == max(scores, key=lambda s: (scores[s], tuple(-v for v in s)))


@pytest.mark.parametrize("args, message", [
    (["--remove", "4"], "--remove 4: K must be at least 1 and below the encoder's 4 layers"),
    (["--remove", "2", "--measure", "pearson"], "layer measure 'pearson'"),
    (["--remove", "2", "--calib", "4"], "svcca: 4 samples"),
])
def test_bad_requests_are_one_line_and_write_nothing(parent, tmp_path, args, message):
    out = tmp_path / "out"
    proc = _cli("prune-layers", str(parent), *args, "--profile", "tiny", "--out", str(out))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_model_without_encoder_layers_is_refused(tmp_path):
    arch = arch_spec("resnet-kws")
    checkpoint.save(tmp_path / "kws", build(arch, "torch"), "torch", arch, None)
    proc = _cli("prune-layers", str(tmp_path / "kws"), "--remove", "1", "--profile", "tiny", "--calib", "8",
                "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "no encoder layer list" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
