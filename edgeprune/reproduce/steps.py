"""Resumable pipelines: a finished step is not redone.

The work folder holds `state.json`: the settings the run was started with and, for each finished step, its wall
time and its (JSON) result. A step counts as finished only if it is recorded there AND the files it wrote still
exist; every step writes its files atomically, so an interrupted step leaves nothing that looks finished.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from edgeprune.errors import EdgepruneError
from edgeprune.fileio import read_json, write_json

STATE_FILE = "state.json"


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

    def run(self, name: str, fn: Callable[[], Any], outputs: tuple[Path, ...] = ()) -> Any:
        """Result of step `name`: recorded if it already finished (and its outputs exist), else fn()'s."""
        self.count += 1
        where = f"step {self.count}" + (f"/{self.total}" if self.total else "")
        done = self.state["steps"].get(name)
        if done is not None and all(Path(p).exists() for p in outputs):
            self.say(f"{where} {name}: done before ({done['seconds']:.1f} s), reused")
            return done["result"]
        self.say(f"{where} {name} ...")
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        self.state["steps"][name] = {"seconds": round(seconds, 2), "result": result,
                                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self._save()
        self.say(f"{where} {name}: {seconds:.1f} s")
        return result

    def seconds(self) -> dict[str, float]:
        """Wall time of every finished step, in the order they first ran."""
        return {k: v["seconds"] for k, v in self.state["steps"].items()}
