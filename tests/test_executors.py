"""Executors of declared pipelines: the local one and Ray (a real Ray started here, and a real head plus one worker
node on loopback). Each runs small steps that write files, so what is compared is real work, not mocks."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.reproduce.executors import LocalExecutor, make_executor
from edgeprune.reproduce.steps import STATE_FILE, Step, StepLog, check_plan, fresh_random_state

ray = pytest.importorskip("ray", reason="the cluster extra (make test installs it)")
# Workers cannot import this test module by name: send its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _write(path: Path, value: int, *inputs: int) -> int:
    """A step: value plus its inputs' results, also written to `path`; each call leaves a mark beside it."""
    total = value + sum(inputs)
    Path(path).write_text(str(total))
    with open(Path(path).parent / "calls.log", "a") as f:
        f.write(Path(path).name + "\n")
    return total


def _draw(*_inputs) -> list[float]:
    import random

    import numpy as np

    return [random.random(), float(np.random.rand())]


def _node(*_inputs) -> str:
    return ray.get_runtime_context().get_node_id()


def _fail(*_inputs) -> None:
    raise EdgepruneError("no such checkpoint: x")


def _wait_for_kill(marks: Path, survive_after: int, *_inputs) -> int:
    """Record this attempt's pid; from attempt `survive_after` on, finish, before it wait to be killed."""
    marks.mkdir(exist_ok=True)
    attempt = len(list(marks.glob("*.pid")))
    (marks / "pid.tmp").write_text(str(os.getpid()))
    (marks / "pid.tmp").rename(marks / f"{attempt}.pid")  # whole when the killer sees it
    if attempt >= survive_after:
        return attempt
    time.sleep(120)
    return -1


def _plan(work: Path, last=None) -> list[Step]:
    """a and b independent, c takes both; `last` (a step function) takes c."""
    plan = [Step("a", functools.partial(_write, work / "a.txt", 1), outputs=(work / "a.txt",)),
            Step("b", functools.partial(_write, work / "b.txt", 2), outputs=(work / "b.txt",)),
            Step("c", functools.partial(_write, work / "c.txt", 3), inputs=("a", "b"), outputs=(work / "c.txt",))]
    if last is not None:
        plan.append(Step("d", last, inputs=("c",)))
    return plan


def _calls(work: Path) -> list[str]:
    log = work / "calls.log"
    return log.read_text().split() if log.exists() else []


def _comparable(state: dict) -> dict:
    """state.json without what may differ between two runs of the same steps: wall times and worker names."""
    return {"settings": state["settings"],
            "steps": {name: {k: v for k, v in step.items() if k not in ("seconds", "finished", "worker", "order")}
                      for name, step in state["steps"].items()}}


@pytest.fixture(scope="module")
def ray_here():
    """A Ray started on this machine with 2 CPUs, shared by the tests below."""
    executor = make_executor("ray", workers=2, progress=False)
    yield executor
    executor.close()


def test_a_plan_must_declare_inputs_before_the_steps_that_take_them(tmp_path):
    with pytest.raises(ValueError, match="not declared before"):
        check_plan([Step("c", _write, inputs=("a",))])
    with pytest.raises(ValueError, match="twice"):
        check_plan([Step("a", _write), Step("a", _write)])


def test_local_and_ray_give_the_same_results_and_state(tmp_path, ray_here):
    states = {}
    for name, executor in (("local", LocalExecutor()), ("ray", ray_here)):
        work = tmp_path / name
        results = executor.run(_plan(work), StepLog(work, {"x": 1}, progress=False))
        assert results == {"a": 1, "b": 2, "c": 6}
        assert (work / "c.txt").read_text() == "6"
        states[name] = json.loads((work / STATE_FILE).read_text())
    # the same state apart from wall times and where each step ran
    assert _comparable(states["local"]) == _comparable(states["ray"])
    assert all("worker" in s for s in states["ray"]["steps"].values())


def test_what_a_killed_attempt_left_half_written_is_removed_before_the_step_runs_again(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / ".a.txt.tmp-x1y2").write_text("half")  # as fileio.atomic_path leaves it when its process is killed
    LocalExecutor().run(_plan(work)[:1], StepLog(work, {}, progress=False))
    assert sorted(p.name for p in work.iterdir()) == ["a.txt", "calls.log", "state.json"]


