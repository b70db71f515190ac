"""What a model takes as input: one sample's shape and axis layout in its source framework, and the layout its
TFLite file gets. Export, parity, the data checks and the manifest read this instead of assuming log-mel [40, 500].

    InputSpec((1, 40, 500), "NCHW", name="logmel")   # PyTorch 2D CNN over log-mel (the DCASE baseline)
    InputSpec((40, 500, 1), "NHWC", name="logmel")   # its Keras twin
    InputSpec((40, 101), "NCW")                       # PyTorch Conv1d over 40 mel bands x 101 frames
    InputSpec((32, 32, 3), "NHWC")                    # keras.applications at 32 x 32

Layouts are axis letters with the batch axis first: N batch, C channels, D / H / W spatial (or time); any other
upper-case letter is an axis no converter moves (e.g. "NT" for a waveform [N, samples]).

A registered model's specs also say where the task's feature axes go (`axes`, one letter per non-batch axis, "1"
for a unit axis) and in which order the data holds them (`feature_axes`): the DCASE baseline's PyTorch twin takes
log-mel "FT" as NCHW with axes "1FT", its Keras twin as NHWC with axes "FT1", a Conv1d over mel bands as NCW "FT",
its Keras twin as NWC "TF". Arrays in the feature layout are then rearranged for the model, ONNX and TFLite files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from benchmarks.arrays import arrange
from edgeprune.errors import EdgepruneError

# onnx2tf gives every channels-first input of rank 3 to 5 its channels-last form; that is the layout TFLite
# kernels use natively, so it needs no TRANSPOSE op.
CHANNELS_LAST = {"NCW": "NWC", "NCHW": "NHWC", "NCDHW": "NDHWC"}


@dataclass(frozen=True)
class InputSpec:
    """One model input. `shape` is one sample without the batch axis, in the source framework's layout `layout`.

    `tflite_layout` is the layout of the TFLite file's input: left as None it is the converter's natural choice
    (for PyTorch through onnx2tf the channels-last form of a channels-first layout, for Keras the model's own
    layout). `name` becomes the input tensor's name in every exported file.
    """

    shape: tuple[int, ...]
    layout: str
    tflite_layout: str | None = None
    name: str = "input"
    axes: str | None = None  # feature letter (or "1") of each non-batch axis of `shape`
    feature_axes: str | None = None  # the order the data holds the feature axes in, e.g. "FT"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        if not shape or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape):
            raise EdgepruneError(f"input shape {list(shape)}: expected positive integers (one sample, no batch axis)")
        object.__setattr__(self, "shape", tuple(int(s) for s in shape))
        _check_layout(self.layout, len(shape) + 1, "layout")
        if self.tflite_layout is not None:
            _check_layout(self.tflite_layout, len(shape) + 1, "tflite_layout")
            if sorted(self.tflite_layout) != sorted(self.layout):
                raise EdgepruneError(f"tflite_layout '{self.tflite_layout}' must reorder the axes of '{self.layout}'")
        if not self.name or not str(self.name).replace("_", "").isalnum():
            raise EdgepruneError(f"input name {self.name!r}: expected letters, digits and underscores")
        if (self.axes is None) != (self.feature_axes is None):
            raise EdgepruneError("InputSpec: give both axes and feature_axes, or neither")
        if self.axes is not None:
            named = [a for a in self.axes if a != "1"]
            if len(self.axes) != len(shape) or sorted(named) != sorted(self.feature_axes):
                raise EdgepruneError(f"InputSpec axes '{self.axes}' must name the {len(shape)} axes of {list(shape)} "
                                     f"with the feature axes '{self.feature_axes}' once each and '1' for unit axes")
            if any(n != 1 for n, a in zip(shape, self.axes) if a == "1"):
                raise EdgepruneError(f"InputSpec axes '{self.axes}': a '1' axis of {list(shape)} is not of size 1")

    def resolve(self, framework: str) -> InputSpec:
        """This spec with `tflite_layout` filled in for `framework`'s converter, or a clear error when that
        converter cannot give the TFLite input the layout asked for."""
        if framework == "torch":  # onnx2tf: channels-last by default, or the ONNX layout kept as it is
            natural = CHANNELS_LAST.get(self.layout, self.layout)
            possible = {natural, self.layout}
        else:  # TFLiteConverter: the Keras input as it is
            natural = self.layout
            possible = {natural}
        if self.tflite_layout is not None and self.tflite_layout not in possible:
            raise EdgepruneError(f"tflite_layout '{self.tflite_layout}': the {framework} converter gives a "
                                 f"'{self.layout}' input the layout {' or '.join(sorted(possible))}")
        return replace(self, tflite_layout=self.tflite_layout or natural)

    @property
    def tflite_shape(self) -> tuple[int, ...]:
        """One sample's shape in the TFLite layout (call on a resolved spec)."""
        return tuple(self.shape[self.layout.index(a) - 1] for a in self._tflite()[1:])

    @property
    def feature_shape(self) -> tuple[int, ...] | None:
        """One sample's shape as the data holds it (None when the spec has no feature axes)."""
        if self.axes is None:
            return None
        return tuple(self.shape[self.axes.index(a)] for a in self.feature_axes)

    def file_axes(self, fmt: str) -> str | None:
        """The feature letters of a file's input axes, batch first: "N1FT" for an ONNX file of the DCASE baseline's
        PyTorch twin, "NFT1" for its TFLite file (call on a resolved spec)."""
        if self.axes is None:
            return None
        source = "N" + self.axes
        if fmt == "onnx":
            return source
        return "".join(source[self.layout.index(a)] for a in self._tflite())

    def from_features(self, x: np.ndarray) -> np.ndarray:
        """A batch [N, *feature_shape] -> the model's own layout [N, *shape]."""
        return np.ascontiguousarray(arrange(x, "N" + self.feature_axes, "N" + self.axes))

    def to_tflite(self, x: np.ndarray) -> np.ndarray:
        """A batch [N, *shape] in the source layout -> the same batch in the TFLite layout."""
        perm = [self.layout.index(a) for a in self._tflite()]
        return np.ascontiguousarray(x.transpose(perm)) if perm != sorted(perm) else x

    def check(self, x: Any, what: str) -> np.ndarray:
        """A float array of samples -> float32 [N, *shape] in the source layout, or one clear error.

        Single-channel inputs may also come without their channel axis, or with it last or first (the DCASE
        baseline takes log-mel [N, 40, 500], [N, 40, 500, 1] and [N, 1, 40, 500]): only a unit axis moves, so
        reshaping to `shape` keeps every value where it was. A spec with feature axes also takes the data's own
        layout ([N, *feature_shape]) and rearranges it.
        """
        if (self.feature_shape is not None and isinstance(x, np.ndarray) and x.ndim == len(self.feature_shape) + 1
                and tuple(x.shape[1:]) == self.feature_shape and tuple(x.shape[1:]) != self.shape):
            x = self.from_features(x)
        accepted = self._accepted_shapes()
        alternatives = " or ".join(f"[N, {', '.join(map(str, s))}]" for s in accepted[1:])
        expected = (f"a float32 array [N, {', '.join(map(str, self.shape))}] ({self.layout}) of input samples"
                    + (f", or {alternatives}" if alternatives else ""))
        if not isinstance(x, np.ndarray):
            raise EdgepruneError(f"{what}: got {type(x).__name__}; expected {expected}")
        if not np.issubdtype(x.dtype, np.floating):
            raise EdgepruneError(f"{what}: dtype {x.dtype}; expected {expected}")
        if tuple(x.shape[1:]) not in accepted or len(x) == 0:
            raise EdgepruneError(f"{what}: shape {list(x.shape)}; expected {expected} (N >= 1)")
        if not np.isfinite(x).all():
            raise EdgepruneError(f"{what}: contains NaN or infinite values; expected finite samples")
        return np.ascontiguousarray(x.reshape(len(x), *self.shape), dtype=np.float32)

    def to_json(self) -> dict[str, Any]:
        """Everything that defines the spec (for a checkpoint); `from_json` reads it back."""
        return {"shape": list(self.shape), "layout": self.layout, "tflite_layout": self.tflite_layout,
                "name": self.name, "axes": self.axes, "feature_axes": self.feature_axes, "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputSpec:
        try:
            return cls(tuple(data["shape"]), data["layout"], data.get("tflite_layout"), data.get("name", "input"),
                       data.get("axes"), data.get("feature_axes"), data.get("dtype", "float32"))
        except (KeyError, TypeError) as exc:
            raise EdgepruneError(f"not an input spec ({type(exc).__name__}: {exc}): {data!r}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The manifest's record of the input (batch axis included in the shapes)."""
        out = {"name": self.name, "shape": [1, *self.shape], "layout": self.layout, "dtype": self.dtype,
               "tflite_shape": [1, *self.tflite_shape], "tflite_layout": self._tflite()}
        if self.axes is not None:
            out.update(feature_shape=list(self.feature_shape), feature_axes=self.feature_axes,
                       axes={"onnx": self.file_axes("onnx"), "tflite": self.file_axes("tflite")})
        return out

    def _tflite(self) -> str:
        if self.tflite_layout is None:
            raise EdgepruneError("InputSpec.resolve(framework) first: the TFLite layout depends on the converter")
        return self.tflite_layout

    def _accepted_shapes(self) -> list[tuple[int, ...]]:
        shapes = [self.shape]
        c = self.layout.find("C") - 1
        if c >= 0 and self.shape[c] == 1 and len(self.shape) > 1:
            bare = self.shape[:c] + self.shape[c + 1 :]
            shapes += [s for s in (bare, bare + (1,), (1,) + bare) if s not in shapes]
        return shapes


def _check_layout(layout: Any, rank: int, what: str) -> None:
    if (not isinstance(layout, str) or len(layout) != rank or not layout.isalpha() or not layout.isupper()
            or layout[0] != "N" or len(set(layout)) != rank):
        raise EdgepruneError(f"{what} {layout!r}: expected {rank} distinct upper-case axis letters starting with the "
                             "batch axis N, e.g. 'NCHW', 'NHWC', 'NCW'")
