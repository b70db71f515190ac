"""The device-side suite on bundles with several inputs and non-classification outputs (manifest format 2), and on
an old one-input classification bundle (format 1). Every bundle here is built in the test from a tiny Keras model,
so these tests stand alone."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_benchmarks import FAST, REPO, suite

from benchmarks.metrics import stft, task_metrics

N_FFT, HOP, SAMPLES, N = 14, 4, 36, 6
BINS, FRAMES = N_FFT // 2 + 1, 1 + SAMPLES // HOP  # 8 x 10
RUN = [*FAST, "--xnnpack", "on"]
TASK = {"name": "enhancement", "kind": "enhancement", "metric": "si_sdri", "select_mode": "max", "parity": "regression",
        "inputs": [{"name": n, "shape": [BINS, FRAMES], "axes": "FT", "dtype": "float32"} for n in ("noisy", "bone")],
        "output": {"name": "mask", "kind": "mask", "axes": "FT"},
        "n_fft": N_FFT, "hop": HOP, "sample_rate": 16000, "samples": SAMPLES}


def _tf():
    import tensorflow as tf

    return tf


def convert(model, int8_calib=None) -> bytes:
    tf = _tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8_calib is not None:
        def representative():
            for i in range(len(int8_calib[0])):
                yield [x[i : i + 1] for x in int8_calib]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    return conv.convert()


def tensors(path: Path, axes: str):
    """A manifest's record of a .tflite file's tensors, as the interpreter names them."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))

    def row(d):
        scale, zp = d["quantization"]
        return {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                "axes": axes, "scale": float(scale), "zero_point": int(zp)}

    return {"inputs": [dict(row(d), layout="NWC") for d in interp.get_input_details()],
            "outputs": [row(d) for d in interp.get_output_details()]}


def enhancement_manifest(folder: Path, files: dict) -> None:
    """Format 2, as the exporter writes it: the Keras inputs are NWC [N, T, F] ("NTF"), the output [N, T, F]. The
    inputs are listed bone first, the files take noisy first: matching them by order would swap them."""
    inputs = [{"name": n, "shape": [1, FRAMES, BINS], "layout": "NWC", "dtype": "float32",
               "tflite_shape": [1, FRAMES, BINS], "tflite_layout": "NWC", "feature_shape": [BINS, FRAMES],
               "feature_axes": "FT", "axes": {"onnx": "NTF", "tflite": "NTF"}} for n in ("bone", "noisy")]
    artifacts = [{"file": f, "format": "tflite", "precision": q, "size_bytes": (folder / f).stat().st_size,
                  **tensors(folder / f, "NTF"), "parity": {}} for f, q in files.items()]
    manifest = {"format": 2, "name": folder.name, "task": TASK, "inputs": inputs,
                "output": {"name": "mask", "axes": "FT"}, "classes": None, "source": {"params": 0, "macs": 0},
                "artifacts": artifacts}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def waves(rng, n):
    """Clean tones, a noisy copy and their log-magnitude STFT features [n, 8, 10] ("FT")."""
    t = np.arange(SAMPLES)
    clean = np.stack([np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6)) for _ in range(n)])
    noisy = clean + 0.5 * rng.normal(size=clean.shape)
    bone = 0.6 * clean + 0.05 * rng.normal(size=clean.shape)
    feat = lambda w: np.log(np.abs(stft(w, N_FFT, HOP)) + 1e-4).astype(np.float32)
    return {"noisy": feat(noisy), "bone": feat(bone), "y": np.abs(stft(clean, N_FFT, HOP)).astype(np.float32),
            "meta/noisy_wave": noisy.astype(np.float32), "meta/clean_wave": clean.astype(np.float32)}


