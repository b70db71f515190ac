"""The `ray` executor: each step of a declared pipeline is a Ray task, started as soon as the steps it takes have
finished. The only module of edgeprune that imports Ray (the optional extra `edgeprune[cluster]`).

- Each step asks for as many CPUs as it runs threads, so a node runs as many steps at once as it has CPUs / threads.
- A step that times something (`alone`) and the desktop benchmark take every CPU of the driver's node: nothing else
  runs there while they time.
- A step that benchmarks another device runs on a node started with the resource `device:NAME`
  (`ray start ... --resources '{"device:NAME": 1}'`), else on the driver's node.
- A worker that dies mid-step (killed, out of memory) is retried once; a second death, or an error in the step,
  stops the run after the running steps finish, with every finished step recorded: the same command resumes it.
- The work folder is read and written by every node at the same path (a shared filesystem on a cluster); that is
  checked on every node before the first step.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError
from edgeprune.reproduce.steps import (STATE_FILE, Step, StepLog, check_plan, clear_leftovers, fresh_random_state,
                                      set_threads)

RETRIES = 1  # a step whose worker dies is run once more


def _run_step(step: Step, args: list[Any], threads: int, cwd: str) -> tuple[Any, float, str]:
    """In the worker: the step on `threads` threads from the driver's folder; (result, seconds, worker name)."""
    os.chdir(cwd)  # relative paths in a plan mean the same on every node
    set_threads(threads)
    clear_leftovers(step)  # from an attempt whose worker died
    fresh_random_state(step.name)
    start = time.perf_counter()
    result = step.fn(*args)
    return result, time.perf_counter() - start, f"{socket.gethostname()}:{os.getpid()}"


