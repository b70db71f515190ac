"""Criteria by name, and `score(...)`: the single entry point.

A criterion is `fn(model, layers, data, **options) -> (dict[layer, LayerScores], info)` registered with
`@register_criterion(name, needs_data=...)`. `info` may carry "options" (the effective options, defaults filled
in) and "calibration_samples"; `score` adds the rest of the record.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.frameworks import framework_of
from edgeprune.scoring.base import LayerScores, Scores, _jsonable
from edgeprune.scoring.kernels import resolve_layers

CriterionFn = Callable[..., tuple[dict[str, LayerScores], dict[str, Any]]]


@dataclass
class CriterionEntry:
    """A registered criterion: its function, whether it needs calibration data, whether it is conv-only."""

    name: str
    fn: CriterionFn
    needs_data: bool = False
    conv_only: bool = True
    description: str = ""

    def option_names(self) -> list[str]:
        params = inspect.signature(self.fn).parameters.values()
        return [p.name for p in params if p.kind == p.KEYWORD_ONLY]


_CRITERIA: dict[str, CriterionEntry] = {}


def register_criterion(name: str, *, needs_data: bool = False, conv_only: bool = True, description: str = ""):
    """Decorator: register `fn(model, layers, data, *, option=default, ...)` as criterion `name`.

    Options must be keyword-only parameters (so unknown options are caught with a clear message).
    `conv_only=False` lets the criterion score any named layer (e.g. activation statistics of a Linear).
    """

    def wrap(fn: CriterionFn) -> CriterionFn:
        if name in _CRITERIA and _CRITERIA[name].fn is not fn:
            raise EdgepruneError(f"criterion '{name}' is already registered")
        summary = description or (fn.__doc__ or "").strip().split("\n")[0]
        _CRITERIA[name] = CriterionEntry(name, fn, needs_data, conv_only, summary)
        return fn

    return wrap


def get_criterion(name: str) -> CriterionEntry:
    """The registered criterion `name`, or an error listing the known ones."""
    _load_builtin()
    if name not in _CRITERIA:
        raise EdgepruneError(f"unknown criterion '{name}'; known criteria: {', '.join(sorted(_CRITERIA)) or 'none'}")
    return _CRITERIA[name]


def list_criteria() -> list[CriterionEntry]:
    """Every registered criterion, by name."""
    _load_builtin()
    return [_CRITERIA[k] for k in sorted(_CRITERIA)]


def score(model: Any, criterion: str, layers: list[str] | None = None, data: Any = None, *,
          model_name: str | None = None, **options: Any) -> Scores:
    """Score the output channels of `layers` (default: every Conv1D/Conv2D, not depthwise) with `criterion`.

    data: calibration inputs for data-driven criteria (features [N, 40, 500] for the DCASE models, an array
    already in the model's layout, or a tuple of arrays for a multi-input model); ignored by data-free ones.
    options: the criterion's own keyword options (e.g. batch_size=, max_batches= for activation_l1).
    """
    entry = get_criterion(criterion)
    framework = framework_of(model)
    names = resolve_layers(model, layers, conv_only=entry.conv_only)
    accepted = entry.option_names()
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise EdgepruneError(
            f"criterion '{criterion}' has no option(s) {unknown}; it takes {', '.join(accepted) or 'no options'}"
        )
    if entry.needs_data and data is None:
        raise EdgepruneError(
            f"criterion '{criterion}' is data-driven: pass calibration inputs as data= "
            "(e.g. features [N, 40, 500] for the DCASE models)"
        )
    start = time.perf_counter()
    per_layer, info = entry.fn(model, names, data if entry.needs_data else None, **options)
    seconds = time.perf_counter() - start
    import edgeprune

    record = {
        "criterion": criterion,
        "options": _jsonable(info.get("options", options)),
        "calibration_samples": int(info.get("calibration_samples", 0)),
        "data_free": not entry.needs_data,
        "framework": framework,
        "model": model_name or _model_name(model, framework),
        "layers": names,
        "channels": {n: per_layer[n].channels for n in names},
        "seconds": round(seconds, 6),
        "edgeprune_version": edgeprune.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    record.update({k: _jsonable(v) for k, v in info.items() if k not in ("options", "calibration_samples")})
    for n in names:
        if not np.all(np.isfinite(per_layer[n].scores)):
            record.setdefault("warnings", []).append(f"layer '{n}': non-finite scores")
    return Scores(criterion, {n: per_layer[n] for n in names}, record)


def _model_name(model: Any, framework: str) -> str:
    return str(model.name) if framework == "keras" else type(model).__name__


def _load_builtin() -> None:
    # Importing the criterion modules runs their @register_criterion decorators.
    from edgeprune.scoring import activation, cmc_asp, magnitude, passive  # noqa: F401