@pytest.fixture(scope="module")
def enh(tmp_path_factory):
    """A two-input enhancement bundle (float32 and full-int8 .tflite), a NaN-producing one, the test data, and the
    Keras model's own masks on it."""
    import keras

    root = tmp_path_factory.mktemp("enh")
    keras.utils.set_random_seed(0)
    # the Keras model declares bone first; its TFLite files take noisy first (the manifest lists bone first)
    bone, noisy = keras.Input((FRAMES, BINS), name="bone"), keras.Input((FRAMES, BINS), name="noisy")
    h = keras.layers.Concatenate()([keras.layers.Dense(12)(noisy), keras.layers.Dense(12, activation="tanh")(bone)])
    h = keras.layers.Conv1D(12, 3, padding="same", activation="relu")(h)  # mixes frames: the T axis matters
    model = keras.Model([bone, noisy], keras.layers.Dense(BINS, activation="sigmoid")(h))
    data = waves(np.random.default_rng(0), N)
    to_keras = lambda d: [d["bone"].transpose(0, 2, 1), d["noisy"].transpose(0, 2, 1)]
    calib = waves(np.random.default_rng(1), 32)
    bundle = root / "enh"
    bundle.mkdir()
    (bundle / "model_fp32.tflite").write_bytes(convert(model))
    (bundle / "model_int8.tflite").write_bytes(convert(model, to_keras(calib)))
    enhancement_manifest(bundle, {"model_fp32.tflite": "fp32", "model_int8.tflite": "int8"})

    # the same interface, but the mask is log(noisy - 100): NaN everywhere
    nan_in = [keras.Input((FRAMES, BINS), name="bone"), keras.Input((FRAMES, BINS), name="noisy")]
    bad = keras.layers.Lambda(lambda v: keras.ops.log(v - 100.0))(nan_in[1])
    nan_model = keras.Model(nan_in, keras.layers.Add()([bad, keras.layers.Dense(BINS)(nan_in[0])]))
    nan_bundle = root / "nan"
    nan_bundle.mkdir()
    (nan_bundle / "model_fp32.tflite").write_bytes(convert(nan_model))
    enhancement_manifest(nan_bundle, {"model_fp32.tflite": "fp32"})

    np.savez(root / "test.npz", **data)
    masks = model.predict(to_keras(data), verbose=0).transpose(0, 2, 1)  # [N, T, F] -> the task's [N, F, T]
    swapped = dict(data, noisy=data["bone"], bone=data["noisy"])
    np.savez(root / "swapped.npz", **swapped)
    return {"root": root, "bundle": bundle, "nan": nan_bundle, "data": data, "masks": masks,
            "swapped_masks": model.predict(to_keras(swapped), verbose=0).transpose(0, 2, 1)}


def shadow_env(tmp_path: Path) -> dict:
    """PYTHONPATH where torch, tensorflow, keras and edgeprune refuse to import (as on a Pi)."""
    for name in ("torch", "tensorflow", "keras", "edgeprune"):
        (tmp_path / "shadow" / name).mkdir(parents=True)
        (tmp_path / "shadow" / name / "__init__.py").write_text(f"raise ImportError('{name} is not on this board')\n")
    return {"PYTHONPATH": f"{tmp_path / 'shadow'}{os.pathsep}{REPO}"}


@pytest.fixture(scope="module")
def enh_run(enh, tmp_path_factory):
    """The bundle run with its test data (numpy and LiteRT only), outputs saved."""
    tmp = tmp_path_factory.mktemp("enh_run")
    out = tmp / "r"
    code, stdout, stderr = suite(str(enh["bundle"]), "--test-data", str(enh["root"] / "test.npz"), *RUN,
                                 "--save-outputs", str(tmp / "outputs"), "--out", str(out), env=shadow_env(tmp))
    assert code == 0, stdout + stderr
    data = json.loads(out.with_suffix(".json").read_text())
    return data, {Path(r["file"]).name: r for r in data["results"]}, out


def saved(data, r):
    return np.load(Path(data["outputs_dir"]) / r["outputs"]["file"])


