"""The speech reference models: se-crn (enhancement), resnet-kws (keywords), speech-encoder (phones, keywords).

Shapes come from the tasks, sizes from the models' own definitions (the counts their docstrings state), and every
parity bound is an exact equivalence up to float32 rounding: twins after weight transfer, a removed block against
an identity, a removed attention head against a zeroed one, ONNX against PyTorch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.arrays import arrange
from edgeprune.errors import EdgepruneError
from edgeprune.frameworks import get_adapter
from edgeprune.models import arch_spec, build
from edgeprune.models import resnet_kws, se_crn, speech_encoder
from edgeprune.models.registry import get_entry, input_specs, output_axes, task_of
from edgeprune.transfer import transfer_weights

TOL = 1e-4  # float32 rounding of the same arithmetic in two frameworks / runtimes

# (model, task, overrides, parameters stated in the model's docstring, BN statistics counted)
TWINS = [("se-crn", "enhancement", {}, 114_129), ("se-crn", "enhancement", {"fusion": "dual"}, 91_137),
         ("resnet-kws", "keywords", {}, 111_567)]
TWIN_IDS = ["se-crn-early", "se-crn-dual", "resnet-kws"]
MODULES = {"se-crn": se_crn, "resnet-kws": resnet_kws, "speech-encoder": speech_encoder}


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters, so a parity test fails if BN is transferred wrongly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(1 + torch.randn(m.num_features, generator=g) * 0.3)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.3)


def _features(arch: dict, n: int, seed: int = 0) -> list[np.ndarray]:
    """Random inputs in the task's feature layout (e.g. [N, F, T])."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, *f.shape)).astype(np.float32) for f in task_of(arch).inputs]


def _run(model, fw: str, arch: dict, feats: list[np.ndarray]) -> np.ndarray:
    """The model's output for feature-layout inputs, in its own output layout (PyTorch classifiers: softmax)."""
    xs = [s.from_features(x) for s, x in zip(input_specs(arch, fw), feats)]
    if fw == "torch":
        with torch.no_grad():
            y = model(*[torch.from_numpy(x) for x in xs])
        if task_of(arch).output.kind == "probs":
            y = torch.softmax(y, dim=-1)
        return y.numpy()
    return np.asarray(model(xs if len(xs) > 1 else xs[0], training=False))


def _expected_shape(arch: dict, fw: str, time_stride: int = 1) -> tuple[int, ...]:
    task = task_of(arch)
    sizes = dict(zip(task.inputs[0].axes, task.inputs[0].shape))
    sizes["T"] //= time_stride
    sizes["K"] = task.n_classes
    return tuple(sizes[a] for a in output_axes(arch, fw))


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.parametrize("name,task,over,params", TWINS, ids=TWIN_IDS)
def test_twin_builds_from_its_task_with_the_stated_size(name, task, over, params, framework):
    arch = arch_spec(name, task, **over)
    model = build(arch, framework)
    if framework == "torch":
        model.eval()
    assert get_adapter(framework).count_params(model) == params == MODULES[name].param_count(**arch["args"])
    specs = input_specs(arch, framework)
    assert [s.name for s in specs] == [f.name for f in task_of(arch).inputs]
    y = _run(model, framework, arch, _features(arch, 2))
    assert y.shape == (2, *_expected_shape(arch, framework))
    if name == "se-crn":
        assert output_axes(arch, framework) == {"torch": "FT", "keras": "TF"}[framework]
        assert y.min() >= 0 and y.max() <= 1
    else:
        np.testing.assert_allclose(y.sum(axis=-1), 1, atol=1e-5)


