"""Where models are measured: parameters (BN statistics counted, as Keras counts them), MACs for one input, and
the per-layer table."""

from __future__ import annotations

from typing import Any

from edgeprune.frameworks import get_adapter
from edgeprune.models.registry import input_specs


def describe(model: Any, framework: str, arch: dict[str, Any] | None = None,
             input_shapes: list[tuple[int, ...]] | None = None) -> dict[str, Any]:
    """Parameter count, MACs for one input, and the per-layer table: of a registered architecture's model
    (`arch`), or of any model given one sample's shape per input (`input_shapes`)."""
    adapter = get_adapter(framework)
    shapes = input_shapes if input_shapes is not None else [s.shape for s in input_specs(arch, framework)]
    rows = adapter.layer_rows(model, shapes)
    return {"model": arch["model"] if arch else type(model).__name__, "task": (arch or {}).get("task"),
            "framework": framework, "args": (arch or {}).get("args"),
            "params": adapter.count_params(model), "macs": sum(r["macs"] for r in rows), "layers": rows}


def measure(model: Any, framework: str, arch: dict[str, Any] | None = None,
            input_shapes: list[tuple[int, ...]] | None = None) -> dict[str, float]:
    """Parameters and MACs only."""
    info = describe(model, framework, arch, input_shapes)
    return {"params": info["params"], "macs": info["macs"]}


def layer_table(before: Any, after: Any, framework: str, arch: dict[str, Any] | None = None, criterion: str = "",
                input_shapes: list[tuple[int, ...]] | None = None) -> list[dict[str, Any]]:
    """Per layer: channels, params and MACs before and after, and the criterion that chose the channels."""
    old = {r["name"]: r for r in describe(before, framework, arch, input_shapes)["layers"]}
    new = {r["name"]: r for r in describe(after, framework, arch, input_shapes)["layers"]}
    rows = []
    ch_axis = 0 if framework == "torch" else -1
    for name, r in old.items():
        n = new.get(name, {"output": None, "params": 0, "macs": 0})
        if r["params"] == 0 and r["macs"] == 0:
            continue
        rows.append({
            "layer": name, "type": r["type"],
            "channels_before": r["output"][ch_axis] if r["output"] else None,
            "channels_after": n["output"][ch_axis] if n["output"] else None,
            "params_before": r["params"], "params_after": n["params"],
            "macs_before": r["macs"], "macs_after": n["macs"], "criterion": criterion,
        })
    return rows
