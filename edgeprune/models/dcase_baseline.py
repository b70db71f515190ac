"""The DCASE 2021 task 1a baseline CNN, as twins in PyTorch and Keras 3 with the same layer names.

Input: log-mel [40 bands, 500 frames]; PyTorch takes [N, 1, 40, 500], Keras [N, 40, 500, 1] (channels-last).
conv1 16 7x7 -> bn1 -> relu; conv2 16 7x7 -> bn2 -> relu -> pool1 5x5 -> dropout; conv3 32 7x7 -> bn3 -> relu ->
pool2 4x100 -> dropout; flatten (2x1x32) -> dense1 100 relu -> dropout -> dense2 10.
46,246 parameters counting BN moving statistics; about 286.6 M MACs. Widths are arguments so pruned variants
rebuild from their spec. BN epsilon is Keras' 1e-3 in both twins, so their outputs agree. BN momentum is 0.9
(PyTorch 0.1), not Keras' 0.99: with 0.99 the moving statistics are still near their initial values after the
few hundred steps of a quick run, and evaluation is at chance.
The Keras twin ends in softmax (as the seed); the PyTorch twin returns logits and its framework adapter applies
softmax for predictions.
"""

from __future__ import annotations

from edgeprune.models.registry import ModelEntry, builder, register_model

NAME = "dcase2021_baseline"
DEFAULTS = dict(conv1=16, conv2=16, conv3=32, dense1=100, dropout=0.3)
BN_EPS, BN_MOMENTUM = 1e-3, 0.9


def _task_args(task) -> dict:
    (n_mels, n_frames) = task.inputs[0].shape
    return {"n_mels": n_mels, "n_frames": n_frames, "n_classes": task.n_classes}


# Log-mel "FT" with a unit channel axis: NCHW in PyTorch, NHWC in Keras. TFLite gets NHWC either way (onnx2tf's
# channels-last form of NCHW), so both twins' files take the same [1, 40, 500, 1] input.
register_model(ModelEntry(
    NAME, "DCASE 2021 task 1a baseline CNN (3 conv + 2 dense, 46,246 params, 286.6 M MACs)", DEFAULTS,
    tasks=("scenes",), task_args=_task_args,
    layouts={"torch": (("NCHW", "1FT"),), "keras": (("NHWC", "FT1"),)}))


@builder(NAME, "torch")
def build_torch(conv1, conv2, conv3, dense1, n_classes, n_mels, n_frames, dropout):
    import torch.nn as nn

    class DcaseBaseline(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            bn = dict(eps=BN_EPS, momentum=1 - BN_MOMENTUM)
            self.conv1 = nn.Conv2d(1, conv1, 7, padding=3)
            self.bn1 = nn.BatchNorm2d(conv1, **bn)
            self.conv2 = nn.Conv2d(conv1, conv2, 7, padding=3)
            self.bn2 = nn.BatchNorm2d(conv2, **bn)
            self.pool1 = nn.MaxPool2d(5)
            self.conv3 = nn.Conv2d(conv2, conv3, 7, padding=3)
            self.bn3 = nn.BatchNorm2d(conv3, **bn)
            self.pool2 = nn.MaxPool2d((4, 100))
            self.drop = nn.Dropout(dropout)
            self.relu = nn.ReLU()
            flat = conv3 * (n_mels // 5 // 4) * (n_frames // 5 // 100)
            self.dense1 = nn.Linear(flat, dense1)
            self.dense2 = nn.Linear(dense1, n_classes)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.drop(self.pool1(self.relu(self.bn2(self.conv2(x)))))
            x = self.drop(self.pool2(self.relu(self.bn3(self.conv3(x)))))
            x = self.drop(self.relu(self.dense1(x.flatten(1))))
            return self.dense2(x)

    return DcaseBaseline()


@builder(NAME, "keras")
def build_keras(conv1, conv2, conv3, dense1, n_classes, n_mels, n_frames, dropout):
    import keras
    from keras import layers as L

    bn = dict(epsilon=BN_EPS, momentum=BN_MOMENTUM)
    inputs = keras.Input((n_mels, n_frames, 1), name="logmel")
    x = L.Conv2D(conv1, 7, padding="same", name="conv1")(inputs)
    x = L.ReLU(name="relu1")(L.BatchNormalization(name="bn1", **bn)(x))
    x = L.Conv2D(conv2, 7, padding="same", name="conv2")(x)
    x = L.ReLU(name="relu2")(L.BatchNormalization(name="bn2", **bn)(x))
    x = L.Dropout(dropout, name="drop1")(L.MaxPooling2D(5, name="pool1")(x))
    x = L.Conv2D(conv3, 7, padding="same", name="conv3")(x)
    x = L.ReLU(name="relu3")(L.BatchNormalization(name="bn3", **bn)(x))
    x = L.Dropout(dropout, name="drop2")(L.MaxPooling2D((4, 100), name="pool2")(x))
    x = L.Flatten(name="flatten")(x)
    x = L.Dropout(dropout, name="drop3")(L.Dense(dense1, activation="relu", name="dense1")(x))
    outputs = L.Dense(n_classes, activation="softmax", name="dense2")(x)
    return keras.Model(inputs, outputs, name=NAME)
