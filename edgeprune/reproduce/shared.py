"""Steps the reproduce jobs share: checking device names before any work, and benchmarking bundles on one target
through devices/ (the suite in a fresh process per model), an emulated board checked against the desktop run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from edgeprune.data.datasets import Split, save_test_data
from edgeprune.errors import EdgepruneError


_DATA: dict[tuple[str, str, str], Any] = {}


def cached_data(source: str, profile: str, task: str = "scenes", progress: bool = False):
    """The data set of a run, loaded once per process: a step may run in this process or in a worker of another
    (which loads it from the on-disk cache of generated data), so steps ask for it here rather than being handed it."""
    from edgeprune.training import run as training
    from edgeprune.training.profiles import get_profile

    key = (source, profile, task)
    if key not in _DATA:
        _DATA[key] = training.data_for(source, get_profile(profile), progress=progress, task=task)
    return _DATA[key]


def check_devices(devices: list[str]) -> None:
    """Every name must be a known target (desktop, BOARD, BOARD-emulated, ssh://...); checked before any work."""
    from edgeprune.bench import load_devices

    dev = load_devices()
    if not devices:
        raise EdgepruneError(f"--devices: none given; expected some of {', '.join(dev.device_names())}")
    for name in devices:
        try:
            dev.make_runner(name)
        except dev.DeviceError as exc:
            raise EdgepruneError(f"--devices {name}: {exc}") from None


def after_desktop(device: str, devices: list[str]) -> tuple[str, ...]:
    """What a benchmark step takes besides the files: a board other than the desktop is checked against the
    desktop run's outputs (`bench`), so it takes "benchmark on desktop" when the run has one."""
    return ("benchmark on desktop",) if device != "desktop" and "desktop" in devices else ()


def bench(device: str, targets: list[Path], test: Split, stem: Path, runs: int, emulated_clips: int,
          progress: bool) -> dict[str, Any]:
    """Every model of `targets` (bundles or files) on one target: latency at 1 thread with XNNPACK, the task's
    metrics and saved outputs. An emulated board runs `emulated_clips` samples and one timed run per model, and is
    compared with the desktop run's outputs (STEM's sibling desktop.json); its timings are never latency."""
    from edgeprune.bench import load_devices

    dev = load_devices()
    runner = dev.make_runner(device, log=(lambda m: print(m, flush=True)) if progress else (lambda m: None))
    stem.parent.mkdir(parents=True, exist_ok=True)
    emulated = device.endswith("-emulated")
    with tempfile.TemporaryDirectory(prefix="edgeprune-reproduce-") as tmp:
        test_data = save_test_data(Path(tmp) / "test.npz", test)
        options = dev.RunOptions(out=stem, threads=(1,), xnnpack="on", subset=emulated_clips if emulated else 0,
                                 runs=1 if emulated else runs, min_seconds=None if emulated else 0.5,
                                 warmup_seconds=None if emulated else 0.2)
        try:
            path = runner.run(targets, test_data, None, options)
        except dev.DeviceError as exc:
            raise EdgepruneError(f"benchmark on {device}: {exc}") from None
    doc = json.loads(path.read_text())
    results = {}
    for r in doc["results"]:
        lat = r.get("latency") or {}
        results[f"{Path(r['file']).parent.name}/{Path(r['file']).name}"] = {
            "ok": bool(r.get("ok")), "median_ms": None if doc.get("emulated") else lat.get("median_ms"),
            "p90_ms": None if doc.get("emulated") else lat.get("p90_ms"), "metrics": r.get("metrics") or {},
            "accuracy": (r.get("metrics") or {}).get("accuracy"), "error": r.get("error")}
    reference = stem.parent / "desktop.json"
    agreement = None
    if doc.get("emulated") and reference.exists():
        agreement = {row["model"].split(" ")[0]: {k: row.get(k) for k in ("ok", "why", "clips", "max_abs_diff",
                                                                          "max_steps")}
                     for row in dev.compare_outputs(path, reference)}
    return {"device": device, "emulated": bool(doc.get("emulated")), "fingerprint": doc.get("device"),
            "results": results, "agreement": agreement, "file": str(path)}


def export_or_rejected(checkpoint_path: Path, out_dir: Path, **options: Any) -> dict[str, Any]:
    """`export.export`, except that files failing parity are a result (their manifest, `passed` False, the bundle
    written with its rejected/ folder) rather than the end of a long job; any other failure still raises."""
    from edgeprune.export import export

    try:
        return export(checkpoint_path, out_dir, **options)
    except EdgepruneError as exc:
        manifest = getattr(exc, "manifest", None)
        if manifest is None:
            raise
        return manifest
