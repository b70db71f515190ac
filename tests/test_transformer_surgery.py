"""Inside-the-layer surgery on transformer encoders: the "heads", "ffn" and "low_rank" transforms, for speech-encoder
and the Hugging Face Wav2Vec2 / HuBERT encoders built from a config.

Every bound is an exact equivalence up to float32 rounding: removing heads computes what the parent computes with
those heads' contexts zeroed before out_proj; removing FFN units computes what the parent computes with those units'
fc1 rows and biases zeroed (tanh GELU of 0 is 0); a full-rank SVD factorisation is the layer itself and a rank-r one
is the best rank-r approximation (Eckart-Young: its Frobenius error is the norm of the dropped singular values); a
checkpoint loads to the model that was saved; the exported files compute the PyTorch model (the exporter's parity).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from edgeprune import checkpoint
from edgeprune.errors import EdgepruneError
from edgeprune.models import arch_spec, build
from edgeprune.models.encoder import encoder_layers
from edgeprune.models.registry import input_specs, task_of
from edgeprune.pruning import transforms
from edgeprune.pruning.transformer_surgery import (
    factorize,
    keep_ffn_units,
    rank_for_budget,
    rank_for_energy,
    remove_heads,
)
from edgeprune.pruning.transforms import Transform

N_LAYERS, HEADS, HEAD_DIM, FFN = 3, 4, 8, 64
SIZES = {"layers": N_LAYERS, "dim": HEADS * HEAD_DIM, "heads": HEADS, "ffn": FFN}
TINY = {"speech-encoder": {**SIZES, "pos_kernel": 16, "pos_groups": 4},
        "hf-wav2vec2": {**SIZES, "conv_pos": 16, "conv_pos_groups": 4},
        "hf-hubert": {**SIZES, "conv_pos": 16, "conv_pos_groups": 4}}
# layer 2 is not listed: it keeps every head and unit
KEEP_HEADS = {"1": [0, 2], "3": [3]}
KEEP_UNITS = {"1": list(range(0, FFN, 3)), "3": [5, 9, 60]}
FFN_NAMES = {"speech-encoder": ("fc1", "fc2"), "hf-wav2vec2": ("intermediate_dense", "output_dense"),
             "hf-hubert": ("intermediate_dense", "output_dense")}


def _tiny(name: str, task: str = "phones") -> tuple[dict, torch.nn.Module]:
    torch.manual_seed(0)
    arch = arch_spec(name, task, **TINY[name])
    model = build(arch, "torch").eval()
    # speech-encoder's BERT-style start (weights N(0, 0.02), zero biases) leaves each head's share of the output
    # tiny and the biases untested: unit-scale weights and non-zero biases make a wrongly sliced row or bias show
    # far above the bounds
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, module.in_features ** -0.5)
                module.bias.normal_(0.0, 0.5)
    return arch, model


def _logmel(arch: dict, n: int = 2, seed: int = 0) -> torch.Tensor:
    """Random log-mel inputs in the model's layout [N, 40, T]."""
    feature = task_of(arch).inputs[0]
    x = np.random.default_rng(seed).standard_normal((n, *feature.shape)).astype(np.float32)
    return torch.from_numpy(input_specs(arch, "torch")[0].from_features(x))


def _ffn(model: torch.nn.Module, name: str, layer: int) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    block = encoder_layers(model)[layer - 1].feed_forward
    first, second = FFN_NAMES[name]
    return getattr(block, first), getattr(block, second)


