"""resnet-kws: a residual keyword-spotting CNN in the style of Tang & Lin 2018 (res8), as PyTorch and Keras 3 twins
with the same layer names (task "keywords").

Input: log-mel [40 bands, 100 frames]; PyTorch takes [N, 1, 40, 100] (NCHW, axes "1FT"), Keras [N, 40, 100, 1]
(NHWC, "FT1"). Output: 12 class logits (PyTorch) or probabilities (Keras, softmax), axes "K".

    conv0 3x3 (C) -> bn0 -> relu -> pool: average pooling `pool` (F x T; (3, 4) gives 13 x 25; (1, 1): none)
    block{b} for b in `blocks`: conv1 3x3 (C) -> bn1 -> relu -> conv2 3x3 (C) -> bn2, + identity -> relu
    global average pooling -> fc (12)

Convs have no bias (BN follows) and 'same' padding; BN eps 1e-3, momentum 0.9 in both twins. Every block is
shape-PRESERVING (C channels in and out, same spatial size, identity skip), so a whole block can be removed:
`blocks` lists the block numbers present (default (1, 2, 3)); a model without block 2 is `blocks=(1, 3)` and keeps
the names of the others. Layer names (both twins): conv0, bn0, block{b}.conv1, block{b}.bn1, block{b}.conv2,
block{b}.bn2, fc; in PyTorch `model.block{b}` is the block module (replacing it by nn.Identity removes it).

Size with the defaults (C 45, 3 blocks, pool (3, 4)), counting BN moving statistics: 111,567 parameters (params =
9C + 4C + n_blocks * (18C^2 + 8C) + 12C + 12); conv/dense MACs per clip: conv0 40*100*9*45 = 1.62 M, each block
13*25*18*45^2 = 11.85 M, fc 540: 37.16 M in all.
Ops: Conv2d, BatchNorm, ReLU, add, average pooling, global average pooling, dense: converts to TFLite and prunes
with the structured surgery; conv0 and every block's conv2 are coupled by the identity skips (one keep list), each
block's conv1 prunes on its own; fc is the output layer.
"""

from __future__ import annotations

from edgeprune.errors import EdgepruneError
from edgeprune.models.registry import ModelEntry, builder, register_model

NAME = "resnet-kws"
DEFAULTS = dict(channels=45, blocks=(1, 2, 3), pool=(3, 4))
BN_EPS, BN_MOMENTUM = 1e-3, 0.9


def _task_args(task) -> dict:
    (n_mels, n_frames) = task.inputs[0].shape
    return {"n_mels": n_mels, "n_frames": n_frames, "n_classes": task.n_classes}


register_model(ModelEntry(
    NAME, "residual keyword CNN after Tang & Lin 2018 res8 (45 channels, 3 shape-preserving blocks, 112 k params, "
          "37.2 M MACs)", DEFAULTS,
    tasks=("keywords",), task_args=_task_args,
    layouts={"torch": (("NCHW", "1FT"),), "keras": (("NHWC", "FT1"),)},
    output_axes={"torch": "K", "keras": "K"},
    # validation accuracy still climbs at the 6th quick epoch (0.86); an epoch is about 4 s on 2 cores
    training={"quick": {"epochs": 15}}))


def _check(channels, blocks, pool) -> tuple[tuple[int, ...], tuple[int, int]]:
    blocks, pool = tuple(int(b) for b in blocks), tuple(int(p) for p in pool)
    if channels < 1 or len(set(blocks)) != len(blocks) or any(b < 1 for b in blocks):
        raise EdgepruneError(f"resnet-kws: channels {channels} must be positive and blocks {list(blocks)} distinct "
                             "positive block numbers")
    if len(pool) != 2 or min(pool) < 1:
        raise EdgepruneError(f"resnet-kws: pool {list(pool)}: expected two positive sizes (F, T)")
    return blocks, pool


def param_count(channels: int = 45, blocks=(1, 2, 3), n_classes: int = 12, **_) -> int:
    """Parameters (BN moving statistics included) of a resnet-kws, computed from its definition."""
    c = channels
    return 9 * c + 4 * c + len(tuple(blocks)) * (18 * c * c + 8 * c) + c * n_classes + n_classes


@builder(NAME, "torch")
def build_torch(channels, blocks, pool, n_mels, n_frames, n_classes):
    import torch.nn as nn

    blocks, pool = _check(channels, blocks, pool)
    bn = dict(eps=BN_EPS, momentum=1 - BN_MOMENTUM)

    class Block(nn.Module):
        """Shape-preserving residual block: relu(x + bn2(conv2(relu(bn1(conv1(x))))))."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels, **bn)
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels, **bn)
            self.relu = nn.ReLU()

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            return self.relu(x + self.bn2(self.conv2(y)))

    class ResnetKws(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block_names = [f"block{b}" for b in blocks]
            self.conv0 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
            self.bn0 = nn.BatchNorm2d(channels, **bn)
            self.relu = nn.ReLU()
            self.pool = nn.AvgPool2d(pool) if pool != (1, 1) else nn.Identity()
            for name in self.block_names:
                setattr(self, name, Block())
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(channels, n_classes)

        def forward(self, x):
            x = self.pool(self.relu(self.bn0(self.conv0(x))))
            for name in self.block_names:
                x = getattr(self, name)(x)
            return self.fc(self.gap(x).flatten(1))

    return ResnetKws()


@builder(NAME, "keras")
def build_keras(channels, blocks, pool, n_mels, n_frames, n_classes):
    import keras
    from keras import layers as L

    blocks, pool = _check(channels, blocks, pool)
    bn = dict(epsilon=BN_EPS, momentum=BN_MOMENTUM)

    def conv(name, x):
        return L.Conv2D(channels, 3, padding="same", use_bias=False, name=name)(x)

    inputs = keras.Input((n_mels, n_frames, 1), name="logmel")
    x = L.ReLU(name="relu0")(L.BatchNormalization(name="bn0", **bn)(conv("conv0", inputs)))
    if pool != (1, 1):
        x = L.AveragePooling2D(pool, name="pool")(x)
    for b in blocks:
        p = f"block{b}."
        y = L.ReLU(name=p + "relu1")(L.BatchNormalization(name=p + "bn1", **bn)(conv(p + "conv1", x)))
        y = L.BatchNormalization(name=p + "bn2", **bn)(conv(p + "conv2", y))
        x = L.ReLU(name=p + "relu2")(L.Add(name=p + "add")([x, y]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(n_classes, activation="softmax", name="fc")(x)
    return keras.Model(inputs, outputs, name="resnet_kws")
