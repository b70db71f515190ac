"""`training.ssl` (MelHuBERT-style masked prediction of k-means cluster ids) and `training.probes` (SUPERB-style
probes on a frozen encoder): hand-worked cases of the pieces, and a checkpoint that keeps its prediction head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.models import arch_spec, build
from edgeprune.training import probes, ssl

TINY = {"layers": 2, "dim": 32, "heads": 2, "ffn": 64, "pos_kernel": 8, "pos_groups": 4}


def test_stacked_frames_are_what_the_front_end_reads():
    """A kernel-2, stride-2 Conv1d over [F, T] sees frames (2j, 2j+1): stacking them and applying the same weights
    as one matrix gives the conv's output."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 9)).astype(np.float32)
    conv = torch.nn.Conv1d(5, 3, 2, stride=2)
    stacked = ssl.stacked_frames(x)  # [2, 4, 10]: frame 2j's bands then frame 2j+1's
    w = conv.weight.detach().numpy()  # [3, 5, 2]
    flat = np.concatenate([w[:, :, 0], w[:, :, 1]], axis=1)  # [3, 10] in the stacked order
    expected = conv(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 1)
    np.testing.assert_allclose(stacked @ flat.T + conv.bias.detach().numpy(), expected, atol=1e-5)


def test_cluster_targets_are_the_nearest_centroid_and_ignore_padding():
    c = ssl.Clusters(np.array([[0.0, 0.0], [10.0, 10.0]], dtype=np.float32), np.zeros(2, np.float32),
                     np.ones(2, np.float32))
    # one band: stacked frames are (x[2j], x[2j+1])
    logmel = np.array([[[0.1, -0.2, 9.0, 11.0, 0.0, 0.3]]], dtype=np.float32)
    ids = ssl.cluster_targets(c, logmel, frames=np.array([4]))
    assert ids.tolist() == [[0, 1, ssl.IGNORE]]  # the third pair holds padding frames (4 real input frames)


def test_kmeans_on_two_blobs_finds_them():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, size=(1, 2, 200))
    b = rng.normal(5, 0.1, size=(1, 2, 200))
    clusters = ssl.fit_clusters(np.concatenate([a, b]).astype(np.float32), None, 2, seed=0)
    ids = ssl.cluster_targets(clusters, np.concatenate([a, b]).astype(np.float32), None)
    assert len(set(ids[0])) == 1 and len(set(ids[1])) == 1 and ids[0, 0] != ids[1, 0]
    with pytest.raises(EdgepruneError, match="3 clusters"):
        ssl.fit_clusters(np.zeros((1, 2, 4), np.float32), None, 3)


def test_span_masks_stay_on_real_frames_and_cover_about_the_share_asked():
    rng = np.random.default_rng(0)
    real = np.ones((200, 100), dtype=bool)
    real[:, 80:] = False
    mask = ssl.span_mask(real, 0.5, 5, rng)
    assert not (mask & ~real).any()
    # 8 spans of 5 on 80 frames, overlaps allowed: at most half covered, and on average well above a quarter
    share = mask.sum(1) / 80
    assert share.max() <= 0.5 and share.mean() > 0.3


def _state(loss_type: str = "masked") -> ssl.SSLState:
    torch.manual_seed(0)
    model = build(arch_spec("speech-encoder", "phones", **TINY), "torch")
    clusters = ssl.Clusters(np.random.default_rng(0).normal(size=(4, 80)).astype(np.float32),
                            np.zeros(80, np.float32), np.ones(80, np.float32))
    return ssl.SSLState.new(model, clusters, loss_type)


def test_the_masked_loss_counts_only_masked_frames():
    """With every target ignored except on masked frames, changing the targets of unmasked frames leaves the loss
    unchanged; in "nomasked" mode it changes it."""
    x = np.random.default_rng(1).normal(size=(2, 40, 300)).astype(np.float32)
    t = np.zeros((2, 150), dtype=np.int64)
    t2 = t.copy()
    for loss_type in ("masked", "nomasked"):
        state = _state(loss_type)
        state.model.eval()
        a = float(state.loss(x, t, None, np.random.default_rng(5)).detach())
        mask = ssl.span_mask(np.ones((2, 150), bool), 0.5, 5, np.random.default_rng(5))
        t2[:] = 0
        t2[~mask] = 3  # only the frames the loss should not read in masked mode
        b = float(state.loss(x, t2, None, np.random.default_rng(5)).detach())
        assert (a == pytest.approx(b, abs=1e-6)) == (loss_type == "masked")


def test_a_pretrained_checkpoint_keeps_its_head_and_clusters(tmp_path):
    state = _state()
    x = np.random.default_rng(2).normal(size=(4, 40, 300)).astype(np.float32)
    summary = ssl.pretrain(state, x, None, epochs=1, batch_size=2, progress=False)
    assert len(summary["history"]) == 1 and np.isfinite(summary["history"][0])
    arch = arch_spec("speech-encoder", "phones", **TINY)
    ssl.save(tmp_path / "ck", state, None, arch)
    _, loaded = ssl.load(tmp_path / "ck")
    state.model.eval()
    loaded.model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(loaded.logits(torch.from_numpy(x)).numpy(),
                                   state.logits(torch.from_numpy(x)).numpy(), atol=1e-6)
    np.testing.assert_array_equal(loaded.clusters.centroids, state.clusters.centroids)
    with pytest.raises(EdgepruneError, match="not a pre-trained encoder"):
        from edgeprune import checkpoint

        checkpoint.save(tmp_path / "plain", state.model, "torch", arch, None)
        ssl.load(tmp_path / "plain")


def test_distillation_from_itself_starts_at_zero_loss():
    """A student identical to its teacher has KL 0 on the first batch (pure KL, T = 1)."""
    import copy

    teacher = _state()
    student = ssl.SSLState(copy.deepcopy(teacher.model), copy.deepcopy(teacher.head), teacher.clusters, "nomasked")
    for m in (teacher.model, student.model):  # no dropout: the two forward passes must be the same function
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
    x = np.random.default_rng(3).normal(size=(2, 40, 300)).astype(np.float32)
    out = ssl.distill(student, teacher, x, None, epochs=1, batch_size=2, lr=1e-12, progress=False)
    assert out["history"][0] == pytest.approx(0.0, abs=1e-6)


def test_distilhubert_predicts_layers_at_thirds_of_the_teacher():
    assert ssl.hidden_targets(12) == [4, 8, 12]  # DistilHuBERT's layers of HuBERT base
    assert ssl.hidden_targets(4) == [1, 2, 4]
    assert ssl.hidden_targets(1) == [1]


def test_hidden_prediction_loss_of_a_perfect_prediction_is_the_cosine_floor():
    """Identity heads and student state equal to each target: L1 is 0 and cos is 1, so each layer costs
    -log sigmoid(1) = log(1 + e^-1)."""
    objective = ssl.HiddenPrediction(3, 3, [1, 2])
    with torch.no_grad():
        for head in objective.heads:
            head.weight.copy_(torch.eye(3))
            head.bias.zero_()
    h = torch.randn(5, 3)
    loss = objective.loss(h, [torch.zeros(5, 3), h, h.clone()])
    assert float(loss.detach()) == pytest.approx(2 * np.log1p(np.exp(-1.0)), abs=1e-6)


def test_hidden_distillation_trains_the_encoder_and_leaves_the_cluster_head():
    import copy

    teacher = _state()
    arch = arch_spec("speech-encoder", "phones", **{**TINY, "layers": 1})
    student = ssl.SSLState(build(arch, "torch"), copy.deepcopy(teacher.head), teacher.clusters, "nomasked")
    head_before = copy.deepcopy(student.head.state_dict())
    enc_before = copy.deepcopy(student.model.state_dict())
    x = np.random.default_rng(3).normal(size=(4, 40, 300)).astype(np.float32)
    out = ssl.distill(student, teacher, x, np.array([300, 200, 100, 300]), epochs=1, batch_size=2,
                      objective="hidden", progress=False)
    assert np.isfinite(out["history"]).all()
    for k, v in student.head.state_dict().items():
        torch.testing.assert_close(v, head_before[k])
    assert any(not torch.equal(v, enc_before[k]) for k, v in student.model.state_dict().items())
    with pytest.raises(EdgepruneError, match="distillation objective"):
        ssl.distill(student, teacher, x, None, epochs=1, objective="mse", progress=False)


def test_speaker_split_holds_out_the_last_utterance_of_each_repeated_speaker():
    train, test, labels = probes.speaker_split(np.array(["a", "b", "a", "c", "a", "b"]))
    assert sorted(test.tolist()) == [4, 5] and sorted(train.tolist()) == [0, 1, 2]
    assert labels.tolist() == [0, 1, 0, -1, 0, 1]  # c has one utterance: no label
    with pytest.raises(EdgepruneError, match="two speakers"):
        probes.speaker_split(np.array(["a", "a", "b"]))


def test_a_probe_finds_the_layer_that_carries_the_labels():
    """Clip labels written into state 2 only (separable by a wide margin), noise elsewhere: the probe classifies the
    held-out clips perfectly and puts most of its layer weight on state 2."""
    rng = np.random.default_rng(0)
    n, d = 200, 8
    y = rng.integers(0, 2, size=n)
    states = rng.normal(size=(3, n, 1, d)).astype(np.float32)
    states[2, :, 0, 0] = np.where(y == 1, 5.0, -5.0)
    f = probes.Features(states.astype(np.float16), np.ones((n, 1), bool), y, {})
    take = lambda idx: probes.Features(f.states[:, idx], f.mask[idx], f.y[idx], {})  # noqa: E731
    result, _ = probes.train_probe(take(np.arange(150)), take(np.arange(150, 200)), "clip", 2, epochs=30)
    assert result["accuracy"] == 1.0
    assert int(np.argmax(result["layer_weights"])) == 2
