"""`edgeprune reproduce speech-models`: the reference speech models trained on the synthetic speech sets, each
with its task metric on the test split, parameters, MACs and training time on this machine.

Rows: se-crn (early and dual fusion, both frameworks for early), resnet-kws (both frameworks), speech-encoder with
its phones head and its keywords head. Each row is `edgeprune train` + `edgeprune eval` of that model (the
command is in the table), resumable through `StepLog`: a second run retrains nothing.
"""

from __future__ import annotations

import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune import checkpoint
from edgeprune.fileio import write_json, write_text
from edgeprune.machine import machine_description
from edgeprune.reproduce.steps import StepLog
from edgeprune.tables import markdown_table

OUT_NAME = "speech_models"


@dataclass(frozen=True)
class Row:
    model: str
    task: str
    framework: str
    args: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        extra = "".join(f"-{v}" for _, v in self.args)
        return f"{self.model}{extra}-{self.task}-{self.framework}"

    def train_command(self, profile: str, work: Path) -> str:
        parts = ["edgeprune train", f"--model {self.model}", f"--task {self.task}", f"--framework {self.framework}",
                 f"--profile {profile}"] + [f"--arg {k}={v}" for k, v in self.args]
        return " ".join(parts + [f"--out {shlex.quote(str(work / self.name))}"])


ROWS = (
    Row("se-crn", "enhancement", "torch", (("fusion", "early"),)),
    Row("se-crn", "enhancement", "torch", (("fusion", "dual"),)),
    Row("se-crn", "enhancement", "keras", (("fusion", "early"),)),
    Row("resnet-kws", "keywords", "torch"),
    Row("resnet-kws", "keywords", "keras"),
    Row("speech-encoder", "phones", "torch"),
    Row("speech-encoder", "keywords", "torch"),
)
METRICS = {"enhancement": ("si_sdri", "si_sdr", "stoi", "stoi_noisy", "pesq", "pesq_noisy"),
           "keywords": ("accuracy",), "phones": ("per",)}


def default_work(profile: str) -> Path:
    return Path("runs") / "reproduce" / f"speech-models-{profile}"


def run(profile_name: str = "quick", work: Path | None = None, out: Path | None = None, rows: tuple[Row, ...] = ROWS,
        force: bool = False, progress: bool = True, seed: int = 0) -> dict[str, Any]:
    """Train and evaluate every row (or resume); write OUT.md and OUT.json (default WORK/speech_models)."""
    from edgeprune.training import run as training
    from edgeprune.training.profiles import get_profile

    profile = get_profile(profile_name)
    work = Path(work) if work is not None else default_work(profile_name)
    out = Path(out) if out is not None else work / OUT_NAME
    if force and work.exists():
        shutil.rmtree(work)
    steps = StepLog(work, {"job": "speech-models", "profile": profile_name, "seed": seed,
                           "rows": [r.name for r in rows]}, progress=progress, total=2 * len(rows))
    started = time.time()
    results = []
    for row in rows:
        path = work / row.name

        def train(row=row, path=path) -> dict[str, Any]:
            data = training.data_for("synthetic", profile, progress=progress, task=row.task)
            summary = training.train(row.model, row.framework, data, profile, path, seed=seed, force=True,
                                     progress=progress, task=row.task, args=dict(row.args))
            return {k: summary[k] for k in ("epochs", "batch_size", "lr", "best_epoch", "validation",
                                            "train_seconds", "train_samples_per_second")} | {"data": summary["data"]}

        trained = steps.run(f"train {row.name}", train, outputs=(path,), inputs=())  # rows are independent

        def evaluate(row=row, path=path) -> dict[str, Any]:
            from edgeprune.models.measure import describe

            ckpt = checkpoint.load(path)
            data = training.data_for("synthetic", profile, progress=progress, task=row.task)
            report = training.evaluate(ckpt, data, "test", full=True)
            info = describe(ckpt.model, ckpt.framework, ckpt.arch)
            return {"metrics": {k: report.get(k) for k in METRICS[row.task]}, "n": report["n"],
                    "params": info["params"], "macs": info["macs"]}

        tested = steps.run(f"evaluate {row.name}", evaluate, inputs=(f"train {row.name}",))
        results.append({"row": row.name, "model": row.model, "task": row.task, "framework": row.framework,
                        "args": dict(row.args), "train": trained, "test": tested,
                        "command": row.train_command(profile_name, work)})
    doc = {"title": f"Reference speech models, {profile_name} profile, synthetic speech (espeak-ng)",
           "command": _command(profile_name, work, out), "machine": machine_description(), "profile": profile_name,
           "seconds": steps.seconds(), "wall_seconds": round(time.time() - started, 1), "rows": results}
    write(doc, out)
    steps.say(f"wrote {out}.md, .json")
    return doc


def _command(profile: str, work: Path, out: Path) -> str:
    parts = ["edgeprune reproduce speech-models", f"--profile {profile}"]
    if work != default_work(profile):
        parts.append(f"--work {shlex.quote(str(work))}")
    if out != work / OUT_NAME:
        parts.append(f"--out {shlex.quote(str(out))}")
    return " ".join(parts)


def _fmt(value: Any, digits: int = 3) -> Any:
    return None if value is None else round(float(value), digits)


def table_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for r in doc["rows"]:
        m = r["test"]["metrics"]
        rows.append({
            "model": r["model"] + "".join(f" ({k}={v})" for k, v in r["args"].items()), "task": r["task"],
            "framework": r["framework"], "test metric": ", ".join(
                f"{k} {_fmt(v)}" for k, v in m.items() if v is not None),
            "params": r["test"]["params"], "MMACs": _fmt(r["test"]["macs"] / 1e6, 1),
            "epochs": r["train"]["epochs"], "best epoch": r["train"]["best_epoch"],
            "train s": _fmt(r["train"]["train_seconds"], 0)})
    return rows


def write(doc: dict[str, Any], stem: Path) -> None:
    """STEM.json and STEM.md, atomically."""
    m = doc["machine"]
    cols = ["model", "task", "framework", "test metric", "params", "MMACs", "epochs", "best epoch", "train s"]
    lines = [f"# {doc['title']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}.",
             f"Command: `{doc['command']}` ({sum(doc['seconds'].values()) / 60:.1f} min of steps). Each row is "
             "`edgeprune train` with the command below, then `edgeprune eval` on the test split.", "",
             markdown_table(table_rows(doc), cols), "",
             "Metrics: accuracy (keywords, 12 classes), PER = phone error rate (phones, greedy CTC decoding, lower is "
             "better), si_sdri = SI-SDR improvement over the noisy microphone in dB, stoi / pesq of the enhanced "
             "speech beside the noisy input's (stoi_noisy, pesq_noisy; wide-band PESQ). MACs count conv and linear "
             "layers per input sample (attention products are not counted). Training time excludes data generation "
             "and validation.", "", "Commands:", ""]
    lines += [f"- `{r['command']}`" for r in doc["rows"]]
    stem = Path(stem)
    write_json(stem.with_name(stem.name + ".json"), doc, force=True)
    write_text(stem.with_name(stem.name + ".md"), "\n".join(lines) + "\n", force=True)