@pytest.mark.parametrize("name,task,over,params", TWINS, ids=TWIN_IDS)
def test_twins_agree_after_weight_transfer(name, task, over, params):
    arch = arch_spec(name, task, **over)
    tm, km = build(arch, "torch").eval(), build(arch, "keras")
    feats = _features(arch, 3)
    before = _run(tm, "torch", arch, feats)
    _randomize_bn(tm)
    yt = _run(tm, "torch", arch, feats)
    assert np.abs(yt - before).max() > 100 * TOL  # the BN statistics matter: a wrong transfer would show
    transfer_weights(tm, km)
    yk = arrange(_run(km, "keras", arch, feats), "N" + output_axes(arch, "keras"), "N" + output_axes(arch, "torch"))
    np.testing.assert_allclose(yk, yt, atol=TOL, rtol=0)
    back = build(arch, "torch")
    transfer_weights(km, back)
    for key, value in tm.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(back.state_dict()[key], value), key


@pytest.mark.parametrize("name,task,over,params", TWINS, ids=TWIN_IDS)
def test_twins_prune_the_same_channels_to_the_same_model(name, task, over, params):
    from edgeprune.pruning import keras_surgery, torch_surgery

    arch = arch_spec(name, task, **over)
    tm, km = build(arch, "torch").eval(), build(arch, "keras")
    _randomize_bn(tm)
    transfer_weights(tm, km)
    example = tuple(torch.zeros(1, *s.shape) for s in input_specs(arch, "torch"))
    channels = torch_surgery.channels_of(tm, example)
    assert channels == keras_surgery.channels_of(km)
    groups = torch_surgery.coupled_groups(tm, example)
    assert sorted(map(sorted, groups)) == sorted(map(sorted, keras_surgery.coupled_groups(km)))
    rng = np.random.default_rng(1)
    chosen, keep = {}, {}
    for layer in channels:  # half of every layer, the same half across a coupled group
        first = min(next((g for g in groups if layer in g), {layer}))
        if first not in chosen:
            chosen[first] = sorted(rng.choice(channels[first], channels[first] // 2, replace=False).tolist())
        keep[layer] = chosen[first]
    for g in groups:
        assert len({tuple(keep[m]) for m in g}) == 1
    tp, _ = torch_surgery.prune_torch(tm, keep, example)
    kp, _ = keras_surgery.prune_keras(km, keep)
    assert get_adapter("torch").count_params(tp) == get_adapter("keras").count_params(kp) < params * 0.5
    feats = _features(arch, 2, seed=3)
    yk = arrange(_run(kp, "keras", arch, feats), "N" + output_axes(arch, "keras"), "N" + output_axes(arch, "torch"))
    np.testing.assert_allclose(yk, _run(tp.eval(), "torch", arch, feats), atol=TOL, rtol=0)


def test_resnet_kws_blocks_are_shape_preserving_and_removable():
    arch = arch_spec("resnet-kws")
    tm = build(arch, "torch").eval()
    _randomize_bn(tm)
    shapes = {}
    hooks = [getattr(tm, f"block{b}").register_forward_hook(
        lambda mod, inp, out, b=b: shapes.__setitem__(b, (tuple(inp[0].shape), tuple(out.shape)))) for b in (1, 2, 3)]
    feats = _features(arch, 2)
    _run(tm, "torch", arch, feats)
    for h in hooks:
        h.remove()
    assert len(shapes) == 3 and all(i == o for i, o in shapes.values())
    km_full = build(arch, "keras")
    for b in (1, 2, 3):
        assert (tuple(km_full.get_layer(f"block{b}.conv1").input.shape)
                == tuple(km_full.get_layer(f"block{b}.relu2").output.shape))

    # Block 2 removed: an identity in PyTorch, blocks=(1, 3) in Keras; the other layers keep their names.
    tm.block2 = torch.nn.Identity()
    yt = _run(tm, "torch", arch, feats)
    assert yt.shape == (2, task_of(arch).n_classes)
    short = arch_spec("resnet-kws", blocks=(1, 3))
    km = build(short, "keras")
    assert not any(layer.name.startswith("block2.") for layer in km.layers)
    transfer_weights(tm, km)
    np.testing.assert_allclose(_run(km, "keras", short, feats), yt, atol=TOL, rtol=0)
    assert get_adapter("keras").count_params(km) == resnet_kws.param_count(blocks=(1, 3))


@pytest.mark.parametrize("task,params", [("phones", 5_433_640), ("keywords", 5_428_236)])
def test_speech_encoder_outputs_and_hidden_states(task, params):
    arch = arch_spec("speech-encoder", task)
    args = arch["args"]
    model = build(arch, "torch").eval()
    assert get_adapter("torch").count_params(model) == params == speech_encoder.param_count(**args)
    feats = _features(arch, 2)
    y = _run(model, "torch", arch, feats)
    assert y.shape == (2, *_expected_shape(arch, "torch", time_stride=2))
    x = torch.from_numpy(input_specs(arch, "torch")[0].from_features(feats[0]))
    with torch.no_grad():
        states = model.hidden_states(x)
        n_frames = task_of(arch).inputs[0].shape[1] // 2
        assert len(states) == args["layers"] + 1
        assert all(tuple(s.shape) == (2, n_frames, args["dim"]) for s in states)
        last = states[-1] if task == "phones" else states[-1].mean(dim=1)
        np.testing.assert_allclose(model.head(last).numpy(), model(x).numpy(), atol=1e-6, rtol=0)
    names = dict(model.named_modules())
    for i in range(args["layers"]):
        for part in ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.out_proj",
                     "feed_forward.fc1", "feed_forward.fc2"):
            assert isinstance(names[f"encoder.layers.{i}.{part}"], torch.nn.Linear)


def test_speech_encoder_is_torch_only_and_its_output_axes_follow_the_task():
    entry = get_entry("speech-encoder")
    assert set(entry.builders) == {"torch"} and entry.tasks == ("phones", "keywords")
    assert output_axes(arch_spec("speech-encoder", "phones"), "torch") == "TK"
    assert output_axes(arch_spec("speech-encoder", "keywords"), "torch") == "K"
    with pytest.raises(EdgepruneError, match="no keras implementation"):
        build(arch_spec("speech-encoder"), "keras")
    with pytest.raises(EdgepruneError, match="serves the task"):
        arch_spec("speech-encoder", "enhancement")


def test_speech_encoder_heads_are_removed_by_slicing_the_projections():
    arch = arch_spec("speech-encoder", "phones", layers=2, dropout=0.0)
    model = build(arch, "torch").eval()
    attn = model.encoder.layers[0].attention
    hd, drop = attn.head_dim, 1
    rows = [i for i in range(attn.num_heads * hd) if not drop * hd <= i < (drop + 1) * hd]
    x = torch.from_numpy(_features(arch, 2)[0])
    with torch.no_grad():
        attn.out_proj.weight[:, drop * hd:(drop + 1) * hd] = 0  # the head's contribution, zeroed
        expected = model(x)
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            proj.weight = torch.nn.Parameter(proj.weight[rows])
            proj.bias = torch.nn.Parameter(proj.bias[rows])
        attn.out_proj.weight = torch.nn.Parameter(attn.out_proj.weight[:, rows])
        attn.num_heads -= 1
        got = model(x)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("task", ["phones", "keywords"])
def test_speech_encoder_exports_to_onnx_and_matches(task, tmp_path):
    import onnx
    import onnxruntime as ort

    arch = arch_spec("speech-encoder", task, layers=2)
    model = build(arch, "torch").eval()
    spec = input_specs(arch, "torch")[0]
    x = spec.from_features(_features(arch, 2)[0])
    path = tmp_path / "encoder.onnx"
    torch.onnx.export(model, (torch.from_numpy(x),), str(path), dynamo=False, opset_version=17,
                      input_names=[spec.name], output_names=["logits"])
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert not ops & {"Erf", "Gelu", "TopK", "ReduceMedian", "Attention", "STFT"}, ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {spec.name: x})
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)
