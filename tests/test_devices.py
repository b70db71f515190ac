"""devices/: target profiles, and the suite run through each runner for real: locally, over SSH to an sshd this
test starts on loopback, and on an emulated Raspberry Pi 4 (qemu-aarch64, Cortex-A72) compared with x86."""

import json
import os
import shutil
import subprocess
import sys
import threading
import venv
from pathlib import Path

import pytest

from devices import (RunnerError, RunOptions, aarch64, agree, compare_outputs, device_names, emulated,
                     load_profiles, make_runner)
from devices.errors import ProfileError
from conftest import free_port
from edgeprune.cli import main

REPO = Path(__file__).resolve().parents[1]


def cli_bench(argv):
    return main(["bench", *argv])


# Few clips and runs: the point is what each target computes, not its timing. The emulated run shares the subset
# so that accuracies are compared on the same clips.
SUBSET = 8
FAST = dict(threads=(1,), xnnpack="on", subset=SUBSET, runs=2, min_seconds=0.0, warmup_seconds=0.0)
QUIET = lambda line: None  # noqa: E731


def _models(root: Path) -> tuple[Path, Path, Path]:
    """The bundle folder and the test arrays the `bundle` fixture made."""
    return root / "export" / "ck", root / "X_test.npy", root / "Y_test.npy"


def test_profiles_have_the_required_fields():
    profiles = load_profiles()
    expected = {"desktop": ("x86_64", None), "rpi4": ("aarch64", "cortex-a72"), "rpi5": ("aarch64", "cortex-a76"),
                "zero2w": ("aarch64", "cortex-a53")}
    assert set(expected) <= set(profiles)
    for name, (arch, cpu) in expected.items():
        p = profiles[name]
        assert (p.name, p.arch, p.qemu_cpu) == (name, arch, cpu)
        assert p.description and p.cores >= 1 and p.threads and all(t >= 1 for t in p.threads) and p.runs >= 1
        if arch == "aarch64":
            assert p.cores == 4 and p.threads == (1, 4) and p.subset and p.ssh.user and p.ssh.python and p.ssh.host
            assert aarch64.fake_cpuinfo(p).count("processor\t:") == 4
    assert profiles["desktop"].cores == os.cpu_count() and profiles["desktop"].ssh is None
    assert "CPU part\t: 0xd08" in aarch64.fake_cpuinfo(profiles["rpi4"])  # what a real Pi 4 reports
    emu = emulated(profiles["rpi4"])
    assert emu.emulated and emu.qemu_cpu == "cortex-a72" and emu.subset <= 32 and emu.threads == (1,)
    assert {"rpi4-emulated", "rpi5-emulated", "zero2w-emulated"} <= set(device_names())
    with pytest.raises(ProfileError, match="unknown device 'rpi9'"):
        make_runner("rpi9")
    with pytest.raises(ProfileError, match="no qemu_cpu"):
        make_runner("desktop-emulated")


@pytest.fixture(scope="module")
def local_result(bundle, tmp_path_factory):  # noqa: F811
    folder, x, y = _models(bundle)
    out = tmp_path_factory.mktemp("local") / "desktop"
    return make_runner("desktop", log=QUIET).run([folder], x, y, RunOptions(out=out, **FAST))


def test_local_runner_gives_the_suites_json(local_result):
    data = json.loads(local_result.read_text())
    assert data["schema"] == 2 and {"cpu", "cores", "python", "runtimes"} <= set(data["device"])
    assert data["runner"]["kind"] == "local" and data["runner"]["exit_status"] == 0 and data["emulated"] is False
    assert len(data["results"]) == 8  # 4 .tflite + 4 .onnx, one thread, XNNPACK on
    outputs = Path(data["outputs_dir"])
    for r in data["results"]:
        assert r["ok"], r
        assert r["metrics"]["n"] == SUBSET and r["latency"]["n"] >= 2 and "emulated" not in r["latency"]
        assert (outputs / r["outputs"]["file"]).is_file()
    assert Path(str(local_result)[: -len(".json")] + ".md").read_text().count("| yes |") == 8


