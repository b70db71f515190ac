"""Whole-layer removal (the "layers" transform) for transformer encoders: speech-encoder and the Hugging Face
Wav2Vec2 / HuBERT encoders (hf-wav2vec2, hf-hubert) built from a config.

Every bound is an exact equivalence up to float32 rounding: a model without layers 2, 3 and 5 computes what its
parent computes when the parent's embedding is run, then only its kept layers, then its head; a checkpoint loads
to the model that was saved; the exported files compute the PyTorch model (the exporter's parity checks).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeprune import checkpoint
from edgeprune.errors import EdgepruneError
from edgeprune.models import arch_spec, build
from edgeprune.models.encoder import encoder_layers, hidden_states
from edgeprune.models.hf_encoder import param_count
from edgeprune.models.registry import get_entry, input_specs, task_of
from edgeprune.pruning import transforms
from edgeprune.pruning.layer_surgery import drop_layers
from edgeprune.pruning.transforms import Transform

N_LAYERS, DROP = 6, [2, 3, 5]
SIZES = {"layers": N_LAYERS, "dim": 32, "heads": 2, "ffn": 64}  # tiny, and the same stack in all three
TINY = {"speech-encoder": {**SIZES, "pos_kernel": 16, "pos_groups": 4},
        "hf-wav2vec2": {**SIZES, "conv_pos": 16, "conv_pos_groups": 4},
        "hf-hubert": {**SIZES, "conv_pos": 16, "conv_pos_groups": 4}}
ENCODERS = list(TINY)


def _tiny(name: str, task: str = "phones") -> tuple[dict, torch.nn.Module]:
    torch.manual_seed(0)
    arch = arch_spec(name, task, **TINY[name])
    return arch, build(arch, "torch").eval()


def _logmel(arch: dict, n: int = 2, seed: int = 0) -> torch.Tensor:
    """Random log-mel inputs in the model's layout [N, 40, T]."""
    feature = task_of(arch).inputs[0]
    x = np.random.default_rng(seed).standard_normal((n, *feature.shape)).astype(np.float32)
    return torch.from_numpy(input_specs(arch, "torch")[0].from_features(x))


def _config(model):
    return getattr(model.encoder, "config", None)


