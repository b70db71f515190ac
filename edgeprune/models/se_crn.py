"""se-crn: a small convolutional encoder-decoder that predicts a magnitude mask from an air-conduction and a
bone-conduction microphone (task "enhancement"), as PyTorch and Keras 3 twins with the same layer names.

Inputs: log-magnitude STFTs "noisy" and "bone", [129 bins, 251 frames] each. The 129 bins are the channels of a
1-D conv over time: PyTorch takes [N, 129, 251] per input (NCW, axes "FT"), Keras [N, 251, 129] (NWC, "TF").
Output: a sigmoid mask in [0, 1] for the noisy STFT, PyTorch [N, 129, 251] ("FT"), Keras [N, 251, 129] ("TF").

Every conv is a Conv1d over time, kernel `kernel`, no bias, followed by BN (eps 1e-3, momentum 0.9 as in the
other twins) and ReLU; C = `channels`:

    fusion "early": x = concat(noisy, bone) (258 channels) -> enc1 (C, dilation 1) -> enc2 (C, d 2) -> enc3 (C, d 4)
    fusion "dual":  noisy_enc1..3 on noisy and bone_enc1..3 on bone (C/2 each, dilations 1, 2, 4); the level-i
                    features are concat(noisy_enc_i, bone_enc_i) (C channels): one encoder per microphone,
                    concatenated after it; then fuse, a 1x1 conv (C) + BN + ReLU, so the residual trunk below is
                    not coupled to the two encoders through the concat
    then `blocks` dilated residual blocks res1, res2, ... (C, dilation 8, 16, ...): x = relu(x + bn(conv(x)))
    then a U-Net-like decoder: dec3 (d 4) on concat(x, level 3) -> dec2 (d 2) on concat(x, level 2) ->
    dec1 (d 1) on concat(x, level 1), C channels each; mask: Conv1d(C, 129, 1) + sigmoid.

Layer names (both twins): [noisy_|bone_]enc{1,2,3}, fuse (dual only), res{j}, dec{3,2,1}, each with its BN
"<name>_bn"; mask.
Receptive field with the defaults: 1 + 2 * (1 + 2 + 4 + 8 + 16 + 4 + 2 + 1) = 77 frames (0.6 s at hop 128).

Size with the defaults (channels 48, 2 residual blocks, kernel 3), counting BN moving statistics:
early fusion 114,129 parameters, 28.2 M MACs per clip (251 frames); dual fusion 91,137 parameters, 22.4 M MACs
(conv MACs only; `param_count` is the formula).
Coupled by the residual adds (one keep list for the group): enc3 (early) or fuse (dual) with res1, res2, ...
Ops: Conv1d, BatchNorm, ReLU, add, concat, sigmoid only (no transposed or grouped convs, no norms across
channels): both twins convert to TFLite (0 TRANSPOSE) and prune with the structured surgery. The mask layer is
the output and cannot be pruned.
"""

from __future__ import annotations

from edgeprune.errors import EdgepruneError
from edgeprune.models.registry import ModelEntry, builder, register_model

NAME = "se-crn"
DEFAULTS = dict(fusion="early", channels=48, blocks=2, kernel=3)
BN_EPS, BN_MOMENTUM = 1e-3, 0.9
FUSIONS = ("early", "dual")
ENC_DILATIONS = (1, 2, 4)


def _task_args(task) -> dict:
    (n_bins, n_frames) = task.inputs[0].shape
    return {"n_bins": n_bins, "n_frames": n_frames}


register_model(ModelEntry(
    NAME, "conv encoder-decoder (dilated Conv1d over time, U-Net skips) predicting a magnitude mask from air + bone "
          "microphones; fusion 'early' (114 k params, 28.2 M MACs) or 'dual' (91 k, 22.4 M)", DEFAULTS,
    tasks=("enhancement",), task_args=_task_args,
    layouts={"torch": (("NCW", "FT"), ("NCW", "FT")), "keras": (("NWC", "TF"), ("NWC", "TF"))},
    output_axes={"torch": "FT", "keras": "TF"},
    # one quick epoch is 1-2 s on 2 cores and validation SI-SDR still improves after 6: train 30
    training={"quick": {"epochs": 30}}))


def _check(fusion: str, channels: int, blocks: int, kernel: int) -> None:
    if fusion not in FUSIONS:
        raise EdgepruneError(f"se-crn: fusion '{fusion}'; expected one of {', '.join(FUSIONS)}")
    if fusion == "dual" and channels % 2:
        raise EdgepruneError(f"se-crn: channels {channels} must be even with fusion 'dual' (C/2 per microphone)")
    if kernel % 2 == 0 or kernel < 1:
        raise EdgepruneError(f"se-crn: kernel {kernel} must be odd (symmetric 'same' padding in both twins)")
    if blocks < 0 or channels < 2:
        raise EdgepruneError(f"se-crn: channels {channels} and blocks {blocks} must be positive")


def _res_dilation(j: int) -> int:
    return 8 * 2 ** (j - 1)


