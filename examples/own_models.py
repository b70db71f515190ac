"""Five well-known architectures, written here from their published descriptions (not by edgeprune's model
registry), as a user brings them: the models `edgeprune.prune` is tested on and measured with.

- `ds_cnn`: Keras DS-CNN for keyword spotting (Zhang et al. 2017, "Hello Edge", DS-CNN-S): a 10x4 strided conv,
  four depthwise-separable blocks (3x3 depthwise, 1x1 pointwise, BN and ReLU after each), average pooling, a dense
  classifier.
- `mobilenet`: Keras MobileNet-style network (Howard et al. 2017, MobileNetV1 at width 0.25): depthwise-separable
  blocks with strides, global pooling, and the classifier as keras.applications writes it: a 1x1 conv "logits"
  on the pooled features, reshaped, then softmax "predictions".
- `efficientnet`: Keras EfficientNet-style network (Tan and Le 2019): MBConv blocks (1x1 expansion, depthwise
  conv, squeeze-and-excitation as 1x1 convs on the pooled features gating the depthwise output by a multiply,
  1x1 projection, identity skip when shapes match), swish activations, a 1x1 head conv, pooling, dense.
- `resnet`: PyTorch ResNet (He et al. 2016) with basic blocks: residual adds, 1x1 strided conv shortcuts where
  the width changes; on a 3-channel input (log-mel, deltas, delta-deltas).
- `conv1d_concat`: PyTorch Conv1d network over log-mel bands as channels with an Inception-style block (Szegedy et
  al. 2015): parallel 1-, 3- and 5-frame convs concatenated, then a 1x1 conv, pooling and a linear classifier.

All take log-mel features of the keywords task ([40 bands, 100 frames]); `INPUTS` gives each one's input spec.
Run as a script to measure them (see benchmarks/results/own_models.md):

    python examples/own_models.py --out benchmarks/results/own_models
"""

from __future__ import annotations

N_MELS, N_FRAMES, N_CLASSES = 40, 100, 12


def ds_cnn(filters: int = 64, blocks: int = 4, classes: int = N_CLASSES):
    import keras
    from keras import layers as L

    x = inputs = keras.Input((N_MELS, N_FRAMES, 1), name="logmel")
    x = L.Conv2D(filters, (10, 4), strides=2, padding="same", use_bias=False, name="conv0")(x)
    x = L.ReLU(name="relu0")(L.BatchNormalization(name="bn0")(x))
    for i in range(1, blocks + 1):
        x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = L.ReLU(name=f"dw{i}_relu")(L.BatchNormalization(name=f"dw{i}_bn")(x))
        x = L.Conv2D(filters, 1, use_bias=False, name=f"pw{i}")(x)
        x = L.ReLU(name=f"pw{i}_relu")(L.BatchNormalization(name=f"pw{i}_bn")(x))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(classes, activation="softmax", name="fc")(x)
    return keras.Model(inputs, outputs, name="ds_cnn")


