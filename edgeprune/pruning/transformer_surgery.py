"""Inside-the-layer surgery on transformer encoders (MelHuBERT-style compression): three transform kinds.

    {"kind": "heads",    "params": {"keep": {"2": [0, 3], "5": [1]}}}     attention heads kept, per 1-based layer
    {"kind": "ffn",      "params": {"keep": {"1": [0, 5, 7, ...]}}}        FFN intermediate units kept, per layer
    {"kind": "low_rank", "params": {"ranks": {"encoder.layers.0.feed_forward.fc1": 32}}}   truncated SVD

Layers not listed keep everything. Works for every model with an encoder layer list (speech-encoder, hf-wav2vec2,
hf-hubert); PyTorch only. Each kind returns a copy: the input model and its config are never touched.

heads: the removed heads' rows (and biases) of q_proj, k_proj and v_proj and their columns of out_proj are sliced
away, and the attention's `num_heads` set to the heads kept; `head_dim` (and the softmax scaling derived from it)
is unchanged. speech-encoder reads `num_heads` at forward time. transformers' Wav2Vec2 / HuBERT attention reads only
`head_dim` and `scaling` in its forward (heads are a `-1` in its reshape), so `num_heads` is updated there to keep
the module truthful, and `embed_dim` is left as it is: it is the model width, still the projections' input size and
out_proj's output size. The shared config's num_attention_heads stays the parent's: it is read only when a layer is
built, and after surgery layers may differ in heads. A speech-encoder layer left with one head runs in PyTorch and
ONNX but does not convert through onnx2tf (its [N, T, 1, head_dim] reshape fails; so does a speech-encoder built
with heads=1): keep two heads per layer for TFLite.

ffn: fc1 rows and biases and fc2 columns sliced (HF: intermediate_dense / output_dense); the config's
intermediate_size stays the parent's for the same reason.

low_rank: each named nn.Linear W [out, in] becomes nn.Sequential(Linear(in, r, bias=False), Linear(r, out)) from
the truncated SVD W = U S V^T: the first factor is sqrt(S_r) V_r^T, the second U_r sqrt(S_r) with the original
bias. The singular values are split evenly so the two factors have like ranges (int8 quantises each per tensor
or per channel). When a checkpoint loads, the replay factorises the freshly built parent's random weights, which
gives the right module structure; the saved weights are loaded on top of it afterwards (`checkpoint.load`).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.models.encoder import encoder_layers
from edgeprune.pruning.transforms import register_transform

if TYPE_CHECKING:
    import torch

# (module holding the two linears, first linear, second linear) per encoder family
_FFN_NAMES = (("feed_forward", "fc1", "fc2"), ("feed_forward", "intermediate_dense", "output_dense"))


def _linear(owner: Any, name: str, where: str) -> torch.nn.Linear:
    """`owner.name`, checked to be a plain nn.Linear (a factorised one cannot be sliced by rows)."""
    import torch

    module = getattr(owner, name, None)
    if not isinstance(module, torch.nn.Linear):
        found = "missing" if module is None else f"a {type(module).__name__}"
        raise EdgepruneError(f"{where}.{name} is {found}, expected an nn.Linear (slice heads and FFN units before "
                             "a low_rank factorisation)")
    return module


def _sliced(linear: torch.nn.Linear, rows: list[int] | None = None, cols: list[int] | None = None) -> torch.nn.Linear:
    """A new Linear holding the kept output rows (with their biases) and input columns of `linear`."""
    import torch

    weight = linear.weight.detach()
    if rows is not None:
        weight = weight[rows]
    if cols is not None:
        weight = weight[:, cols]
    new = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None,
                          device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach() if rows is None else linear.bias.detach()[rows])
    new.train(linear.training)
    return new


def _checked_keep(keep: Any, n_layers: int, what: str) -> dict[int, Any]:
    """{1-based layer: raw index list} from a keep dict keyed by layer numbers (JSON keys are strings)."""
    if not isinstance(keep, dict) or not keep:
        raise EdgepruneError(f"{what} to keep: expected {{\"<1-based layer>\": [indices]}}, got {keep!r}")
    layers: dict[int, Any] = {}
    for key, indices in keep.items():
        if isinstance(key, str) and key.strip().isdigit():
            layer = int(key)
        elif isinstance(key, int) and not isinstance(key, bool):
            layer = key
        else:
            raise EdgepruneError(f"{what} to keep: layer {key!r} is not a 1-based layer number")
        if not 1 <= layer <= n_layers:
            raise EdgepruneError(f"{what} to keep: layer {layer} outside 1..{n_layers} (the encoder has {n_layers} "
                                 "layers)")
        if layer in layers:
            raise EdgepruneError(f"{what} to keep: layer {layer} listed more than once")
        layers[layer] = indices
    return layers


def _checked_indices(indices: Any, size: int, what: str, layer: int) -> list[int]:
    """The sorted indices to keep of `size` items in `layer`, or one clear error (an empty list is the caller's)."""
    where = f"{what} to keep in layer {layer}"
    if not isinstance(indices, (list, tuple)):
        raise EdgepruneError(f"{where}: expected a list of indices, got {indices!r}")
    bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int)]
    if bad:
        raise EdgepruneError(f"{where}: {bad} are not integers (0-based indices)")
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise EdgepruneError(f"{where}: {repeated} listed more than once")
    outside = [i for i in indices if not 0 <= i < size]
    if outside:
        raise EdgepruneError(f"{where}: {outside} outside 0..{size - 1} (the layer has {size})")
    return sorted(indices)


