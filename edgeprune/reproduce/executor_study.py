"""The executors compared on the DCASE job: the same command from empty work folders on the local executor and on
Ray with N workers, one after the other on an otherwise idle machine; the wall time of each invocation, the steps'
time by kind, and whether the two tables agree.

    python -m edgeprune.reproduce.executor_study --profile quick --workers 2 \\
        --out benchmarks/results/executors_dcase_quick

What must agree: every step's result except the steps that read a clock (the latency table, the paired latency,
the benchmarks) and the latency-aware rows, whose counts are chosen on the latency table that run measured.
`--local-threads N` adds a third run, local with N threads per step (its results differ: they depend on the thread
count). A run whose summary is in ROOT is not run again (delete ROOT to start over).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgeprune.fileio import write_json, write_text
from edgeprune.machine import machine_description
from edgeprune.tables import markdown_table

CLOCKS = ("latency table", "paired latency", "benchmark on")  # the steps that read a clock
TIMED = CLOCKS + ("latency-aware", "(latency)", "padded for")  # ... and what was chosen on what one measured
KINDS = ("train", "fine-tune", "export", "latency table", "paired latency", "benchmark")


def untimed(state: dict[str, Any], work: Path, timed: tuple[str, ...] = TIMED) -> dict[str, Any]:
    """Each step's result, except the `timed` steps and every wall time ('seconds' keys), the work folder's path
    taken out."""
    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if "seconds" not in k}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return {name: strip(json.loads(json.dumps(step["result"]).replace(str(work), "WORK")))
            for name, step in state["steps"].items() if not any(t in name for t in timed)}


def untimed_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The DCASE table's rows without their timing columns (ms_*, lat_*)."""
    return [{k: v for k, v in r.items() if not k.startswith(("ms_", "lat_"))} for r in rows]


def _run(name: str, executor: str, threads: int, profile: str, workers: int, root: Path) -> dict[str, Any]:
    work = root / name
    summary = work / "summary.json"
    if not summary.exists():
        shutil.rmtree(work, ignore_errors=True)
        cmd = [sys.executable, "-m", "edgeprune.cli", "reproduce", "dcase-table", "--profile", profile,
               "--work", str(work / "work"), "--out", str(work / "table"), "--executor", executor,
               "--threads", str(threads)]
        if executor == "ray":
            cmd += ["--workers", str(workers)]
        print(f"[executor-study] {' '.join(cmd[2:])}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{name} run failed:\n{proc.stderr[-3000:]}")
        write_json(summary, {"command": " ".join(["edgeprune"] + cmd[3:]), "wall_seconds": round(wall, 1)})
    state = json.loads((work / "work" / "state.json").read_text())
    by_kind = {k: round(sum(s["seconds"] for n, s in state["steps"].items() if n.startswith(k)), 1) for k in KINDS}
    return {**json.loads(summary.read_text()), "threads": threads, "by_kind": by_kind,
            "step_seconds": round(sum(s["seconds"] for s in state["steps"].values()), 1),
            "state": state, "work": work / "work", "table": json.loads((work / "table.json").read_text())}


