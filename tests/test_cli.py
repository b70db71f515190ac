"""The `edgeprune` command: bad input is one clear line and exit status 2, never a traceback."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edgeprune.cli import main


def run_cli(*args, cwd=None):
    """Run the real console entry point in a fresh process, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "edgeprune.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("edgeprune: error:")]
    assert len(lines) == 1, err
    for f in fragments:
        assert f in lines[0], lines[0]


def test_info_prints_the_layer_table(capsys):
    assert main(["info", "dcase2021_baseline", "--framework", "keras"]) == 0
    out = capsys.readouterr().out
    assert "46,246 parameters" in out and "286.6 M MACs" in out and "| conv2 " in out


def test_unknown_model():
    code, _, err = run_cli("info", "not_a_model")
    assert_one_line_error(code, err, "unknown model 'not_a_model'", "dcase2021_baseline")


def test_missing_data_folder(tmp_path):
    code, _, err = run_cli("train", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "ck"))
    assert_one_line_error(code, err, "data folder not found", "absent")
    assert not (tmp_path / "ck").exists()


def test_features_of_the_wrong_shape(tmp_path):
    for split in ("train", "test"):
        np.save(tmp_path / f"X_{split}.npy", np.zeros((10, 40, 250), np.float32))
        np.save(tmp_path / f"Y_{split}.npy", np.arange(10) % 10)
    code, _, err = run_cli("train", "--data", str(tmp_path), "--out", str(tmp_path / "ck"))
    assert_one_line_error(code, err, "X_train.npy", "(10, 40, 250)", "expected [N, 40, 500]")
    assert not (tmp_path / "ck").exists()


def test_corrupt_checkpoint(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "spec.json").write_text(json.dumps({"framework": "torch", "classes": [], "arch": {"model": "dcase2021_baseline"}}))
    (ck / "weights.npz").write_bytes(b"\x00" * 50)
    code, _, err = run_cli("eval", str(ck), "--profile", "tiny")
    assert_one_line_error(code, err, "weights.npz: corrupt or unreadable")


def test_debug_shows_the_traceback():
    code, _, err = run_cli("--debug", "info", "not_a_model")
    assert code != 0 and "Traceback" in err


@pytest.mark.parametrize("argv,fragment", [
    (["train", "--profile", "huge"], "unknown profile 'huge'"),
    (["eval", "nowhere"], "checkpoint not found: nowhere"),
])
def test_other_bad_arguments(argv, fragment, capsys):
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err