def _digest(path: str) -> str | None:
    """In the worker: what this node reads at `path` (None if nothing)."""
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def check_address(address: str, timeout: float = 3.0) -> None:
    """HOST:PORT must answer a TCP connection before Ray is asked to join it (Ray itself waits a minute)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise EdgepruneError(f"--ray-address {address}: expected HOST:PORT of a Ray head (e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise EdgepruneError(f"--ray-address {address}: no Ray head answers there ({exc.strerror or exc}); start one "
                             "with `ray start --head --port PORT`, or leave --ray-address out to run Ray on this "
                             "machine") from None


class RayExecutor:
    """Steps as Ray tasks on the cluster at `address`, or on a Ray started here with `workers` CPUs."""

    name = "ray"

    def __init__(self, threads: int = 1, address: str | None = None, workers: int | None = None,
                 progress: bool = True):
        if workers is not None and workers < 1:
            raise EdgepruneError(f"--workers {workers}: must be at least 1")
        if address is not None and workers is not None:
            raise EdgepruneError("--workers sizes a Ray started on this machine; a cluster at --ray-address has "
                                 "the CPUs its nodes were started with")
        if address is not None:
            check_address(address)
        try:
            import ray
        except ImportError:
            raise EdgepruneError("--executor ray needs Ray: pip install 'edgeprune[cluster]'") from None
        self.threads = threads
        self.progress = progress
        env = {"env_vars": {"OMP_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads),
                            "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}}
        common = dict(runtime_env=env, include_dashboard=False, log_to_driver=progress, logging_level="error")
        if address is not None:
            try:
                ray.init(address=address, **common)
            except Exception as exc:  # a port that answers but is not a Ray head, another Ray version, ...
                raise EdgepruneError(f"--ray-address {address}: could not join a Ray cluster there "
                                     f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") \
                    from None
        else:
            # "local": a new Ray of our own, even where `ray start` left one running on this machine
            ray.init(address="local", num_cpus=workers or os.cpu_count(), **common)
        self.ray = ray
        self.node = ray.get_runtime_context().get_node_id()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        self.nodes = {n["NodeID"]: n for n in nodes}
        self.node_cpus = int(self.nodes[self.node]["Resources"].get("CPU", 0))
        if self.node_cpus < threads:  # timing steps and device benchmarks run on the driver's node
            where = self.nodes[self.node].get("NodeManagerAddress", self.node)
            self.close()
            raise EdgepruneError(f"--threads {threads}: the Ray node this command runs on ({where}) has "
                                 f"{self.node_cpus} CPUs; the steps that time something run there, so it needs "
                                 f"at least {threads}")

    def close(self) -> None:
        if self.ray.is_initialized():
            self.ray.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _pinned(self, node_id: str):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)

    def check_shared(self, work: Path) -> None:
        """Every node must read the driver's state.json at the same path: the steps' files are passed by path."""
        state = str(Path(work).resolve() / STATE_FILE)
        mine = _digest(state)
        probe = self.ray.remote(_digest)
        refs = {nid: probe.options(num_cpus=0, scheduling_strategy=self._pinned(nid)).remote(state)
                for nid in self.nodes}
        for nid, ref in refs.items():
            if self.ray.get(ref) != mine:
                where = self.nodes[nid].get("NodeManagerAddress", nid)
                raise EdgepruneError(f"Ray node {where} does not see {state} as this machine does: the work "
                                     "folder must be on a filesystem every node mounts at the same path")

    def _options(self, step: Step) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.threads, "max_retries": RETRIES, "retry_exceptions": False}
        resource = f"device:{step.device}"
        if step.device is not None and any(resource in n["Resources"] for n in self.nodes.values()):
            opts["resources"] = {resource: 1}  # one unit per node: one benchmark at a time on each board
        elif step.alone or (step.device is not None and not step.device.endswith("-emulated")):
            # Timed here, or a board this machine reaches: every CPU of the driver's node, so nothing runs beside
            # it and two benchmarks never share a board. (An emulated board only checks outputs.)
            opts.update(num_cpus=self.node_cpus, scheduling_strategy=self._pinned(self.node))
        elif step.device is not None:
            opts["scheduling_strategy"] = self._pinned(self.node)
        return opts

    def run(self, plan: list[Step], log: StepLog) -> dict[str, Any]:
        """Run (or reuse) every step, each as soon as its inputs are there; the results by step name."""
        ray = self.ray
        check_plan(plan)
        self.check_shared(log.work)
        remote = ray.remote(_run_step)
        cwd = os.getcwd()
        results: dict[str, Any] = {}
        waiting = list(plan)
        pending: dict[Any, tuple[Step, str]] = {}
        failure: tuple[Step, BaseException] | None = None
        while waiting or pending:
            if failure is None:
                for step in [s for s in waiting if all(i in results for i in s.inputs)]:
                    waiting.remove(step)
                    where = log.where()
                    done = log.finished(step.name, step.outputs, step.inputs)
                    if done is not None:
                        log.say(f"{where} {step.name}: done before ({done['seconds']:.1f} s), reused")
                        results[step.name] = done["result"]
                        continue
                    log.say(f"{where} {step.name} ...")
                    args = [results[i] for i in step.inputs]
                    pending[remote.options(**self._options(step)).remote(step, args, self.threads, cwd)] = \
                        (step, where)
                if any(all(i in results for i in s.inputs) for s in waiting):
                    continue  # reused steps made more ready
            if not pending:
                break
            [ref], _ = ray.wait(list(pending), num_returns=1)
            step, where = pending.pop(ref)
            try:
                result, seconds, worker = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # the step raised
                failure = failure or (step, exc.cause if getattr(exc, "cause", None) is not None else exc)
                continue
            except ray.exceptions.RayError as exc:  # its worker or node died, twice
                failure = failure or (step, exc)
                continue
            log.record(step.name, result, seconds, worker)
            results[step.name] = result
            log.say(f"{where} {step.name}: {seconds:.1f} s on {worker}")
        if failure is not None:
            step, exc = failure
            kept = f"the {len(log.state['steps'])} finished steps are kept in {log.work / STATE_FILE}: run the same " \
                   "command again to resume"
            if isinstance(exc, EdgepruneError):
                raise EdgepruneError(f"step {step.name}: {exc}") from None
            died = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                    ray.exceptions.LocalRayletDiedError)
            if isinstance(exc, died):
                raise EdgepruneError(f"step {step.name}: its Ray worker died {RETRIES + 1} times "
                                     f"({type(exc).__name__}); {kept}") from None
            if isinstance(exc, ray.exceptions.RayError):
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise EdgepruneError(f"step {step.name}: Ray could not run it ({type(exc).__name__}: {first}); "
                                     f"{kept}") from None
            raise exc  # a defect in the step itself: its own traceback
        missing = [s.name for s in waiting]
        if missing:
            raise RuntimeError(f"steps never became ready: {missing}")
        return results
