"""`edgeprune.prune` on models users bring: five public architectures written from their published descriptions
(examples/own_models.py), each pruned in one call at a ratio and at a MAC budget, coupled groups and all; exported
with the network unreachable; run in the suite; saved as user checkpoints that reload and replay."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edgeprune
from edgeprune import checkpoint
from edgeprune.cli import main
from edgeprune.errors import EdgepruneError
from edgeprune.frameworks import framework_of
from edgeprune.models.measure import measure

from test_benchmarks import FAST, suite

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))
import own_models as om  # noqa: E402

MODELS = list(om.BUILDERS)
# the layer each model's classifier output comes from (its width is the number of classes)
OUTPUT_LAYER = {"ds_cnn": "fc", "mobilenet": "logits", "efficientnet": "predictions", "resnet": "fc",
                "conv1d_concat": "fc"}
# coupled producers the published designs create: residual adds with 1x1 shortcuts; the squeeze-excite multiply
COUPLED = {"resnet": [{"layers.1.conv2", "layers.1.shortcut.0"}, {"layers.2.conv2", "layers.2.shortcut.0"}],
           "efficientnet": [{"block1a_expand", "block1a_se_expand"}, {"block2a_project", "block2b_project"}]}


def _build(name: str):
    torch.manual_seed(0)
    import keras

    keras.utils.set_random_seed(0)
    return om.BUILDERS[name]()


def _examples(name: str, n: int = 1, seed: int = 0):
    spec = om.input_spec(name)
    return np.random.default_rng(seed).normal(-4, 2, size=(n, *spec.shape)).astype(np.float32)


def _run(model, x: np.ndarray) -> np.ndarray:
    if framework_of(model) == "torch":
        model.eval()
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    return np.asarray(model(x, training=False))


@pytest.fixture(scope="module")
def pruned():
    """Each model and its two one-call prunes."""
    out = {}
    for name in MODELS:
        model = _build(name)
        ex = torch.from_numpy(_examples(name)) if framework_of(model) == "torch" else None
        out[name] = (model, edgeprune.prune(model, ex, "l1", edgeprune.Ratio(0.3)),
                     edgeprune.prune(model, ex, "l1", edgeprune.Budget(macs=0.5)))
    return out


@pytest.mark.parametrize("name", MODELS)
def test_one_call_prunes_at_a_ratio_and_at_a_mac_budget(pruned, name):
    model, by_ratio, by_budget = pruned[name]
    x = _examples(name, 3)
    shapes = [om.input_spec(name).shape]
    before = measure(model, framework_of(model), input_shapes=shapes)
    for result in (by_ratio, by_budget):
        after = measure(result.model, framework_of(model), input_shapes=shapes)
        assert after["params"] < before["params"] and after["macs"] < before["macs"]
        assert _run(result.model, x).shape == _run(model, x).shape  # same classes out
        # the classifier that feeds the output is left out, and said so
        assert OUTPUT_LAYER[name] not in result.keep
        assert any(n.startswith(f"left out '{OUTPUT_LAYER[name]}'") for n in result.notes)
        # coupled members keep identical channels
        for group in result.groups:
            assert len({tuple(result.keep[m]) for m in group}) == 1, group
        for expected in COUPLED.get(name, []):
            assert any(expected <= set(g) for g in result.groups), (expected, result.groups)
    # a ratio of 0.3 removes floor(0.3 C) channels of every group
    for layer, keep in by_ratio.keep.items():
        group = next((g for g in by_ratio.groups if layer in g), [layer])
        width = next(r["channels_before"] for r in by_ratio.table if r["layer"] == group[0])
        assert len(keep) == width - int(0.3 * width + 1e-9), layer
    # the MAC budget is met within one percentage point of the parent
    macs = measure(by_budget.model, framework_of(model), input_shapes=shapes)["macs"]
    assert abs(macs / before["macs"] - 0.5) <= 0.01


def test_ignored_layers_and_bad_targets_are_honoured_or_refused():
    model = _build("resnet")
    ex = torch.from_numpy(_examples("resnet"))
    result = edgeprune.prune(model, ex, "l1", edgeprune.Ratio(0.5), ignored_layers=[model.layers[1].shortcut[0]])
    assert "layers.1.conv2" not in result.keep and "layers.1.shortcut.0" not in result.keep
    assert "layers.1.conv1" in result.keep
    with pytest.raises(EdgepruneError, match="coupled layers layers.1.conv2, layers.1.shortcut.0 were given different"):
        edgeprune.prune(model, ex, target={"layers.1.conv2": [0, 1], "layers.1.shortcut.0": [2, 3]})
    with pytest.raises(EdgepruneError, match="layer 'fc' cannot be pruned: its channels reach the model's output"):
        edgeprune.prune(model, ex, target={"fc": [0]})
    with pytest.raises(EdgepruneError, match="needs example inputs"):
        edgeprune.prune(model, None, "l1", edgeprune.Ratio(0.3))
    with pytest.raises(EdgepruneError, match="exactly one of params= or macs="):
        edgeprune.prune(model, ex, "l1", edgeprune.Budget())
    from edgeprune.pruning.targets import Target

    keras_model = _build("efficientnet")
    with pytest.raises(EdgepruneError, match="the 'passive' rule keeps each layer's own filters; coupled layers"):
        edgeprune.prune(keras_model, criterion="passive", target=Target(rule=True))


# --- export with the network unreachable, then the suite ----------------------------------------------------

OFFLINE_SCRIPT = """
import json, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[2])
import own_models as om
import edgeprune
from edgeprune.export import export_model
from edgeprune.models import arch_spec, build, input_specs