def test_compare_flags_outputs_that_differ(local_result, tmp_path):
    """A copy of the local result with two outputs nudged just past the limits: only those two disagree."""
    import numpy as np

    data = json.loads(local_result.read_text())
    shutil.copytree(data["outputs_dir"], tmp_path / "outputs")
    data["outputs_dir"] = str(tmp_path / "outputs")
    (tmp_path / "nudged.json").write_text(json.dumps(data))
    by_name = {Path(r["file"]).name: r["outputs"] for r in data["results"]}
    for name, delta in (("model_fp32.tflite", 2e-4), ("model_int8.tflite", 2 * by_name["model_int8.tflite"]["scale"])):
        path = tmp_path / "outputs" / by_name[name]["file"]
        np.save(path, np.load(path) + np.float32(delta))
    rows = {r["model"].split()[0]: r for r in compare_outputs(tmp_path / "nudged.json", local_result)}
    assert {m for m, r in rows.items() if not r["ok"]} == {"ck/model_fp32.tflite", "ck/model_int8.tflite"}
    assert "limit 0.0001" in rows["ck/model_fp32.tflite"]["why"]
    assert rows["ck/model_int8.tflite"]["max_steps"] == pytest.approx(2, rel=1e-3)


def test_ssh_runner_runs_the_suite_through_a_real_sshd(sshd, bundle, local_result, tmp_path):  # noqa: F811
    port, key = sshd
    folder, x, y = _models(bundle)
    lines = []
    # board=desktop: the "board" is this x86 machine, so its outputs must equal the local run's exactly
    runner = make_runner(f"ssh://root@127.0.0.1:{port}", board="desktop", key=key, python=sys.executable,
                         log=lines.append)
    result = runner.run([folder], x, y, RunOptions(out=tmp_path / "ssh", **FAST))
    data = json.loads(result.read_text())
    assert data["runner"]["kind"] == "ssh" and data["runner"]["target"] == f"ssh://root@127.0.0.1:{port}"
    assert data["runner"]["host_key"].startswith("ssh-ed25519 SHA256:")
    assert len(data["results"]) == 8 and all(r["ok"] for r in data["results"])
    assert {Path(r["file"]).parent.as_posix() for r in data["results"]} == {"bundles/ck"}  # the manifest went too
    assert all(r["params"] == 46_246 for r in data["results"])
    assert any(line.startswith("[bench] bundles/ck/model_int8.tflite") for line in lines)  # progress streamed
    assert not Path(data["runner"]["remote_dir"]).exists()  # the board's temporary folder is removed
    rows = compare_outputs(result, local_result)
    assert len(rows) == 8 and agree(rows) and all(r["max_abs_diff"] == 0 for r in rows), rows


def test_ssh_board_without_the_runtime_fails_clearly(sshd, bundle, tmp_path):  # noqa: F811
    port, key = sshd
    venv.create(tmp_path / "bare", with_pip=False)  # a Python without numpy or any runtime, like a fresh board
    folder, x, y = _models(bundle)
    runner = make_runner(f"ssh://root@127.0.0.1:{port}", board="rpi4", key=key,
                         python=str(tmp_path / "bare" / "bin" / "python"), log=QUIET)
    with pytest.raises(RunnerError) as caught:
        runner.run([folder], x, y, RunOptions(out=tmp_path / "bare-board", **FAST))
    message = str(caught.value)
    assert "\n" not in message and "has no numpy, a TFLite runtime (ai-edge-litert), onnxruntime" in message
    assert "provision_rpi.sh" in message
    record = json.loads(caught.value.result.read_text())
    assert record["failed"] is True and record["error"] == message and record["runner"]["kind"] == "ssh"


