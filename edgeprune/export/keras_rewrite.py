"""Export-time rewrite of a Keras model: a convolution over ONE input channel (the log-mel front conv of most audio
models) becomes its kernel rows stacked as channels followed by a one-row convolution. Exact.

Why: XNNPACK's integer convolution packs each kernel tap's input channels into blocks of 8, so a 7x7 conv over one
channel does the work of 8 channels and costs the same at any output width (measured on this x86, LiteRT 2.3,
1 thread, 40x500 input: 0.32 ms for 1 -> 16 and for 8 -> 16 channels). Stacking the 7 row shifts of the input as 7
channels (a concatenation along the rows, a reshape and a transpose: data movement, exact in int8 as in float) turns
it into a 1x7 conv over 7 channels: 49 taps of 1 channel become 7 taps of 7. Measured: 0.095 ms instead of 0.32 at
full int8 and 0.24 instead of 0.25 at float32 for the DCASE baseline's conv1, shifts included.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def foldable(layer: Any) -> bool:
    """A plain Conv2D (channels-last, stride 1, no dilation or groups) over one input channel with more than one
    kernel row: what `fold_one_channel_convs` rewrites."""
    import keras

    if type(layer) is not keras.layers.Conv2D or layer.data_format != "channels_last":
        return False
    cfg = layer.get_config()
    return (tuple(cfg["strides"]) == (1, 1) and tuple(cfg["dilation_rate"]) == (1, 1) and cfg.get("groups", 1) == 1
            and cfg["padding"] in ("same", "valid") and layer.kernel.shape[2] == 1 and layer.kernel.shape[0] > 1)


def row_padding(kh: int, padding: str) -> tuple[int, int]:
    """Rows added above and below for a kernel of `kh` rows ('same' pads the extra row below, as TensorFlow)."""
    if padding == "valid":
        return 0, 0
    return (kh - 1) // 2, kh - 1 - (kh - 1) // 2


def fold_rows(x: Any, kh: int, pad: tuple[int, int]) -> Any:
    """[N, H, W, C] -> [N, H', W, kh * C]: channels i * C .. i * C + C - 1 hold the input shifted up by i rows (after
    `pad` zero rows above and below), so a (1, kw) conv over these channels is the (kh, kw) conv over the input.
    The export folds C = 1 only; `latency.study` times the fold at more channels."""
    from keras import ops

    c = x.shape[-1]
    x = ops.pad(x, [[0, 0], [pad[0], pad[1]], [0, 0], [0, 0]]) if any(pad) else x
    rows, width = x.shape[1] - kh + 1, x.shape[2]
    stacked = ops.concatenate([x[:, i:i + rows] for i in range(kh)], axis=1)  # contiguous blocks: a fast copy
    if c == 1:
        return ops.transpose(ops.reshape(stacked, (-1, kh, rows, width)), (0, 2, 3, 1))
    moved = ops.transpose(ops.reshape(stacked, (-1, kh, rows, width, c)), (0, 2, 3, 1, 4))
    return ops.reshape(moved, (-1, rows, width, kh * c))


def folded_kernel(kernel: np.ndarray) -> np.ndarray:
    """[kh, kw, C, F] -> [1, kw, kh * C, F]: tap (i, j) of channel c becomes tap j of channel i * C + c."""
    kh, kw, c, f = kernel.shape
    return np.ascontiguousarray(kernel.transpose(1, 0, 2, 3).reshape(1, kw, kh * c, f))


def folded_layer(conv: Any) -> Any:
    """A layer computing `conv` (a built plain stride-1 Conv2D, any input channels) through its rows stacked as
    channels, with its weights."""
    import keras

    cfg = conv.get_config()
    kh, kw, cin = conv.kernel.shape[:3]
    pad = row_padding(kh, cfg["padding"])

    class RowFoldedConv2D(keras.layers.Layer):
        def __init__(self) -> None:
            super().__init__(name=conv.name)
            self.inner = keras.layers.Conv2D(cfg["filters"], (1, kw), padding=cfg["padding"],
                                             activation=cfg["activation"], use_bias=cfg["use_bias"],
                                             name=f"{conv.name}_rows")

        def build(self, input_shape) -> None:
            self.inner.build((None, None, None, kh * cin))
            weights = [folded_kernel(np.asarray(conv.kernel))] + ([np.asarray(conv.bias)] if cfg["use_bias"] else [])
            self.inner.set_weights(weights)

        def call(self, x):
            return self.inner(fold_rows(x, kh, pad))

    return RowFoldedConv2D()


def fold_one_channel_convs(model: Any) -> tuple[Any, list[str]]:
    """(rewritten copy sharing the other layers, names of the folded convs); the model itself when none folds, it
    cannot be cloned, or the copy's outputs differ from the model's on random inputs."""
    import keras

    names = [layer.name for layer in model.layers if foldable(layer)]
    if not names:
        return model, []
    try:
        clone = keras.models.clone_model(
            model, clone_function=lambda layer: folded_layer(layer) if layer.name in names else layer)
        rng = np.random.default_rng(0)
        x = [rng.normal(size=(2, *t.shape[1:])).astype(np.float32) for t in model.inputs]
        x = x[0] if len(x) == 1 else x  # the structure Keras expects
        want, got = model(x, training=False), clone(x, training=False)
    except Exception:  # noqa: BLE001 - a graph clone_model cannot rebuild is exported as it is
        return model, []
    want, got = np.asarray(want), np.asarray(got)
    if want.shape != got.shape or not np.allclose(want, got, atol=1e-5, rtol=1e-4):
        return model, []
    return clone, names