out, results = sys.argv[1], {}
rng = np.random.default_rng(0)
no_top1 = {"int8_top1": None, "dynamic_top1": None}  # random-init classifiers: near-uniform outputs
for name in om.BUILDERS:
    torch.manual_seed(0)
    model = om.BUILDERS[name]()
    spec = om.input_spec(name)
    x = rng.normal(-4, 2, size=(40, *spec.shape)).astype(np.float32)
    ex = torch.from_numpy(x[:1]) if name in ("resnet", "conv1d_concat") else None
    small = edgeprune.prune(model, ex, "l1", edgeprune.Ratio(0.3)).model
    fmts = "tflite,onnx" if name in ("resnet", "conv1d_concat") else "tflite"
    m = export_model(small, spec, out, name=name, formats=fmts, quant="fp32,int8", calib=x[:24], eval_x=x[24:],
                     thresholds=no_top1, progress=False)
    results[name] = [a["passed"] for a in m["artifacts"]]
# a 1-channel input (the DCASE baseline) and two inputs (se-crn), registered models
for model_name, task in (("dcase2021_baseline", "scenes"), ("se-crn", "enhancement")):
    arch = arch_spec(model_name, task)
    specs = input_specs(arch, "torch")
    torch.manual_seed(0)
    model = build(arch, "torch")
    data = [rng.normal(-4, 2, size=(12, *s.shape)).astype(np.float32) for s in specs]
    m = export_model(model, specs, out, name=model_name, quant="fp32,int8", calib=[d[:8] for d in data],
                     eval_x=[d[8:] for d in data], task=task, thresholds=no_top1, progress=False)
    results[model_name] = [a["passed"] for a in m["artifacts"]]
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def offline_bundles(tmp_path_factory):
    """Every pruned model exported inside a network namespace with no network (unshare -n, as root)."""
    out = tmp_path_factory.mktemp("offline")
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", OFFLINE_SCRIPT, str(out), str(REPO / "examples")],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS "))
    return out, json.loads(line[len("RESULTS "):])


def test_export_never_reaches_the_network(offline_bundles):
    """onnx2tf downloads image samples for its checks when a 3-channel input comes without samples of its own;
    edgeprune always hands it real ones, so a 3-channel, a 1-channel and a two-input model export offline."""
    _, results = offline_bundles
    assert set(results) == set(MODELS) | {"dcase2021_baseline", "se-crn"}
    for name, passed in results.items():
        assert passed and all(passed), name
    assert len(results["resnet"]) == 4 and len(results["se-crn"]) == 4  # tflite and onnx, fp32 and int8