def _torch_only(framework: str, what: str) -> None:
    if framework != "torch":
        raise EdgepruneError(f"{what} is implemented for PyTorch models; this one is {framework}")


def _param_note(before: torch.nn.Module, after: torch.nn.Module) -> str:
    b, a = (sum(p.numel() for p in m.parameters()) for m in (before, after))
    return f"parameters {b:,} -> {a:,} ({b - a:,} removed)"


def remove_heads(model: torch.nn.Module, keep: dict[str, list[int]]) -> torch.nn.Module:
    """A copy of `model` keeping only the listed attention heads (0-based) of each listed layer (1-based keys);
    layers not listed keep all their heads. The input model is left untouched."""
    layers = _checked_keep(keep, len(encoder_layers(model)), "heads")
    child = copy.deepcopy(model)
    for layer, indices in layers.items():
        attention = getattr(encoder_layers(child)[layer - 1], "attention", None)
        heads, head_dim = getattr(attention, "num_heads", None), getattr(attention, "head_dim", None)
        if not isinstance(heads, int) or not isinstance(head_dim, int):
            raise EdgepruneError(f"encoder layer {layer} has no attention with num_heads and head_dim; head removal "
                                 "needs one")
        kept = _checked_indices(indices, heads, "heads", layer)
        if not kept:
            raise EdgepruneError(f"heads to keep: an empty list would remove every head of layer {layer}; drop the "
                                 "layer instead (edgeprune prune-layers)")
        where = f"encoder.layers.{layer - 1}.attention"
        units = [h * head_dim + j for h in kept for j in range(head_dim)]
        for name in ("q_proj", "k_proj", "v_proj"):
            setattr(attention, name, _sliced(_linear(attention, name, where), rows=units))
        attention.out_proj = _sliced(_linear(attention, "out_proj", where), cols=units)
        attention.num_heads = len(kept)
    return child


def keep_ffn_units(model: torch.nn.Module, keep: dict[str, list[int]]) -> torch.nn.Module:
    """A copy of `model` keeping only the listed intermediate units (0-based) of the feed-forward block of each
    listed layer (1-based keys); layers not listed keep all their units. The input model is left untouched."""
    layers = _checked_keep(keep, len(encoder_layers(model)), "FFN units")
    child = copy.deepcopy(model)
    for layer, indices in layers.items():
        block = encoder_layers(child)[layer - 1]
        where = f"encoder.layers.{layer - 1}"
        names = next(((o, a, b) for o, a, b in _FFN_NAMES if hasattr(getattr(block, o, None), a)), None)
        if names is None:
            raise EdgepruneError(f"{where} has no feed-forward block (feed_forward.fc1/fc2 or "
                                 "feed_forward.intermediate_dense/output_dense)")
        owner_name, first, second = names
        owner, where = getattr(block, owner_name), f"{where}.{owner_name}"
        fc1, fc2 = _linear(owner, first, where), _linear(owner, second, where)
        kept = _checked_indices(indices, fc1.out_features, "FFN units", layer)
        if not kept:
            raise EdgepruneError(f"FFN units to keep: an empty list would remove every unit of layer {layer}; keep "
                                 "at least one (or drop the layer: edgeprune prune-layers)")
        setattr(owner, first, _sliced(fc1, rows=kept))
        setattr(owner, second, _sliced(fc2, cols=kept))
    return child


def _checked_rank(rank: Any, module: torch.nn.Linear, name: str) -> int:
    size = min(module.in_features, module.out_features)
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise EdgepruneError(f"low_rank: rank {rank!r} for '{name}' is not an integer")
    if rank < 1:
        raise EdgepruneError(f"low_rank: rank {rank} for '{name}' below 1")
    if rank > size:
        raise EdgepruneError(f"low_rank: rank {rank} for '{name}' above the layer's size min(in, out) = {size}")
    return rank


def svd_factors(linear: torch.nn.Linear, rank: int) -> torch.nn.Sequential:
    """Linear(in, rank, no bias) then Linear(rank, out, the original bias): the best rank-`rank` approximation of
    the weight (truncated SVD, computed in float64), singular values split evenly between the two factors."""
    import torch

    weight = linear.weight.detach()
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    root = s[:rank].sqrt()
    first = torch.nn.Linear(linear.in_features, rank, bias=False, device=weight.device, dtype=weight.dtype)
    second = torch.nn.Linear(rank, linear.out_features, bias=linear.bias is not None, device=weight.device,
                             dtype=weight.dtype)
    with torch.no_grad():
        first.weight.copy_(root[:, None] * vh[:rank])
        second.weight.copy_(u[:, :rank] * root[None, :])
        if linear.bias is not None:
            second.bias.copy_(linear.bias.detach())
    factors = torch.nn.Sequential(first, second)
    factors.train(linear.training)
    return factors


