"""`pruning.block_run` and `edgeprune prune-blocks`: CMa-FSMC on a user's checkpoint, block level and filter level,
and its bad inputs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from edgeprune import checkpoint
from edgeprune.models import arch_spec, build
from edgeprune.pruning import block_surgery, cma

CLI = [sys.executable, "-m", "edgeprune"]
ARCH = arch_spec("resnet-kws", "keywords", channels=8, blocks=(1, 2, 3))


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("blocks") / "parent"
    checkpoint.save(path, build(ARCH, "torch"), "torch", ARCH, None)
    return path


def _prune(parent, out, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["prune-blocks", str(parent), "--profile", "tiny", "--samples", "12",
                                 "--recover-steps", "2", "--out", str(out), *extra], capture_output=True, text=True)


def test_block_level_removes_the_smallest_doc_blocks(parent, tmp_path):
    proc = _prune(parent, tmp_path / "out", "--drop", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    pruned = checkpoint.load(tmp_path / "out", framework="torch")
    (t,) = pruned.transforms
    doc = t.record["doc"]
    assert t.kind == "blocks" and len(pruned.model.block_names) == 2
    assert doc[t.params["drop"][0]] == min(doc.values())
    assert "test accuracy" in proc.stdout


def test_filter_level_meets_a_reachable_macs_cut_on_the_saved_model(parent, tmp_path):
    ckpt = checkpoint.load(parent, framework="torch")
    internal = cma.internal_layers(ckpt.model, "torch", ARCH)
    cost = cma.CostModel.measured(ckpt.model, "torch", ARCH, [n for v in internal.values() for n in v])
    target = cost.reductions({"block1.conv1": 6, "block2.conv1": 5, "block3.conv1": 8})["macs"]
    proc = _prune(parent, tmp_path / "out", "--macs", f"{target:.6f}", "--no-mix")
    assert proc.returncode == 0, proc.stderr[-2000:]
    pruned = checkpoint.load(tmp_path / "out", framework="torch")
    assert abs(cma.measured_reductions(ckpt.model, pruned.model, "torch", ARCH)["macs"] - target) <= 4e-4


def test_bad_requests_are_one_line_and_write_nothing(parent, tmp_path):
    cases = [(["--drop", "1", "--samples", "4"], "fewer than the 12 classes"),
             (["--macs", "0.99"], "cannot be met within rates"),
             ([], "give --drop K"),
             (["--drop", "3"], "the model has 3 blocks, so 1..2")]
    for extra, message in cases:
        proc = _prune(parent, tmp_path / "out", *extra)
        assert proc.returncode == 2 and message in proc.stderr, (extra, proc.stderr[-500:])
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()
    encoder_arch = arch_spec("speech-encoder", "keywords", layers=1, dim=32, heads=2, ffn=64, pos_kernel=8,
                             pos_groups=4)
    checkpoint.save(tmp_path / "encoder", build(encoder_arch, "torch"), "torch", encoder_arch, None)
    proc = _prune(tmp_path / "encoder", tmp_path / "out", "--drop", "1")
    assert proc.returncode == 2 and "has no shape-preserving blocks" in proc.stderr


def test_choose_refuses_both_or_neither(parent):
    from edgeprune.errors import EdgepruneError
    from edgeprune.pruning import block_run

    ckpt = checkpoint.load(parent, framework="torch")
    x = torch.zeros(2, 1, 40, 100).numpy()
    with pytest.raises(EdgepruneError, match="not both and not neither"):
        block_run.choose(ckpt, x)
    assert block_surgery.block_names(ckpt.model) == ["block1", "block2", "block3"]
