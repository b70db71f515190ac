"""Resumable pipelines: a finished step is not redone.

The work folder holds `state.json`: the settings the run was started with and, for each finished step, its wall
time, its (JSON) result and its place in the order steps finished. A step counts as finished only if it is recorded
there, the files it wrote still exist, and none of the steps whose results it took finished after it (one redone
since, because its files were gone, makes every step that took its result run again); every step writes its files
atomically, so an interrupted step leaves nothing that looks finished.

Jobs either run steps one at a time (`StepLog.run`, naming the steps each takes) or declare them (`Step`, with the
steps whose results they take) and hand the list to an executor (`reproduce.executors`), which may run independent
steps at once. Only the process that owns the `StepLog` writes `state.json`, whichever executor ran the steps.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgeprune.errors import EdgepruneError
from edgeprune.fileio import read_json, write_json

STATE_FILE = "state.json"


@dataclass(frozen=True)
class Step:
    """One step of a declared pipeline.

    `fn` is called with the results of `inputs` (names of earlier steps), in that order; it must be picklable
    (a module-level function or a functools.partial of one) so that another process can run it. `alone`: the step
    times something, so it gets the machine to itself (under Ray: every CPU of the driver's node). `device`: the
    step benchmarks this target, so under Ray it runs on a node that advertises the resource `device:NAME`
    (the driver's node if none does)."""

    name: str
    fn: Callable[..., Any]
    inputs: tuple[str, ...] = ()
    outputs: tuple[Path, ...] = ()
    alone: bool = False
    device: str | None = None


def check_plan(plan: list[Step]) -> None:
    """Names are unique and every input is declared before the step that takes it (so the list is in an order
    that runs)."""
    seen: set[str] = set()
    for step in plan:
        if step.name in seen:
            raise ValueError(f"step '{step.name}' is declared twice")
        missing = [i for i in step.inputs if i not in seen]
        if missing:
            raise ValueError(f"step '{step.name}' takes {missing}, not declared before it")
        seen.add(step.name)


def default_threads() -> int:
    """Threads per step when a run does not say: every CPU of this machine (what the frameworks use by default)."""
    return os.cpu_count() or 1


def set_threads(n: int) -> None:
    """Run this process's PyTorch and TensorFlow kernels on `n` threads. Results depend on the thread count
    (reductions split differently), so a pipeline fixes it whichever executor runs its steps. TensorFlow reads it
    once, when its runtime starts; a later change only reaches PyTorch."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(n)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already started: it started after this process set the variables above, or not
            pass


def fresh_random_state(name: str) -> None:
    """Seed Python's, NumPy's and the frameworks' global generators from the step's name. A step then draws the
    same numbers in a fresh process as after other steps in this one (Keras gives a new layer's dropout a seed from
    Python's generator when the model is built, before any training seeds it). Keras is imported first, here:
    importing it draws from Python's generator, so a step that imported it itself in a fresh worker drew other
    numbers than in a process that had it already (measured: a fine-tune's accuracy moved on Ray)."""
    import random
    import zlib

    import numpy as np

    import torch

    try:
        import keras  # once per process: seconds in a fresh worker
    except ImportError:  # pragma: no cover - a machine without TensorFlow runs torch steps only
        keras = None
    seed = zlib.crc32(name.encode())
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if keras is not None:
        keras.utils.set_random_seed(seed)


def clear_leftovers(step: Step) -> None:
    """Remove what an earlier attempt of `step` left half-written beside its outputs (a worker killed mid-write
    never reaches the cleanup of `fileio.atomic_path`)."""
    import shutil

    for out in step.outputs:
        out = Path(out)
        if out.parent.is_dir():
            for tmp in out.parent.glob(f".{out.name}.tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


class StepLog:
    """Runs named steps once per work folder, recording each one's wall time and result."""

    def __init__(self, work: Path, settings: dict[str, Any], progress: bool = True, total: int | None = None):
        self.work = Path(work)
        self.progress = progress
        self.total = total
        self.count = 0
        path = self.work / STATE_FILE
        if path.exists():
            state = read_json(path, "pipeline state file")
            if state.get("settings") != settings:
                changed = sorted(k for k in set(settings) | set(state.get("settings", {}))
                                 if settings.get(k) != state.get("settings", {}).get(k))
                raise EdgepruneError(f"{self.work} holds a run with other settings ({', '.join(changed)} differ); "
                                     "give another --work folder or pass --force to start over")
            self.state = state
        else:
            self.state = {"settings": settings, "steps": {}}
            self.work.mkdir(parents=True, exist_ok=True)
            self._save()

    def _save(self) -> None:
        write_json(self.work / STATE_FILE, self.state, force=True)

    def say(self, msg: str) -> None:
        if self.progress:
            print(f"[reproduce] {msg}", flush=True)

    def where(self) -> str:
        """'step N/TOTAL' for the next progress line."""
        self.count += 1
        return f"step {self.count}" + (f"/{self.total}" if self.total else "")

    def finished(self, name: str, outputs: tuple[Path, ...] = (), inputs: tuple[str, ...] = ()
                 ) -> dict[str, Any] | None:
        """The record of step `name` if it finished before, its outputs still exist, and no step of `inputs` (the
        steps whose results it took) finished after it. Records without an order (older state files) count as
        first."""
        steps = self.state["steps"]
        done = steps.get(name)
        if done is None or not all(Path(p).exists() for p in outputs):
            return None
        newest = max((steps.get(i, {}).get("order", 0) for i in inputs), default=0)
        return done if newest <= done.get("order", 0) else None

    def record(self, name: str, result: Any, seconds: float, worker: str | None = None) -> None:
        """Step `name` finished: keep its result, wall time, place in the order of finishing (and where it ran) in
        state.json."""
        order = max((s.get("order", 0) for s in self.state["steps"].values()), default=0) + 1
        entry = {"seconds": round(seconds, 2), "result": result, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "order": order}
        if worker is not None:
            entry["worker"] = worker
        self.state["steps"][name] = entry
        self._save()

    def run(self, name: str, fn: Callable[[], Any], outputs: tuple[Path, ...] = (), *, inputs: tuple[str, ...]
            ) -> Any:
        """Result of step `name`: recorded if it already finished (see `finished`), else fn()'s. `inputs` (the
        steps whose results or files it takes) must be given, () for none: a forgotten one would let a step reuse
        what an input redone since made stale."""
        where = self.where()
        done = self.finished(name, outputs, inputs)
        if done is not None:
            self.say(f"{where} {name}: done before ({done['seconds']:.1f} s), reused")
            return done["result"]
        self.say(f"{where} {name} ...")
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        self.record(name, result, seconds)
        self.say(f"{where} {name}: {seconds:.1f} s")
        return result

    def seconds(self, order: list[str] | None = None) -> dict[str, float]:
        """Wall time of every finished step: in `order` (e.g. the plan's, the same whichever executor ran them),
        else in the order they finished."""
        steps = self.state["steps"]
        names = [n for n in order if n in steps] if order is not None else list(steps)
        return {n: steps[n]["seconds"] for n in names}