def factorize(model: torch.nn.Module, ranks: dict[str, int]) -> torch.nn.Module:
    """A copy of `model` with each named nn.Linear replaced by its rank-r SVD factors (`svd_factors`). The input
    model is left untouched."""
    import torch

    encoder_layers(model)  # the same family of models as the other kinds
    if not isinstance(ranks, dict) or not ranks:
        raise EdgepruneError(f"low_rank: expected {{\"<module name>\": rank}}, got {ranks!r}")
    modules = dict(model.named_modules())
    for name, rank in ranks.items():
        module = modules.get(name) if name else None
        if module is None:
            raise EdgepruneError(f"low_rank: no module '{name}' in {type(model).__name__} (expected a module name "
                                 "such as encoder.layers.0.feed_forward.fc1)")
        if not isinstance(module, torch.nn.Linear):
            raise EdgepruneError(f"low_rank: '{name}' is a {type(module).__name__}, expected an nn.Linear")
        _checked_rank(rank, module, name)
    child = copy.deepcopy(model)
    for name, rank in ranks.items():
        parent_name, _, attr = name.rpartition(".")
        parent = child.get_submodule(parent_name)
        # setattr registers the factors under the same name, in a ModuleList or Sequential too
        setattr(parent, attr, svd_factors(getattr(parent, attr), rank))
    return child


def rank_for_energy(weight: np.ndarray, energy: float) -> int:
    """The smallest rank r whose r largest squared singular values hold at least `energy` (0 < energy <= 1) of the
    weight's total squared singular values (its squared Frobenius norm). An all-zero weight gives 1."""
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim != 2:
        raise EdgepruneError(f"rank_for_energy: expected a 2-D weight, got shape {weight.shape}")
    if not 0 < energy <= 1:
        raise EdgepruneError(f"rank_for_energy: energy {energy} outside (0, 1]")
    kept = np.cumsum(np.linalg.svd(weight, compute_uv=False) ** 2)
    if kept[-1] == 0:
        return 1
    # fractions of the total, the last exactly 1.0 so that energy 1 is always reached
    return int(np.searchsorted(kept / kept[-1], energy, side="left")) + 1


def rank_for_budget(in_f: int, out_f: int, fraction: float) -> int:
    """The largest rank r whose factors cost at most `fraction` of the dense weight, r * (in + out) <= fraction *
    in * out; at least 1, and at most min(in, out) (the highest rank a factorisation takes)."""
    if min(in_f, out_f) < 1:
        raise EdgepruneError(f"rank_for_budget: layer size {in_f} x {out_f}; expected positive sizes")
    if not fraction > 0:
        raise EdgepruneError(f"rank_for_budget: fraction {fraction}; expected a positive fraction of the weight")
    budget = fraction * in_f * out_f
    r = int(budget // (in_f + out_f))
    while (r + 1) * (in_f + out_f) <= budget:  # float division may land one below
        r += 1
    return max(1, min(r, in_f, out_f))


@register_transform("heads")
def _heads(model: Any, framework: str, arch: dict[str, Any], params: dict[str, Any]) -> tuple[Any, list[str]]:
    _torch_only(framework, "head removal")
    if "keep" not in params:
        raise EdgepruneError("a heads transform needs {\"keep\": {\"<1-based layer>\": [head indices]}}")
    child = remove_heads(model, params["keep"])
    layers = encoder_layers(model)
    notes = [_param_note(model, child)]
    for key, kept in sorted(params["keep"].items(), key=lambda kv: int(kv[0])):
        heads = layers[int(key) - 1].attention.num_heads
        notes.append(f"encoder.layers.{int(key) - 1}.attention: kept heads {sorted(kept)} of {heads}")
    return child, notes


@register_transform("ffn")
def _ffn(model: Any, framework: str, arch: dict[str, Any], params: dict[str, Any]) -> tuple[Any, list[str]]:
    _torch_only(framework, "FFN unit removal")
    if "keep" not in params:
        raise EdgepruneError("an ffn transform needs {\"keep\": {\"<1-based layer>\": [unit indices]}}")
    child = keep_ffn_units(model, params["keep"])
    notes = [_param_note(model, child)]
    for key, kept in sorted(params["keep"].items(), key=lambda kv: int(kv[0])):
        notes.append(f"encoder.layers.{int(key) - 1}.feed_forward: kept {len(kept)} units")
    return child, notes


@register_transform("low_rank")
def _low_rank(model: Any, framework: str, arch: dict[str, Any], params: dict[str, Any]) -> tuple[Any, list[str]]:
    _torch_only(framework, "low-rank factorisation")
    if "ranks" not in params:
        raise EdgepruneError("a low_rank transform needs {\"ranks\": {\"<module name>\": rank}}")
    child = factorize(model, params["ranks"])
    modules = dict(model.named_modules())
    notes = [_param_note(model, child)]
    for name, rank in params["ranks"].items():
        m = modules[name]
        notes.append(f"{name}: {m.out_features} x {m.in_features} -> rank {rank}")
    return child, notes
