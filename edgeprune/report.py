"""`edgeprune report`: merge benchmark result files (schema 1 or 2, from `python -m benchmarks`) into one table and a
size-vs-latency plot.

Writes STEM.md, STEM.csv, STEM.json and STEM.png. Results can come from different devices (each file carries its
device fingerprint). Emulated timings (a runner marks them with `"emulated": true` on the file, its device or one
result) say nothing about a device, so they go to their own column and their own plot panel, never into the
latency columns. Failed results stay in the table, marked failed.

The quality column is each result's task metric, named after it: accuracy for classification (schema 1 files have
no other), per for phones, si_sdri for enhancement; results of different tasks get one column each.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError
from edgeprune.fileio import atomic_path, read_json, refuse_overwrite
from edgeprune.tables import markdown_table

SCHEMA_VERSIONS = (1, 2)  # the schemas benchmarks/__main__.py writes (2: a task and its metrics per result)
SCHEMA_VERSION = 2  # this report's own JSON (its columns name the metrics)
COLUMNS = ["run", "device", "model", "precision", "format", "size_kb", "params", "threads", "xnnpack", "median_ms",
           "p90_ms", "std_ms", "emulated_median_ms", "peak_rss_mb", "accuracy", "status"]  # "accuracy": the metrics
METRIC_SLOT = COLUMNS.index("accuracy")
SUFFIXES = (".md", ".csv", ".json", ".png")
MARKERS = {"fp32": "o", "fp16": "s", "dynamic": "^", "int8": "D"}


def load_results(path: Path) -> dict[str, Any]:
    """One results file, checked against schema 1 or 2; anything else is one clear EdgepruneError."""
    data = read_json(path, what="benchmark results file (from python -m benchmarks)")
    expected = f"expected schema {' or '.join(map(str, SCHEMA_VERSIONS))} written by python -m benchmarks"
    if not isinstance(data, dict) or "schema" not in data:
        raise EdgepruneError(f"{path}: not a benchmark results file ({expected})")
    if data["schema"] not in SCHEMA_VERSIONS:
        raise EdgepruneError(f"{path}: schema {data['schema']!r}; {expected}")
    results = data.get("results")
    if not isinstance(data.get("device"), dict) or not isinstance(results, list):
        raise EdgepruneError(f"{path}: no 'device' object or 'results' list ({expected})")
    for i, r in enumerate(results):
        if not isinstance(r, dict) or "file" not in r or "ok" not in r:
            raise EdgepruneError(f"{path}: results[{i}] has no 'file' and 'ok' ({expected})")
        if r["ok"] and not isinstance(r.get("latency"), dict):
            raise EdgepruneError(f"{path}: results[{i}] ({r['file']}) is ok but has no latency ({expected})")
    return data


def device_label(device: dict[str, Any]) -> str:
    """A short name for a device fingerprint: CPU, architecture and cores."""
    return f"{device.get('cpu', '?')} ({device.get('machine', '?')}, {device.get('cores', '?')} cores)"


def file_emulated(data: dict[str, Any]) -> bool:
    """Whether a whole results file was measured under emulation (marked on the file or on its device)."""
    return bool(data.get("emulated") or data["device"].get("emulated"))


def _round(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def result_metric(r: dict[str, Any]) -> tuple[str, Any]:
    """(metric name, value or None) of one result: schema 2 names it in "task" and keeps it in "metrics"; schema 1
    has accuracy only."""
    if "metrics" in r or "task" in r:
        name = (r.get("task") or {}).get("metric") or "accuracy"
        return name, (r.get("metrics") or {}).get(name)
    return "accuracy", (r.get("accuracy") or {}).get("accuracy")


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    """One column per task metric the rows carry, in order of appearance (accuracy when there are no rows)."""
    return list(dict.fromkeys(r["metric"] for r in rows)) or ["accuracy"]


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """COLUMNS with the metric slot holding the metric columns."""
    return COLUMNS[:METRIC_SLOT] + metric_columns(rows) + COLUMNS[METRIC_SLOT + 1 :]


def result_row(run: str, data: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    """One table row for one result; emulated timings go to `emulated_median_ms`, not the latency columns. The
    metric goes under its own name (`metric` says which)."""
    lat = r.get("latency") or {}
    emulated = file_emulated(data) or bool(r.get("emulated"))
    file = Path(r["file"])
    fmt = r.get("format") or file.suffix.lstrip(".")
    size = r.get("size_bytes")
    model = f"{file.parent.name}/{file.name}" if file.parent.name else file.name  # bundle/file names the model
    metric, value = result_metric(r)
    if metric in COLUMNS[:METRIC_SLOT] + COLUMNS[METRIC_SLOT + 1 :] + ["metric", "emulated"]:
        metric = "metric_" + metric  # a metric may not overwrite another column
    row = {"run": run, "device": device_label(data["device"]), "model": model,
           "precision": r.get("precision"), "format": fmt, "size_kb": None if size is None else round(size / 1024, 1),
           "params": r.get("params"), "threads": r.get("threads"),
           # the suite records xnnpack=True for ONNX files too, where it means nothing
           "xnnpack": ("on" if r.get("xnnpack") else "off") if fmt == "tflite" else None,
           "median_ms": None, "p90_ms": None, "std_ms": None, "emulated_median_ms": None,
           "peak_rss_mb": _round(r.get("peak_rss_mb"), 1),
           "metric": metric, metric: _round(value, 4),
           "status": "ok" if r["ok"] else f"FAILED: {r.get('error') or 'no reason given'}", "emulated": emulated}
    if r["ok"] and emulated:
        row["emulated_median_ms"] = _round(lat.get("median_ms"), 3)
    elif r["ok"]:
        row.update(median_ms=_round(lat.get("median_ms"), 3), p90_ms=_round(lat.get("p90_ms"), 3),
                   std_ms=_round(lat.get("std_ms"), 3))
    return row


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _markdown(report: dict[str, Any], png_name: str) -> str:
    lines = ["# Benchmark report", "", f"Merged {len(report['inputs'])} result file(s) on {report['created']}.", ""]
    for inp in report["inputs"]:
        dev = inp["device"]
        runtimes = ", ".join(f"{k} {v}" for k, v in sorted((dev.get("runtimes") or {}).items()))
        lines.append(f"- `{inp['run']}` ({inp['path']}): {device_label(dev)}{' EMULATED' if inp['emulated'] else ''}, "
                     f"{dev.get('os', '?')}, Python {dev.get('python', '?')}, {runtimes}; "
                     f"created {inp.get('created')}; command `{inp.get('command')}`")
    metrics = ", ".join(metric_columns(report["rows"]))
    lines += ["", markdown_table(report["rows"], report["columns"]), "",
              "median_ms, p90_ms and std_ms (the spread: standard deviation of the timed invokes) are device latency. "
              "emulated_median_ms is the median under an emulator: a correctness run, not device latency. "
              f"size_kb is file bytes / 1024; {metrics}: the task's metric on the test data the run was given "
              "(accuracy for classification, per the phone error rate, si_sdri the SI-SDR improvement in dB)."]
    failed = [r for r in report["rows"] if r["status"] != "ok"]
    if failed:
        lines += ["", f"{len(failed)} failed result(s):"]
        lines += [f"- `{r['run']}` {r['model']} (threads {r['threads']}): {r['status']}" for r in failed]
    lines += ["", f"![size vs latency]({png_name})", ""]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: io.BytesIO | Path) -> None:
    """Size (KB) vs median latency (ms), one panel per device (emulated runs on their own panels), marker shape by
    precision, colour by the metric (the first metric column: accuracy for classification; rows judged by another
    metric are grey), an upward bar to p90 as the spread; failed results cannot be placed and are counted in the
    panel title."""
    # Imported here so the rest of edgeprune never needs matplotlib; the Agg canvas needs no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogFormatter

    panels: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        title = row["device"] + (" - EMULATED, not device latency" if row["emulated"] else "")
        panels.setdefault(title, []).append(row)
    metric = metric_columns(rows)[0]
    accs = [r[metric] for r in rows if r.get(metric) is not None]
    norm = Normalize(min(accs, default=0.0), max(accs, default=1.0))
    cmap = "viridis"
    fig = Figure(figsize=(6.5 * len(panels), 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, panel) in zip(axes, panels.items()):
        key = "emulated_median_ms" if panel[0]["emulated"] else "median_ms"
        placed = [r for r in panel if r[key] is not None and r["size_kb"] is not None]
        for r in placed:
            colour = ScalarMappable(norm, cmap).to_rgba(r[metric]) if r.get(metric) is not None else "lightgrey"
            if r["p90_ms"] is not None:
                ax.plot([r["size_kb"]] * 2, [r[key], r["p90_ms"]], color="grey", lw=0.8, zorder=1)
            ax.scatter(r["size_kb"], r[key], marker=MARKERS.get(r["precision"], "o"), c=[colour], s=55,
                       edgecolors="black", linewidths=0.6, zorder=2)
            label = f"{r['format']} {r['threads']}t" + (" no-XNNPACK" if r["xnnpack"] == "off" else "")
            if len({p["run"] for p in panel}) > 1:  # several runs on one device share the panel
                label += f" [{r['run']}]"
            ax.annotate(label, (r["size_kb"], r[key]), xytext=(5, 2), textcoords="offset points", fontsize=6)
        failed = len(panel) - len(placed)
        ax.set_title(title + (f"\n({failed} failed, not plotted)" if failed else ""), fontsize=9)
        ax.set_xlabel("model file size (KB)")
        ax.set_ylabel("emulated median (ms)" if key == "emulated_median_ms" else "median latency (ms), bar to p90")
        ax.set_yscale("log")  # XNNPACK on/off and int8/fp32 differ several-fold
        # plain numbers (6, not 6x10^0); minor ticks labelled only where the range is too short for major ones
        ax.yaxis.set_major_formatter(LogFormatter())
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        ax.grid(True, which="both", alpha=0.3)
    precisions = sorted({r["precision"] for r in rows if r["precision"] in MARKERS}, key=list(MARKERS).index)
    handles = [Line2D([], [], marker=MARKERS[p], ls="", color="grey", label=p) for p in precisions]
    if any(r.get(metric) is None for r in rows):
        handles.append(Line2D([], [], marker="o", ls="", color="lightgrey", markeredgecolor="black",
                              label=f"no {metric} (no test set, or another task)"))
    axes[0].legend(handles=handles, title="precision", fontsize=7, loc="best")
    if accs:
        fig.colorbar(ScalarMappable(norm, cmap), ax=list(axes), label=metric)
    fig.savefig(out, format="png", dpi=120)


def report(result_files: list[Path], out_stem: Path, force: bool = False) -> dict[str, Any]:
    """Merge result files into OUT_STEM.{md,csv,json,png}; returns what OUT_STEM.json holds.

    Every input is read and checked, and the four outputs are built in memory, before anything is written; each
    output is then written atomically (a bad input leaves nothing behind)."""
    if not result_files:
        raise EdgepruneError("no result files given")
    paths = [Path(p) for p in result_files]
    seen: set[Path] = set()
    for p in paths:
        if p.resolve() in seen:
            raise EdgepruneError(f"{p}: given twice; its rows would be counted twice")
        seen.add(p.resolve())
    out_stem = Path(out_stem)
    targets = [out_stem.with_name(out_stem.name + s) for s in SUFFIXES]
    for target in targets:
        refuse_overwrite(target, force)
    inputs, rows = [], []
    for path in paths:
        data = load_results(path)
        # the file's stem names the run; two files with the same stem get the folder too, to stay distinct
        run = path.stem if sum(p.stem == path.stem for p in paths) == 1 else f"{path.parent.name}/{path.stem}"
        inputs.append({"run": run, "path": str(path), "created": data.get("created"), "command": data.get("command"),
                       "device": data["device"], "emulated": file_emulated(data)})
        for i, r in enumerate(data["results"]):
            try:
                rows.append(result_row(run, data, r))
            except (TypeError, ValueError) as exc:  # e.g. a latency or size that is not a number
                raise EdgepruneError(f"{path}: results[{i}] ({r['file']}): {exc}") from exc
    for row in rows:  # every row has every metric column (None where its task has another metric)
        row.update({m: row.get(m) for m in metric_columns(rows)})
    merged = {"schema": SCHEMA_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "inputs": inputs,
              "columns": columns(rows), "rows": rows, "failed": sum(r["status"] != "ok" for r in rows)}
    png = io.BytesIO()
    plot(rows, png)
    contents = {".md": _markdown(merged, targets[3].name).encode(), ".csv": _csv_text(rows).encode(),
                ".json": (json.dumps(merged, indent=2) + "\n").encode(), ".png": png.getvalue()}
    for suffix, target in zip(SUFFIXES, targets):
        with atomic_path(target, force=force) as tmp:
            tmp.write_bytes(contents[suffix])
    return merged


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="merge benchmark result files into one table (Markdown, CSV, JSON) "
                                             "and a size-vs-latency plot")
    _add_arguments(p)
    p.set_defaults(func=cmd_report)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="result JSON files written by python -m benchmarks (any devices)")
    p.add_argument("--out", default="runs/report",
                   help="output stem: writes STEM.md, STEM.csv, STEM.json, STEM.png (default runs/report)")
    p.add_argument("--force", action="store_true", help="replace existing outputs")


def cmd_report(args: argparse.Namespace) -> None:
    merged = report([Path(p) for p in args.results], Path(args.out), force=args.force)
    print(markdown_table(merged["rows"], merged["columns"]))
    failed = f", {merged['failed']} failed" if merged["failed"] else ""
    print(f"wrote {args.out}.{{md,csv,json,png}} ({len(merged['rows'])} results from {len(merged['inputs'])} files"
          f"{failed})")
