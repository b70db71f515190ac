"""`edgeprune demo`: the main job on the built-in data, ending in a results table.

For now: train the DCASE baseline twins (PyTorch and Keras) on the synthetic scenes and evaluate them on the test
split. A checkpoint that already exists for the same profile and data is reused, so a second run is quick.
"""

from __future__ import annotations

from pathlib import Path

from edgeprune import checkpoint
from edgeprune.fileio import write_json
from edgeprune.tables import markdown_table
from edgeprune.training import run
from edgeprune.training.profiles import get_profile

MODEL = "dcase2021_baseline"
COLUMNS = ["framework", "params", "mmacs", "best_epoch", "val_accuracy", "test_accuracy", "test_log_loss",
           "train_samples_per_s"]


def run_demo(out: Path, profile_name: str = "quick", data_source: str = "synthetic") -> list[dict]:
    """Train (or reuse) and evaluate both twins; print and write the results table under `out`."""
    profile = get_profile(profile_name)
    data = run.data_for(data_source, profile)
    rows = []
    for framework in ("torch", "keras"):
        path = out / f"{MODEL}-{framework}"
        if not _reusable(path, profile_name, data.info):
            print(f"== training the {framework} twin ({profile.name} profile, {profile.epochs} epochs)", flush=True)
            run.train(MODEL, framework, data, profile, path, force=True)
        ckpt = checkpoint.load(path)
        report = run.evaluate(ckpt, data, "test")
        info = run.describe(ckpt.model, framework, ckpt.arch)
        training = ckpt.spec["training"]
        rows.append({
            "framework": framework, "params": info["params"], "mmacs": round(info["macs"] / 1e6, 1),
            "best_epoch": training["best_epoch"], "val_accuracy": round(training["validation"]["accuracy"], 4),
            "test_accuracy": round(report["accuracy"], 4), "test_log_loss": round(report["log_loss"], 4),
            "train_samples_per_s": training["train_samples_per_second"],
        })
    table = markdown_table(rows, COLUMNS)
    title = (f"DCASE 2021 1a baseline, {profile.name} profile, data: {data.info.get('source')} "
             f"({len(data['test'])} test clips, {len(data.classes)} classes, chance {1 / len(data.classes):.0%})")
    print(f"\n{title}\n\n{table}\n")
    write_json(out / "results.json", {"title": title, "rows": rows, "machine": run.machine_description()}, force=True)
    (out / "results.md").write_text(f"# {title}\n\n{table}\n")
    print(f"wrote {out / 'results.md'}")
    return rows


def _reusable(path: Path, profile_name: str, data_info: dict) -> bool:
    try:
        training = checkpoint.read_spec(path).get("training", {})
    except Exception:
        return False
    return training.get("profile") == profile_name and training.get("data") == data_info