@pytest.mark.parametrize("name", ["hf-wav2vec2", "hf-hubert"])
@pytest.mark.parametrize("task", ["phones", "keywords"])
def test_hf_encoders_are_exportable_configs_with_layer_by_layer_hidden_states(name, task):
    arch, model = _tiny(name, task)
    assert set(get_entry(name).builders) == {"torch"} and get_entry(name).tasks == ("phones", "keywords")
    assert sum(p.numel() for p in model.parameters()) == param_count(**arch["args"])
    config = _config(model)
    assert (config.hidden_act, config.feat_extract_activation) == ("gelu_pytorch_tanh", "gelu_pytorch_tanh")
    assert config._attn_implementation == "eager" and config.layerdrop == 0.0 and not config.do_stable_layer_norm
    conv = model.encoder.pos_conv_embed.conv
    assert not hasattr(conv, "parametrizations") and isinstance(conv.weight, torch.nn.Parameter)
    x = _logmel(arch)
    entering = []
    hook = encoder_layers(model)[0].register_forward_pre_hook(lambda module, args: entering.append(args[0]))
    with torch.no_grad():
        states = hidden_states(model, x)
        hook.remove()
        assert len(states) == N_LAYERS + 1 and all(s.shape == (2, x.shape[2] // 2, SIZES["dim"]) for s in states)
        torch.testing.assert_close(states[0], entering[0], atol=0, rtol=0)  # index 0: what enters layer 1
        for i, layer in enumerate(encoder_layers(model)):
            torch.testing.assert_close(layer(states[i]), states[i + 1], atol=1e-6, rtol=0)
        last = states[-1] if task == "phones" else states[-1].mean(dim=1)
        torch.testing.assert_close(model.head(last), model(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ENCODERS)
def test_dropped_layers_compute_the_parents_kept_layers(name):
    arch, parent = _tiny(name)
    x = _logmel(arch)
    parent_config = _config(parent)
    with torch.no_grad():
        before = parent(x)
        parent_states = hidden_states(parent, x)
        child = drop_layers(parent, DROP).eval()
        # by hand: the parent's embedding (hidden state 0), its layers 1, 4 and 6, its head
        h = parent_states[0]
        for i in (1, 4, 6):
            h = encoder_layers(parent)[i - 1](h)
        torch.testing.assert_close(child(x), parent.head(h), atol=1e-5, rtol=0)
        child_states = hidden_states(child, x)
        torch.testing.assert_close(parent(x), before, atol=0, rtol=0)
    assert len(encoder_layers(parent)) == N_LAYERS and len(encoder_layers(child)) == N_LAYERS - len(DROP)
    assert len(child_states) == N_LAYERS - len(DROP) + 1
    torch.testing.assert_close(child_states[0], parent_states[0], atol=0, rtol=0)
    assert all(a is not b for a, b in zip(child.parameters(), parent.parameters()))
    if parent_config is not None:
        config = _config(child)
        assert parent_config.num_hidden_layers == N_LAYERS and config.num_hidden_layers == N_LAYERS - len(DROP)
        assert config is not parent_config
        holders = [m for m in child.modules() if hasattr(m, "config")]
        assert len(holders) > 1 and all(m.config is config for m in holders)
        assert all(m.config is parent_config for m in parent.modules() if hasattr(m, "config"))


@pytest.mark.parametrize("name", ENCODERS)
def test_the_layers_transform_saves_and_replays(name, tmp_path):
    arch, parent = _tiny(name)
    t = Transform("layers", {"drop": DROP})
    child, notes = transforms.apply(parent, "torch", arch, t)
    assert notes[1] == f"encoder.layers: dropped {DROP} of {N_LAYERS}, kept [1, 4, 6] (now 1..3)"
    checkpoint.save(tmp_path / "ck", child, "torch", arch, classes=None, transforms=[t])
    loaded = checkpoint.load(tmp_path / "ck")
    assert loaded.arch["args"]["layers"] == N_LAYERS  # the parent architecture, replayed
    assert len(encoder_layers(loaded.model)) == N_LAYERS - len(DROP)
    if _config(loaded.model) is not None:
        assert _config(loaded.model).num_hidden_layers == N_LAYERS - len(DROP)
    x = _logmel(arch, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(x), child(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("drop,message", [
    ([], "non-empty list"), ([0], r"\[0\] outside 1..6"), ([N_LAYERS + 1], r"\[7\] outside 1..6"),
    (list(range(1, N_LAYERS + 1)), "all 6 layers listed"), ([2, 3, 2], r"\[2\] listed more than once"),
    ([1.0], "not integers")])
def test_bad_drop_lists_are_one_clear_error(drop, message):
    arch, model = _tiny("hf-hubert")
    with pytest.raises(EdgepruneError, match=message):
        drop_layers(model, drop)
    with pytest.raises(EdgepruneError, match=message):
        transforms.apply(model, "torch", arch, Transform("layers", {"drop": drop}))
    assert len(encoder_layers(model)) == N_LAYERS


def test_models_without_an_encoder_layer_list_are_refused():
    arch = arch_spec("resnet-kws")
    conv = build(arch, "torch")
    with pytest.raises(EdgepruneError, match=r"has no encoder layer list \(encoder.layers\)"):
        transforms.apply(conv, "torch", arch, Transform("layers", {"drop": [1]}))
    with pytest.raises(EdgepruneError, match="does not give per-layer hidden states"):
        hidden_states(conv, torch.zeros(1, 1, 40, 100))
    with pytest.raises(EdgepruneError, match="layer removal is implemented for PyTorch models"):
        transforms.apply(object(), "keras", arch, Transform("layers", {"drop": [1]}))


def test_a_layer_dropped_hubert_exports_to_onnx_and_tflite(tmp_path):
    """The exportable config at work: no Erf (tanh GELU), no SDPA (eager attention), a plain positional conv
    weight; the exporter accepts a file only when it computes the PyTorch model on held-out inputs."""
    import onnx

    from edgeprune.export import export

    arch, parent = _tiny("hf-hubert")
    t = Transform("layers", {"drop": DROP})
    child, _ = transforms.apply(parent, "torch", arch, t)
    checkpoint.save(tmp_path / "ck", child, "torch", arch, classes=None, transforms=[t])
    feature = task_of(arch).inputs[0]
    rng = np.random.default_rng(2)
    calib, test = (rng.standard_normal((n, *feature.shape)).astype(np.float32) for n in (16, 8))
    manifest = export(tmp_path / "ck", tmp_path / "out", quant="fp32,int8", calib=calib, eval_x=test,
                      progress=False)
    assert {(a["format"], a["precision"]) for a in manifest["artifacts"]} == {
        (f, q) for f in ("onnx", "tflite") for q in ("fp32", "int8")}
    for a in manifest["artifacts"]:
        assert a["passed"], (a["file"], a["failures"])
    onnx_file = next(a["file"] for a in manifest["artifacts"] if a["format"] == "onnx" and a["precision"] == "fp32")
    ops = {node.op_type for node in onnx.load(str(tmp_path / "out" / "ck" / onnx_file)).graph.node}
    assert not ops & {"Erf", "Gelu", "IsNaN", "Where", "Attention"}, ops


def test_a_speech_encoder_exports_at_float32_alone(tmp_path):
    """onnx2tf's SavedModel step rejects the positional conv's tensor name when only float32 is asked for, and
    advises signature defs: the exporter converts once more with them instead of failing."""
    from edgeprune.export import export

    arch, model = _tiny("speech-encoder")
    checkpoint.save(tmp_path / "ck", model, "torch", arch, classes=None)
    feature = task_of(arch).inputs[0]
    rng = np.random.default_rng(3)
    calib, test = (rng.standard_normal((n, *feature.shape)).astype(np.float32) for n in (8, 8))
    manifest = export(tmp_path / "ck", tmp_path / "out", formats="tflite", quant="fp32", calib=calib, eval_x=test,
                      progress=False)
    (art,) = manifest["artifacts"]
    assert art["passed"] and art["parity"]["cosine"] >= 0.9999