def compare(local: dict[str, Any], ray: dict[str, Any]) -> dict[str, Any]:
    """Which results agree: the untimed steps, the seed rows' untimed columns, and the latency-aware counts."""
    a, b = untimed(local["state"], local["work"]), untimed(ray["state"], ray["work"])
    differing = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))
    counts = lambda t: {r["row"]: r.get("kept") for r in t.get("latency_rows") or []}  # noqa: E731
    every = lambda run: untimed(run["state"], run["work"], timed=CLOCKS)  # noqa: E731
    return {"untimed_steps": len(a), "untimed_steps_differing": differing,
            "all_but_clock_steps": len(every(local)), "all_but_clock_steps_identical": every(local) == every(ray),
            "seed_rows_identical": untimed_columns(local["table"]["rows"]) == untimed_columns(ray["table"]["rows"]),
            "latency_counts_local": counts(local["table"]), "latency_counts_ray": counts(ray["table"])}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--local-threads", type=int, help="also run local with this many threads per step")
    p.add_argument("--root", default="runs/executor-study", help="where the runs' work folders go")
    p.add_argument("--out", default="runs/executor-study/executors_dcase")
    args = p.parse_args(argv)
    root = Path(args.root)
    local = _run("local", "local", 1, args.profile, args.workers, root)
    ray = _run("ray", "ray", 1, args.profile, args.workers, root)
    agree = compare(local, ray)
    runs = {"local": local, "ray": ray}
    if args.local_threads:
        runs[f"local, {args.local_threads} threads"] = _run(f"local-{args.local_threads}-threads", "local",
                                                            args.local_threads, args.profile, args.workers, root)
    doc = {"profile": args.profile, "workers": args.workers, "machine": machine_description(),
           "command": f"python -m edgeprune.reproduce.executor_study --profile {args.profile} --workers "
                      f"{args.workers}" + (f" --local-threads {args.local_threads}" if args.local_threads else "")
                      + f" --out {args.out}",
           "runs": {k: {f: v for f, v in r.items()
                        if f in ("command", "threads", "wall_seconds", "step_seconds", "by_kind")}
                    for k, r in runs.items()},
           "speedup": round(local["wall_seconds"] / ray["wall_seconds"], 3), "agreement": agree}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), doc, force=True)
    write_text(out.with_suffix(".md"), markdown(doc), force=True)
    print(markdown(doc))


def markdown(doc: dict[str, Any]) -> str:
    m, runs, agree = doc["machine"], doc["runs"], doc["agreement"]
    rows = [{"run": k, "threads per step": r["threads"], "wall s": r["wall_seconds"],
             "sum of steps s": r["step_seconds"],
             **{f"{kind} s": r["by_kind"][kind] for kind in KINDS}} for k, r in runs.items()]
    same_counts = agree["latency_counts_local"] == agree["latency_counts_ray"]
    return "\n".join([
        f"# The DCASE job ({doc['profile']} profile) on the local executor and on Ray with {doc['workers']} workers",
        "", f"Command: `{doc['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}. The runs one after the other "
        "from empty work folders, nothing else running; each once, not repeated.", "",
        markdown_table(rows, list(rows[0])), "",
        f"Speed-up of the whole invocation: **{doc['speedup']:.2f}x** (local wall / Ray wall, both at 1 thread per "
        "step, `--threads 1`)."
        + "".join(f" Ray against {k} ({r['wall_seconds']:.0f} s): "
                  f"{r['wall_seconds'] / runs['ray']['wall_seconds']:.2f}x."
                  for k, r in runs.items() if k not in ("local", "ray"))
        + " Under Ray the steps that time something (the "
        "latency table, the paired latency, the desktop benchmark) take every CPU of the machine, so they run "
        "alone as they do locally; the sum of steps grows under Ray because two steps share 2 cores.", "",
        "Agreement:",
        f"- results of the {agree['untimed_steps']} steps that read no clock (train, evaluate, scores, every seed "
        f"row's prune, fine-tune and export): "
        + ("**identical**" if not agree["untimed_steps_differing"] else
           f"**differ** in {', '.join(agree['untimed_steps_differing'])}"),
        "- the table's seed rows, every column but the measured times: "
        + ("**identical**" if agree["seed_rows_identical"] else "**differ**"),
        "- the latency-aware rows: their counts are chosen on the latency table each run measures, so they agree "
        "only where the measured stairs do: " + ("the same counts in both runs" if same_counts else
                                                  f"local {agree['latency_counts_local']}, Ray "
                                                  f"{agree['latency_counts_ray']}")
        + f"; every one of the {agree['all_but_clock_steps']} steps that read no clock, these rows' included: "
        + ("**identical**." if agree["all_but_clock_steps_identical"] else "**not all identical**."), ""])


if __name__ == "__main__":
    main()
