"""CMa-FSMC on a checkpoint: draw the few samples, score the blocks, choose (blocks to remove, or per-block rates
meeting a MACs / parameter cut), cut for real, recover from the teacher; what `edgeprune prune-blocks` and the
cma-fsmc job call."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeprune import checkpoint
from edgeprune.data.datasets import Split, sample_indices
from edgeprune.errors import EdgepruneError
from edgeprune.pruning import block_surgery, cma
from edgeprune.pruning.transforms import Transform


def few_samples(split: Split, n: int, seed: int, arch: dict[str, Any],
                n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n samples of the split drawn by seed, stratified by class, in the model's layout (PyTorch); their labels
    and indices. Fewer samples than classes, or more than the split holds, is one clear error."""
    from edgeprune.models.inference import model_inputs

    if n_classes is not None and n < n_classes:
        raise EdgepruneError(f"samples {n}: fewer than the {n_classes} classes; a few-sample set needs one sample of "
                             "each class at least")
    if n > len(split):
        raise EdgepruneError(f"samples {n}: the training split has {len(split)}")
    idx = sample_indices(split, n, seed, stratify=True)
    part = split.take(idx)
    return model_inputs(arch, "torch", part.inputs)[0], np.asarray(part.y), idx


def choose(ckpt: checkpoint.Checkpoint, x: np.ndarray, drop: int | None = None,
           targets: dict[str, float] | None = None, threshold: float = 0.2, population: int = 50,
           iterations: int = 100, seed: int = 0) -> dict[str, Any]:
    """DoC of every block on x (one batch, at most 64 samples), then either the `drop` blocks of smallest DoC or
    the per-block rates meeting `targets` ({"macs": cut, "params": cut}) within 4e-4, checked on the really
    pruned model (a miss is an error)."""
    if (drop is None) == (targets is None):
        raise EdgepruneError("choose blocks to drop or reduction targets, not both and not neither")
    doc = cma.block_doc(ckpt.model, x[:64], threshold)
    if drop is not None:
        return {"doc": doc, "drop": cma.blocks_to_drop(doc, drop)}
    internal = cma.internal_layers(ckpt.model, "torch", ckpt.arch)
    cost = cma.CostModel.measured(ckpt.model, "torch", ckpt.arch, [n for b in doc for n in internal[b]])
    search = cma.search_rates(cost, internal, doc, targets, population=population, iterations=iterations,
                              seed=seed)
    child, _ = cma.prune_widths(ckpt.model, "torch", ckpt.arch, search["widths"])
    measured = cma.measured_reductions(ckpt.model, child, "torch", ckpt.arch)
    for k, t in targets.items():
        if t and abs(measured[k] - t) > 4e-4:
            raise EdgepruneError(f"the searched rates cut {k} by {measured[k]:.6f} on the pruned model, "
                                 f"{search['predicted'][k]:.6f} predicted; target {t:.6f}")
    return {"doc": doc, **search, "measured": {k: round(v, 6) for k, v in measured.items()}}


def block_student(ckpt: checkpoint.Checkpoint, drop: list[str], record: dict[str, Any]) -> tuple[Any, Transform]:
    """The model without the listed blocks, and its transform."""
    return (block_surgery.drop_blocks(ckpt.model, "torch", ckpt.arch, drop),
            Transform("blocks", {"drop": list(drop)}, record))


def filter_student(ckpt: checkpoint.Checkpoint, widths: dict[str, int],
                   record: dict[str, Any]) -> tuple[Any, Transform]:
    """The model with each block's inner layers cut to their widths by L1, and its transform."""
    child, keep = cma.prune_widths(ckpt.model, "torch", ckpt.arch, widths)
    return child, Transform("channels", {"keep": keep}, {"criterion": "l1", **record})
