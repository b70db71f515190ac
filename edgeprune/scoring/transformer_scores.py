"""Head and FFN-unit importance for transformer encoders (MelHuBERT compression, methods.md section 5), and the
keep-lists the "heads" and FFN-row transforms take.

    head_l1(model)                        data-free: sum |W^h| + |b^h| over the head's q, k and v rows
    head_data_driven(model, batches, fn)  I_h = (1/N) sum_batches sum_b sum_t |sum_d c * dL/dc|, unit L2 per layer
    heads_to_remove(scores, 1, "by_layer" | "by_whole") -> {"<layer>": [kept heads]}
    ffn_l1(model)                         unit i: sum |W1[i, :]| + |b1[i]| + sum |W2[:, i]|
    ffn_keep(scores, remove_per_layer)    -> {"<layer>": [kept units]}

Scores are {1-based layer: float64 array, one entry per head (or FFN unit)}, higher = more important; keep-lists
are keyed by the 1-based layer number as a string (as JSON keys must be) and list only the layers that lose
something. Works for every model with `encoder.layers[i].attention.{q,k,v,out}_proj` (with `num_heads`,
`head_dim`) and `feed_forward.fc1/fc2` (speech-encoder) or `feed_forward.intermediate_dense/output_dense`
(hf-wav2vec2, hf-hubert).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.models.encoder import encoder_layers

if TYPE_CHECKING:
    import torch

MODES = ("by_layer", "by_whole")
# Added to the layer norm so a layer whose heads all score 0 normalises to zeros rather than NaN (as the seed).
NORM_EPS = 1e-20


def attention_of(layer: torch.nn.Module) -> torch.nn.Module:
    """The layer's self-attention module (`layer.attention` with q/k/v/out_proj), or one clear error."""
    attn = getattr(layer, "attention", None)
    if attn is None or not all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj", "out_proj")):
        raise EdgepruneError(f"{type(layer).__name__} has no attention.q_proj/k_proj/v_proj/out_proj; head "
                             "scoring needs a speech-encoder or Hugging Face Wav2Vec2/HuBERT layer")
    return attn


def ffn_linears(layer: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The layer's two feed-forward modules (d -> ffn, ffn -> d): fc1/fc2 or intermediate_dense/output_dense
    (nn.Linear, or the two-factor nn.Sequential a "low_rank" transform leaves)."""
    ff = getattr(layer, "feed_forward", None)
    for first, second in (("fc1", "fc2"), ("intermediate_dense", "output_dense")):
        if hasattr(ff, first) and hasattr(ff, second):
            return getattr(ff, first), getattr(ff, second)
    raise EdgepruneError(f"{type(layer).__name__} has no feed_forward.fc1/fc2 (or intermediate_dense/output_dense)")


def n_heads(attn: torch.nn.Module) -> int:
    """The attention's head count, checked against its projections where they are plain linears (rows =
    num_heads * head_dim)."""
    h, hd = int(attn.num_heads), int(attn.head_dim)
    rows = getattr(attn.q_proj, "out_features", h * hd)
    cols = getattr(attn.out_proj, "in_features", h * hd)
    if rows != h * hd or cols != h * hd:
        raise EdgepruneError(f"attention with num_heads {h} x head_dim {hd} but q_proj gives {rows} and out_proj "
                             f"takes {cols}")
    return h


def _plain(linear: torch.nn.Module, what: str) -> torch.nn.Linear:
    """The module itself when it is one nn.Linear; a factorised one has no rows or columns to score."""
    import torch

    if not isinstance(linear, torch.nn.Linear):
        raise EdgepruneError(f"{what} is a {type(linear).__name__}, not one linear (factorised by a low_rank "
                             "transform?); head and FFN scores need plain linears")
    return linear


def _array(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy().astype(np.float64)


def head_l1(model: torch.nn.Module) -> dict[int, np.ndarray]:
    """Per-head L1 norm of the q, k and v projection rows and biases (out_proj excluded), per 1-based layer."""
    out = {}
    for i, layer in enumerate(encoder_layers(model), start=1):
        attn = attention_of(layer)
        h = n_heads(attn)
        score = np.zeros(h)
        for name in ("q_proj", "k_proj", "v_proj"):
            proj = _plain(getattr(attn, name), f"layer {i} attention.{name}")
            score += np.abs(_array(proj.weight)).reshape(h, -1).sum(axis=1)
            if proj.bias is not None:
                score += np.abs(_array(proj.bias)).reshape(h, -1).sum(axis=1)
        out[i] = score
    return out


def context_importance(context: np.ndarray, grad: np.ndarray, heads: int) -> np.ndarray:
    """sum_b sum_t |sum_d c * dL/dc| per head, for contexts and their gradients [B, T, heads * head_dim]."""
    per_frame = (np.asarray(context, np.float64) * np.asarray(grad, np.float64))
    per_frame = per_frame.reshape(-1, heads, per_frame.shape[-1] // heads).sum(axis=2)
    return np.abs(per_frame).sum(axis=0)


def normalise_per_layer(scores: np.ndarray) -> np.ndarray:
    """Scores over their layer's L2 norm (+ 1e-20), as the seed: layers become comparable in by_whole."""
    scores = np.asarray(scores, np.float64)
    return scores / (np.linalg.norm(scores) + NORM_EPS)