@pytest.mark.parametrize("name", ["speech-encoder", "hf-wav2vec2"])
def test_removing_heads_equals_masking_their_context(name):
    arch, parent = _tiny(name)
    x = _logmel(arch)
    masked = copy.deepcopy(parent)
    with torch.no_grad():
        before = parent(x)
        for key, kept in KEEP_HEADS.items():
            out_proj = encoder_layers(masked)[int(key) - 1].attention.out_proj
            for h in set(range(HEADS)) - set(kept):  # out_proj sees nothing of head h
                out_proj.weight[:, h * HEAD_DIM:(h + 1) * HEAD_DIM] = 0
        child = remove_heads(parent, KEEP_HEADS)
        torch.testing.assert_close(child(x), masked(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(parent(x), before, atol=0, rtol=0)
    for layer, (parent_layer, child_layer) in enumerate(zip(encoder_layers(parent), encoder_layers(child)), start=1):
        heads = len(KEEP_HEADS.get(str(layer), range(HEADS)))
        attention = child_layer.attention
        assert (attention.num_heads, attention.head_dim) == (heads, HEAD_DIM)
        assert attention.q_proj.weight.shape == attention.k_proj.weight.shape == (heads * HEAD_DIM, SIZES["dim"])
        assert attention.v_proj.bias.shape == (heads * HEAD_DIM,)
        assert attention.out_proj.weight.shape == (SIZES["dim"], heads * HEAD_DIM)
        assert parent_layer.attention.num_heads == HEADS
        assert parent_layer.attention.q_proj.weight.shape == (HEADS * HEAD_DIM, SIZES["dim"])
    assert all(a is not b for a, b in zip(child.parameters(), parent.parameters()))


@pytest.mark.parametrize("name", ["speech-encoder", "hf-wav2vec2"])
def test_removing_ffn_units_equals_zeroing_them(name):
    arch, parent = _tiny(name)
    x = _logmel(arch)
    masked = copy.deepcopy(parent)
    with torch.no_grad():
        before = parent(x)
        for key, kept in KEEP_UNITS.items():
            fc1, _ = _ffn(masked, name, int(key))
            removed = sorted(set(range(FFN)) - set(kept))
            fc1.weight[removed] = 0
            fc1.bias[removed] = 0
        child = keep_ffn_units(parent, KEEP_UNITS)
        torch.testing.assert_close(child(x), masked(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(parent(x), before, atol=0, rtol=0)
    for layer in range(1, N_LAYERS + 1):
        units = len(KEEP_UNITS.get(str(layer), range(FFN)))
        fc1, fc2 = _ffn(child, name, layer)
        assert fc1.weight.shape == (units, SIZES["dim"]) and fc1.bias.shape == (units,)
        assert fc2.weight.shape == (SIZES["dim"], units)
        assert _ffn(parent, name, layer)[0].out_features == FFN


@pytest.mark.parametrize("name", ["speech-encoder", "hf-wav2vec2"])
def test_svd_at_full_rank_is_the_layer_itself(name):
    arch, parent = _tiny(name)
    fc1 = f"encoder.layers.1.feed_forward.{FFN_NAMES[name][0]}"
    ranks = {fc1: min(SIZES["dim"], FFN), "encoder.layers.0.attention.v_proj": SIZES["dim"]}
    x = _logmel(arch)
    with torch.no_grad():
        child = factorize(parent, ranks)
        torch.testing.assert_close(child(x), parent(x), atol=1e-5, rtol=0)
    factors = child.get_submodule(fc1)
    assert isinstance(factors, torch.nn.Sequential) and factors[0].bias is None
    torch.testing.assert_close(factors[1].bias, parent.get_submodule(fc1).bias, atol=0, rtol=0)
    assert isinstance(parent.get_submodule(fc1), torch.nn.Linear)


@pytest.mark.parametrize("rank", [1, 5, 20])
def test_svd_at_rank_r_is_the_best_rank_r_approximation(rank):
    _, parent = _tiny("speech-encoder")
    name = "encoder.layers.0.feed_forward.fc2"  # 64 -> 32
    weight = parent.get_submodule(name).weight.detach().double().numpy()
    s = np.linalg.svd(weight, compute_uv=False)
    factors = factorize(parent, {name: rank}).get_submodule(name)
    assert (factors[0].weight.shape, factors[1].weight.shape) == ((rank, FFN), (SIZES["dim"], rank))
    product = (factors[1].weight.detach().double() @ factors[0].weight.detach().double()).numpy()
    np.testing.assert_allclose(np.linalg.norm(weight - product), np.sqrt(np.sum(s[rank:] ** 2)), atol=1e-5)


def test_rank_for_energy_on_hand_worked_matrices():
    # singular values 3, 2, 1 in any order and under any rotation: squared 9, 4, 1 of 14
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((5, 5)))
    weight = q[:, :3] @ np.diag([1.0, 3.0, 2.0])
    assert [rank_for_energy(weight, e) for e in (0.5, 9 / 14, 0.65, 13 / 14, 0.93, 1.0)] == [1, 1, 2, 2, 3, 3]
    assert rank_for_energy(np.zeros((4, 6)), 0.9) == 1
    with pytest.raises(EdgepruneError, match=r"energy 0 outside \(0, 1\]"):
        rank_for_energy(weight, 0)


def test_rank_for_budget_on_hand_worked_sizes():
    # r * (in + out) <= fraction * in * out
    assert rank_for_budget(64, 64, 0.5) == 16  # 16 * 128 = 2048 = 0.5 * 4096
    assert rank_for_budget(32, 96, 0.25) == 6  # 6 * 128 = 768 = 0.25 * 3072
    assert rank_for_budget(100, 100, 0.3) == 15  # 15 * 200 = 3000 = 0.3 * 10000, the bound itself
    assert rank_for_budget(64, 64, 0.001) == 1  # at least 1
    assert rank_for_budget(32, 96, 10.0) == 32  # at most min(in, out)


STACKED = [Transform("heads", {"keep": KEEP_HEADS}), Transform("ffn", {"keep": KEEP_UNITS})]


@pytest.mark.parametrize("kind,params", [
    ("heads", {"keep": KEEP_HEADS}), ("ffn", {"keep": KEEP_UNITS}),
    ("low_rank", {"ranks": {"encoder.layers.0.feed_forward.fc1": 5, "encoder.layers.2.attention.out_proj": 3}})])
def test_each_kind_saves_and_replays(kind, params, tmp_path):
    arch, parent = _tiny("speech-encoder")
    t = Transform(kind, params)
    child, notes = transforms.apply(parent, "torch", arch, t)
    assert notes[0].startswith("parameters ") and len(notes) == 1 + len(next(iter(params.values())))
    checkpoint.save(tmp_path / "ck", child, "torch", arch, classes=None, transforms=[t])
    loaded = checkpoint.load(tmp_path / "ck").model.eval()
    x = _logmel(arch, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), child(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", list(TINY))
def test_all_three_kinds_stacked_save_and_replay(name, tmp_path):
    arch, parent = _tiny(name)
    first, _ = FFN_NAMES[name]
    # heads, then units, then factors of what they left: a 16 -> 32 q_proj and a 32 -> 3 fc1
    low_rank = Transform("low_rank", {"ranks": {"encoder.layers.0.attention.q_proj": 4,
                                                f"encoder.layers.2.feed_forward.{first}": 2}})
    stack = [*STACKED, low_rank]
    model = parent
    for t in stack:
        model, _ = transforms.apply(model, "torch", arch, t)
    checkpoint.save(tmp_path / "ck", model, "torch", arch, classes=None, transforms=stack)
    loaded = checkpoint.load(tmp_path / "ck").model.eval()
    assert encoder_layers(loaded)[0].attention.num_heads == len(KEEP_HEADS["1"])
    assert isinstance(loaded.get_submodule("encoder.layers.0.attention.q_proj"), torch.nn.Sequential)
    x = _logmel(arch, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind,params,message", [
    ("heads", {"keep": {"2": []}},
     r"would remove every head of layer 2; drop the layer instead \(edgeprune prune-layers\)"),
    ("heads", {"keep": {"9": [0]}}, r"layer 9 outside 1..3 \(the encoder has 3 layers\)"),
    ("heads", {"keep": {"1": [0, 4]}}, r"heads to keep in layer 1: \[4\] outside 0..3"),
    ("heads", {"keep": {"one": [0]}}, "layer 'one' is not a 1-based layer number"),
    ("ffn", {"keep": {"1": []}}, "would remove every unit of layer 1"),
    ("ffn", {"keep": {"0": [1]}}, "layer 0 outside 1..3"),
    ("low_rank", {"ranks": {"encoder.layers.0.feed_forward.fc1": 0}}, "rank 0 for '.*fc1' below 1"),
    ("low_rank", {"ranks": {"encoder.layers.0.feed_forward.fc1": 33}},
     r"rank 33 for '.*fc1' above the layer's size min\(in, out\) = 32"),
    ("low_rank", {"ranks": {"encoder.layers.0.feed_forward.fc9": 2}}, "no module 'encoder.layers.0.feed_forward.fc9'"),
    ("low_rank", {"ranks": {"encoder.pos_conv": 2}}, "'encoder.pos_conv' is a Conv1d, expected an nn.Linear")])
def test_bad_params_are_one_clear_error(kind, params, message):
    arch, model = _tiny("speech-encoder")
    with pytest.raises(EdgepruneError, match=message):
        transforms.apply(model, "torch", arch, Transform(kind, params))
    assert encoder_layers(model)[0].attention.num_heads == HEADS
    assert isinstance(model.get_submodule("encoder.layers.0.feed_forward.fc1"), torch.nn.Linear)


def test_slicing_a_factorised_linear_and_other_models_are_refused():
    arch, model = _tiny("speech-encoder")
    factored, _ = transforms.apply(model, "torch", arch, Transform("low_rank", {
        "ranks": {"encoder.layers.0.attention.q_proj": 4}}))
    with pytest.raises(EdgepruneError, match=r"attention.q_proj is a Sequential, expected an nn.Linear \(slice heads"):
        remove_heads(factored, {"1": [0]})
    conv_arch = arch_spec("resnet-kws")
    conv = build(conv_arch, "torch")
    for t in (Transform("heads", {"keep": {"1": [0]}}), Transform("ffn", {"keep": {"1": [0]}}),
              Transform("low_rank", {"ranks": {"fc": 1}})):
        with pytest.raises(EdgepruneError, match=r"has no encoder layer list \(encoder.layers\)"):
            transforms.apply(conv, "torch", conv_arch, t)
    with pytest.raises(EdgepruneError, match="head removal is implemented for PyTorch models"):
        transforms.apply(object(), "keras", arch, STACKED[0])


def test_a_head_and_ffn_pruned_speech_encoder_exports_to_tflite(tmp_path):
    """The exporter accepts a file only when it computes the PyTorch model on held-out inputs: the sliced
    projections and the updated num_heads trace into a graph LiteRT runs, in float32 and int8."""
    from edgeprune.export import export

    arch, parent = _tiny("speech-encoder")
    # at least two heads per layer: onnx2tf fails on the [N, T, 1, head_dim] reshape of a one-head layer
    stack = [Transform("heads", {"keep": {"1": [0, 2], "3": [1, 3]}}), STACKED[1]]
    model = parent
    for t in stack:
        model, _ = transforms.apply(model, "torch", arch, t)
    checkpoint.save(tmp_path / "ck", model, "torch", arch, classes=None, transforms=stack)
    feature = task_of(arch).inputs[0]
    rng = np.random.default_rng(2)
    calib, test = (rng.standard_normal((n, *feature.shape)).astype(np.float32) for n in (16, 8))
    manifest = export(tmp_path / "ck", tmp_path / "out", quant="fp32,int8", calib=calib, eval_x=test,
                      progress=False)
    assert {("tflite", q) for q in ("fp32", "int8")} <= {(a["format"], a["precision"]) for a in manifest["artifacts"]}
    for a in manifest["artifacts"]:
        assert a["passed"], (a["file"], a["failures"])
