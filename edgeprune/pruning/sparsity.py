"""Unstructured weight pruning of transformer encoders (MelHuBERT, methods.md section 5): the "sparsity" transform.

    {"kind": "sparsity", "params": {"sparsity": 0.5, "params": ["encoder.layers.0.attention.q_proj.weight", ...]}}

The q/k/v/out_proj and both FFN linears' weights and biases of every layer are ranked together by |value| (one
global L1 ranking) and the smallest fraction is set to zero. Events follow a cumulative schedule (`schedule`); at
each event the old mask is baked in (its entries stay zero) and the ranking is redone globally, so the mask only
grows. An optional `ConvergenceGate` postpones an event while the smoothed training loss still improves.

The zeros live in the weights themselves, so a checkpoint's saved weights carry the mask: replaying the transform
at load only checks that the named tensors exist and returns a copy, and `mask_of` recovers the mask as weight !=
0. The transform shrinks nothing by itself: a dense .tflite or .onnx stores every zero. What sparsity buys on the
edge is compressibility (a zipped download, a compressed flash image) or a sparse kernel: `size_report`.
"""

from __future__ import annotations

import copy
import numbers
import zlib
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.models.encoder import encoder_layers
from edgeprune.pruning.transforms import register_transform
from edgeprune.scoring.transformer_scores import attention_of, ffn_linears

if TYPE_CHECKING:
    import torch

# The seed's cumulative sparsity per event, in thousandths (exact decimals): 0.2 ... 0.675, then 0.70 to 0.91 in
# steps of 0.01, then 0.915 to 0.95 in steps of 0.005.
SEED_SCHEDULE = tuple(v / 1000 for v in (200, 300, 400, 500, 550, 600, 650, 675, *range(700, 911, 10),
                                          *range(915, 951, 5)))


def _checked_sparsity(sparsity: Any) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0 <= sparsity < 1:
        raise EdgepruneError(f"sparsity {sparsity!r} outside [0, 1)")
    return float(sparsity)


def prunable_params(model: torch.nn.Module) -> list[str]:
    """Names of the weight and bias of q/k/v/out_proj and both FFN linears of every encoder layer, in layer order
    (a linear factorised by a low_rank transform contributes both factors)."""
    names = {id(p): name for name, p in model.named_parameters()}
    out = []
    for layer in encoder_layers(model):
        attn = attention_of(layer)
        # every parameter of the module: weight and bias of a linear, or both factors of a low-rank one
        for module in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj, *ffn_linears(layer)):
            out += [names[id(p)] for p in module.parameters()]
    return out


