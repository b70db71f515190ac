"""Who runs a declared pipeline's steps: this process, one at a time (`local`, the default), or Ray tasks
(`ray`, in `reproduce.ray_executor`, imported only when asked for).

Both record the same results in the same `state.json` (the owner's `StepLog`), run each step on the same number of
threads, and skip what finished before, so a run started on one executor resumes on the other.
"""

from __future__ import annotations

from typing import Any

from edgeprune.errors import EdgepruneError
from edgeprune.reproduce.steps import Step, StepLog, check_plan, clear_leftovers, fresh_random_state, set_threads

EXECUTORS = ("local", "ray")


class LocalExecutor:
    """Every step in this process, in the order declared, on `threads` threads."""

    name = "local"

    def __init__(self, threads: int = 1):
        self.threads = threads

    def run(self, plan: list[Step], log: StepLog) -> dict[str, Any]:
        """Run (or reuse) every step; the results by step name."""
        check_plan(plan)
        set_threads(self.threads)
        results: dict[str, Any] = {}
        for step in plan:
            args = [results[i] for i in step.inputs]
            results[step.name] = log.run(step.name, lambda: _call(step, args), step.outputs, inputs=step.inputs)
        return results

    def close(self) -> None:
        pass


def _call(step: Step, args: list[Any]) -> Any:
    clear_leftovers(step)
    fresh_random_state(step.name)
    return step.fn(*args)


def make_executor(name: str, threads: int = 1, address: str | None = None, workers: int | None = None,
                  progress: bool = True):
    """The executor called `name`: local, or ray (on the cluster at `address`, or one started on this machine
    with `workers` CPUs, default all of them)."""
    if name not in EXECUTORS:
        raise EdgepruneError(f"--executor {name}: expected one of {', '.join(EXECUTORS)}")
    if threads < 1:
        raise EdgepruneError(f"--threads {threads}: must be at least 1")
    if name == "local":
        if address is not None or workers is not None:
            raise EdgepruneError("--ray-address and --workers apply to --executor ray")
        return LocalExecutor(threads)
    from edgeprune.reproduce.ray_executor import RayExecutor

    return RayExecutor(threads=threads, address=address, workers=workers, progress=progress)