def test_threads_beyond_the_drivers_cpus_are_refused_before_any_step(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgeprune.cli", "reproduce", "cma-fsmc", "--profile", "tiny",
                           "--executor", "ray", "--workers", "1", "--threads", "2", "--work", str(tmp_path / "w")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--threads 2: the Ray node this command runs on" in proc.stderr.strip().splitlines()[-1]
    assert "has 1 CPUs" in proc.stderr and list(tmp_path.iterdir()) == []


def test_a_run_started_on_one_executor_resumes_on_the_other(tmp_path, ray_here):
    work = tmp_path / "w"
    LocalExecutor().run(_plan(work)[:2], StepLog(work, {"x": 1}, progress=False))
    assert _calls(work) == ["a.txt", "b.txt"]
    assert ray_here.run(_plan(work), StepLog(work, {"x": 1}, progress=False))["c"] == 6
    assert _calls(work) == ["a.txt", "b.txt", "c.txt"]  # a and b were reused, not redone


def test_a_step_redone_because_its_files_are_gone_makes_the_steps_that_took_its_result_run_again(tmp_path,
                                                                                                ray_here):
    for name, executor in (("local", LocalExecutor()), ("ray", ray_here)):
        work = tmp_path / name
        executor.run(_plan(work), StepLog(work, {}, progress=False))
        before = len(_calls(work))
        (work / "a.txt").unlink()
        executor.run(_plan(work), StepLog(work, {}, progress=False))
        assert _calls(work)[before:] == ["a.txt", "c.txt"]  # b reused
        # interrupted after redoing a, before c: the next run still redoes c
        before = len(_calls(work))
        (work / "a.txt").unlink()
        executor.run(_plan(work)[:1], StepLog(work, {}, progress=False))
        executor.run(_plan(work), StepLog(work, {}, progress=False))
        assert _calls(work)[before:] == ["a.txt", "c.txt"]


def test_a_state_file_written_before_steps_kept_their_order_still_redoes_what_took_a_redone_result(tmp_path):
    work = tmp_path / "w"
    LocalExecutor().run(_plan(work), StepLog(work, {}, progress=False))
    state = json.loads((work / STATE_FILE).read_text())
    for step in state["steps"].values():
        del step["order"]
    (work / STATE_FILE).write_text(json.dumps(state))
    (work / "b.txt").unlink()
    LocalExecutor().run(_plan(work), StepLog(work, {}, progress=False))
    assert _calls(work)[3:] == ["b.txt", "c.txt"]


def test_a_job_that_runs_its_steps_one_at_a_time_names_what_each_takes(tmp_path):
    def job(work: Path, extra: bool = False) -> list[int]:
        log = StepLog(work, {}, progress=False)
        a = log.run("a", lambda: _write(work / "a.txt", 1), outputs=(work / "a.txt",), inputs=())
        b = log.run("b", lambda: _write(work / "b.txt", 2), outputs=(work / "b.txt",), inputs=())
        if extra:  # a step this job did not have before (as a new --devices target's benchmark)
            log.run("x", lambda: _write(work / "x.txt", 5), outputs=(work / "x.txt",), inputs=("b",))
        return [a, b, log.run("c", lambda: _write(work / "c.txt", 3, a), inputs=("a",))]

    work = tmp_path / "w"
    assert job(work) == [1, 2, 4]
    assert job(work) == [1, 2, 4] and _calls(work) == ["a.txt", "b.txt", "c.txt"]  # all reused
    (work / "a.txt").unlink()
    job(work)
    assert _calls(work)[3:] == ["a.txt", "c.txt"]  # b reused; c took a's result, so it runs again
    job(work, extra=True)
    job(work, extra=True)
    assert _calls(work)[5:] == ["x.txt"]  # the new step ran once; nothing after it was redone
    with pytest.raises(TypeError, match="inputs"):  # forgetting what a step takes is an error, not a stale reuse
        StepLog(work, {}, progress=False).run("a", lambda: 1)


def test_each_step_draws_the_same_numbers_in_a_fresh_worker_as_after_other_steps(tmp_path, ray_here):
    plan = [Step("a", _draw), Step("b", _draw, inputs=("a",))]
    local = LocalExecutor().run(plan, StepLog(tmp_path / "l", {}, progress=False))
    remote = ray_here.run(plan, StepLog(tmp_path / "r", {}, progress=False))
    assert local == remote and local["a"] != local["b"]
    fresh_random_state("b")
    assert _draw() == local["b"]


def test_a_step_draws_the_same_numbers_whether_or_not_keras_was_imported_before_it():
    """Importing Keras draws from Python's generator; a fresh worker whose first step imports it must not differ."""
    code = ("import random, sys\n{before}from edgeprune.reproduce.steps import fresh_random_state\n"
            "fresh_random_state('fine-tune C1')\nimport keras\nprint(random.random())")
    draws = [subprocess.run([sys.executable, "-c", code.format(before=before)], capture_output=True, text=True,
                            check=True).stdout.split()[-1] for before in ("", "import keras\n")]
    assert draws[0] == draws[1]


def test_a_failing_step_stops_the_run_with_its_name_and_keeps_the_finished_ones(tmp_path, ray_here):
    work = tmp_path / "w"
    with pytest.raises(EdgepruneError, match=r"^step d: no such checkpoint: x$"):
        ray_here.run(_plan(work, _fail), StepLog(work, {}, progress=False))
    assert set(json.loads((work / STATE_FILE).read_text())["steps"]) == {"a", "b", "c"}


def _killer(marks: Path, kills: int) -> threading.Thread:
    """Kill (SIGKILL) the worker of attempts 0 .. kills-1 of a _wait_for_kill step as soon as each has started."""
    def run():
        for attempt in range(kills):
            pid_file = marks / f"{attempt}.pid"
            deadline = time.time() + 60
            while not pid_file.exists() and time.time() < deadline:
                time.sleep(0.05)
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_worker_killed_mid_step_is_retried_once(tmp_path, ray_here):
    work, marks = tmp_path / "w", tmp_path / "marks"
    killer = _killer(marks, 1)
    results = ray_here.run(_plan(work, functools.partial(_wait_for_kill, marks, 1)), StepLog(work, {}, progress=False))
    killer.join()
    assert results["d"] == 1  # the second attempt finished
    state = json.loads((work / STATE_FILE).read_text())
    assert state["steps"]["d"]["result"] == 1 and set(state["steps"]) == {"a", "b", "c", "d"}


def test_a_step_whose_worker_dies_twice_stops_the_run_and_the_same_command_resumes_it(tmp_path, ray_here):
    work, marks = tmp_path / "w", tmp_path / "marks"
    killer = _killer(marks, 2)
    with pytest.raises(EdgepruneError, match=r"step d: its Ray worker died 2 times .*3 finished steps are kept"):
        ray_here.run(_plan(work, functools.partial(_wait_for_kill, marks, 3)), StepLog(work, {}, progress=False))
    killer.join()
    assert _calls(work) == ["a.txt", "b.txt", "c.txt"]
    # the run again: only the step that died runs (it finishes at its third attempt)
    results = ray_here.run(_plan(work, functools.partial(_wait_for_kill, marks, 2)), StepLog(work, {}, progress=False))
    assert results["d"] == 2 and _calls(work) == ["a.txt", "b.txt", "c.txt"]


def test_an_unreachable_ray_address_is_one_line_before_ray_starts(tmp_path):
    from conftest import free_port

    port = free_port()  # nothing listens there
    start = time.time()
    with pytest.raises(EdgepruneError, match=rf"--ray-address 127.0.0.1:{port}: no Ray head answers there"):
        make_executor("ray", address=f"127.0.0.1:{port}")
    assert time.time() - start < 30  # refused at once, not after Ray's own minute of retries
    with pytest.raises(EdgepruneError, match="expected HOST:PORT"):
        make_executor("ray", address="nowhere")
    with pytest.raises(EdgepruneError, match="apply to --executor ray"):
        make_executor("local", workers=2)


@pytest.fixture(scope="module")
def loopback_cluster():
    """A Ray head (1 CPU) and one worker node (1 CPU, reaching the device 'board-a') on 127.0.0.1, started with
    the `ray` command as a user would on two machines."""
    from conftest import free_port

    if ray.is_initialized():
        ray.shutdown()
    cli = str(Path(sys.executable).parent / "ray")
    port = free_port()
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    subprocess.run([cli, "start", "--head", "--port", str(port), "--include-dashboard=false", *common],
                   check=True, capture_output=True)
    try:
        subprocess.run([cli, "start", "--address", f"127.0.0.1:{port}", "--resources", '{"device:board-a": 1}',
                        *common], check=True, capture_output=True)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([cli, "stop", "--force"], capture_output=True)


def test_a_cluster_at_an_address_runs_the_plan_and_pins_device_steps_to_the_node_that_reaches_them(
        tmp_path, loopback_cluster):
    executor = make_executor("ray", address=loopback_cluster, progress=False)
    try:
        assert len(executor.nodes) == 2
        board_node = next(nid for nid, n in executor.nodes.items() if "device:board-a" in n["Resources"])
        assert board_node != executor.node  # a driver on a host with several nodes attaches to the head
        plan = _plan(tmp_path / "w") + [Step("on board-a", _node, inputs=("c",), device="board-a"),
                                        Step("timed here", _node, inputs=("c",), alone=True),
                                        Step("on board-b", _node, inputs=("c",), device="board-b")]
        results = executor.run(plan, StepLog(tmp_path / "w", {}, progress=False))
    finally:
        executor.close()
    assert results["c"] == 6
    assert results["on board-a"] == board_node
    assert results["timed here"] == executor.node
    assert results["on board-b"] == executor.node  # no node advertises it: the driver's node reaches it


def test_ray_is_imported_only_when_the_ray_executor_is_asked_for(tmp_path):
    code = ("import sys; from edgeprune.cli import build_parser; build_parser(); "
            "from edgeprune.reproduce.executors import make_executor; import functools; "
            "from edgeprune.reproduce.steps import Step, StepLog; "
            "make_executor('local').run([Step('a', functools.partial(print, 'ran'))], "
            f"StepLog({str(tmp_path)!r}, {{}}, progress=False)); "
            "print('ray' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["ran", "False"]


def test_jobs_that_run_their_steps_one_at_a_time_refuse_the_ray_executor(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgeprune.cli", "reproduce", "comflp", "--profile", "tiny",
                           "--executor", "ray", "--work", str(tmp_path / "w")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--executor ray: comflp runs its steps one at a time" in proc.stderr.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []
