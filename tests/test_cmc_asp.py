"""CMC-ASP channel scoring: three passes with one microphone replaced by exact zeros, the authors' formula, and the
channels it ranks as the method says, on a hand-built two-input network and on se-crn in both frameworks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import edgeprune
from edgeprune.errors import EdgepruneError
from edgeprune.scoring import score


class Mics(nn.Module):
    """mix: a 1x1 conv over cat(air, bone) with channels known by construction:
    0 air-only (w = [1, 0]), 1 bone-only ([0, 1]), 2 shared (a large bias: active whichever microphone is there),
    3 needs both (w = [1, -1], the inputs equal: silent with both, loud with one)."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Conv1d(2, 4, 1)
        with torch.no_grad():
            self.mix.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 0.1], [1.0, -1.0]])[:, :, None])
            self.mix.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))
        self.seen: list[np.ndarray] = []

    def forward(self, air, bone):
        self.seen.append(air[:, 0, 0].numpy().copy())
        return self.mix(torch.cat([air, bone], dim=1)).mean(-1)


def _pair(n: int = 10, t: int = 7, seed: int = 0):
    x = np.abs(np.random.default_rng(seed).normal(size=(n, 1, t))).astype(np.float32) + 0.1
    return x, x.copy()  # identical microphones: the "needs both" channel is exactly zero with both


def test_the_formula_and_the_ranking_on_channels_known_by_construction():
    air, bone = _pair()
    model = Mics()
    s = score(model, "cmc_asp", ["mix"], data=(air, bone), batch_size=4).layers["mix"]
    e_a, e_b = np.abs(air).sum((1, 2)).mean(), np.abs(bone).sum((1, 2)).mean()
    t = air.shape[-1]
    shared_multi = np.abs(0.1 * air + 0.1 * bone + 5).sum((1, 2)).mean()
    e_multi = np.array([e_a, e_b, shared_multi, 0.0])
    e_noisy = np.array([e_a, 0.0, np.abs(0.1 * air + 5).sum((1, 2)).mean(), e_a])  # bone replaced by zeros
    e_bone = np.array([0.0, e_b, np.abs(0.1 * bone + 5).sum((1, 2)).mean(), e_b])  # air replaced by zeros
    np.testing.assert_allclose(s.extra["E_multi"], e_multi, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.extra["E_noisy"], e_noisy, rtol=1e-5)
    np.testing.assert_allclose(s.extra["E_bone"], e_bone, rtol=1e-5)
    # eps only in the denominator: a channel silent with both microphones divides by eps alone, unclipped
    s_noisy = e_noisy / (e_multi + 1e-8)
    s_bone = e_bone / (e_multi + 1e-8)
    np.testing.assert_allclose(s.extra["S_noisy"], s_noisy, rtol=1e-5)
    np.testing.assert_allclose(s.scores, 0.5 * s_noisy + 0.5 * s_bone, rtol=1e-5)
    assert s.extra["S_bone"][0] == 0.0 and s.extra["S_noisy"][1] == 0.0  # exact zeros at the input
    assert s.extra["role"][:3] == ["air", "bone", "shared"]
    # single-modality channels score 0.5; the shared one near 1; the lowest are pruned first
    assert s.scores[0] == pytest.approx(0.5) and s.scores[1] == pytest.approx(0.5)
    assert 0.95 < s.scores[2] < 1.0
    assert t * 5 < shared_multi  # the bias dominates, which is what makes channel 2 shared


def test_the_three_passes_see_the_same_samples_in_the_same_order():
    air, bone = _pair(n=11)
    model = Mics()
    score(model, "cmc_asp", ["mix"], data=(air, bone), batch_size=3, max_batches=3)
    passes = [np.concatenate(model.seen[i:i + 3]) for i in (0, 3, 6)]
    assert len(model.seen) == 9
    np.testing.assert_array_equal(passes[0], air[:9, 0, 0])
    np.testing.assert_array_equal(passes[1], air[:9, 0, 0])  # the noisy-only pass keeps the air input
    assert np.all(passes[2] == 0)  # the bone-only pass: the air input is exact zeros, batch for batch


def test_bad_input_is_one_clear_error():
    air, bone = _pair()
    with pytest.raises(EdgepruneError, match="cmc_asp scores a model with two inputs .* given 1 input"):
        score(Mics(), "cmc_asp", ["mix"], data=air)
    with pytest.raises(EdgepruneError, match="different sample counts"):
        score(Mics(), "cmc_asp", ["mix"], data=(air, bone[:5]))
    conv_net = nn.Sequential(nn.Conv1d(2, 3, 1), nn.Flatten(), nn.Linear(3 * 7, 2))
    with pytest.raises(EdgepruneError, match="layer '2' is a Linear, not a Conv1D/Conv2D"):
        score(conv_net, "cmc_asp", ["2"], data=(air, bone))


def test_one_input_model_through_the_cli_is_one_line(tmp_path, capsys):
    from edgeprune.cli import main
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    data = run.data_for("synthetic", get_profile("tiny"), progress=False)
    run.train("dcase2021_baseline", "torch", data, get_profile("tiny"), tmp_path / "ck", progress=False)
    assert main(["score", str(tmp_path / "ck"), "--criterion", "cmc_asp", "--profile", "tiny", "--calib", "8",
                 "--out", str(tmp_path / "s.json")]) == 2
    assert "cmc_asp scores a model with two inputs" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("read", ["conv", "bn", "bn_relu"])
def test_se_crn_twins_score_alike_and_prune_by_cmc_asp(read):
    """The same weights in PyTorch and Keras give the same scores (the output conv is left out: Keras reads its
    fused sigmoid); the dual encoders' first convs see one microphone each, so their roles are fixed."""
    from edgeprune.models import arch_spec, build
    from edgeprune.models.inference import model_inputs
    from edgeprune.transfer import transfer_weights

    from conftest import randomize

    arch = arch_spec("se-crn", "enhancement", fusion="dual", channels=16)
    tm = build(arch, "torch")
    randomize(tm)
    km = build(arch, "keras")
    transfer_weights(tm, km)
    rng = np.random.default_rng(0)
    feats = {n: rng.normal(-3, 1, size=(6, 129, 251)).astype(np.float32) for n in ("noisy", "bone")}
    layers = ["noisy_enc1", "bone_enc1", "fuse", "res1", "dec1"]
    scores = {fw: score(m, "cmc_asp", layers, data=model_inputs(arch, fw, feats), read=read)
              for fw, m in (("torch", tm), ("keras", km))}
    for name in layers:
        np.testing.assert_allclose(scores["torch"].layers[name].scores, scores["keras"].layers[name].scores,
                                   rtol=1e-4, atol=1e-6)
    if read == "conv":
        assert set(scores["torch"].layers["noisy_enc1"].extra["role"]) == {"air"}
        assert set(scores["torch"].layers["bone_enc1"].extra["role"]) == {"bone"}
    from edgeprune.pruning.groups import find_groups

    torch_inputs = tuple(torch.from_numpy(x) for x in model_inputs(arch, "torch", feats))
    result = edgeprune.prune(tm, torch_inputs, "cmc_asp", edgeprune.Ratio(0.5, global_ranking=True),
                             data=model_inputs(arch, "torch", feats), read=read)
    plan = find_groups(tm, "torch", torch_inputs)
    total = sum(g.channels for g in plan.groups)
    # one ranking over every group's channels: half of them go, wherever the lowest scores are
    assert sum(len(result.keep[g.name]) for g in plan.groups) == total - total // 2
    assert len({len(result.keep[g.name]) for g in plan.groups}) > 1


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.parametrize("fusion", ["early", "dual"])
def test_se_crn_pruned_by_cmc_asp_to_a_ratio_and_a_budget_then_distilled(framework, fusion, tmp_path):
    """Both fusion variants in both frameworks: cmc_asp scores, a per-layer ratio and a MAC budget prune, and one
    fine-tuning epoch distilled from the unpruned parent's masks (MSE) recovers without error."""
    from edgeprune import checkpoint
    from edgeprune.pruning.run import calibration_set, finetune_checkpoint, prune_checkpoint, score_checkpoint
    from edgeprune.pruning.targets import Target
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    data = run.data_for("synthetic", get_profile("tiny"), progress=False, task="enhancement")
    run.train("se-crn", framework, data, get_profile("tiny"), tmp_path / "parent", progress=False,
              args={"fusion": fusion, "channels": 16})
    parent = checkpoint.load(tmp_path / "parent")
    scores = score_checkpoint(parent, "cmc_asp", None, calibration_set(data, 16))
    assert scores.record["options"]["read"] == "conv" and "mask" in scores.layers
    by_ratio = prune_checkpoint(parent, Target(ratio=0.25), scores, tmp_path / "ratio")
    by_budget = prune_checkpoint(parent, Target(budget=("macs", 0.6)), scores, tmp_path / "budget")
    assert "mask" not in by_ratio.keep and by_budget.groups  # the output conv stays; coupled trunks share
    record = checkpoint.load(tmp_path / "budget").transforms[-1].record
    assert abs(record["macs"] / record["parent"]["macs"] - 0.6) <= 0.01
    summary = finetune_checkpoint(checkpoint.load(tmp_path / "budget"), data, get_profile("tiny"), tmp_path / "ft",
                                  teacher=parent, progress=False)
    assert summary["distillation"]["teacher"] == str(parent.path) and np.isfinite(summary["validation"]["si_sdri"])
