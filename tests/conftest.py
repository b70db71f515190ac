"""Shared fixtures. Generated data is cached under $EDGEPRUNE_CACHE (default ~/.cache/edgeprune), so only the
first run on a machine pays for synthesis."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.training.profiles import get_profile
from edgeprune.training.run import data_for

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_data():
    """The tiny synthetic set (100 train / 40 validation / 60 test clips)."""
    return data_for("synthetic", get_profile("tiny"), progress=False)


def randomize(model) -> None:
    """Give a PyTorch model non-trivial weights and BN statistics, so parity tests can fail."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def quick_baseline(tmp_path_factory):
    """The quick-profile torch baseline, seed 0, trained once per session (minutes): (checkpoint path, data)."""
    from edgeprune.training import run

    profile = get_profile("quick")
    data = data_for("synthetic", profile, progress=False)
    path = tmp_path_factory.mktemp("quick") / "baseline"
    run.train("dcase2021_baseline", "torch", data, profile, path, seed=0, progress=False)
    return path, data


@pytest.fixture(scope="session")
def bundle(tmp_path_factory, tiny_data):
    """A tiny trained DCASE baseline exported at every precision, plus its test split as .npy files (shared by
    the benchmark, device and report tests)."""
    from edgeprune.export import export
    from edgeprune.training import run

    root = tmp_path_factory.mktemp("bench")

    run.train("dcase2021_baseline", "torch", tiny_data, get_profile("tiny"), root / "ck", progress=False)
    test = tiny_data["test"]
    export(root / "ck", out_dir=root / "export", calib=tiny_data["train"].x[:50], eval_x=test.x, eval_y=test.y,
           thresholds={"int8_top1": 0.9, "dynamic_top1": 0.9}, progress=False)
    np.save(root / "X_test.npy", test.x)
    np.save(root / "Y_test.npy", test.y)
    return root


def probs(model, x):
    """A DCASE baseline twin's class probabilities for log-mel features [N, 40, 500] (any widths)."""
    from edgeprune.frameworks import framework_of
    from edgeprune.models import arch_spec
    from edgeprune.models.inference import predict

    return predict(model, framework_of(model), arch_spec("dcase2021_baseline"), {"logmel": x})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 with a throwaway host key, accepting one throwaway client key for root."""
    if os.geteuid() != 0:
        pytest.fail("the ssh runner test starts sshd as root (sshd needs it to log a user in)")
    tmp = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True)
    shutil.copy(tmp / "client_key.pub", tmp / "authorized_keys")
    port = free_port()
    (tmp / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nHostKey {tmp / 'host_key'}\nAuthorizedKeysFile {tmp / 'authorized_keys'}\n"
        "PidFile none\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nSubsystem sftp internal-sftp\nLogLevel ERROR\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(tmp / "sshd_config"), "-p", str(port)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {proc.communicate()[1]}")
            time.sleep(0.1)
    yield port, tmp / "client_key"
    proc.terminate()
    proc.wait(timeout=10)
