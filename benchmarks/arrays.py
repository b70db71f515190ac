"""Axis bookkeeping for model inputs, with numpy only (the suite and edgeprune share it).

Every array axis is named by one letter: N batch, F frequency (mel bands or STFT bins), T time frames, K classes,
C channels; the digit 1 names a unit axis that exists only because a model wants it (a 2-D CNN's channel axis).
A task stores its features with semantic axes (log-mel [N, F, T]); a model file may want them in another order or
with a unit axis, e.g. a PyTorch 2-D CNN takes "N1FT" and its TFLite file "NFT1".
"""

from __future__ import annotations

import numpy as np


class LayoutError(ValueError):
    """Axes that cannot be rearranged into each other (different letters, or a dropped axis that is not unit)."""


def arrange(x: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Move the axes of `x` (named by `src`) into the order `dst` names.

    "1" in `dst` inserts a unit axis; a "1" in `src` that `dst` has fewer of is dropped (it must have size 1).
    Letters other than "1" must match one to one. A no-op returns `x` itself.
    """
    if x.ndim != len(src):
        raise LayoutError(f"array of rank {x.ndim} ({list(x.shape)}) does not match axes '{src}'")
    named_src, named_dst = [a for a in src if a != "1"], [a for a in dst if a != "1"]
    if sorted(named_src) != sorted(named_dst) or len(set(named_src)) != len(named_src):
        raise LayoutError(f"cannot rearrange axes '{src}' into '{dst}'")
    for axis, letter in enumerate(src):
        if letter == "1" and x.shape[axis] != 1:
            raise LayoutError(f"axis {axis} of {list(x.shape)} has size {x.shape[axis]}; '{src}' says it is a unit axis")
    squeezed = x.reshape([n for n, a in zip(x.shape, src) if a != "1"])
    perm = [named_src.index(a) for a in named_dst]
    moved = squeezed.transpose(perm) if perm != sorted(perm) else squeezed
    shape, it = [], iter(moved.shape)
    for letter in dst:
        shape.append(1 if letter == "1" else next(it))
    out = moved.reshape(shape)
    return out if out.shape != x.shape or perm != sorted(perm) else x
