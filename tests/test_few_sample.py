"""`training.few_sample`: feature-mimicking recovery (teacher and classifier frozen, optional CMaMix) and plain
fine-tuning on a few samples."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.models import arch_spec, build
from edgeprune.training import few_sample

ARCH = arch_spec("resnet-kws", "keywords", channels=8, blocks=(1, 2))


def _pair():
    """A teacher whose BN statistics are those of the test data (as a trained model's are of its data), and a copy."""
    torch.manual_seed(0)
    teacher = build(ARCH, "torch")
    bns = [m for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.momentum = None  # cumulative average
    with torch.no_grad():
        teacher.train()(torch.from_numpy(_x()))
    for m in bns:
        m.momentum = 0.1
    teacher.eval()
    return teacher, copy.deepcopy(teacher)


def _x(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 1, 40, 100)).astype(np.float32)


def test_pre_pool_features_are_the_last_blocks_output():
    teacher, _ = _pair()
    x = torch.from_numpy(_x(2))
    with torch.no_grad():
        feats = few_sample.pre_pool_features(teacher, x)
        np.testing.assert_allclose(teacher.fc(feats.mean(dim=(2, 3))).numpy(), teacher(x).numpy(), atol=1e-5)
    assert tuple(feats.shape) == (2, 8, 13, 25)


def test_mimicking_trains_everything_but_the_classifier_head():
    teacher, student = _pair()
    head = copy.deepcopy(student.fc.state_dict())
    out = few_sample.mimic(student, teacher, _x(), few_sample.Schedule(steps=3, batch_size=3, lr=0.5), mix=True,
                           progress=False)
    assert np.isfinite(out["loss"]).all() and out["steps"] == 3
    for k, v in student.fc.state_dict().items():
        torch.testing.assert_close(v, head[k])
    assert student.fc.weight.requires_grad  # unfrozen again for whoever trains it next
    assert any(not torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters()))


def test_mimicking_reduces_the_feature_error_of_a_pruned_student():
    from edgeprune.pruning import cma

    teacher, _ = _pair()
    student, _ = cma.prune_widths(teacher, "torch", ARCH, {"block1.conv1": 3, "block2.conv1": 3})
    x = torch.from_numpy(_x())
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(few_sample.pre_pool_features(student.eval(), x),
                                              few_sample.pre_pool_features(teacher, x)).item()
    few_sample.mimic(student, teacher, _x(), few_sample.Schedule(steps=30, batch_size=6, lr=0.01), mix=False,
                     progress=False)
    with torch.no_grad():
        after = torch.nn.functional.mse_loss(few_sample.pre_pool_features(student.eval(), x),
                                             few_sample.pre_pool_features(teacher, x)).item()
    assert after < before


def test_fine_tuning_fits_the_few_labels():
    teacher, student = _pair()
    x, y = _x(), np.arange(6) % 12
    out = few_sample.finetune(student, x, y, few_sample.Schedule(steps=40, batch_size=6, lr=0.05), progress=False)
    assert out["loss"][-1] < out["loss"][0]


def test_bad_samples_are_one_line():
    teacher, student = _pair()
    bad = _x()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(EdgepruneError, match="NaN or inf"):
        few_sample.mimic(student, teacher, bad, few_sample.Schedule(steps=1), progress=False)
    with pytest.raises(EdgepruneError, match="6 samples but 5 labels"):
        few_sample.finetune(student, _x(), np.zeros(5), few_sample.Schedule(steps=1), progress=False)