def head_data_driven(model: torch.nn.Module, batches: Iterable[Any],
                     loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
                     train_mode: bool = False) -> dict[int, np.ndarray]:
    """Data-driven head importance: for every batch, `loss_fn(model, batch)` (a scalar tensor) is differentiated
    with respect to each layer's attention context c (out_proj's input, [B, T, heads * head_dim]); a head scores
    I_h = (1/N) sum_batches sum_b sum_t |sum_d c * dL/dc|, then I / (||I_layer||_2 + 1e-20) within each layer.

    The model runs in eval mode (dropout off, so scores repeat) unless `train_mode`; every module's own mode is
    restored afterwards. Gradients come from torch.autograd.grad on the contexts alone, so no parameter .grad is
    written, and the hooks are removed whatever happens.
    """
    import torch

    attns = [attention_of(layer) for layer in encoder_layers(model)]
    heads = [n_heads(a) for a in attns]
    totals = [np.zeros(h) for h in heads]
    contexts: dict[int, torch.Tensor] = {}

    def capture(i: int):
        def hook(module, args):
            ctx = args[0]
            if not ctx.requires_grad:  # frozen weights: the context still needs a gradient of its own
                ctx = ctx.detach().requires_grad_(True)
            contexts[i] = ctx
            return (ctx, *args[1:])

        return hook

    modes = {m: m.training for m in model.modules()}
    handles = [a.out_proj.register_forward_pre_hook(capture(i)) for i, a in enumerate(attns)]
    n_batches = 0
    try:
        model.train(train_mode)
        with torch.enable_grad():
            for batch in batches:
                contexts.clear()
                loss = loss_fn(model, batch)
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
                    raise EdgepruneError("head_data_driven: loss_fn(model, batch) must return a scalar tensor that "
                                         "depends on the model's attention")
                if not contexts:
                    raise EdgepruneError("head_data_driven: loss_fn(model, batch) ran no attention layer")
                found = sorted(contexts)
                grads = torch.autograd.grad(loss.reshape(()), [contexts[i] for i in found], allow_unused=True)
                for i, grad in zip(found, grads):
                    if grad is not None:  # None: this layer's context does not reach the loss
                        totals[i] += context_importance(_array(contexts[i]), _array(grad), heads[i])
                n_batches += 1
    finally:
        for handle in handles:
            handle.remove()
        contexts.clear()
        for module, training in modes.items():
            module.training = training
    if not n_batches:
        raise EdgepruneError("head_data_driven: no batches given")
    return {i: normalise_per_layer(total / n_batches) for i, total in enumerate(totals, start=1)}