def l1_mask(values: dict[str, np.ndarray], sparsity: float,
            previous: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Keep-masks (True = kept) over all `values` together: the round(sparsity * N) entries of smallest |value|
    among all N entries are masked (round as torch.nn.utils.prune), ties going to the earlier tensor and position.
    Entries `previous` masked stay masked and are ranked first, so a growing schedule only adds to the mask."""
    s = _checked_sparsity(sparsity)
    if not values:
        raise EdgepruneError("no tensors to prune")
    names = list(values)
    flat = np.concatenate([np.abs(np.asarray(values[n], np.float64)).ravel() for n in names])
    old = None
    if previous is not None:
        for n in names:
            if n not in previous or np.shape(previous[n]) != np.shape(values[n]):
                raise EdgepruneError(f"previous mask: no entry of shape {np.shape(values[n])} for '{n}'")
        old = np.concatenate([np.asarray(previous[n], bool).ravel() for n in names])
        # below every |value|: the baked entries are the first to go, whatever training did to them since
        flat = np.where(old, flat, -1.0)
    keep = np.ones(flat.size, bool)
    keep[np.argsort(flat, kind="stable")[:round(s * flat.size)]] = False
    if old is not None:  # a target below the old sparsity cannot unmask anything
        keep &= old
    out, start = {}, 0
    for n in names:
        size = np.size(values[n])
        out[n] = keep[start:start + size].reshape(np.shape(values[n]))
        start += size
    return out


def _params(model: torch.nn.Module, names: list[str]) -> dict[str, torch.nn.Parameter]:
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise EdgepruneError(f"the model has no parameter {', '.join(missing[:3])}"
                             f"{f' (and {len(missing) - 3} more)' if len(missing) > 3 else ''}")
    return {n: params[n] for n in names}


def global_l1_mask(model: torch.nn.Module, sparsity: float,
                   previous: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The keep-mask {parameter name: bool array} of one global L1 ranking over `prunable_params(model)` at
    cumulative `sparsity` in [0, 1); entries masked in `previous` stay masked (see `l1_mask`)."""
    s = _checked_sparsity(sparsity)
    params = _params(model, prunable_params(model))
    return l1_mask({n: p.detach().cpu().numpy() for n, p in params.items()}, s, previous)


def schedule(n_events: int | None = None, target: float | None = None) -> list[float]:
    """Cumulative sparsity after each pruning event: the seed's 38-event schedule (0.2, 0.3, ... 0.95), its first
    `n_events`, or with a `target` s the linear s * (i + 1) / n_events for i = 0 .. n_events - 1."""
    if n_events is not None and (isinstance(n_events, bool) or not isinstance(n_events, int) or n_events < 1):
        raise EdgepruneError(f"pruning events: expected a positive integer, got {n_events!r}")
    if target is None:
        if n_events is not None and n_events > len(SEED_SCHEDULE):
            raise EdgepruneError(f"the seed schedule has {len(SEED_SCHEDULE)} events, {n_events} asked")
        return list(SEED_SCHEDULE[:n_events])
    s = _checked_sparsity(target)
    if n_events is None:
        raise EdgepruneError(f"a sparsity target ({s}) needs a number of pruning events")
    return [s * (i + 1) / n_events for i in range(n_events)]


class ConvergenceGate:
    """The seed's optional gate: postpone a pruning event while the smoothed loss is still improving.

    methods.md says only "postpone a prune while the smoothed loss is still improving"; this reading: feed every
    training loss to `ready`; it keeps an exponential moving average ema = smoothing * ema + (1 - smoothing) *
    loss (started at the first loss, smoothing 0.9 by default: about the last 10 losses), and answers True once the
    EMA has improved by at most `tolerance` (relative) over the last `window` losses:
    (ema[t - window] - ema[t]) <= tolerance * |ema[t - window]|. Until window + 1 losses are seen it answers False
    (no evidence of a plateau yet). Call `reset` after each prune, so the next waits for recovery to level off.
    """

    def __init__(self, window: int = 100, tolerance: float = 1e-3, smoothing: float = 0.9) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise EdgepruneError(f"convergence gate window: expected a positive integer, got {window!r}")
        if not tolerance >= 0:
            raise EdgepruneError(f"convergence gate tolerance {tolerance!r} must be >= 0")
        if not 0 <= smoothing < 1:
            raise EdgepruneError(f"convergence gate smoothing {smoothing!r} outside [0, 1)")
        self.window, self.tolerance, self.smoothing = window, float(tolerance), float(smoothing)
        self._history: deque[float] = deque(maxlen=window + 1)

    def reset(self) -> None:
        """Forget the loss history (after a prune)."""
        self._history.clear()

    @property
    def smoothed(self) -> float | None:
        """The current EMA of the loss, None before the first."""
        return self._history[-1] if self._history else None

    def ready(self, loss: float) -> bool:
        """Record one training loss; True when the smoothed loss has stopped improving (prune now)."""
        loss = float(loss)
        if not np.isfinite(loss):
            raise EdgepruneError(f"convergence gate: loss {loss} is not finite")
        ema = loss if not self._history else self.smoothing * self._history[-1] + (1 - self.smoothing) * loss
        self._history.append(ema)
        if len(self._history) <= self.window:
            return False
        old = self._history[0]
        return old - ema <= self.tolerance * abs(old)


def apply_mask(model: torch.nn.Module, mask: dict[str, np.ndarray]) -> torch.nn.Module:
    """A copy of `model` with the masked entries (mask False) of the named parameters set to zero."""
    import torch

    child = copy.deepcopy(model)
    params = _params(child, list(mask))
    with torch.no_grad():
        for name, p in params.items():
            keep = np.asarray(mask[name], bool)
            if keep.shape != tuple(p.shape):
                raise EdgepruneError(f"mask of '{name}' has shape {keep.shape}, the parameter {tuple(p.shape)}")
            p.masked_fill_(~torch.from_numpy(keep).to(p.device), 0.0)
    return child


def mask_of(model: torch.nn.Module, names: list[str]) -> dict[str, np.ndarray]:
    """The keep-mask a sparse model carries in its weights: weight != 0 for each named parameter."""
    return {n: p.detach().cpu().numpy() != 0 for n, p in _params(model, list(names)).items()}


def sparsity_of(mask: dict[str, np.ndarray]) -> float:
    """The fraction of masked (False) entries over all tensors of a mask."""
    total = sum(np.size(m) for m in mask.values())
    return sum(np.size(m) - np.count_nonzero(m) for m in mask.values()) / total if total else 0.0


@register_transform("sparsity")
def _sparsity(model: Any, framework: str, arch: dict[str, Any], params: dict[str, Any]) -> tuple[Any, list[str]]:
    if framework != "torch":
        raise EdgepruneError(f"sparsity masks are implemented for PyTorch models; this one is {framework}")
    s = _checked_sparsity(params.get("sparsity"))
    names = params.get("params")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise EdgepruneError("a sparsity transform needs {\"sparsity\": s, \"params\": [parameter names]}")
    _params(model, names)
    # The zeros are in the weights a checkpoint saves (loaded after the replay): nothing to redo here.
    note = f"sparsity {s:.2%} over {len(names)} tensors (zeros carried by the weights; names checked, nothing changed)"
    return copy.deepcopy(model), [note]


def size_report(path: Path | str) -> dict[str, Any]:
    """A file's size and its DEFLATE-compressed size (zlib level 9, what a .zip of it holds bar ~100 bytes of
    headers): {"path", "bytes", "zip_bytes", "zip_ratio"}. Zeros compress, so this is what sparsity buys a
    dense file."""
    path = Path(path)
    if not path.is_file():
        raise EdgepruneError(f"{path}: no such file")
    deflate = zlib.compressobj(9)
    size = packed = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            size += len(chunk)
            packed += len(deflate.compress(chunk))
    packed += len(deflate.flush())
    return {"path": str(path), "bytes": size, "zip_bytes": packed, "zip_ratio": packed / size if size else 0.0}
