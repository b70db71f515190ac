"""Single-layer TFLite files at a model's real layer shapes: the grid a target times to show where its kernels'
latency steps as channel counts change (`python -m benchmarks.grid` times them, on the target itself).

Each prunable conv or dense layer is rebuilt alone in Keras with its real geometry (input size, kernel, stride,
dilation, padding) and a ReLU after it, at the (in, out) channel counts asked for, and converted with the same
converter settings and rewrites as an export (float32, float16 weights, and full int8 with int8 input and
output). Geometry comes
from the PyTorch twin's forward hooks, so both twins of a registered model share one table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError

PRECISIONS = ("fp32", "int8")  # the default grid
GRID_PRECISIONS = ("fp32", "fp16", "int8")  # what a grid can hold


@dataclass(frozen=True)
class Geometry:
    """One layer as the target runs it: kind conv2d | conv1d | dense, spatial input size (channels-last order),
    channels, kernel, stride, dilation and explicit padding as in PyTorch."""

    name: str
    kind: str
    spatial: tuple[int, ...]
    cin: int
    cout: int
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def macs(self, cin: int, cout: int) -> int:
        """Multiply-accumulates at these channel counts (the output's spatial size does not change with them)."""
        if self.kind == "dense":
            return int(np.prod(self.spatial, dtype=np.int64)) * cin * cout
        out = [(s + 2 * p - d * (k - 1) - 1) // st + 1
               for s, p, d, k, st in zip(self.spatial, self.padding, self.dilation, self.kernel, self.stride)]
        return int(np.prod(out, dtype=np.int64) * np.prod(self.kernel, dtype=np.int64)) * cin * cout


def geometry(model: Any, input_shapes: list[tuple[int, ...]], layers: list[str] | None = None) -> dict[str, Geometry]:
    """The geometry of each Conv1d / Conv2d / Linear of a PyTorch model (or of `layers`), from one forward pass."""
    import torch

    from edgeprune.frameworks.torch_fw import example_inputs

    found: dict[str, Geometry] = {}
    hooks = []

    def hook(name: str):
        def record(module, args, output):
            x = args[0]
            if isinstance(module, torch.nn.Linear):
                found[name] = Geometry(name, "dense", tuple(x.shape[1:-1]) or (1,), module.in_features,
                                       module.out_features)
                return
            if module.groups != 1:
                raise EdgepruneError(f"{name}: grouped convolutions are not in the latency grid")
            kind = "conv2d" if isinstance(module, torch.nn.Conv2d) else "conv1d"
            if isinstance(module.padding, str):
                raise EdgepruneError(f"{name}: padding '{module.padding}'; the grid needs explicit padding")
            # PyTorch is channels-first: [N, C, *spatial]
            found[name] = Geometry(name, kind, tuple(x.shape[2:]), module.in_channels, module.out_channels,
                                   tuple(module.kernel_size), tuple(module.stride), tuple(module.dilation),
                                   tuple(module.padding))
        return record

    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)) and (layers is None or
                                                                                       name in layers):
            hooks.append(module.register_forward_hook(hook(name)))
    model.eval()
    try:
        with torch.no_grad():
            model(*example_inputs(input_shapes))
    finally:
        for h in hooks:
            h.remove()
    missing = sorted(set(layers or []) - set(found))
    if missing:
        raise EdgepruneError(f"layers {missing} are not convolutions or dense layers that ran")
    return found


def layer_model(g: Geometry, cin: int, cout: int) -> Any:
    """The layer alone in Keras (channels-last), at cin -> cout channels, ReLU after it, written as the export
    writes it: padding that keeps the size is the conv's own ('same', as the Keras twins have it), and a conv over
    one input channel goes through the export's rewrite (its kernel rows stacked as channels, a one-row conv)."""
    import keras
    from keras import layers as L

    from edgeprune.export.keras_rewrite import fold_one_channel_convs

    if min(cin, cout) < 1:
        raise EdgepruneError(f"{g.name}: channel counts {cin} -> {cout} must be positive")
    x = inputs = keras.Input((*g.spatial, cin))
    if g.kind == "dense":
        x = L.Dense(cout)(x)
    else:
        two = g.kind == "conv2d"
        same = all(s == 1 for s in g.stride) and all(2 * p == d * (k - 1)
                                                      for p, d, k in zip(g.padding, g.dilation, g.kernel))
        if any(g.padding) and not same:
            pad = tuple((p, p) for p in g.padding) if two else (g.padding[0], g.padding[0])
            x = (L.ZeroPadding2D(pad) if two else L.ZeroPadding1D(pad))(x)
        conv = L.Conv2D if two else L.Conv1D
        x = conv(cout, g.kernel, strides=g.stride, dilation_rate=g.dilation,
                 padding="same" if same and any(g.padding) else "valid")(x)
    return fold_one_channel_convs(keras.Model(inputs, L.ReLU()(x)))[0]


def file_name(layer: str, cin: int, cout: int, precision: str) -> str:
    return f"{layer}__{cin}x{cout}__{precision}.tflite"


def build_grid(geoms: dict[str, Geometry], points: dict[str, list[tuple[int, int]]], out: Path,
               precisions: tuple[str, ...] = PRECISIONS, seed: int = 0, progress: bool = True) -> list[Path]:
    """One .tflite per (layer, cin, cout, precision) into `out`; int8 calibrated on 8 seeded normal samples."""
    import tempfile

    from edgeprune.export.keras_path import keras_to_tflite

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for layer, pts in points.items():
        g = geoms[layer]
        for i, (cin, cout) in enumerate(pts, start=1):
            names = {q: out / file_name(layer, cin, cout, q) for q in precisions}
            if all(p.exists() for p in names.values()):
                written += list(names.values())
                continue
            calib = [rng.normal(size=(8, *g.spatial, cin)).astype(np.float32)]
            with tempfile.TemporaryDirectory(prefix="edgeprune-grid-") as tmp:
                files, _ = keras_to_tflite(layer_model(g, cin, cout), Path(tmp), calib, set(precisions),
                                           int8_io=True, twin=False)
                for q, path in files.items():
                    names[q].write_bytes(path.read_bytes())
            written += list(names.values())
            if progress:
                print(f"[latency] {layer}: {i}/{len(pts)} ({cin} -> {cout})", flush=True)
    return written
