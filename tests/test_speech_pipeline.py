"""The speech tasks end to end through the CLI and the Python API: train, eval, score a two-input model with
per-input zero masks, prune, export with both inputs, and run the bundle in the device-side suite.

Data: the tiny synthetic speech sets (espeak-ng; tens of clips), generated once per machine and cached.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeprune import checkpoint
from edgeprune.cli import main
from edgeprune.errors import EdgepruneError
from edgeprune.training.profiles import get_profile
from edgeprune.training.run import data_for

from test_benchmarks import FAST, suite


@pytest.fixture(scope="module")
def enhancement():
    return data_for("synthetic", get_profile("tiny"), progress=False, task="enhancement")


@pytest.fixture(scope="module")
def se_crn(tmp_path_factory, enhancement):
    """se-crn (dual fusion) trained one tiny epoch through the CLI."""
    path = tmp_path_factory.mktemp("se") / "se-crn"
    assert main(["train", "--model", "se-crn", "--arg", "fusion=dual", "--profile", "tiny", "--out", str(path)]) == 0
    return path


def test_models_and_tasks_are_listed(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for line in ("se-crn:", "tasks: enhancement; keras, torch", "resnet-kws:", "tasks: keywords; keras, torch",
                 "speech-encoder:", "tasks: phones, keywords; torch"):
        assert line in out
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "enhancement:" in out and "inputs noisy [129, 251] (FT), bone [129, 251] (FT)" in out


def test_se_crn_trains_and_evaluates_with_the_task_metrics(se_crn, tmp_path, capsys):
    spec = json.loads((se_crn / "spec.json").read_text())
    assert spec["arch"]["task"] == "enhancement" and spec["arch"]["args"]["fusion"] == "dual"
    assert spec["classes"] is None and spec["transforms"] == []
    assert main(["eval", str(se_crn), "--profile", "tiny", "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n"] == 16 and report["task"] == "enhancement"
    assert {"si_sdri", "si_sdr", "stoi", "stoi_noisy", "pesq", "pesq_noisy"} <= set(report)
    assert report["si_sdri"] == pytest.approx(report["si_sdr"] - report["si_sdr_noisy"], abs=1e-6)
    assert 0 < report["stoi"] <= 1 and 1 <= report["pesq"] <= 4.7


def test_two_input_scoring_masks_each_microphone_exactly(se_crn, enhancement):
    """The dual encoders' first convs have no bias: with one microphone replaced by exact zeros, that microphone's
    encoder outputs exact zeros and the other's are unchanged."""
    from edgeprune.pruning.run import calibration_set, score_checkpoint

    ckpt = checkpoint.load(se_crn)
    calib = calibration_set(enhancement, 12)
    layers = ["noisy_enc1", "bone_enc1"]
    both = score_checkpoint(ckpt, "activation_l1", layers, calib)
    no_bone = score_checkpoint(ckpt, "activation_l1", layers, calib, input_mask=(False, True))
    no_air = score_checkpoint(ckpt, "activation_l1", layers, calib, input_mask=(True, False))
    assert both.record["inputs"] == ["noisy", "bone"]
    assert np.all(no_bone.layers["bone_enc1"].scores == 0) and np.all(no_air.layers["noisy_enc1"].scores == 0)
    np.testing.assert_array_equal(no_bone.layers["noisy_enc1"].scores, both.layers["noisy_enc1"].scores)
    np.testing.assert_array_equal(no_air.layers["bone_enc1"].scores, both.layers["bone_enc1"].scores)
    assert np.all(both.layers["bone_enc1"].scores > 0)


def test_se_crn_prunes_twice_and_replays(se_crn, tmp_path, enhancement):
    from edgeprune.models.inference import predict

    assert main(["prune", str(se_crn), "--criterion", "l1", "--layers", "noisy_enc1,bone_enc1", "--ratio", "0.25",
                 "--out", str(tmp_path / "p1")]) == 0
    assert main(["prune", str(tmp_path / "p1"), "--criterion", "l1", "--layers", "dec1", "--ratio", "0.5",
                 "--out", str(tmp_path / "p2")]) == 0
    p2 = checkpoint.load(tmp_path / "p2")
    assert len(p2.transforms) == 2 and p2.transforms[1].params["keep"].keys() == {"dec1"}
    keras_twin = checkpoint.load(tmp_path / "p2", framework="keras")
    x = enhancement["test"].inputs
    np.testing.assert_allclose(predict(p2.model, "torch", p2.arch, x), predict(keras_twin.model, "keras", p2.arch, x),
                               atol=1e-4)


@pytest.fixture(scope="module")
def se_bundle(se_crn, tmp_path_factory):
    out = tmp_path_factory.mktemp("se_export")
    code = main(["export", str(se_crn), "--profile", "tiny", "--calib", "24", "--eval", "16", "--out", str(out),
                 "--name", "se"])
    return out / "se", code


