"""Whole-layer pruning of a checkpoint (CoMFLP): hidden states of calibration data -> a layer-to-layer matrix ->
a search for the K layers to remove on the matrix alone -> the top candidates verified with the task's metric on a
held-out split by dropping layers (no retraining) -> the chosen layers removed for real, as a "layers" transform.

    edgeprune prune-layers CKPT --remove 6 --measure svcca-U --out runs/encoder-6
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeprune import checkpoint
from edgeprune.data.datasets import Split
from edgeprune.errors import EdgepruneError
from edgeprune.pruning.transforms import Transform

SEARCH_FILE = "layer_search.json"


class LayerDropEvaluator:
    """The task's selection metric (PER for phones, accuracy for keywords) of a checkpoint's model with some layers
    dropped, no retraining, on one split. Counts its calls."""

    def __init__(self, ckpt: checkpoint.Checkpoint, split: Split, batch_size: int = 64):
        if ckpt.framework != "torch":
            raise EdgepruneError(f"{ckpt.path}: layer pruning is implemented for PyTorch encoders")
        self.ckpt, self.split, self.batch_size = ckpt, split, batch_size
        self.metric, self.lower_is_better = ckpt.task.select, ckpt.task.select_mode == "min"
        self.calls = 0

    def __call__(self, drop: tuple[int, ...]) -> float:
        from edgeprune.models.inference import predict
        from edgeprune.pruning.layer_surgery import drop_layers

        self.calls += 1
        model = drop_layers(self.ckpt.model, list(drop)) if drop else self.ckpt.model
        model.eval()
        outputs = predict(model, "torch", self.ckpt.arch, self.split.inputs, batch_size=self.batch_size)
        return float(self.ckpt.task.evaluate(outputs, self.split.y, self.split.meta)[self.metric])


def layer_matrix_of(ckpt: checkpoint.Checkpoint, calib: Split, measure: str) -> dict[str, Any]:
    """One measure's (N+1) x (N+1) matrix over the hidden states of `calib`; seconds for the states and the
    measure."""
    from edgeprune.models.inference import model_inputs
    from edgeprune.scoring.layer_states import collect_states, matrices

    start = time.perf_counter()
    states, mask = collect_states(ckpt.model, model_inputs(ckpt.arch, "torch", calib.inputs), calib.meta.get("frames"))
    states_s = time.perf_counter() - start
    m = matrices(states, mask, (measure,))[measure]
    return {"matrix": m["matrix"], "states_s": states_s, "measure_s": m["seconds"]}


def search_layers(ckpt: checkpoint.Checkpoint, measure: str, k: int, calib: Split, validation: Split | None,
                  mode: str = "beam", beam: int = 10, top: int = 10, seed: int = 0) -> dict[str, Any]:
    """The K layers to remove: the matrix's best candidates, verified on `validation` when given (the best by the
    task's metric is chosen; without it, the best by the matrix). Timings of each stage in seconds."""
    from edgeprune.search.layer_sets import search, verify

    mat = layer_matrix_of(ckpt, calib, measure)
    start = time.perf_counter()
    candidates = search(mat["matrix"], k, mode=mode, beam=beam, top=top, seed=seed)
    search_s = time.perf_counter() - start
    out: dict[str, Any] = {"measure": measure, "remove": k, "mode": mode, "matrix": mat["matrix"].tolist(),
                           "states_s": mat["states_s"], "measure_s": mat["measure_s"], "search_s": search_s,
                           "candidates": [{"removed": list(c), "score": s} for c, s in candidates]}
    if validation is None:
        out["removed"], out["verify_s"] = list(candidates[0][0]), 0.0
        return out
    evaluate = LayerDropEvaluator(ckpt, validation)
    start = time.perf_counter()
    checked = verify(candidates, evaluate, lower_is_better=evaluate.lower_is_better)
    out["verify_s"] = time.perf_counter() - start
    out["metric"] = evaluate.metric
    out["candidates"] = [{"removed": list(c["removed"]), "score": c["score"], evaluate.metric: c["value"]}
                         for c in checked["all"]]
    out["removed"] = list(checked["best"])
    return out


def save_layer_drop(ckpt: checkpoint.Checkpoint, drop: list[int], out: Path, record: dict[str, Any] | None = None,
                    force: bool = False, search: dict[str, Any] | None = None) -> Path:
    """Save the checkpoint with `drop` (1-based layers) removed for real: its transforms plus one "layers" step
    (replayed on load) recording the parent, sizes and `record` (the measure that chose them); the search that
    chose them beside it (`layer_search.json`)."""
    from edgeprune.models.measure import measure
    from edgeprune.models.encoder import encoder_layers
    from edgeprune.pruning.layer_surgery import drop_layers
    from edgeprune.pruning.run import carried_files

    model = drop_layers(ckpt.model, list(drop))
    before, after = measure(ckpt.model, ckpt.framework, ckpt.arch), measure(model, ckpt.framework, ckpt.arch)
    full = {**(record or {}), "layers_before": len(encoder_layers(ckpt.model)), "layers_after": len(encoder_layers(model)),
            "parent": {"path": str(ckpt.path), "weights_sha256": ckpt.spec.get("weights_sha256"),
                       "params": before["params"], "macs": before["macs"]},
            "params": after["params"], "macs": after["macs"],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    transform = Transform("layers", {"drop": sorted(int(d) for d in drop)}, full)
    extra = {k: v for k, v in ckpt.spec.items() if k == "training"}  # the parent's fine-tune no longer describes it
    return checkpoint.save(out, model, ckpt.framework, ckpt.arch, ckpt.classes,
                           transforms=[*ckpt.transforms, transform], extra=extra, force=force,
                           files={SEARCH_FILE: search} if search else None, copies=carried_files(ckpt))
