"""High-level train / evaluate / describe, used by the CLI and by later pipeline stages."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

from edgeprune import checkpoint
from edgeprune.data.datasets import Dataset, load_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.fileio import refuse_overwrite
from edgeprune.frameworks import get_adapter
from edgeprune.models import arch_spec, build, get_entry
from edgeprune.training.loop import fit
from edgeprune.training.metrics import classification_report
from edgeprune.training.profiles import Profile


def data_for(source: str, profile: Profile, progress: bool = True) -> Dataset:
    """The data set a run uses: `synthetic` at the profile's size, or a folder of real features."""
    return load_dataset(source, profile.synthetic, progress=progress)


def _check_classes(data: Dataset, arch: dict[str, Any]) -> None:
    n = arch["args"].get("n_classes")
    if n is not None and len(data.classes) != n:
        raise EdgepruneError(f"data '{data.info.get('source')}' has {len(data.classes)} classes; the model expects {n}")


def train(model_name: str, framework: str, data: Dataset, profile: Profile, out: Path, seed: int = 0,
          force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train a registered model from scratch, save the best-validation checkpoint at `out`, return its summary."""
    out = Path(out)
    refuse_overwrite(out, force)  # fail before minutes of training, not after
    arch = arch_spec(model_name)
    _check_classes(data, arch)
    adapter = get_adapter(framework)
    adapter.seed_everything(seed)
    model = _initial_model(arch, framework, seed)
    result = fit(adapter, model, data, profile, seed=seed, progress=progress)
    val = classification_report(adapter.predict_proba(model, data["validation"].x), data["validation"].y, data.classes)
    summary = {
        "model": model_name, "framework": framework, "profile": profile.name, "seed": seed,
        "data": data.info, "best_epoch": result.best_epoch, "validation": _headline(val),
        "train_seconds": round(result.seconds, 2), "train_samples_per_second": round(result.samples_per_second, 2),
        "history": result.history, "machine": machine_description(),
    }
    checkpoint.save(out, model, framework, arch, data.classes, extra={"training": summary}, force=force)
    return summary


def _initial_model(arch: dict[str, Any], framework: str, seed: int) -> Any:
    """A fresh model; a Keras twin starts from the PyTorch twin's seeded initial weights, so the two differ only
    in framework numerics (Keras' Glorot initialisation trains this baseline markedly slower in a quick run)."""
    model = build(arch, framework)
    if framework == "keras" and "torch" in get_entry(arch["model"]).builders:
        from edgeprune.transfer import transfer_weights

        torch_adapter = get_adapter("torch")
        torch_adapter.seed_everything(seed)
        transfer_weights(build(arch, "torch"), model)
    return model


def evaluate(ckpt: checkpoint.Checkpoint, data: Dataset, split: str = "test") -> dict[str, Any]:
    """Accuracy, log-loss, per-class accuracy and confusion of a loaded checkpoint on one split."""
    if split not in data.splits:
        raise EdgepruneError(f"unknown split '{split}'; expected one of {', '.join(data.splits)}")
    if list(data.classes) != list(ckpt.classes) and len(data.classes) != len(ckpt.classes):
        raise EdgepruneError(
            f"{ckpt.path}: trained on {len(ckpt.classes)} classes, data '{data.info.get('source')}' has {len(data.classes)}"
        )
    adapter = get_adapter(ckpt.framework)
    start = time.perf_counter()
    probs = adapter.predict_proba(ckpt.model, data[split].x)
    report = classification_report(probs, data[split].y, ckpt.classes)
    report.update({"checkpoint": str(ckpt.path), "framework": ckpt.framework, "split": split,
                   "data": data.info, "seconds": round(time.perf_counter() - start, 3)})
    return report


def describe(model: Any, framework: str, arch: dict[str, Any]) -> dict[str, Any]:
    """Parameter count, MACs for one input, and the per-layer table."""
    adapter = get_adapter(framework)
    rows = adapter.layer_rows(model, adapter.input_shape(arch["args"]))
    return {"model": arch["model"], "framework": framework, "args": arch["args"],
            "params": adapter.count_params(model), "macs": sum(r["macs"] for r in rows), "layers": rows}


def _headline(report: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": report["accuracy"], "log_loss": report["log_loss"], "n": report["n"]}


def machine_description() -> dict[str, Any]:
    """What the numbers were measured on."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(), "os": platform.platform(),
            "python": platform.python_version()}