def test_se_crn_exports_both_inputs_at_every_precision(se_bundle):
    bundle, code = se_bundle
    assert code == 0
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["format"] == 2 and m["task"]["name"] == "enhancement" and m["classes"] is None
    assert [i["name"] for i in m["inputs"]] == ["noisy", "bone"]
    for i in m["inputs"]:
        assert i["feature_shape"] == [129, 251] and i["axes"] == {"onnx": "NFT", "tflite": "NTF"}
    assert {(a["format"], a["precision"]) for a in m["artifacts"]} == {
        (f, q) for f in ("tflite", "onnx") for q in ("fp32", "fp16", "dynamic", "int8")}
    for a in m["artifacts"]:
        assert a["passed"], (a["file"], a["failures"])
        assert [i["name"] for i in a["inputs"]] == ["noisy", "bone"] and a["outputs"][0]["name"] == "mask"
        assert "si_sdri" in a["parity"]["metric"] and "snr_db" in a["parity"]
        if a["format"] == "tflite" and a["precision"] == "int8":
            assert all(i["dtype"] == "int8" and i["scale"] > 0 for i in a["inputs"])
            assert a["outputs"][0]["dtype"] == "int8"
        if a["precision"] == "fp32":
            assert a["parity"]["snr_db"] >= 40 and a["transpose_ops"] == 0


def test_the_suite_runs_the_bundle_and_reports_si_sdr_improvement(se_bundle, enhancement, tmp_path):
    from edgeprune.data.datasets import save_test_data

    bundle, _ = se_bundle
    data = save_test_data(tmp_path / "test.npz", enhancement["test"])
    out = tmp_path / "run"
    code, _, stderr = suite(str(bundle), "--test-data", str(data), *FAST, "--xnnpack", "on", "--out", str(out))
    assert code == 0, stderr
    results = json.loads(out.with_suffix(".json").read_text())["results"]
    assert len(results) == 8
    manifest = json.loads((bundle / "manifest.json").read_text())
    exported = {a["file"]: a["parity"]["metric"] for a in manifest["artifacts"]}
    for r in results:
        assert r["ok"] and r["metrics"]["n"] == 16
        name = r["file"].split("/")[-1]
        # the same files on the same clips: the suite's SI-SDR improvement is the exporter's
        assert r["metrics"]["si_sdri"] == pytest.approx(exported[name]["si_sdri"], abs=1e-3), name


def test_keras_se_crn_exports_with_inputs_fed_by_name(se_crn, enhancement, tmp_path):
    from edgeprune.data.datasets import sample_indices
    from edgeprune.export import export

    test = enhancement["test"]
    calib = enhancement["train"].take(sample_indices(enhancement["train"], 24))
    m = export(se_crn, tmp_path, formats="tflite", quant="fp32,int8", framework="keras", calib=calib.inputs,
               eval_x=test.inputs, eval_y=test.y, eval_meta=test.meta, progress=False)
    for a in m["artifacts"]:
        assert a["passed"], a["failures"]
        assert sorted(i["name"] for i in a["inputs"]) == ["bone", "noisy"] and a["outputs"][0]["axes"] == "NTF"
    # a missing input is one clear error and writes nothing
    with pytest.raises(EdgepruneError, match="evaluation data: missing input\\(s\\) bone; the model takes noisy, bone"):
        export(se_crn, tmp_path / "x", quant="fp32", calib=calib.inputs, eval_x={"noisy": test.inputs["noisy"]},
               progress=False)
    assert not (tmp_path / "x").exists()


def test_keywords_and_phones_train_and_evaluate_through_the_cli(tmp_path, capsys):
    assert main(["train", "--model", "resnet-kws", "--framework", "keras", "--profile", "tiny",
                 "--out", str(tmp_path / "kws")]) == 0
    assert main(["eval", str(tmp_path / "kws"), "--profile", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "(keras, keywords) on test (48 samples): accuracy" in out and "| unknown" in out
    assert main(["train", "--model", "speech-encoder", "--task", "phones", "--arg", "layers=2", "--profile", "tiny",
                 "--out", str(tmp_path / "enc")]) == 0
    assert main(["eval", str(tmp_path / "enc"), "--profile", "tiny", "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["task"] == "phones" and report["n"] == 24 and report["phones"] > 0
    assert report["per"] == pytest.approx(report["edits"] / report["phones"])
    # a folder that holds no phones data is refused
    assert main(["eval", str(tmp_path / "enc"), "--profile", "tiny", "--data", str(tmp_path)]) == 2


def test_diverging_training_is_one_clear_error(tmp_path, enhancement):
    """Finite inputs whose products overflow float32 make the loss NaN: an error, never a trained model."""
    from dataclasses import replace

    from edgeprune.data.datasets import Split
    from edgeprune.training import run

    train = enhancement["train"]
    huge = Split({k: v * np.float32(1e35) for k, v in train.inputs.items()}, train.y, train.meta)
    data = replace(enhancement, splits={**enhancement.splits, "train": huge})
    with pytest.raises(EdgepruneError, match="training diverged: the loss is (nan|inf) at epoch 1, batch 1"):
        run.train("se-crn", "torch", data, get_profile("tiny"), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