def test_unreachable_host_is_one_line_and_a_failed_result(bundle, tmp_path, capsys):  # noqa: F811
    folder, x, y = _models(bundle)
    device = f"ssh://pi@127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(RunnerError, match=f"cannot reach {device}: Connection refused") as caught:
        make_runner(device, log=QUIET).run([folder], x, y, RunOptions(out=tmp_path / "r"))
    assert json.loads(caught.value.result.read_text())["failed"] is True
    code = cli_bench([str(folder), "--device", device, "--test-x", str(x), "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"edgeprune: error: cannot reach {device}") and len(err.splitlines()) == 1
    assert json.loads((tmp_path / "cli.json").read_text())["failed"] is True


def test_bench_command_on_the_desktop(bundle, tmp_path, capsys):  # noqa: F811
    folder, x, y = _models(bundle)
    args = [str(folder / "model_int8.tflite"), "--device", "desktop", "--test-x", str(x), "--test-y", str(y),
            "--threads", "1", "--xnnpack", "on", "--subset", "4", "--runs", "2", "--min-seconds", "0",
            "--warmup-seconds", "0", "--out", str(tmp_path / "b")]
    assert cli_bench(args) == 0
    assert json.loads((tmp_path / "b.json").read_text())["results"][0]["metrics"]["n"] == 4
    # the same again, checked against the first run: identical outputs agree
    capsys.readouterr()
    assert cli_bench(args[:-1] + [str(tmp_path / "c"), "--compare", str(tmp_path / "b.json")]) == 0
    table = capsys.readouterr().out.split("wrote ")[-1]
    assert "ck/model_int8.tflite threads=1 xnnpack=True" in table and "True" in table and "False" not in table
    assert cli_bench(args) == 2  # never overwritten without --force
    assert "already exists; pass --force" in capsys.readouterr().err


def test_provisioning_script_is_sound_shell():
    script = REPO / "devices" / "provision_rpi.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    proc = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.slow
def test_emulated_rpi4_agrees_with_x86(bundle, local_result, tmp_path):  # noqa: F811
    """The four .tflite precisions on a Cortex-A72 under qemu: float outputs within 1e-4 of x86, int8 within one
    quantisation step, the same accuracy; timings flagged emulated. Builds the arm64 sysroot on first use."""
    folder, x, y = _models(bundle)
    tflite = tmp_path / "ck"  # the bundle without its .onnx files (the emulated run costs seconds per clip)
    tflite.mkdir()
    for path in [folder / "manifest.json", *folder.glob("*.tflite")]:
        shutil.copy(path, tflite / path.name)
    options = RunOptions(out=tmp_path / "emu", **{**FAST, "runs": 1})  # 1 timed run: each invoke takes seconds
    result = make_runner("rpi4-emulated", log=QUIET).run([tflite], x, y, options)
    data = json.loads(result.read_text())
    assert data["emulated"] is True and data["runner"]["qemu_cpu"] == "cortex-a72"
    assert data["device"]["machine"] == "aarch64" and "emulated" in data["device"]["cpu"]
    assert all(r["ok"] and r["latency"]["emulated"] is True for r in data["results"]), data["results"]
    header = (tmp_path / "emu.md").read_text().splitlines()[0]
    assert "emulated_median_ms" in header and "| median_ms" not in header  # never shown as device latency
    rows = compare_outputs(result, local_result)
    assert {r["precision"] for r in rows} == {"fp32", "fp16", "dynamic", "int8"}
    assert agree(rows), rows
    int8 = next(r for r in rows if r["precision"] == "int8")
    assert int8["max_steps"] <= 1 and all(r["clips"] == SUBSET for r in rows)


@pytest.mark.slow
def test_sysroot_build_is_atomic_and_locked(tmp_path):
    """Two builders race for one sysroot next to a half-built one from an interrupted run: one builds, the other
    waits and reuses it, and the leftover is never taken as done."""
    key = aarch64.sysroot_key(aarch64.runtime_pins())
    (tmp_path / f".{key}.tmp-interrupted" / "root").mkdir(parents=True)
    logs, found = [], []
    threads = [threading.Thread(target=lambda: found.append(aarch64.ensure_sysroot(logs.append, cache=tmp_path)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 2 and found[0] == found[1] and found[0].python.is_file()
    assert sum("building" in line for line in logs) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [key, f"{key}.lock"]
    info = found[0].info
    assert info["python"].startswith("3.11") and info["wheels"] == aarch64.runtime_pins()
