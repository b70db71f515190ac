"""Whole-block removal from a residual CNN (CMa-FSMC block pruning, PRACTISE): the "blocks" transform.

    {"kind": "blocks", "params": {"drop": ["block2", "block5"]}}

A removable block is shape-preserving (its input and output have the same shape) and sits on the model's main path
with an identity skip, so removing it means computing the identity instead. A model declares its residual blocks
in `block_names` (resnet-kws does; a user's PyTorch model may too), in forward order. PyTorch: the block modules are
deleted from a copy and their names taken out of `block_names`. Keras: the registered twin is rebuilt without them
(its `blocks` argument) and every remaining layer's weights copied by name, so there blocks go before channels. The input model is never touched.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.pruning.transforms import register_transform


def block_names(model: Any, framework: str = "torch", arch: dict[str, Any] | None = None) -> list[str]:
    """The model's removable residual blocks in forward order, or one clear error for a model without any."""
    if framework == "keras":  # the twins' naming: block{b}.conv1 ... block{b}.add
        names = [layer.name[:-len(".add")] for layer in model.layers if layer.name.endswith(".add")]
    else:
        names = list(getattr(model, "block_names", None) or [])
    if not names:
        raise EdgepruneError(f"{type(model).__name__} has no shape-preserving blocks (a `block_names` list of "
                             "residual blocks whose input and output shapes match); block pruning needs them")
    return names


def block_io(model: Any, x: Any, names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each block's input and output for input x (PyTorch, eval mode), as numpy arrays; a block whose output
    shape differs from its input's is one clear error (it cannot be replaced by the identity)."""
    import torch

    captured: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def hook(name):
        def record(module, args, output):
            captured[name] = (args[0].detach().numpy(), output.detach().numpy())
        return record

    handles = [getattr(model, n).register_forward_hook(hook(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for name, (i, o) in captured.items():
        if i.shape != o.shape:
            raise EdgepruneError(f"{name}: input {list(i.shape)} and output {list(o.shape)} differ; not a "
                                 "shape-preserving block")
    return captured


def drop_blocks(model: Any, framework: str, arch: dict[str, Any] | None, drop: list[str]) -> Any:
    """A copy of the model without the listed blocks (each computes the identity instead)."""
    names = block_names(model, framework, arch)
    if not isinstance(drop, (list, tuple)) or not drop or not all(isinstance(d, str) for d in drop):
        raise EdgepruneError(f"blocks to drop: expected a non-empty list of block names, got {drop!r}")
    unknown = [d for d in drop if d not in names]
    if unknown:
        raise EdgepruneError(f"blocks to drop: {unknown} are not blocks of this model (it has {', '.join(names)})")
    if len(set(drop)) != len(drop):
        raise EdgepruneError(f"blocks to drop: {sorted(drop)} lists a block more than once")
    if len(drop) >= len(names):
        raise EdgepruneError(f"blocks to drop: all {len(names)} blocks listed; keep at least one")
    if framework == "keras":
        return _drop_keras(model, arch, drop)
    child = copy.deepcopy(model)
    for name in drop:
        delattr(child, name)
    child.block_names = [n for n in names if n not in drop]
    return child


def _drop_keras(model: Any, arch: dict[str, Any] | None, drop: list[str]) -> Any:
    from edgeprune.models import build
    from edgeprune.models.registry import is_registered

    if arch is None or not is_registered(arch) or "blocks" not in (arch.get("args") or {}):
        raise EdgepruneError("Keras block removal rebuilds a registered twin with a `blocks` argument "
                             "(resnet-kws); this model is not one")
    kept = [n for n in block_names(model, "keras") if n not in drop]
    child = build({**arch, "args": {**arch["args"], "blocks": tuple(int(n[len("block"):]) for n in kept)}}, "keras")
    source = {layer.name: layer for layer in model.layers}
    try:
        for layer in child.layers:
            if layer.weights:
                layer.set_weights(source[layer.name].get_weights())
    except ValueError:
        raise EdgepruneError("Keras block removal rebuilds the twin at its full width: remove blocks before "
                             "pruning channels") from None
    return child


@register_transform("blocks")
def _blocks(model: Any, framework: str, arch: dict[str, Any], params: dict[str, Any]) -> tuple[Any, list[str]]:
    if "drop" not in params:
        raise EdgepruneError("a blocks transform needs {\"drop\": [block names]}")
    before = block_names(model, framework, arch)
    child = drop_blocks(model, framework, arch, list(params["drop"]))
    return child, [f"blocks: dropped {sorted(params['drop'])} of {len(before)}, kept "
                   f"{[n for n in before if n not in params['drop']]}"]