def test_every_input_is_fed_by_name_and_arranged(enh, enh_run):
    data, by, _ = enh_run
    assert data["schema"] == 2 and data["test_data"]["n"] == N
    fp32 = by["model_fp32.tflite"]
    feeds = {f["input"]: f for f in fp32["feeds"]}
    assert set(feeds) == {"noisy", "bone"}
    for name, f in feeds.items():
        assert f["tensor"] == f"serving_default_{name}:0" and (f["from"], f["to"]) == ("NFT", "NTF")
    # the file takes noisy first, the manifest lists bone first: only the names can pair them
    assert [f["input"] for f in fp32["feeds"]] == ["noisy", "bone"]
    assert (fp32["output"]["from"], fp32["output"]["to"]) == ("NTF", "NFT")
    # the float32 file computes what the Keras model computes: each array went to its own input, transposed
    got = saved(data, fp32)
    assert got.shape == (N, BINS, FRAMES)
    np.testing.assert_allclose(got, enh["masks"], atol=1e-5)


def test_float32_metrics_are_the_keras_models(enh, enh_run):
    _, by, out = enh_run
    d = enh["data"]
    meta = {"noisy_wave": d["meta/noisy_wave"], "clean_wave": d["meta/clean_wave"]}
    expected = task_metrics(TASK, enh["masks"], d["y"], meta)
    got = by["model_fp32.tflite"]["metrics"]
    assert got["n"] == N and set(expected) == {"si_sdr", "si_sdr_noisy", "si_sdri"} <= set(got)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-4), key
    assert by["model_fp32.tflite"]["task"] == {"name": "enhancement", "kind": "enhancement", "metric": "si_sdri"}
    # the tables name the metric column after the task's metric
    header = out.with_suffix(".md").read_text().splitlines()[0]
    assert "si_sdri" in header and "accuracy" not in header


def test_int8_runs_with_each_tensors_own_quantisation(enh, enh_run):
    data, by, _ = enh_run
    r = by["model_int8.tflite"]
    assert r["ok"] and r["outputs"]["dtype"] == "int8"
    got, scale, zp = saved(data, r), r["outputs"]["scale"], r["outputs"]["zero_point"]
    # dequantised with the output's own scale and zero point: every value is a whole number of steps from it
    steps = got / scale + zp
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    # the same file run here by hand, each input quantised with ITS OWN tensor's scale and zero point (found by
    # name), gives exactly the suite's outputs
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(enh["bundle"] / "model_int8.tflite"))
    interp.allocate_tensors()
    out = interp.get_output_details()[0]
    expected = []
    for i in range(N):
        for d in interp.get_input_details():
            name = "noisy" if "noisy" in d["name"] else "bone"
            x = enh["data"][name][i : i + 1].transpose(0, 2, 1)  # FT -> the file's TF
            s_in, z_in = d["quantization"]
            interp.set_tensor(d["index"], np.clip(np.round(x / s_in) + z_in, -128, 127).astype(np.int8))
        interp.invoke()
        s_out, z_out = out["quantization"]
        expected.append(((interp.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out).transpose(0, 2, 1))
    np.testing.assert_array_equal(got, np.concatenate(expected))
    assert r["metrics"]["n"] == N and np.isfinite(r["metrics"]["si_sdri"])


def test_swapping_the_two_arrays_changes_the_outputs(enh, enh_run, tmp_path):
    data, by, _ = enh_run
    code, _, stderr = suite(str(enh["bundle"] / "model_fp32.tflite"), "--test-data", str(enh["root"] / "swapped.npz"),
                            *RUN, "--save-outputs", str(tmp_path / "o"), "--out", str(tmp_path / "r"))
    assert code == 0, stderr
    swapped = json.loads((tmp_path / "r.json").read_text())
    got = saved(swapped, swapped["results"][0])
    assert np.abs(got - saved(data, by["model_fp32.tflite"])).max() > 0.05
    np.testing.assert_allclose(got, enh["swapped_masks"], atol=1e-5)


@pytest.mark.parametrize("key, value", [("bone", np.nan), ("noisy", np.inf), ("y", np.nan),
                                        ("meta/clean_wave", -np.inf)])
def test_nan_in_test_data_stops_the_run(enh, tmp_path, key, value):
    arrays = dict(enh["data"])
    arrays[key] = arrays[key].copy()
    arrays[key].flat[3] = value
    np.savez(tmp_path / "bad.npz", **arrays)
    code, stdout, stderr = suite(str(enh["bundle"]), "--test-data", str(tmp_path / "bad.npz"), *RUN,
                                 "--out", str(tmp_path / "r"))
    assert code == 2
    assert stderr.strip() == f"benchmarks: error: {tmp_path / 'bad.npz'}: {key} contains NaN or infinite values"
    assert "[bench]" not in stdout and not list(tmp_path.glob("r.*"))  # nothing ran, nothing written


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("bone"), "no array 'bone' for the input 'bone'"),
    (lambda a: a.update(bone=a["bone"][:, :, :9]), "'bone' has shape [6, 8, 9]; "),
    (lambda a: a.update(noisy=a["noisy"].transpose(0, 2, 1)), "'noisy' has shape [6, 10, 8]; "),
    (lambda a: a.update(y=a["y"][:4]), "different sample counts"),
])
def test_test_data_that_does_not_fit_is_one_line(enh, tmp_path, change, message):
    arrays = dict(enh["data"])
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    code, stdout, stderr = suite(str(enh["bundle"]), "--test-data", str(tmp_path / "bad.npz"), *RUN,
                                 "--out", str(tmp_path / "r"))
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith(f"benchmarks: error: {tmp_path / 'bad.npz'}: ") and message in stderr
    assert "[bench]" not in stdout