def param_count(fusion: str = "early", channels: int = 48, blocks: int = 2, kernel: int = 3, n_bins: int = 129,
                **_) -> int:
    """Parameters (BN moving statistics included) of a se-crn, computed from its definition."""
    c, k = channels, kernel
    if fusion == "early":
        enc = 2 * n_bins * c * k + 2 * c * c * k + 3 * 4 * c
    else:
        h = c // 2
        enc = 2 * (n_bins * h * k + 2 * h * h * k + 3 * 4 * h) + c * c + 4 * c  # + the 1x1 fuse conv
    res = blocks * (c * c * k + 4 * c)
    dec = 3 * (2 * c * c * k + 4 * c)
    return enc + res + dec + c * n_bins + n_bins


@builder(NAME, "torch")
def build_torch(fusion, channels, blocks, kernel, n_bins, n_frames):
    import torch
    import torch.nn as nn

    _check(fusion, channels, blocks, kernel)
    bn = dict(eps=BN_EPS, momentum=1 - BN_MOMENTUM)

    class SeCrn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fusion, self.blocks = fusion, blocks
            self.relu = nn.ReLU()

            def conv(name, c_in, c_out, dilation):
                setattr(self, name, nn.Conv1d(c_in, c_out, kernel, padding=dilation * (kernel - 1) // 2,
                                              dilation=dilation, bias=False))
                setattr(self, name + "_bn", nn.BatchNorm1d(c_out, **bn))

            if fusion == "early":
                for i, d in enumerate(ENC_DILATIONS, 1):
                    conv(f"enc{i}", 2 * n_bins if i == 1 else channels, channels, d)
            else:
                h = channels // 2
                for mic in ("noisy", "bone"):
                    for i, d in enumerate(ENC_DILATIONS, 1):
                        conv(f"{mic}_enc{i}", n_bins if i == 1 else h, h, d)
                self.fuse = nn.Conv1d(channels, channels, 1, bias=False)
                self.fuse_bn = nn.BatchNorm1d(channels, **bn)
            for j in range(1, blocks + 1):
                conv(f"res{j}", channels, channels, _res_dilation(j))
            for i in (3, 2, 1):
                conv(f"dec{i}", 2 * channels, channels, ENC_DILATIONS[i - 1])
            self.mask = nn.Conv1d(channels, n_bins, 1)

        def _unit(self, name, x):
            return self.relu(getattr(self, name + "_bn")(getattr(self, name)(x)))

        def _encoder(self, x, prefix):
            levels = []
            for i in range(1, len(ENC_DILATIONS) + 1):
                x = self._unit(f"{prefix}enc{i}", x)
                levels.append(x)
            return levels

        def forward(self, noisy, bone):
            if self.fusion == "early":
                levels = self._encoder(torch.cat([noisy, bone], dim=1), "")
            else:
                levels = [torch.cat([a, b], dim=1)
                          for a, b in zip(self._encoder(noisy, "noisy_"), self._encoder(bone, "bone_"))]
            x = levels[-1] if self.fusion == "early" else self._unit("fuse", levels[-1])
            for j in range(1, self.blocks + 1):
                x = self.relu(x + getattr(self, f"res{j}_bn")(getattr(self, f"res{j}")(x)))
            for i in (3, 2, 1):
                x = self._unit(f"dec{i}", torch.cat([x, levels[i - 1]], dim=1))
            return torch.sigmoid(self.mask(x))

    return SeCrn()


@builder(NAME, "keras")
def build_keras(fusion, channels, blocks, kernel, n_bins, n_frames):
    import keras
    from keras import layers as L

    _check(fusion, channels, blocks, kernel)
    bn = dict(epsilon=BN_EPS, momentum=BN_MOMENTUM)

    def conv(name, x, c_out, dilation, relu=True, size=kernel):
        x = L.Conv1D(c_out, size, padding="same", dilation_rate=dilation, use_bias=False, name=name)(x)
        x = L.BatchNormalization(name=name + "_bn", **bn)(x)
        return L.ReLU(name=name + "_relu")(x) if relu else x

    def encoder(x, prefix, width):
        levels = []
        for i, d in enumerate(ENC_DILATIONS, 1):
            x = conv(f"{prefix}enc{i}", x, width, d)
            levels.append(x)
        return levels

    noisy = keras.Input((n_frames, n_bins), name="noisy")
    bone = keras.Input((n_frames, n_bins), name="bone")
    if fusion == "early":
        levels = encoder(L.Concatenate(name="input_concat")([noisy, bone]), "", channels)
    else:
        pairs = zip(encoder(noisy, "noisy_", channels // 2), encoder(bone, "bone_", channels // 2))
        levels = [L.Concatenate(name=f"level{i}_concat")([a, b]) for i, (a, b) in enumerate(pairs, 1)]
    x = levels[-1] if fusion == "early" else conv("fuse", levels[-1], channels, 1, size=1)
    for j in range(1, blocks + 1):
        y = conv(f"res{j}", x, channels, _res_dilation(j), relu=False)
        x = L.ReLU(name=f"res{j}_relu")(L.Add(name=f"res{j}_add")([x, y]))
    for i in (3, 2, 1):
        x = conv(f"dec{i}", L.Concatenate(name=f"dec{i}_concat")([x, levels[i - 1]]), channels,
                 ENC_DILATIONS[i - 1])
    mask = L.Conv1D(n_bins, 1, activation="sigmoid", name="mask")(x)
    return keras.Model([noisy, bone], mask, name="se_crn")