def test_pruned_bundles_run_in_the_suite(offline_bundles, tmp_path):
    out, _ = offline_bundles
    bundles = [str(out / name) for name in MODELS]
    code, _, stderr = suite(*bundles, *FAST, "--xnnpack", "on", "--out", str(tmp_path / "run"))
    assert code == 0, stderr
    results = json.loads((tmp_path / "run.json").read_text())["results"]
    assert len(results) == 2 * 3 + 2 * 4 and all(r["ok"] for r in results)
    full = {name: measure(_build(name), framework_of(_build(name)), input_shapes=[om.input_spec(name).shape])["params"]
            for name in MODELS}
    for r in results:  # the manifest's parameters are the pruned model's
        assert r["params"] < full[Path(r["file"]).parent.name]


# --- user checkpoints ---------------------------------------------------------------------------------------

def test_user_checkpoints_reload_and_replay(tmp_path):
    from edgeprune.pruning.run import prune_checkpoint, score_checkpoint
    from edgeprune.pruning.targets import Target

    x = {name: _examples(name, 4) for name in ("resnet", "ds_cnn")}
    torch_model = _build("resnet")
    checkpoint.save_model(tmp_path / "resnet", torch_model, om.input_spec("resnet"), "keywords",
                          builder="own_models:resnet")
    keras_model = _build("ds_cnn")
    checkpoint.save_model(tmp_path / "ds", keras_model, om.input_spec("ds_cnn"), "keywords")  # its Keras config
    for name, path in (("resnet", tmp_path / "resnet"), ("ds_cnn", tmp_path / "ds")):
        ckpt = checkpoint.load(path)
        np.testing.assert_allclose(_run(ckpt.model, x[name]), _run(torch_model if name == "resnet" else keras_model,
                                                                    x[name]), atol=1e-6)
        first = prune_checkpoint(ckpt, Target(ratio=0.3), score_checkpoint(ckpt, "l1"), tmp_path / f"{name}-1")
        again = checkpoint.load(tmp_path / f"{name}-1")
        second = prune_checkpoint(again, Target(ratio=0.3), score_checkpoint(again, "l1"), tmp_path / f"{name}-2")
        replayed = checkpoint.load(tmp_path / f"{name}-2")
        assert len(replayed.transforms) == 2 and replayed.transforms[0].record["groups"] == first.groups
        np.testing.assert_allclose(_run(replayed.model, x[name]), _run(second.model, x[name]), atol=1e-5)
    # the CLI works on them too, with the data of the task they were saved for
    assert main(["info", str(tmp_path / "ds_cnn-2")]) == 0
    assert main(["eval", str(tmp_path / "ds_cnn-2"), "--profile", "tiny", "--out", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 48
    assert main(["export", str(tmp_path / "ds_cnn-2"), "--profile", "tiny", "--quant", "fp32", "--calib", "8",
                 "--out", str(tmp_path / "export")]) == 0
    assert json.loads((tmp_path / "export" / "ds_cnn-2" / "manifest.json").read_text())["artifacts"][0]["passed"]
    assert main(["prune", str(tmp_path / "resnet"), "--criterion", "l2", "--budget", "macs=0.6", "--ignore", "conv1",
                 "--out", str(tmp_path / "cli")]) == 0
    spec = json.loads((tmp_path / "cli" / "spec.json").read_text())
    assert spec["arch"]["model"] == "own_models:resnet" and "conv1" not in spec["transforms"][0]["params"]["keep"]


@pytest.mark.parametrize("call, message", [
    (lambda p: checkpoint.save_model(p, _build("resnet"), om.input_spec("resnet"), "keywords"),
     "a PyTorch model is rebuilt by a function: give builder='module:function'"),
    (lambda p: checkpoint.save_model(p, _build("resnet"), om.input_spec("resnet"), "keywords", builder="resnet"),
     "builder 'resnet': expected 'module:function'"),
    (lambda p: checkpoint.save_model(p, _build("resnet"), om.input_spec("resnet"), "keywords",
                                     builder="own_models:conv1d_concat"),
     "does not rebuild this model"),
    (lambda p: checkpoint.save_model(p, _build("resnet"), om.input_spec("resnet"), "keywords",
                                     builder="no_such_module:resnet"),
     "cannot import the builder 'no_such_module:resnet'"),
])
def test_bad_user_checkpoints_are_one_clear_error_and_write_nothing(tmp_path, call, message):
    with pytest.raises(EdgepruneError, match=message):
        call(tmp_path / "x")
    assert not (tmp_path / "x").exists()