def test_model_with_nan_outputs_fails_and_the_run_goes_on(enh, tmp_path):
    # no --out: the default stem is runs/benchmarks/run under the current directory
    code, stdout, stderr = suite(str(enh["nan"]), str(enh["bundle"] / "model_fp32.tflite"), "--test-data",
                                 str(enh["root"] / "test.npz"), *RUN, cwd=tmp_path, env={"PYTHONPATH": str(REPO)})
    assert code == 1, stdout + stderr
    stem = tmp_path / "runs" / "benchmarks" / "run"
    data = json.loads(stem.with_suffix(".json").read_text())
    bad, good = data["results"]
    assert Path(bad["file"]).parent.name == "nan" and not bad["ok"] and "metrics" not in bad
    assert "NaN or infinite" in bad["error"]
    assert good["ok"] and good["metrics"]["n"] == N
    md = stem.with_suffix(".md").read_text()
    assert md.count("FAILED: model outputs contain NaN") == 1 and md.count("| yes |") == 1
    assert len(stem.with_suffix(".csv").read_text().splitlines()) == 3
    assert sorted(p.name for p in stem.parent.iterdir()) == ["run.csv", "run.json", "run.md"]  # no temp files left


# --- an old bundle: manifest format 1, one input, classification, --test-x / --test-y -------------------------------


@pytest.fixture(scope="module")
def old_bundle(tmp_path_factory):
    import keras

    root = tmp_path_factory.mktemp("cls")
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 12, 1), name="logmel")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6, 12)).astype(np.float32)
    probs = model.predict(x[..., None], verbose=0)
    y = (probs.argmax(1) + (np.arange(40) % 4 == 0)) % 3  # three in four labels agree with the model
    bundle = root / "cls"
    bundle.mkdir()
    (bundle / "model_fp32.tflite").write_bytes(convert(model))
    (bundle / "model_int8.tflite").write_bytes(convert(model, [x[:20, ..., None]]))
    accuracy = float((probs.argmax(1) == y).mean())
    artifacts = [{"file": f, "format": "tflite", "precision": q, **tensors(bundle / f, None),
                  "parity": {"accuracy": accuracy}} for f, q in (("model_fp32.tflite", "fp32"),
                                                                 ("model_int8.tflite", "int8"))]
    for a in artifacts:  # format 1 had no axes
        for t in a["inputs"] + a["outputs"]:
            del t["axes"]
    (bundle / "manifest.json").write_text(json.dumps({
        "format": 1, "name": "cls", "source": {"params": model.count_params(), "macs": 0},
        "input": {"name": "logmel", "shape": [1, 6, 12, 1], "layout": "NHWC"}, "classes": ["a", "b", "c"],
        "artifacts": artifacts}))
    np.save(root / "X.npy", x)
    np.save(root / "Y.npy", y)
    np.save(root / "Y_onehot.npy", np.eye(3)[y])
    return {"root": root, "bundle": bundle, "probs": probs, "y": y, "accuracy": accuracy}


