"""Whole-layer removal from a transformer encoder (CoMFLP-style layer pruning): the "layers" transform.

    {"kind": "layers", "params": {"drop": [2, 3, 5]}}    1-based indices into encoder.layers

The listed layers are taken out of `model.encoder.layers` and the survivors shift down (layer 4 becomes layer 2),
so the model computes the embedding, then the kept layers in their order, then the head. Works for every model
with an encoder layer list (speech-encoder, hf-wav2vec2, hf-hubert); PyTorch only. A Hugging Face config travels
with the copy, its num_hidden_layers updated; the input model and its config are never touched.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from edgeprune.errors import EdgepruneError
from edgeprune.models.encoder import encoder_layers
from edgeprune.pruning.transforms import register_transform

if TYPE_CHECKING:
    import torch


def _checked(drop: Any, n_layers: int) -> list[int]:
    """The 1-based layer numbers to drop, sorted, or one clear error naming what is wrong."""
    if not isinstance(drop, (list, tuple)) or not drop:
        raise EdgepruneError(f"layers to drop: expected a non-empty list of 1-based layer numbers, got {drop!r}")
    bad = [d for d in drop if isinstance(d, bool) or not isinstance(d, int)]
    if bad:
        raise EdgepruneError(f"layers to drop: {bad} are not integers (1-based layer numbers)")
    repeated = sorted({d for d in drop if drop.count(d) > 1})
    if repeated:
        raise EdgepruneError(f"layers to drop: {repeated} listed more than once")
    outside = [d for d in drop if not 1 <= d <= n_layers]
    if outside:
        raise EdgepruneError(f"layers to drop: {outside} outside 1..{n_layers} (the encoder has {n_layers} layers)")
    if len(drop) >= n_layers:
        raise EdgepruneError(f"layers to drop: all {n_layers} layers listed; keep at least one")
    return sorted(drop)


def _hf_configs(model: torch.nn.Module) -> list[Any]:
    """The distinct Hugging Face configs the model's modules hold (each module keeps a reference)."""
    found: dict[int, Any] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            found.setdefault(id(config), config)
    return list(found.values())


def drop_layers(model: torch.nn.Module, drop: list[int]) -> torch.nn.Module:
    """A copy of `model` without the encoder layers `drop` (1-based); the survivors keep their order. The input
    model and its config are left untouched: the copy holds its own config, num_hidden_layers updated."""
    import torch

    n_layers = len(encoder_layers(model))
    drop = _checked(drop, n_layers)
    # Seeding deepcopy's memo with the config copies makes every module of the copy share one new config, as the
    # parent's modules share theirs (whatever the config's own __deepcopy__ does).
    memo: dict[int, Any] = {}
    for config in _hf_configs(model):
        memo[id(config)] = copy.deepcopy(config)
        memo[id(config)].num_hidden_layers = n_layers - len(drop)
    child = copy.deepcopy(model, memo)
    layers = encoder_layers(child)
    child.encoder.layers = torch.nn.ModuleList(layer for i, layer in enumerate(layers, start=1) if i not in drop)
    return child


@register_transform("layers")
def _layers(model: Any, framework: str, arch: dict[str, Any], params: dict[str, Any]) -> tuple[Any, list[str]]:
    if framework != "torch":
        raise EdgepruneError(f"layer removal is implemented for PyTorch models; this one is {framework}")
    if "drop" not in params:
        raise EdgepruneError("a layers transform needs {\"drop\": [1-based layer numbers]}")
    n_layers = len(encoder_layers(model))
    child = drop_layers(model, params["drop"])
    before, after = (sum(p.numel() for p in m.parameters()) for m in (model, child))
    kept = [i for i in range(1, n_layers + 1) if i not in params["drop"]]
    return child, [f"parameters {before:,} -> {after:,} ({before - after:,} removed)",
                   f"encoder.layers: dropped {sorted(params['drop'])} of {n_layers}, kept {kept} (now 1..{len(kept)})"]
