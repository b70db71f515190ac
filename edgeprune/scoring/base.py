"""Scores: per-layer importance of units, and how they were computed.

A unit is what a criterion ranks and a transform removes: "channel" (a conv or dense output channel) today;
heads, FFN rows, layers and blocks come with the methods that score them. Every criterion produces the same
thing: for each scored layer (or group) one float per unit (higher = more important), optionally the criterion's
own keep set (passive filter pruning decides its count by rule), and free-form extras (distances, neighbours, ...). `ranked_keep` turns scores into a keep set at a chosen ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.fileio import read_json, write_json

FORMAT = 1


@dataclass
class LayerScores:
    """Importance of one layer's output channels.

    scores: one float per output channel, higher = more important.
    keep:   the criterion's own keep set (sorted channel indices) when it has a keep rule, else None.
    extra:  criterion-specific details (JSON-able after `to_json`; numpy arrays come back as lists).
    """

    layer: str
    scores: np.ndarray
    keep: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if self.keep is not None:
            self.keep = sorted(int(i) for i in self.keep)

    @property
    def channels(self) -> int:
        return int(self.scores.shape[0])


@dataclass
class Scores:
    """The result of one `score(...)` call: per-layer scores plus a record of how they were computed
    (criterion, options, calibration sample count, framework, model, edgeprune version, timestamp, seconds)."""

    criterion: str
    layers: dict[str, LayerScores]
    record: dict[str, Any] = field(default_factory=dict)
    unit: str = "channel"

    def keep_sets(self, ratio: float | None = None, round_to: int = 1) -> dict[str, list[int]]:
        """Kept channels per layer: the criterion's own rule when `ratio` is None, else `ranked_keep`."""
        out = {}
        for name, ls in self.layers.items():
            if ratio is None:
                if ls.keep is None:
                    raise EdgepruneError(
                        f"criterion '{self.criterion}' has no keep rule of its own; pass a pruning ratio in [0, 1)"
                    )
                out[name] = list(ls.keep)
            else:
                out[name] = ranked_keep(ls.scores, ratio, round_to)
        return out

    def to_json(self) -> dict[str, Any]:
        """A plain-JSON dict (scores as lists of floats; a non-finite value is written as "nan"/"inf"/"-inf")."""
        return {
            "format": FORMAT,
            "criterion": self.criterion,
            "unit": self.unit,
            "record": _jsonable(self.record),
            "layers": {
                name: {"scores": _floats_out(ls.scores), "keep": ls.keep, "extra": _jsonable(ls.extra)}
                for name, ls in self.layers.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scores:
        """Inverse of `to_json` (extras come back as plain lists and dicts)."""
        try:
            layers = {
                name: LayerScores(name, np.array([float(v) for v in d["scores"]], dtype=np.float64),
                                  None if d.get("keep") is None else [int(i) for i in d["keep"]], d.get("extra", {}))
                for name, d in data["layers"].items()
            }
            return cls(str(data["criterion"]), layers, dict(data.get("record", {})), str(data.get("unit", "channel")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EdgepruneError(f"not a valid scores document ({type(exc).__name__}: {exc})") from exc

    def save(self, path: Path, force: bool = False) -> Path:
        """Write as JSON atomically; refuses to overwrite unless `force`."""
        write_json(Path(path), self.to_json(), force=force)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> Scores:
        """Read a file written by `save`."""
        data = read_json(Path(path), "scores file")
        if not isinstance(data, dict) or "layers" not in data:
            raise EdgepruneError(f"{path}: not a scores file (no 'layers')")
        return cls.from_json(data)


def ranked_keep(scores: np.ndarray, ratio: float, round_to: int = 1) -> list[int]:
    """Indices (ascending) of the channels to keep when pruning a `ratio` of them by score.

    removed = floor(ratio * C); the kept count C - removed is then rounded UP to a multiple of `round_to`
    (hardware-friendly widths), capped at C, never below 1. Rounding up means we never prune more than asked:
    C=16, ratio 0.3 keeps 12; with round_to=8 that becomes 16, i.e. nothing is pruned.
    The highest scores are kept; ties go to the lower index; NaN scores count as least important.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating, np.integer)) or not (0 <= ratio < 1):
        raise EdgepruneError(f"pruning ratio must be in [0, 1), got {ratio!r}")
    if isinstance(round_to, bool) or not isinstance(round_to, (int, np.integer)) or round_to < 1:
        raise EdgepruneError(f"round_to must be a positive integer, got {round_to!r}")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    c = s.shape[0]
    if c == 0:
        raise EdgepruneError("cannot rank an empty score vector")
    # The tiny epsilon stops 0.29 * 100 = 28.999999999999996 from flooring to 28.
    removed = math.floor(float(ratio) * c + 1e-9)
    kept = c - removed
    kept = min(c, max(1, math.ceil(kept / round_to) * round_to))
    # Stable sort of -s: ties keep index order; NaN sorts last in numpy, so NaN channels are pruned first.
    order = np.argsort(-s, kind="stable")
    return sorted(int(i) for i in order[:kept])


def _floats_out(a: np.ndarray) -> list[float | str]:
    return [float(v) if math.isfinite(v) else str(float(v)) for v in np.asarray(a, dtype=np.float64).reshape(-1)]


def _jsonable(obj: Any) -> Any:
    """numpy arrays/scalars, tuples and non-finite floats to plain JSON; anything else unknown to its repr."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else str(float(obj))
    if obj is None or isinstance(obj, str):
        return obj
    return repr(obj)