def test_old_classification_bundle_still_works(old_bundle, tmp_path):
    from benchmarks.metrics import classification

    root = old_bundle["root"]
    code, stdout, stderr = suite(str(old_bundle["bundle"]), "--test-x", str(root / "X.npy"), "--test-y",
                                 str(root / "Y.npy"), *RUN, "--out", str(tmp_path / "r"))
    assert code == 0, stdout + stderr
    data = json.loads((tmp_path / "r.json").read_text())
    by = {Path(r["file"]).name: r for r in data["results"]}
    expected = classification(old_bundle["probs"], old_bundle["y"])
    fp32 = by["model_fp32.tflite"]
    assert fp32["metrics"]["accuracy"] == expected["accuracy"] == fp32["exporter_accuracy"]
    assert fp32["metrics"]["log_loss"] == pytest.approx(expected["log_loss"], abs=1e-4)
    assert fp32["feeds"][0]["to"].endswith("1")  # [N, 6, 12] got its channel axis
    assert fp32["task"]["metric"] == "accuracy" and by["model_int8.tflite"]["metrics"]["n"] == 40
    assert abs(by["model_int8.tflite"]["metrics"]["accuracy"] - expected["accuracy"]) <= 0.1
    assert "accuracy" in (tmp_path / "r.md").read_text().splitlines()[0]
    # one-hot labels score the same
    code, _, stderr = suite(str(old_bundle["bundle"] / "model_fp32.tflite"), "--test-x", str(root / "X.npy"),
                            "--test-y", str(root / "Y_onehot.npy"), *RUN, "--out", str(tmp_path / "h"))
    assert code == 0, stderr
    assert json.loads((tmp_path / "h.json").read_text())["results"][0]["metrics"] == fp32["metrics"]


def test_all_nan_features_are_an_error_not_a_perfect_score(old_bundle, tmp_path):
    np.save(tmp_path / "X.npy", np.full((40, 6, 12), np.nan, np.float32))
    code, stdout, stderr = suite(str(old_bundle["bundle"]), "--test-x", str(tmp_path / "X.npy"), "--test-y",
                                 str(old_bundle["root"] / "Y.npy"), *RUN, "--out", str(tmp_path / "r"))
    assert code == 2 and "[bench]" not in stdout
    assert stderr.strip() == f"benchmarks: error: {tmp_path / 'X.npy'}: x contains NaN or infinite values"


def test_two_input_bundle_refuses_test_x(enh, tmp_path):
    np.save(tmp_path / "X.npy", enh["data"]["noisy"])
    code, _, stderr = suite(str(enh["bundle"]), "--test-x", str(tmp_path / "X.npy"), *RUN, "--out", str(tmp_path / "r"))
    assert code == 2 and "takes 2 inputs (bone, noisy)" in stderr and "--test-data" in stderr


# --- the host side: report and compare read schema 2 ---------------------------------------------------------------