def mobilenet(alpha: float = 0.25, classes: int = N_CLASSES):
    import keras
    from keras import layers as L

    def width(c: int) -> int:
        return max(8, int(c * alpha))

    x = inputs = keras.Input((N_MELS, N_FRAMES, 1), name="logmel")
    x = L.Conv2D(width(32), 3, strides=2, padding="same", use_bias=False, name="conv1")(x)
    x = L.ReLU(6.0, name="conv1_relu")(L.BatchNormalization(name="conv1_bn")(x))
    for i, (c, s) in enumerate([(64, 1), (128, 2), (128, 1), (256, 2), (256, 1)], start=1):
        x = L.DepthwiseConv2D(3, strides=s, padding="same", use_bias=False, name=f"conv_dw_{i}")(x)
        x = L.ReLU(6.0, name=f"conv_dw_{i}_relu")(L.BatchNormalization(name=f"conv_dw_{i}_bn")(x))
        x = L.Conv2D(width(c), 1, use_bias=False, name=f"conv_pw_{i}")(x)
        x = L.ReLU(6.0, name=f"conv_pw_{i}_relu")(L.BatchNormalization(name=f"conv_pw_{i}_bn")(x))
    x = L.GlobalAveragePooling2D(keepdims=True, name="global_pool")(x)
    x = L.Dropout(1e-3, name="dropout")(x)
    x = L.Conv2D(classes, 1, padding="same", name="logits")(x)
    x = L.Reshape((classes,), name="reshape")(x)
    outputs = L.Activation("softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="mobilenet")


def efficientnet(classes: int = N_CLASSES):
    import keras
    from keras import layers as L

    def mbconv(x, name: str, out: int, expand: int, stride: int):
        c = x.shape[-1]
        h = L.Conv2D(c * expand, 1, use_bias=False, name=f"{name}_expand")(x)
        h = L.Activation("swish", name=f"{name}_expand_act")(L.BatchNormalization(name=f"{name}_expand_bn")(h))
        h = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(h)
        h = L.Activation("swish", name=f"{name}_dw_act")(L.BatchNormalization(name=f"{name}_dw_bn")(h))
        s = L.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_squeeze")(h)
        s = L.Conv2D(max(1, c // 4), 1, activation="swish", name=f"{name}_se_reduce")(s)
        s = L.Conv2D(c * expand, 1, activation="sigmoid", name=f"{name}_se_expand")(s)
        h = L.Multiply(name=f"{name}_se_excite")([h, s])
        h = L.Conv2D(out, 1, use_bias=False, name=f"{name}_project")(h)
        h = L.BatchNormalization(name=f"{name}_project_bn")(h)
        if stride == 1 and c == out:
            h = L.Add(name=f"{name}_add")([h, x])
        return h

    x = inputs = keras.Input((N_MELS, N_FRAMES, 1), name="logmel")
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = L.Activation("swish", name="stem_act")(L.BatchNormalization(name="stem_bn")(x))
    x = mbconv(x, "block1a", 16, 1, 1)
    x = mbconv(x, "block2a", 24, 4, 2)
    x = mbconv(x, "block2b", 24, 4, 1)
    x = L.Conv2D(64, 1, use_bias=False, name="top_conv")(x)
    x = L.Activation("swish", name="top_act")(L.BatchNormalization(name="top_bn")(x))
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = L.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="efficientnet")


def resnet(widths: tuple = (16, 32, 64), classes: int = N_CLASSES, in_channels: int = 3):
    import torch.nn as nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(widths[0])
            self.relu = nn.ReLU()
            blocks, cin = [], widths[0]
            for i, w in enumerate(widths):
                blocks.append(BasicBlock(cin, w, 1 if i == 0 else 2))
                cin = w
            self.layers = nn.Sequential(*blocks)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, classes)

        def forward(self, x):
            x = self.layers(self.relu(self.bn1(self.conv1(x))))
            return self.fc(self.pool(x).flatten(1))

    return ResNet()


def conv1d_concat(width: int = 48, classes: int = N_CLASSES):
    import torch
    import torch.nn as nn

    class Conv1dConcat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv1d(N_MELS, width, 3, padding=1)
            self.stem_bn = nn.BatchNorm1d(width)
            self.branch1 = nn.Conv1d(width, width // 2, 1)
            self.branch3 = nn.Conv1d(width, width // 2, 3, padding=1)
            self.branch5 = nn.Conv1d(width, width // 2, 5, padding=2)
            self.mix = nn.Conv1d(3 * (width // 2), width, 1)
            self.mix_bn = nn.BatchNorm1d(width)
            self.relu = nn.ReLU()
            self.pool = nn.AdaptiveMaxPool1d(1)
            self.fc = nn.Linear(width, classes)

        def forward(self, x):
            x = self.relu(self.stem_bn(self.stem(x)))
            x = torch.cat([self.relu(self.branch1(x)), self.relu(self.branch3(x)), self.relu(self.branch5(x))], dim=1)
            x = self.relu(self.mix_bn(self.mix(x)))
            return self.fc(self.pool(x).flatten(1))

    return Conv1dConcat()


BUILDERS = {"ds_cnn": ds_cnn, "mobilenet": mobilenet, "efficientnet": efficientnet, "resnet": resnet,
            "conv1d_concat": conv1d_concat}


def input_spec(name: str):
    """Each model's input: its layout and where the keyword task's log-mel axes (F bands, T frames) go."""
    from edgeprune.models.input_spec import InputSpec

    if name == "resnet":  # 3 channels: log-mel, deltas, delta-deltas (the features are stacked by the caller)
        return InputSpec((3, N_MELS, N_FRAMES), "NCHW", name="logmel")
    if name == "conv1d_concat":
        return InputSpec((N_MELS, N_FRAMES), "NCW", name="logmel", axes="FT", feature_axes="FT")
    return InputSpec((N_MELS, N_FRAMES, 1), "NHWC", name="logmel", axes="FT1", feature_axes="FT")


# --- measured: python examples/own_models.py --out benchmarks/results/own_models --------------------------------


def main(argv=None) -> None:
    import argparse
    import shlex
    import sys
    from pathlib import Path

    import numpy as np
    import torch

    import edgeprune
    from edgeprune.paired import paired_latency
    from edgeprune.export import export_model
    from edgeprune.frameworks import framework_of
    from edgeprune.models.measure import measure
    from edgeprune.results import write_result

    p = argparse.ArgumentParser(description="prune, export and time the five user architectures")
    p.add_argument("--out", default="runs/own_models/own_models", help="results stem (default under runs/)")
    p.add_argument("--work", default="runs/own_models", help="where the bundles are written")
    p.add_argument("--macs", type=float, default=0.5, help="MAC budget: the fraction of the parent to keep")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for name, build in BUILDERS.items():
        torch.manual_seed(0)
        model = build()
        spec = input_spec(name)
        fw = framework_of(model)
        x = rng.normal(-4, 2, size=(64, *spec.shape)).astype(np.float32)
        ex = torch.from_numpy(x[:1]) if fw == "torch" else None
        result = edgeprune.prune(model, ex, "l1", edgeprune.Budget(macs=args.macs))
        shapes = [spec.shape]
        before, after = measure(model, fw, input_shapes=shapes), measure(result.model, fw, input_shapes=shapes)
        sizes = {}
        for label, m in (("parent", model), ("pruned", result.model)):
            manifest = export_model(m, spec, args.work, name=f"{name}-{label}", formats="tflite", quant="fp32,int8",
                                    calib=x[:48], eval_x=x[48:], force=True, progress=False,
                                    thresholds={"int8_top1": None})  # random init: near-uniform outputs
            sizes[label] = {a["precision"]: a["size_bytes"] for a in manifest["artifacts"]}
        timing = paired_latency(f"{args.work}/{name}-parent/model_int8.tflite",
                                f"{args.work}/{name}-pruned/model_int8.tflite")
        rows.append({"model": name, "framework": fw, "coupled_groups": len(result.groups),
                     "params": f"{before['params']:,} -> {after['params']:,}",
                     "MMACs": f"{before['macs'] / 1e6:.2f} -> {after['macs'] / 1e6:.2f}",
                     "macs_kept": round(after["macs"] / before["macs"], 3),
                     "fp32_KB": f"{sizes['parent']['fp32'] / 1024:.1f} -> {sizes['pruned']['fp32'] / 1024:.1f}",
                     "int8_KB": f"{sizes['parent']['int8'] / 1024:.1f} -> {sizes['pruned']['int8'] / 1024:.1f}",
                     "int8_ms": f"{timing['parent_ms']:.3f} -> {timing['pruned_ms']:.3f}",
                     "int8_time_ratio": round(timing["ratio"], 3),
                     "ratio_spread": [round(v, 3) for v in timing["ratio_spread"]]})
        print(rows[-1], flush=True)
    command = shlex.join(["python", "examples/own_models.py", *(argv if argv is not None else sys.argv[1:])])
    print(write_result(Path(args.out), "Your own model: five public architectures pruned in one call to a MAC budget",
                       command, f"edgeprune.prune(model, example_inputs, 'l1', Budget(macs={args.macs})) on random "
                       "weights; int8 TFLite latency of the pruned file against its parent, 1 thread, XNNPACK on, "
                       "12 alternating blocks of 200 invokes (A B B A ...), median of the per-round ratio",
                       rows, ["model", "framework", "coupled_groups", "params", "MMACs", "macs_kept", "fp32_KB",
                              "int8_KB", "int8_ms", "int8_time_ratio", "ratio_spread"]))


if __name__ == "__main__":
    main()
