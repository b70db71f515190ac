"""PyTorch structured-pruning surgery (Torch-Pruning's DependencyGraph underneath): a pruned model is smaller and
computes exactly what the original computes once the removed channels are zeroed along their path (conv filter
and bias or BN gamma and beta, so the channel is exactly 0 after ReLU; every coupled producer likewise)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from edgeprune.errors import EdgepruneError
from edgeprune.frameworks import get_adapter
from edgeprune.models import arch_spec, build
from edgeprune.pruning.torch_surgery import channels_of, coupled_groups, prune_torch, replay_keep, tp_importance

count_params = get_adapter("torch").count_params
DCASE_INPUT = torch.zeros(1, 1, 40, 500)


def randomize(model: nn.Module, seed: int = 0) -> None:
    """Random weights (scaled by fan-in so activations stay near 1), biases, BN gamma/beta and running statistics
    (mean normal, variance uniform 0.5..2), then eval mode: so a parity test can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.5 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
    model.eval()


def zero_channels(model: nn.Module, removed: dict[str, Sequence[int]]) -> None:
    """Make these output channels exactly zero: conv/linear filter and bias, or BN gamma and beta (BN then outputs
    beta = 0 whatever its running statistics)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, idx in removed.items():
            m, idx = modules[name], list(idx)
            m.weight[idx] = 0
            if m.bias is not None:
                m.bias[idx] = 0


def complement(n: int, keep: Sequence[int]) -> list[int]:
    return sorted(set(range(n)) - set(keep))


def assert_exact(model: nn.Module, keep: dict[str, Sequence[int]], zero: dict[str, Sequence[int]],
                 x: torch.Tensor, example: torch.Tensor) -> tuple[nn.Module, list[str]]:
    """Zero what keep removes, prune, and compare outputs on random inputs (1e-5). Also checks that the zeroed
    channels mattered (so the comparison is not vacuous) and that the caller's model is untouched."""
    randomize(model)
    with torch.no_grad():
        unzeroed = model(x)
    zero_channels(model, zero)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(x)
    assert (ref - unzeroed).abs().max() > 1e-3, "the zeroed channels should change the output"
    pruned, notes = prune_torch(model, keep, example)
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes, "the caller's model must not change"
    assert count_params(pruned) < count_params(model)
    pruned.eval()
    with torch.no_grad():
        out = pruned(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    for name, kept in keep.items():
        m = dict(pruned.named_modules())[name]
        assert (m.out_features if isinstance(m, nn.Linear) else m.out_channels) == len(kept)
    return pruned, notes


# ----------------------------------------------------------------------------------------------------------------
# The patterns, as small models.


class ResidualNet(nn.Module):
    """Two residual adds: stem + (c1 -> c2 with BN), then + c3 (a 1x1 conv without BN): stem, c2, c3 are coupled."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c1, self.bn1 = nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.c2, self.bn2 = nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c3 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        y = self.bn2(self.c2(F.relu(self.bn1(self.c1(x)))))
        x = F.relu(x + y)
        x = x + self.c3(x)
        return self.fc(x.mean((2, 3)))


class ConcatNet(nn.Module):
    """cat([a, b]) + c -> conv_d, then cat([d, a]) -> pooled -> fc: concat offsets on both sides of an add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.conv_b, self.bn_b = nn.Conv2d(3, 10, 3, padding=1), nn.BatchNorm2d(10)
        self.conv_c, self.bn_c = nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16)
        self.conv_d, self.bn_d = nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(14, 5)

    def forward(self, x):
        a = F.relu(self.bn_a(self.conv_a(x)))
        b = F.relu(self.bn_b(self.conv_b(x)))
        y = F.relu(torch.cat([a, b], 1) + self.bn_c(self.conv_c(x)))
        d = F.relu(self.bn_d(self.conv_d(y)))
        z = torch.cat([d, a], 1)
        return self.fc(F.adaptive_avg_pool2d(z, 1).flatten(1))


class SeparableNet(nn.Module):
    """Depthwise separable blocks: 1x1 conv -> depthwise 3x3 (groups = channels) -> 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.pw0, self.bn0 = nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8)
        self.dw1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8)
        self.pw1, self.bn2 = nn.Conv2d(8, 12, 1), nn.BatchNorm2d(12)
        self.dw2, self.bn3 = nn.Conv2d(12, 12, 3, padding=1, groups=12), nn.BatchNorm2d(12)
        self.pw2, self.bn4 = nn.Conv2d(12, 16, 1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        for conv, bn in [(self.pw0, self.bn0), (self.dw1, self.bn1), (self.pw1, self.bn2), (self.dw2, self.bn3),
                         (self.pw2, self.bn4)]:
            x = F.relu(bn(conv(x)))
        return self.fc(x.mean((2, 3)))


class SqueezeExciteNet(nn.Module):
    """conv1 -> squeeze-excite (pool -> se1 -> relu -> se2 -> sigmoid -> multiply back) -> conv2 -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.se1, self.se2 = nn.Linear(8, 4), nn.Linear(4, 8)
        self.conv2, self.bn2 = nn.Conv2d(8, 10, 3, padding=1), nn.BatchNorm2d(10)
        self.fc = nn.Linear(10, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        s = torch.sigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(x, 1).flatten(1)))))
        x = x * s.view(s.shape[0], s.shape[1], 1, 1)
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class AudioConv1dNet(nn.Module):
    """A Conv1d model on [N, 40 mels, 100 frames]: three convs, pooled to 4 steps, flatten -> fc1 -> fc2."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn1 = nn.Conv1d(40, 16, 5, padding=2), nn.BatchNorm1d(16)
        self.c2, self.bn2 = nn.Conv1d(16, 24, 3, padding=1), nn.BatchNorm1d(24)
        self.c3, self.bn3 = nn.Conv1d(24, 32, 3, padding=1), nn.BatchNorm1d(32)
        self.fc1, self.fc2 = nn.Linear(128, 20), nn.Linear(20, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.c1(x)))
        x = F.max_pool1d(F.relu(self.bn2(self.c2(x))), 2)
        x = F.adaptive_avg_pool1d(F.relu(self.bn3(self.c3(x))), 4)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def image_input(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------------
# The DCASE baseline.


@pytest.fixture(scope="module")
def dcase() -> nn.Module:
    model = build(arch_spec("dcase2021_baseline"), "torch")
    randomize(model)
    return model


@pytest.mark.parametrize("keep_counts, expected", [
    (dict(conv1=11), 42_056), (dict(conv2=11), 34_461), (dict(conv3=22), 36_356),
    (dict(conv1=11, conv2=11, conv3=22), 24_056),
])
def test_dcase_parameter_counts(dcase, keep_counts, expected):
    keep = {name: range(n) for name, n in keep_counts.items()}
    pruned, notes = prune_torch(dcase, keep, DCASE_INPUT)
    assert count_params(pruned) == expected
    assert notes[0] == f"parameters 46,246 -> {expected:,} ({46_246 - expected:,} removed, BN statistics counted)"


def test_dcase_pruned_equals_narrow_build(dcase):
    keep = dict(conv1=range(5, 16), conv2=[0, 1, 2, 4, 6, 8, 9, 10, 12, 14, 15],
                conv3=[i for i in range(32) if i % 3 != 2])  # 22 of 32
    pruned, _ = prune_torch(dcase, keep, DCASE_INPUT)
    narrow = build(arch_spec("dcase2021_baseline", conv1=11, conv2=11, conv3=22), "torch")
    assert {k: v.shape for k, v in pruned.state_dict().items()} == {k: v.shape for k, v in narrow.state_dict().items()}
    assert type(pruned) is type(dcase) and pruned.training == dcase.training


def test_dcase_surgery_is_exact():
    rng = np.random.default_rng(0)
    keep = {"conv1": sorted(rng.choice(16, 11, replace=False)), "conv2": sorted(rng.choice(16, 11, replace=False)),
            "conv3": sorted(rng.choice(32, 22, replace=False))}
    zero = {"bn1": complement(16, keep["conv1"]), "bn2": complement(16, keep["conv2"]),
            "bn3": complement(32, keep["conv3"])}
    x = torch.randn(2, 1, 40, 500, generator=torch.Generator().manual_seed(1))
    model = build(arch_spec("dcase2021_baseline"), "torch")
    assert_exact(model, keep, zero, x, DCASE_INPUT)


def test_dcase_replay_loads_state_dict(dcase):
    rng = np.random.default_rng(1)
    keep = {"conv1": sorted(rng.choice(16, 9, replace=False)), "conv3": sorted(rng.choice(32, 20, replace=False))}
    pruned, _ = prune_torch(dcase, keep, DCASE_INPUT)
    fresh = build(arch_spec("dcase2021_baseline"), "torch")  # new random weights, the same architecture
    replayed, _ = replay_keep(fresh, keep, DCASE_INPUT)
    replayed.load_state_dict(pruned.state_dict())
    x = torch.randn(2, 1, 40, 500, generator=torch.Generator().manual_seed(2))
    pruned.eval(), replayed.eval()
    with torch.no_grad():
        torch.testing.assert_close(replayed(x), pruned(x), atol=0, rtol=0)


def test_dcase_listing(dcase):
    assert channels_of(dcase, DCASE_INPUT) == {"conv1": 16, "conv2": 16, "conv3": 32, "dense1": 100}
    # Without example inputs nothing is traced, so the classifier cannot be told apart and is listed too.
    assert channels_of(dcase) == {"conv1": 16, "conv2": 16, "conv3": 32, "dense1": 100, "dense2": 10}
    assert coupled_groups(dcase, DCASE_INPUT) == []


# ----------------------------------------------------------------------------------------------------------------
# Every coupling pattern, exactly.


def test_residual_add_followers_are_exact():
    model, keep = ResidualNet(), {"stem": [0, 2, 3, 6, 7], "c1": [1, 2, 5]}
    gone = complement(8, keep["stem"])
    # stem, c2 and c3 meet at the adds: zero all three producers (c3 has no BN: its filter and bias).
    zero = {"bn0": gone, "bn2": gone, "c3": gone, "bn1": complement(6, keep["c1"])}
    pruned, notes = assert_exact(model, keep, zero, image_input(), image_input(0)[:1])
    assert pruned.c2.out_channels == pruned.c3.out_channels == pruned.c3.in_channels == 5
    assert any(n.startswith("c2: follows stem (residual add)") for n in notes)
    assert any(n.startswith("c3: follows stem (residual add)") for n in notes)
    assert coupled_groups(model, image_input()) == [{"stem", "c2", "c3"}]


def test_residual_add_same_keep_lists_are_accepted():
    model = ResidualNet()
    same = [1, 2, 4, 7]
    zero = {"bn0": complement(8, same), "bn2": complement(8, same), "c3": complement(8, same)}
    assert_exact(model, {"stem": same, "c2": same, "c3": same}, zero, image_input(), image_input())


def test_concat_offsets_are_exact():
    model = ConcatNet()
    ka, kb, kd = [0, 2, 3, 5], [1, 2, 4, 6, 7, 9], [0, 3, 4, 5, 7]
    kc = ka + [6 + i for i in kb]  # conv_c is added to cat([a, b]): it keeps a's channels, then b's, offset by 6
    zero = {"bn_a": complement(6, ka), "bn_b": complement(10, kb), "bn_c": complement(16, kc),
            "bn_d": complement(8, kd)}
    pruned, _ = assert_exact(model, {"conv_a": ka, "conv_b": kb, "conv_c": kc, "conv_d": kd}, zero, image_input(),
                             image_input())
    assert pruned.conv_d.in_channels == 10 and pruned.fc.in_features == 9
    assert coupled_groups(model, image_input()) == [{"conv_a", "conv_b", "conv_c"}]


def test_concat_without_naming_the_coupled_layer():
    # conv_c follows a and b through the add; its channels are the union of theirs at the concat offsets.
    model = ConcatNet()
    ka, kb = [1, 4], [0, 9]
    kc = ka + [6 + i for i in kb]
    zero = {"bn_a": complement(6, ka), "bn_b": complement(10, kb), "bn_c": complement(16, kc)}
    pruned, notes = assert_exact(model, {"conv_a": ka, "conv_b": kb}, zero, image_input(), image_input())
    assert pruned.conv_c.out_channels == 4
    assert any(n.startswith("conv_c: follows conv_a") for n in notes)


def test_concat_naming_only_the_shared_layer():
    # Name conv_c alone: conv_a and conv_b follow it, each with its own slice of conv_c's channels.
    model, kc = ConcatNet(), [0, 3, 7, 9, 15]
    ka, kb = [i for i in kc if i < 6], [i - 6 for i in kc if i >= 6]
    zero = {"bn_a": complement(6, ka), "bn_b": complement(10, kb), "bn_c": complement(16, kc)}
    pruned, notes = assert_exact(model, {"conv_c": kc}, zero, image_input(), image_input())
    assert (pruned.conv_a.out_channels, pruned.conv_b.out_channels) == (2, 3)
    assert notes[2:] == ["conv_a: follows conv_c (residual add), keeps 2 of 6 output channels",
                         "conv_b: follows conv_c (residual add), keeps 3 of 10 output channels"]


def test_depthwise_separable_is_exact():
    model = SeparableNet()
    k0, k1, k2 = [0, 1, 4, 6, 7], [2, 3, 5, 8, 9, 11], [0, 2, 4, 6, 8, 10, 12, 14]
    # A depthwise conv's channel follows its input: zero it as well (its bias would light the channel up again).
    zero = {"bn0": complement(8, k0), "bn1": complement(8, k0), "bn2": complement(12, k1), "bn3": complement(12, k1),
            "bn4": complement(16, k2)}
    pruned, notes = assert_exact(model, {"pw0": k0, "pw1": k1, "pw2": k2}, zero, image_input(), image_input())
    assert (pruned.dw1.groups, pruned.dw1.in_channels, pruned.dw1.out_channels) == (5, 5, 5)
    assert (pruned.dw2.groups, pruned.dw2.in_channels, pruned.dw2.out_channels) == (6, 6, 6)
    assert "dw1: depthwise conv, follows pw0: keeps 5 channels" in notes
    assert "dw1" not in channels_of(model, image_input())


def test_squeeze_excite_is_exact():
    model = SqueezeExciteNet()
    k1, kse, k2 = [0, 3, 4, 5, 7], [0, 2, 3], [1, 2, 3, 5, 6, 8, 9]
    # se2's outputs multiply conv1's channels, so se2 follows conv1; zeroing conv1's channel makes the product 0.
    zero = {"bn1": complement(8, k1), "se1": complement(4, kse), "bn2": complement(10, k2)}
    pruned, notes = assert_exact(model, {"conv1": k1, "se1": kse, "conv2": k2}, zero, image_input(), image_input())
    assert (pruned.se1.in_features, pruned.se1.out_features, pruned.se2.in_features, pruned.se2.out_features) == \
        (5, 3, 3, 5)
    assert any(n.startswith("se2: follows conv1 (multiply)") for n in notes)
    assert coupled_groups(model, image_input()) == [{"conv1", "se2"}]


def test_conv1d_audio_model_is_exact():
    model = AudioConv1dNet()
    k1, k2, k3, kf = [0, 2, 3, 5, 8, 9, 13, 15], list(range(0, 24, 2)), list(range(1, 32, 2)), [0, 1, 5, 7, 11, 19]
    zero = {"bn1": complement(16, k1), "bn2": complement(24, k2), "bn3": complement(32, k3),
            "fc1": complement(20, kf)}
    x = torch.randn(2, 40, 100, generator=torch.Generator().manual_seed(3))
    pruned, _ = assert_exact(model, {"c1": k1, "c2": k2, "c3": k3, "fc1": kf}, zero, x, torch.zeros(1, 40, 100))
    assert pruned.fc1.in_features == 16 * 4  # flatten of [16 channels, 4 steps]
    assert pruned.fc2.in_features == 6


# ----------------------------------------------------------------------------------------------------------------
# Torch-Pruning's own pruner, driven by our scores.


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(x.mean((2, 3)))


def test_tp_importance_keeps_the_highest_scores():
    model = SmallCNN()
    randomize(model)
    rng = np.random.default_rng(0)
    scores = {"conv1": rng.permutation(8).astype(float), "conv2": rng.permutation(8).astype(float)}
    before = {name: getattr(model, name).weight.detach().clone() for name in scores}
    pruner = tp.pruner.BasePruner(model, image_input(), importance=tp_importance(scores), pruning_ratio=0.25,
                                  ignored_layers=[model.fc])
    pruner.step()
    for name, s in scores.items():
        w = getattr(model, name).weight.detach()
        assert w.shape[0] == 6
        top = sorted(np.argsort(-s)[:6].tolist())
        expected = before[name][top]
        if name == "conv2":  # its input channels went with conv1's pruning
            expected = expected[:, sorted(np.argsort(-scores["conv1"])[:6].tolist())]
        torch.testing.assert_close(w, expected, atol=0, rtol=0)


def test_tp_importance_needs_scores_for_every_group():
    model = SmallCNN()
    pruner = tp.pruner.BasePruner(model, image_input(), importance=tp_importance({"conv1": np.arange(8.0)}),
                                  pruning_ratio=0.25, ignored_layers=[model.fc])
    with pytest.raises(EdgepruneError, match="no scores for the group of 'conv2'"):
        pruner.step()
    skipping = tp.pruner.BasePruner(model, image_input(), importance=tp_importance({"conv1": np.arange(8.0)},
                                    missing="skip"), pruning_ratio=0.25, ignored_layers=[model.fc])
    skipping.step()
    assert (model.conv1.out_channels, model.conv2.out_channels) == (6, 8)


# ----------------------------------------------------------------------------------------------------------------
# Errors: one clear line each.


@pytest.mark.parametrize("keep, message", [
    ({"conv9": [0]}, "layer 'conv9' not found; prunable layers: conv1, conv2, conv3, dense1"),
    ({"bn1": [0]}, "layer 'bn1' (BatchNorm2d) is not a Conv1d, Conv2d or Linear"),
    ({"conv1": [0, 16]}, "keep index 16 for 'conv1' is out of range: it has 16 output channels (0-15)"),
    ({"conv1": [-1]}, "keep index -1 for 'conv1' is out of range"),
    ({"conv1": [3, 3]}, "keep list for 'conv1' repeats index 3"),
    ({"conv1": []}, "keep list for 'conv1' is empty"),
    ({"conv1": [0.5]}, "keep list for 'conv1' must hold integer channel indices"),
    ({"dense2": [0, 1]}, "could not prune dense2 because it produces the model's output"),
])
def test_dcase_errors(dcase, keep, message):
    with pytest.raises(EdgepruneError) as e:
        prune_torch(dcase, keep, DCASE_INPUT)
    assert message in str(e.value)


def test_coupled_keep_lists_must_agree():
    with pytest.raises(EdgepruneError, match=r"could not prune stem because it is coupled with c2 \(residual add\) "
                                             "and their keep lists differ"):
        prune_torch(ResidualNet(), {"stem": [0, 1, 2, 3], "c2": [1, 2, 3, 4]}, image_input())
    with pytest.raises(EdgepruneError, match="could not prune conv_a because it is coupled with conv_c"):
        prune_torch(ConcatNet(), {"conv_a": [0, 1], "conv_c": list(range(1, 16))}, image_input())


def test_depthwise_cannot_be_named():
    with pytest.raises(EdgepruneError, match="could not prune dw1 because a depthwise conv's channels follow its "
                                             "input; prune the layer that feeds it"):
        prune_torch(SeparableNet(), {"dw1": [0, 1]}, image_input())


def test_grouped_conv_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2), nn.Flatten(), nn.LazyLinear(2))
    model(image_input())  # materialise the lazy layer
    with pytest.raises(EdgepruneError, match="could not prune 0 because its channels reach the grouped conv '2'"):
        prune_torch(model, {"0": [0, 1, 2]}, image_input())
    with pytest.raises(EdgepruneError, match=r"could not prune 2 because it is a grouped conv \(groups=2\)"):
        prune_torch(model, {"2": [0, 1, 2]}, image_input())


def test_training_mode_and_no_grad_are_respected():
    model = ResidualNet().train()
    with torch.no_grad():  # the tracer needs autograd; prune_torch turns it back on for itself
        pruned, _ = prune_torch(model, {"c1": [0, 1]}, image_input())
    assert pruned.training and model.training
    assert all(p.requires_grad for p in pruned.parameters())


def test_untraceable_model(dcase):
    with pytest.raises(EdgepruneError, match="could not trace DcaseBaseline for pruning: RuntimeError"):
        prune_torch(dcase, {"conv1": [0]}, torch.zeros(1, 3, 40, 500))  # three input channels, not one
