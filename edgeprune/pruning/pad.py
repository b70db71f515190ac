"""Zero channels added back to pruned layers: the same function at a width the target runs faster.

Kernels pack channels in tiles, and a count just above a tile's width can cost more than the parent's whole width
(XNNPACK's float32 conv on the project's x86: 17 to 31 output channels take 0.21 ms where 32 take 0.16). A layer
padded back to such a width with channels whose weights are zero, read by weights that are zero, computes the same
outputs as the pruned model: as fast as the target allows, at the cost of the zeros' bytes.

How, in PyTorch and Keras alike and with the surgery that pruned the model: the parent is built with every weight
element set to its own number and cut twice, once with the model's keep-lists (where each of its weights came
from) and once with wider ones (the padded shape, the surgery's own slicing of every reader). Each element of the
padded model takes the pruned model's value from the same parent element, or zero where the pruned model has none.
Numbers are exact in float32 up to 2^24, so they travel in two parts (high and low 12 bits).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from edgeprune.errors import EdgepruneError

_PART = 4096  # 2^12: each part of an element's number is exact in float32


def parent_keep(spec: dict[str, Any]) -> dict[str, list[int]]:
    """Each pruned layer's kept channels as indices of the PARENT's channels, composed over the checkpoint's
    channel transforms (a second cut's indices count the first cut's survivors)."""
    keep: dict[str, list[int]] = {}
    for i, t in enumerate(spec.get("transforms") or [], start=1):
        if t.get("kind") != "channels":
            raise EdgepruneError(f"padding needs a model pruned by channel keep-lists only; transform {i} is "
                                 f"'{t.get('kind')}'")
        for layer, idx in t["params"]["keep"].items():
            before = keep.get(layer)
            keep[layer] = sorted(int(j) for j in idx) if before is None else [before[int(j)] for j in sorted(idx)]
    return keep


def _numbered(model: Any, framework: str, part: int) -> Any:
    """The model with every floating weight element set to its running number's high (1) or low (0) part."""
    from edgeprune.frameworks import get_adapter

    adapter = get_adapter(framework)
    weights, start = {}, 0
    for name, w in adapter.get_weights(model).items():
        if not np.issubdtype(w.dtype, np.floating):
            weights[name] = w
            continue
        n = np.arange(start, start + w.size, dtype=np.int64).reshape(w.shape)
        weights[name] = (n // _PART if part else n % _PART).astype(w.dtype)
        start += w.size
    if start >= _PART ** 2:
        raise EdgepruneError(f"padding numbers every weight element; this model has {start:,}, more than "
                             f"{_PART ** 2:,}")
    adapter.set_weights(model, weights)
    return model


def _origins(spec: dict[str, Any], framework: str, keep: Mapping[str, list[int]]) -> tuple[Any, dict[str, Any]]:
    """The parent cut to `keep`, and for each of its floating weights the parent element each value came from."""
    from edgeprune.frameworks import get_adapter
    from edgeprune.models import build
    from edgeprune.pruning.api import apply_keep

    adapter = get_adapter(framework)
    parts = []
    for part in (1, 0):
        parent = _numbered(build(spec["arch"], framework), framework, part)
        model, _ = apply_keep(parent, framework, spec["arch"], dict(keep))
        parts.append(adapter.get_weights(model))
    high, low = parts
    origins = {k: np.rint(high[k]).astype(np.int64) * _PART + np.rint(low[k]).astype(np.int64)
               for k, w in high.items() if np.issubdtype(w.dtype, np.floating)}
    return model, origins


def pad_channels(model: Any, framework: str, spec: dict[str, Any], widths: Mapping[str, int]
                 ) -> tuple[Any, list[str]]:
    """A new model computing what `model` (the checkpoint `spec`'s model) computes, with each layer in `widths`
    grown to that many output channels by zero channels (its readers' weights for them zero too). Widths lie
    between the layer's pruned count and the parent's; layers coupled by an add need the same width."""
    from edgeprune.frameworks import get_adapter
    from edgeprune.models import build
    from edgeprune.pruning.api import prunable_channels

    keep = parent_keep(spec)
    full = prunable_channels(build(spec["arch"], framework), framework, spec["arch"])
    wider = dict(keep)
    notes = []
    for layer, width in widths.items():
        have = keep.get(layer)
        if have is None or layer not in full:
            raise EdgepruneError(f"cannot pad '{layer}': it is not a pruned layer of this model "
                                 f"(pruned: {', '.join(sorted(keep)) or 'none'})")
        if not len(have) <= width <= full[layer]:
            raise EdgepruneError(f"cannot pad '{layer}' to {width} channels: it keeps {len(have)} of the parent's "
                                 f"{full[layer]}, and padding lies between the two")
        kept = set(have)
        spare = [j for j in range(full[layer]) if j not in kept]  # the lowest pruned-away channels, zeroed
        wider[layer] = sorted(have + spare[: width - len(have)])
        if width > len(have):
            notes.append(f"{layer}: {len(have)} -> {width} channels ({width - len(have)} of zeros)")
    _, came_from = _origins(spec, framework, keep)
    padded, goes_to = _origins(spec, framework, wider)
    adapter = get_adapter(framework)
    values = adapter.get_weights(model)
    out = adapter.get_weights(padded)
    for name, where in goes_to.items():
        src = came_from[name].ravel()
        order = np.argsort(src)
        pos = np.clip(np.searchsorted(src, where.ravel(), sorter=order), 0, len(src) - 1)
        found = src[order[pos]] == where.ravel()
        flat = np.zeros(where.size, dtype=out[name].dtype)
        flat[found] = np.asarray(values[name]).ravel()[order[pos[found]]]
        out[name] = flat.reshape(where.shape)
    adapter.set_weights(padded, out)
    return padded, notes