def test_report_names_the_metric_and_reads_both_schemas(enh_run, old_bundle, tmp_path):
    from edgeprune.report import report

    _data, by, out = enh_run
    old = json.loads(out.with_suffix(".json").read_text())
    old["schema"] = 1  # a schema-1 file: accuracy under "accuracy", no task
    old["results"] = [{k: v for k, v in r.items() if k not in ("metrics", "task")} for r in old["results"]]
    for r in old["results"]:
        r["accuracy"] = {"n": 6, "accuracy": 0.5}
    (tmp_path / "old.json").write_text(json.dumps(old))
    merged = report([out.with_suffix(".json"), tmp_path / "old.json"], tmp_path / "rep")
    assert {"si_sdri", "accuracy"} <= set(merged["columns"])
    rows = [r for r in merged["rows"] if r["run"] == "r"]
    for row in rows:
        name = row["model"].split("/")[1]
        assert row["si_sdri"] == pytest.approx(by[name]["metrics"]["si_sdri"], abs=5e-5) and row["accuracy"] is None
    assert all(r["accuracy"] == 0.5 and r["si_sdri"] is None for r in merged["rows"] if r["run"] == "old")
    header = next(line for line in (tmp_path / "rep.md").read_text().splitlines() if line.startswith("|"))
    assert "si_sdri" in header and "accuracy" in header


def test_compare_handles_any_output_shape(enh_run, tmp_path):
    import shutil

    from devices.compare import agree, compare_outputs

    data, _, out = enh_run
    rows = compare_outputs(out.with_suffix(".json"), out.with_suffix(".json"))
    assert len(rows) == 2 and agree(rows) and all(r["max_abs_diff"] == 0 for r in rows)
    assert all(r["metric"] == "si_sdri" and r["metric_a"] == r["metric_b"] is not None for r in rows)
    nudged = dict(data, outputs_dir=str(tmp_path / "o"))
    shutil.copytree(data["outputs_dir"], tmp_path / "o")
    for r in data["results"]:
        if r["precision"] == "fp32":
            path = tmp_path / "o" / r["outputs"]["file"]
            np.save(path, np.load(path) + np.float32(2e-4))
    (tmp_path / "n.json").write_text(json.dumps(nudged))
    rows = {r["model"].split()[0]: r for r in compare_outputs(tmp_path / "n.json", out.with_suffix(".json"))}
    assert not rows["enh/model_fp32.tflite"]["ok"] and rows["enh/model_int8.tflite"]["ok"]


# --- phones (frame logits, padded targets) and a two-input ONNX file --------------------------------------------------


def test_phones_bundle_scores_the_phone_error_rate(tmp_path):
    """Frame logits [N, T, K] and padded phone ids [N, L] (2-D targets are not one-hot labels here)."""
    import keras

    from benchmarks.metrics import task_metrics

    keras.utils.set_random_seed(0)
    t_frames, bands, k = 12, 5, 4
    inp = keras.Input((t_frames, bands), name="logmel")  # NWC: [N, T, F]
    model = keras.Model(inp, keras.layers.Dense(k)(keras.layers.Conv1D(8, 3, padding="same", activation="relu")(inp)))
    bundle = tmp_path / "phones"
    bundle.mkdir()
    (bundle / "model_fp32.tflite").write_bytes(convert(model))
    task = {"name": "phones", "kind": "phones", "metric": "per", "select_mode": "min", "parity": "frames",
            "inputs": [{"name": "logmel", "shape": [bands, t_frames], "axes": "FT", "dtype": "float32"}],
            "output": {"name": "phone_logits", "kind": "frame_logits", "axes": "TK"}, "blank": 0, "frames": t_frames}
    io = tensors(bundle / "model_fp32.tflite", "NTF")
    io["outputs"][0]["axes"] = "NTK"
    (bundle / "manifest.json").write_text(json.dumps({
        "format": 2, "name": "phones", "task": task, "output": {"name": "phone_logits", "axes": "TK"},
        "inputs": [{"name": "logmel", "shape": [1, t_frames, bands], "feature_shape": [bands, t_frames],
                    "feature_axes": "FT", "axes": {"tflite": "NTF", "onnx": "NTF"}}],
        "artifacts": [{"file": "model_fp32.tflite", "format": "tflite", "precision": "fp32", **io}]}))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, bands, t_frames)).astype(np.float32)
    y = np.full((5, 4), -1)
    for i, n in enumerate([1, 2, 3, 4, 2]):
        y[i, :n] = rng.integers(1, k, n)
    frames = np.array([12, 10, 8, 12, 6])
    np.savez(tmp_path / "test.npz", logmel=x, y=y, **{"meta/frames": frames})
    code, stdout, stderr = suite(str(bundle), "--test-data", str(tmp_path / "test.npz"), *RUN,
                                 "--out", str(tmp_path / "r"))
    assert code == 0, stdout + stderr
    r = json.loads((tmp_path / "r.json").read_text())["results"][0]
    logits = model.predict(x.transpose(0, 2, 1), verbose=0)  # [N, T, K]
    expected = task_metrics(task, logits, y, {"frames": frames})
    assert expected["phones"] == 12 and r["metrics"] == {"n": 5, **expected}
    assert r["task"]["metric"] == "per" and "per" in (tmp_path / "r.md").read_text().splitlines()[0]


