"""Where a layer's measured latency steps as its channel count changes, and the counts worth keeping.

Kernels pack channels in tiles (XNNPACK's int8 and float32 GEMMs use different tile widths per CPU), so latency
over channel count is a staircase plus noise: 11 channels can cost what 16 cost. A count is worth keeping when it
is the last of its stair, the most channels for that time. Curves are {channels: ms} from a grid timed on the
target; the tolerance absorbs timing noise (a rise smaller than it is not a step).
"""

from __future__ import annotations

import numpy as np

from edgeprune.errors import EdgepruneError


def _checked(curve: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    if len(curve) < 2:
        raise EdgepruneError(f"a latency curve needs at least two channel counts, got {len(curve)}")
    n = np.array(sorted(curve), dtype=int)
    ms = np.array([curve[k] for k in n], dtype=float)
    if n[0] < 1 or not np.isfinite(ms).all() or (ms <= 0).any():
        raise EdgepruneError("a latency curve needs positive channel counts and positive finite times")
    return n, ms


def stairs(curve: dict[int, float], tolerance: float = 0.05, min_ms: float = 0.0, drops: bool = False
           ) -> list[tuple[int, int, float]]:
    """The curve as stairs (first count, last count, level ms): a new stair starts where the time rises more than
    `tolerance` (relative) above the current stair's level and by more than `min_ms` (so the jitter of a layer
    that takes a sliver of the model's time is not a step); the level is the median time on the stair. With
    `drops`, a time as far BELOW the level starts one too (a remainder tile can make a count slower than a wider
    one: float32 conv3 here, 0.21 ms at 17-31 channels, 0.16 at 32)."""
    n, ms = _checked(curve)
    out, start, level_ms = [], 0, [ms[0]]
    for i in range(1, len(n)):
        level = np.median(level_ms)
        gap = abs(ms[i] - level) if drops else ms[i] - level
        if gap > level * tolerance and gap > min_ms:
            out.append((int(n[start]), int(n[i - 1]), float(np.median(level_ms))))
            start, level_ms = i, [ms[i]]
        else:
            level_ms.append(ms[i])
    out.append((int(n[start]), int(n[-1]), float(np.median(level_ms))))
    return out


def step_counts(curve: dict[int, float], tolerance: float = 0.05, min_ms: float = 0.0) -> list[int]:
    """The counts worth keeping: the last count of every stair (the most channels at that time), ascending."""
    return [last for _, last, _ in stairs(curve, tolerance, min_ms)]


def round_up(count: int, steps: list[int]) -> int:
    """The smallest count worth keeping at or above `count` (free channels back, same latency)."""
    above = [s for s in sorted(steps) if s >= count]
    if not above:
        raise EdgepruneError(f"count {count} is above the largest measured count {max(steps)}")
    return above[0]


def interpolate(curve: dict[int, float], count: float) -> float:
    """The curve's time at a count, linear between measured counts (clamped to the measured range)."""
    n, ms = _checked(curve)
    return float(np.interp(count, n, ms))
