"""A model's compression history: an ordered list of transforms, each applied to the model the previous one left,
each with the criterion and scores that chose it. A checkpoint stores its parent architecture plus this list, and
loading replays it, so any compressed model loads without pickling a module.

    {"kind": "channels", "params": {"keep": {"conv1": [0, 3, ...]}},
     "record": {"criterion": "passive", "scores": {"file": "scores_1.json", "sha256": ...}, "target": ..., ...}}

Kinds today: "channels" (keep-lists of output channels, structured surgery in either framework), "blocks" (residual
blocks replaced by the identity; `pruning.block_surgery`), "layers" (1-based encoder layers to drop, PyTorch
transformer encoders; `pruning.layer_surgery`), "heads", "ffn" and "low_rank" (attention heads and FFN units kept
per encoder layer, truncated-SVD factors of named linears; PyTorch transformer encoders;
`pruning.transformer_surgery`), and "sparsity" (the global L1 zeros live in the saved weights; `pruning.sparsity`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from edgeprune.errors import EdgepruneError

ApplyFn = Callable[[Any, str, dict[str, Any], dict[str, Any]], tuple[Any, list[str]]]
_KINDS: dict[str, ApplyFn] = {}


def register_transform(kind: str):
    """Decorator: `fn(model, framework, arch, params) -> (new model, notes)` applies transforms of `kind`; it leaves
    its input model untouched and raises EdgepruneError when the params do not fit the model."""

    def wrap(fn: ApplyFn) -> ApplyFn:
        _KINDS[kind] = fn
        return fn

    return wrap


@dataclass
class Transform:
    kind: str
    params: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self.params, "record": self.record}

    @classmethod
    def from_json(cls, data: Any, where: str) -> Transform:
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str) or not isinstance(data.get("params"), dict):
            raise EdgepruneError(f"{where}: not a transform (expected {{\"kind\": ..., \"params\": {{...}}}})")
        return cls(data["kind"], data["params"], dict(data.get("record") or {}))


def apply(model: Any, framework: str, arch: dict[str, Any], transform: Transform) -> tuple[Any, list[str]]:
    """The model after one transform (the input model is left untouched)."""
    _load_builtin()
    if transform.kind not in _KINDS:
        raise EdgepruneError(f"unknown transform kind '{transform.kind}'; this edgeprune applies "
                             f"{', '.join(sorted(_KINDS))}")
    return _KINDS[transform.kind](model, framework, arch, transform.params)


def replay(model: Any, framework: str, arch: dict[str, Any], transforms: list[Transform], where: str = "") -> Any:
    """Apply every transform in order; one that no longer applies is one clear error naming it."""
    for i, t in enumerate(transforms, start=1):
        try:
            model, _ = apply(model, framework, arch, t)
        except EdgepruneError as exc:
            raise EdgepruneError(f"{where + ': ' if where else ''}transform {i} of {len(transforms)} ({t.kind}) no "
                                 f"longer applies: {exc}") from None
    return model


def _load_builtin() -> None:
    # Importing the surgery modules registers the built-in kinds.
    from edgeprune.pruning import api, block_surgery, layer_surgery, sparsity, transformer_surgery  # noqa: F401