def test_two_input_onnx_file_by_exact_names(enh, tmp_path):
    """ONNX inputs named exactly like the data's, declared in the other order, each with a unit channel axis."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.Conv2d(1, 3, 3, padding=1)
            self.out = torch.nn.Conv2d(6, 1, 1)

        def forward(self, bone, noisy):  # [N, 1, F, T] each
            h = torch.cat([torch.tanh(self.a(noisy)), torch.relu(self.b(bone))], dim=1)
            return torch.sigmoid(self.out(h))[:, 0].transpose(1, 2)  # [N, T, F]

    torch.manual_seed(0)
    net = Net().eval()
    bundle = tmp_path / "onnx"
    bundle.mkdir()
    dummy = (torch.zeros(1, 1, BINS, FRAMES), torch.zeros(1, 1, BINS, FRAMES))
    torch.onnx.export(net, dummy, str(bundle / "model_fp32.onnx"), input_names=["bone", "noisy"],
                      output_names=["mask"], dynamo=False)
    manifest = json.loads((enh["bundle"] / "manifest.json").read_text())
    for i in manifest["inputs"]:
        i["axes"] = {"onnx": "N1FT", "tflite": "NTF"}
    manifest["artifacts"] = [{"file": "model_fp32.onnx", "format": "onnx", "precision": "fp32",
                              "inputs": [{"name": n, "shape": [1, 1, BINS, FRAMES], "axes": "N1FT"}
                                         for n in ("bone", "noisy")],
                              "outputs": [{"name": "mask", "shape": [1, FRAMES, BINS], "axes": "NTF"}]}]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    code, stdout, stderr = suite(str(bundle), "--test-data", str(enh["root"] / "test.npz"), *FAST,
                                 "--save-outputs", str(tmp_path / "o"), "--out", str(tmp_path / "r"))
    assert code == 0, stdout + stderr
    data = json.loads((tmp_path / "r.json").read_text())
    r = data["results"][0]
    assert [(f["input"], f["tensor"], f["matched_by"], f["to"]) for f in r["feeds"]] == [
        ("bone", "bone", "name", "N1FT"), ("noisy", "noisy", "name", "N1FT")]
    d = enh["data"]
    with torch.no_grad():
        masks = net(torch.from_numpy(d["bone"][:, None]), torch.from_numpy(d["noisy"][:, None])).numpy()
    masks = masks.transpose(0, 2, 1)
    np.testing.assert_allclose(saved(data, r), masks, atol=1e-5)
    meta = {"noisy_wave": d["meta/noisy_wave"], "clean_wave": d["meta/clean_wave"]}
    for key, value in task_metrics(TASK, masks, None, meta).items():
        assert r["metrics"][key] == pytest.approx(value, abs=1e-4), key
