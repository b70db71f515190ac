"""The sweep's results: one row per point and precision (and the parent's), the Pareto fronts of the task metric
against file size and against measured latency, as MD / CSV / JSON and a plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from edgeprune.machine import machine_description
from edgeprune.results import save_png, write_stem
from edgeprune.tables import markdown_table

COLUMNS = ["method", "target", "seed", "precision", "params", "mac_cut", "parity", "kb", "metric", "ms", "pareto_size",
           "pareto_latency"]


def build(spec, spec_path: str, task: str, grid: list[dict[str, Any]], got: dict[str, Any],
          seconds: dict[str, float], wall_seconds: float, executor: str) -> dict[str, Any]:
    """The results document from the steps' results (`got`, by step name)."""
    from edgeprune.tasks import get_task

    select, mode = get_task(task).select, get_task(task).select_mode
    timed = next((d for d in spec.devices if not d.endswith("-emulated")), None)
    parent_macs = got["export parent"]["macs"]
    entries = [({"method": "none (parent)", "target": "", "seed": None}, "parent", got["export parent"], "parent")]
    entries += [(p, p["name"], got[f"export {p['name']}"], p["name"]) for p in grid]
    rows = []
    for point, _, exported, name in entries:
        bench = got[f"benchmark {name} on {timed}"]["files"]  # the whole test split (emulated boards run 8 clips)
        latency = got[f"benchmark {name} on {timed}"]["files"] if timed else {}
        for q in spec.precisions:
            art = exported["artifacts"].get(q)
            row = {"method": point["method"], "target": point["target"], "seed": point["seed"], "precision": q,
                   "params": exported["params"], "mac_cut": round(1 - exported["macs"] / parent_macs, 4),
                   "parity": "ok" if art and art["passed"] else "rejected", "kb": None, "metric": None, "ms": None}
            if art is not None and art["passed"]:
                row["kb"] = round(art["size_bytes"] / 1024, 1)
                measured = bench.get(Path(art["file"]).name) or {}
                value = (measured.get("metrics") or {}).get(select)
                row["metric"] = None if value is None else round(float(value), 4)
                row["ms"] = (latency.get(Path(art["file"]).name) or {}).get("median_ms")
                row["ms"] = None if row["ms"] is None else round(row["ms"], 4)
            rows.append(row)
    for axis in ("kb", "ms"):
        front = pareto(rows, axis, mode)
        for i, row in enumerate(rows):
            row["pareto_size" if axis == "kb" else "pareto_latency"] = i in front
    return {"title": f"Sweep {Path(spec_path).name}: {', '.join(spec.methods)} x {', '.join(spec.targets)} x "
                     f"{', '.join(spec.precisions)} x seeds {', '.join(map(str, spec.seeds))}",
            "spec": spec.to_json(), "spec_file": spec_path, "task": task, "metric": select, "metric_mode": mode,
            "latency_device": timed, "metric_device": timed, "parent": got["evaluate parent"], "rows": rows,
            "machine": machine_description(),
            "command": f"edgeprune sweep {spec_path}", "step_seconds": seconds, "wall_seconds": wall_seconds,
            "executor": executor}


def pareto(rows: list[dict[str, Any]], axis: str, mode: str) -> set[int]:
    """Indices of the rows no other row beats: as small or smaller on `axis` and as good or better on the metric,
    strictly better on one. Rows without both values are on no front."""
    def better(a: float, b: float) -> bool:
        return a >= b if mode == "max" else a <= b

    have = [i for i, r in enumerate(rows) if r.get(axis) is not None and r.get("metric") is not None]
    front = set()
    for i in have:
        a = rows[i]
        dominated = any(rows[j][axis] <= a[axis] and better(rows[j]["metric"], a["metric"])
                        and (rows[j][axis] < a[axis] or rows[j]["metric"] != a["metric"]) for j in have if j != i)
        if not dominated:
            front.add(i)
    return front


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    heads = [c if c != "metric" else f"{doc['metric']} (test)" for c in COLUMNS]
    heads = [h if h != "ms" else f"ms on {doc['latency_device']}" for h in heads]
    return "\n".join([
        f"# {doc['title']}", "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}.  ",
        f"Task {doc['task']}; {doc['metric']} measured by the benchmark suite on the test split, per exported file; "
        f"latency: the suite's median at 1 thread (one model at a time, not paired). Steps: "
        f"{sum(doc['step_seconds'].values()) / 60:.1f} min in all; this invocation {doc['wall_seconds']:.0f} s on "
        f"the {doc['executor']} executor.", "",
        markdown_table(doc["rows"], COLUMNS, heads), "",
        "A file that failed its parity check (rejected) has no size, metric or latency here: see its bundle's "
        "rejected/ folder. "
        "pareto_size / pareto_latency: no other file is at most as large (as slow) and at least as good.", ""])


def csv_text(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(doc["rows"])
    return buf.getvalue()


def plot(doc: dict[str, Any], path: Path) -> None:
    """Metric against size and against latency, every file a point, each front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, axis, flag, label in ((axes[0], "kb", "pareto_size", "file size (KB)"),
                                  (axes[1], "ms", "pareto_latency", f"latency on {doc['latency_device']} (ms)")):
        rows = [r for r in doc["rows"] if r.get(axis) is not None and r.get("metric") is not None]
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["method"] == method]
            ax.scatter([r[axis] for r in mine], [r["metric"] for r in mine], label=method, s=28)
        front = sorted((r for r in rows if r[flag]), key=lambda r: r[axis])
        ax.plot([r[axis] for r in front], [r["metric"] for r in front], "k--", lw=1, label="Pareto front")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{doc['metric']} (test)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(doc["title"], fontsize=9)
    save_png(fig, path)


def write(doc: dict[str, Any], stem: Path) -> None:
    """STEM.json, STEM.md, STEM.csv and STEM.png, each written atomically."""
    write_stem(Path(stem), doc, markdown(doc), csv_text(doc), plot)
