"""CMC-ASP: cross-modal consistency channel scoring for air + bone conduction speech enhancement (the CCAP code).

Three full passes over the same calibration samples, in the same order, eval mode, no gradients; masking happens
only at the model input:
- multi: both microphones;
- noisy-only: the bone input replaced by exact zeros;
- bone-only: the air (noisy) input replaced by exact zeros.
Per layer and channel, E||O||_1 = the L1 SUM of the output over every non-channel axis per sample, averaged over
the samples (`activation.activation_l1_means`). Then S_noisy = E_noisy / (E_multi + eps) and S_bone =
E_bone / (E_multi + eps), eps = 1e-8 in the denominator only, non-finite values set to 0, no clipping (values above 1
happen), and IS = 0.5 S_noisy + 0.5 S_bone. Channels with the LOWEST IS are pruned: a channel that keeps its
activity when either microphone is missing serves both (shared); one that needs both, or that dies without one of
them, is the least consistent across modalities.

What the authors hook is the conv's raw output (pre-BN, pre-activation): `read="conv"`, the default. `read="bn"`
reads the BatchNorm that takes each conv's output, `read="bn_relu"` that output through a ReLU (the layers the
channel's activity reaches); a conv that feeds no BatchNorm directly is read at its own output (`read_at` says
where each layer was read). The three passes' E per layer are kept in the scores file, with each channel's role:
air-led (S_noisy >= 2 S_bone), bone-led (S_bone >= 2 S_noisy) or shared.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.frameworks import framework_of
from edgeprune.scoring.activation import activation_l1_means
from edgeprune.scoring.base import LayerScores
from edgeprune.scoring.kernels import named_layers
from edgeprune.scoring.registry import register_criterion

READ_POINTS = ("conv", "bn", "bn_relu")


def norms_after(model: Any, layers: list[str], sample: Sequence[np.ndarray]) -> dict[str, str]:
    """For each conv in `layers`, the BatchNorm layer that takes its output (the conv itself when none does)."""
    fw = framework_of(model)
    if fw == "keras":
        import keras

        found = {}
        everything = named_layers(model)
        for name in layers:
            nodes = [n for n in getattr(everything[name], "_outbound_nodes", [])]
            nxt = [n.operation for n in nodes if isinstance(n.operation, keras.layers.BatchNormalization)]
            found[name] = nxt[0].name if len(nodes) == 1 and len(nxt) == 1 else name
        return found
    import torch
    import torch.nn as nn

    modules = named_layers(model)
    produced: dict[int, str] = {}
    consumers: dict[str, str] = {}
    hooks = []

    def conv_hook(name: str):
        def fn(mod, inp, out):
            produced[id(out)] = name
        return fn

    def bn_hook(name: str):
        def fn(mod, inp, out):
            source = produced.get(id(inp[0]))
            if source is not None:
                consumers.setdefault(source, name)
        return fn

    for name in layers:
        hooks.append(modules[name].register_forward_hook(conv_hook(name)))
    for name, mod in modules.items():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            hooks.append(mod.register_forward_hook(bn_hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*[torch.from_numpy(np.ascontiguousarray(x[:1], dtype=np.float32)) for x in sample])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {n: consumers.get(n, n) for n in layers}


def _ratio(num: np.ndarray, den: np.ndarray, eps: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        s = num / (den + eps)  # eps in the denominator only, as the authors' code
    return np.where(np.isfinite(s), s, 0.0)


@register_criterion("cmc_asp", needs_data=True,
                    description="cross-modal consistency of each channel's activity with the air or the bone "
                                "microphone dropped (CMC-ASP; two-input models)")
def cmc_asp(model: Any, layers: list[str], data: Any, *, air: int = 0, bone: int = 1, read: str = "conv",
            eps: float = 1e-8, channel_dim: int | None = None, batch_size: int = 32,
            max_batches: int | None = None) -> tuple[dict[str, LayerScores], dict[str, Any]]:
    """IS = 0.5 E_noisy / (E_multi + eps) + 0.5 E_bone / (E_multi + eps) per output channel (higher = kept)."""
    if not isinstance(data, (list, tuple)) or len(data) < 2:
        count = len(data) if isinstance(data, (list, tuple)) else 1
        raise EdgepruneError(f"cmc_asp scores a model with two inputs (an air and a bone microphone); it was given "
                             f"{count} input(s)")
    if air == bone or not (0 <= air < len(data) and 0 <= bone < len(data)):
        raise EdgepruneError(f"cmc_asp: air={air} and bone={bone} must name two different inputs of {len(data)}")
    if read not in READ_POINTS:
        raise EdgepruneError(f"cmc_asp: read={read!r}; expected one of {', '.join(READ_POINTS)}")
    if not eps > 0:
        raise EdgepruneError(f"cmc_asp: eps={eps} must be positive")
    arrays = [np.asarray(x) for x in data]
    lengths = {len(x) for x in arrays}
    if len(lengths) != 1:
        raise EdgepruneError(f"cmc_asp: the calibration inputs have different sample counts {[len(x) for x in arrays]}")
    read_at = {n: n for n in layers} if read == "conv" else norms_after(model, layers, arrays)
    targets = [read_at[n] for n in layers]

    def masked(drop: int | None) -> tuple[bool, ...]:
        return tuple(i == drop for i in range(len(arrays)))

    start = time.perf_counter()
    passes = {}
    for label, drop in (("multi", None), ("noisy", bone), ("bone", air)):
        passes[label] = activation_l1_means(model, arrays, targets, masked(drop), channel_dim=channel_dim,
                                            batch_size=batch_size, max_batches=max_batches,
                                            activation="relu" if read == "bn_relu" else None)
    seconds = time.perf_counter() - start
    out = {}
    for name in layers:
        e = {k: v.means[read_at[name]] for k, v in passes.items()}
        s_noisy, s_bone = _ratio(e["noisy"], e["multi"], eps), _ratio(e["bone"], e["multi"], eps)
        role = np.where(s_noisy >= 2 * s_bone, "air", np.where(s_bone >= 2 * s_noisy, "bone", "shared"))
        out[name] = LayerScores(name, 0.5 * s_noisy + 0.5 * s_bone, None, {
            "read_at": read_at[name], "E_multi": e["multi"], "E_noisy": e["noisy"], "E_bone": e["bone"],
            "S_noisy": s_noisy, "S_bone": s_bone, "role": role.tolist(),
            "roles": {r: int((role == r).sum()) for r in ("air", "bone", "shared")}})
    first = passes["multi"]
    options = {"air": air, "bone": bone, "read": read, "eps": eps, "channel_dim": first.channel_dim,
               "batch_size": batch_size, "max_batches": max_batches}
    return out, {"options": options, "calibration_samples": first.n_samples, "batches": first.n_batches,
                 "passes_seconds": round(seconds, 6)}
