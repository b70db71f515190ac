"""`edgeprune sweep`: a 2 x 2 grid on the tiny profile as Ray tasks with a worker killed mid-step, resumed by the
local executor; the Pareto front on hand-worked rows; each bad spec field refused before any work."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgeprune.sweep.results import pareto

CLI = [sys.executable, "-m", "edgeprune.cli"]


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A tiny Keras DCASE baseline (one epoch): the sweep's checkpoint."""
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    path = tmp_path_factory.mktemp("sweep-parent") / "ck"
    run.train("dcase2021_baseline", "keras", run.data_for("synthetic", get_profile("tiny"), progress=False),
              get_profile("tiny"), path, progress=False)
    return path


def _spec(tmp_path: Path, parent: Path, **fields) -> Path:
    doc = {"checkpoint": str(parent), "profile": "tiny", "methods": ["l1", "passive"],
           "targets": ["ratio=0.25", "macs=0.5"], "precisions": ["fp32"], "bench_runs": 3, "threads": 1,
           **fields}
    path = tmp_path / "grid.yaml"
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in doc.items()) + "\n")  # JSON values are YAML
    return path


def _sweep(spec: Path, work: Path, *extra: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(CLI + ["sweep", str(spec), "--work", str(work), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def _ppid(pid: int) -> int:
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])


def _step_workers(root: int) -> list[int]:
    """Pids of the Ray workers under process `root` running a step now (Ray titles a worker's process after the
    task it runs)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if not (proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::_run_step")):
                continue
            pid = int(proc.name)
            while pid > 1 and pid != root:
                pid = _ppid(pid)
            if pid == root:
                pids.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


@pytest.fixture(scope="module")
def ray_sweep(tmp_path_factory, parent):
    """The 2 x 2 grid as Ray tasks on 2 CPUs; once a prune step has finished, the worker of a step running then
    (whichever it is) is killed."""
    pytest.importorskip("ray", reason="the cluster extra (make test installs it)")
    tmp = tmp_path_factory.mktemp("sweep")
    spec, work = _spec(tmp, parent), tmp / "work"
    proc = _sweep(spec, work, "--executor", "ray", "--workers", "2")
    killed = []

    def kill_one_step():
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            state = work / "state.json"
            started = state.exists() and any(k.startswith("prune") for k in json.loads(state.read_text())["steps"])
            pids = _step_workers(proc.pid) if started else []
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one_step, daemon=True)
    killer.start()
    out, err = proc.communicate(timeout=900)
    killer.join()
    assert proc.returncode == 0, err[-3000:]
    return tmp, spec, work, out, killed


def test_a_two_by_two_sweep_on_ray_survives_a_killed_worker_and_writes_one_table(ray_sweep):
    tmp, _, work, out, killed = ray_sweep
    assert killed, "no step was running to kill"
    doc = json.loads((work / "sweep.json").read_text())
    grid = [(r["method"], r["target"]) for r in doc["rows"] if r["seed"] is not None]
    assert grid == [("l1", "ratio=0.25"), ("l1", "macs=0.5"), ("passive", "ratio=0.25"), ("passive", "macs=0.5")]
    assert doc["executor"] == "ray"
    state = json.loads((work / "state.json").read_text())
    assert len(state["steps"]) == out.count(" ...\n")  # every step ran once to the end and was recorded once
    assert all("worker" in s for s in state["steps"].values())
    for r in doc["rows"]:
        if r["seed"] is None:
            continue
        assert r["parity"] == "ok" and r["kb"] > 0 and r["ms"] > 0 and 0 <= r["metric"] <= 1
        if r["target"] == "macs=0.5":  # the budget is met within its tolerance of 1 % of the parent
            assert r["mac_cut"] == pytest.approx(0.5, abs=0.01)
        else:
            assert r["mac_cut"] > 0.25  # a quarter of every layer's filters goes: conv MACs fall faster
    assert any(r["pareto_size"] for r in doc["rows"]) and any(r["pareto_latency"] for r in doc["rows"])
    assert [line["target"] for line in csv.DictReader((work / "sweep.csv").open())] == \
        [r["target"] for r in doc["rows"]]
    assert (work / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (work / "sweep.md").read_text().startswith("# Sweep grid.yaml: l1, passive x ratio=0.25, macs=0.5")


def test_the_sweep_resumes_on_the_local_executor_without_redoing_a_step(ray_sweep):
    tmp, spec, work, _, _ = ray_sweep
    proc = _sweep(spec, work)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    state = json.loads((work / "state.json").read_text())
    assert out.count("reused") == len(state["steps"]) and " ...\n" not in out
    assert json.loads((work / "sweep.json").read_text())["executor"] == "local"


def test_the_pareto_front_on_hand_worked_rows():
    rows = [{"kb": 10, "metric": 0.5}, {"kb": 20, "metric": 0.7}, {"kb": 20, "metric": 0.6},
            {"kb": 30, "metric": 0.7}, {"kb": 5, "metric": None}, {"kb": 40, "metric": 0.9}]
    # 2 is beaten by 1 (same size, better), 3 by 1 (smaller, as good); 4 has no metric
    assert pareto(rows, "kb", "max") == {0, 1, 5}
    # lower is better (e.g. PER): 0 is the smallest and the best
    assert pareto(rows, "kb", "min") == {0}


@pytest.mark.parametrize("fields, message", [
    ({"methods": ["l1", "nonsense"]}, "methods: unknown criterion 'nonsense'"),
    ({"layers": ["conv3"], "targets": ["macs=0.1"]}, "targets: 'macs=0.1' on "),
    ({"targets": ["ratio=1.5"]}, "targets: 'ratio=1.5': the value must be in (0, 1)"),
    ({"targets": ["latency=0.5"]}, "targets: 'latency=0.5' is not a target"),
    ({"precisions": ["int4"]}, "precisions: 'int4' is not a precision"),
    ({"seeds": ["zero"]}, "seeds: 'zero' is not a whole number"),
    ({"layers": ["conv9"]}, "layers: "),
    ({"metods": ["l1"]}, "unknown field 'metods'"),
    ({"devices": ["toaster"]}, "unknown device 'toaster'"),
    ({"devices": ["rpi4-emulated"]}, "devices: every one is emulated"),
    ({"seeds": [-1]}, "seeds: -1 is negative"),
    ({"calib": None}, "calib: expected a whole number, got None"),
    ({"checkpoint": None}, "checkpoint: expected text, got None"),
])
def test_a_bad_spec_field_is_one_line_exit_2_and_writes_nothing(tmp_path, parent, fields, message):
    spec = _spec(tmp_path, parent, **fields)
    proc = _sweep(spec, tmp_path / "work")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("edgeprune: error: ") and message in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]


def test_a_spec_without_a_required_field_is_refused(tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text("methods: [l1]\ntargets: [ratio=0.5]\n")
    proc = _sweep(spec, tmp_path / "work")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "field 'checkpoint' is required" in err
