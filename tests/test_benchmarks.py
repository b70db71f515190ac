"""The device-side suite: runs exported bundles with numpy and a runtime only, and reports facts that hold."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


REPO = Path(__file__).resolve().parents[1]
FAST = ["--runs", "5", "--min-seconds", "0.05", "--warmup-seconds", "0.01", "--threads", "1"]




def suite(*args, env=None, cwd=REPO):
    proc = subprocess.run([sys.executable, "-m", "benchmarks", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def results(bundle):
    out = bundle / "results" / "run"
    code, stdout, stderr = suite(str(bundle / "export" / "ck"), "--test-x", str(bundle / "X_test.npy"),
                                 "--test-y", str(bundle / "Y_test.npy"), "--xnnpack", "on,off", *FAST, "--out", str(out))
    assert code == 0, stderr
    return json.loads(out.with_suffix(".json").read_text()), out


def test_results_follow_the_schema(results):
    data, out = results
    assert data["schema"] == 2 and {"cpu", "cores", "os", "python", "runtimes"} <= set(data["device"])
    assert "ai-edge-litert" in data["device"]["runtimes"]
    # the recorded command re-runs as written
    assert shlex.split(data["command"])[:3] == ["python", "-m", "benchmarks"]
    assert shlex.split(data["command"])[-2:] == ["--out", str(out)]
    # 4 tflite x XNNPACK on/off + 4 onnx, one thread each
    assert len(data["results"]) == 12
    for r in data["results"]:
        assert r["ok"], r
        lat = r["latency"]
        assert {"first_ms", "warmup", "mean_ms", "median_ms", "p90_ms", "p99_ms", "min_ms", "std_ms"} <= set(lat)
        assert lat["n"] >= 5 and lat["min_ms"] <= lat["median_ms"] <= lat["p99_ms"]
        assert r["peak_rss_mb"] > 10 and r["params"] == 46_246
        assert r["task"]["kind"] == "classification" and r["task"]["metric"] == "accuracy"
        assert {"n", "accuracy", "log_loss"} <= set(r["metrics"])
    assert out.with_suffix(".md").read_text().count("| yes |") == 12
    assert len(out.with_suffix(".csv").read_text().splitlines()) == 13


def test_results_agree_with_facts(results, bundle):
    data, _ = results
    by = {(Path(r["file"]).name, r["xnnpack"]): r for r in data["results"]}
    assert by[("model_int8.tflite", True)]["size_bytes"] < by[("model_fp32.tflite", True)]["size_bytes"] / 3
    for r in data["results"]:
        # same runtime, same clips, same quantisation: the benchmark's accuracy is the exporter's
        assert r["metrics"]["accuracy"] == pytest.approx(r["exporter_accuracy"], abs=1e-9), r["file"]
        assert r["metrics"]["n"] == 60


def test_suite_never_needs_torch_tensorflow_or_edgeprune(bundle, tmp_path):
    """Shadow those packages with modules that refuse to import: the suite must still run (as on a Pi)."""
    for name in ("torch", "tensorflow", "keras", "edgeprune"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('{name} is not on this board')\n")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    code, _, stderr = suite(str(bundle / "export" / "ck" / "model_int8.tflite"),
                            str(bundle / "export" / "ck" / "model_fp32.onnx"), "--xnnpack", "on", *FAST,
                            "--out", str(tmp_path / "r"), env=env)
    assert code == 0, stderr
    assert all(r["ok"] for r in json.loads((tmp_path / "r.json").read_text())["results"])


def test_corrupt_model_is_marked_failed_and_the_run_goes_on(bundle, tmp_path):
    good = bundle / "export" / "ck" / "model_int8.tflite"
    bad = tmp_path / "truncated.tflite"
    bad.write_bytes(good.read_bytes()[:500])
    code, stdout, _ = suite(str(bad), str(good), "--xnnpack", "on", *FAST, "--out", str(tmp_path / "r"))
    assert code == 1
    res = {Path(r["file"]).name: r for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert res["model_int8.tflite"]["ok"] and not res["truncated.tflite"]["ok"]
    assert "truncated.tflite" in res["truncated.tflite"]["error"]


def test_test_set_of_the_wrong_shape(bundle, tmp_path):
    np.save(tmp_path / "X.npy", np.zeros((3, 40, 250), np.float32))
    code, _, _ = suite(str(bundle / "export" / "ck" / "model_fp32.onnx"), "--test-x", str(tmp_path / "X.npy"),
                       *FAST, "--out", str(tmp_path / "r"))
    assert code == 1
    err = json.loads((tmp_path / "r.json").read_text())["results"][0]["error"]
    assert "do not match the model input" in err


def test_missing_test_file_is_one_line(tmp_path):
    code, _, stderr = suite("x.tflite", "--test-x", str(tmp_path / "nope.npy"), "--out", str(tmp_path / "r"))
    assert code == 2 and stderr.strip().startswith("benchmarks: error:") and len(stderr.strip().splitlines()) == 1
    assert "nope.npy: file not found" in stderr


@pytest.mark.parametrize("make, args, message", [
    (lambda d: np.save(d / "X.npy", np.zeros((2, 3))), ["--test-data", "D.npz", "--test-x", "X.npy"],
     "--test-data replaces --test-x/--test-y"),
    (lambda d: np.save(d / "Y.npy", np.zeros(2)), ["--test-y", "Y.npy"], "--test-y needs --test-x"),
    (lambda d: (d / "D.npz").write_bytes(b"not a zip"), ["--test-data", "D.npz"], "D.npz: cannot be read as test data"),
    (lambda d: np.savez(d / "D.npz", y=np.zeros(3)), ["--test-data", "D.npz"], "D.npz: no input arrays"),
    (lambda d: np.savez(d / "D.npz", a=np.zeros((3, 2)), y=np.zeros(2)), ["--test-data", "D.npz"],
     "D.npz: the arrays have different sample counts (a 3, y 2)"),
    (lambda d: np.savez(d / "D.npz", a=np.zeros((3, 2)), **{"meta/w": np.array([1.0, np.inf, 0.0])}),
     ["--test-data", "D.npz"], "D.npz: meta/w contains NaN or infinite values"),
])
def test_bad_options_and_test_data_stop_before_anything_runs(tmp_path, make, args, message):
    """One line, exit 2, no model started and nothing written (the model file need not even exist)."""
    make(tmp_path)
    args = [str(tmp_path / a) if a.endswith((".npy", ".npz")) else a for a in args]
    code, stdout, stderr = suite("x.tflite", *args, "--out", str(tmp_path / "r"))
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("benchmarks: error: ") and message in stderr
    assert "[bench]" not in stdout and not list(tmp_path.glob("r.*"))