def _checked_scores(scores: dict[int, np.ndarray], what: str) -> dict[int, np.ndarray]:
    if not isinstance(scores, dict) or not scores:
        raise EdgepruneError(f"{what} scores: expected {{1-based layer: array}}, got {type(scores).__name__}")
    out = {}
    for layer, s in scores.items():
        s = np.asarray(s, np.float64)
        if s.ndim != 1 or not s.size or not np.all(np.isfinite(s)):
            raise EdgepruneError(f"{what} scores of layer {layer}: expected a non-empty 1-D array of finite numbers")
        out[layer] = s
    return out


def _checked_count(n: Any, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise EdgepruneError(f"{what}: expected a positive integer, got {n!r}")
    return int(n)


def _lowest_per_layer(scores: dict[int, np.ndarray], n: int, unit: str) -> dict[str, list[int]]:
    """Keep-lists without each layer's n lowest units (ties: the lower index goes first)."""
    out = {}
    for layer, s in scores.items():
        if n >= s.size:
            raise EdgepruneError(f"layer {layer}: removing {n} of its {s.size} {unit}s would leave none")
        removed = set(np.argsort(s, kind="stable")[:n].tolist())
        out[str(layer)] = [u for u in range(s.size) if u not in removed]
    return out


def heads_to_remove(scores: dict[int, np.ndarray], n: int = 1, mode: str = "by_layer",
                    protect: int = 1) -> dict[str, list[int]]:
    """Which heads one pruning event keeps, as the "heads" transform's {"<layer>": [kept heads]}.

    by_layer: the n lowest heads of every layer go (the seed removes one per layer per event, n = 1).
    by_whole: each layer's `protect` top heads are kept (the seed protects one), then the n lowest of all remaining
    heads go, across layers. Never all heads of a layer: a request that would is one clear error. Ties go by
    (score, layer, head).
    """
    scores = _checked_scores(scores, "head")
    n = _checked_count(n, "heads to remove")
    if mode == "by_layer":
        return _lowest_per_layer(scores, n, "head")
    if mode != "by_whole":
        raise EdgepruneError(f"head removal mode '{mode}'; expected one of {', '.join(MODES)}")
    top = {layer: set(np.argsort(-s, kind="stable")[:max(1, protect)].tolist()) for layer, s in scores.items()}
    candidates = sorted((s[h], layer, h) for layer, s in scores.items() for h in range(s.size) if h not in top[layer])
    if n > len(candidates):
        raise EdgepruneError(f"heads to remove: {n}, but only {len(candidates)} heads are outside their layer's "
                             f"protected top {max(1, protect)}")
    removed = {(layer, h) for _, layer, h in candidates[:n]}
    return {str(layer): [h for h in range(s.size) if (layer, h) not in removed]
            for layer, s in scores.items() if any((layer, h) in removed for h in range(s.size))}


def ffn_l1(model: torch.nn.Module) -> dict[int, np.ndarray]:
    """Per-unit L1 score of each layer's FFN: sum |W1[i, :]| + |b1[i]| + sum |W2[:, i]| (fc2's bias excluded:
    it belongs to no unit)."""
    out = {}
    for i, layer in enumerate(encoder_layers(model), start=1):
        fc1, fc2 = (_plain(m, f"layer {i} feed-forward") for m in ffn_linears(layer))
        score = np.abs(_array(fc1.weight)).sum(axis=1) + np.abs(_array(fc2.weight)).sum(axis=0)
        if fc1.bias is not None:
            score += np.abs(_array(fc1.bias))
        out[i] = score
    return out


def ffn_keep(scores: dict[int, np.ndarray], remove_per_layer: int) -> dict[str, list[int]]:
    """Keep-lists {"<layer>": [kept units]} without the `remove_per_layer` lowest FFN units of every layer (the
    seed: 3072 -> 512 over 20 events, 128 per event); refuses to remove every unit of a layer."""
    return _lowest_per_layer(_checked_scores(scores, "FFN"), _checked_count(remove_per_layer, "FFN units to remove"),
                             "FFN unit")
