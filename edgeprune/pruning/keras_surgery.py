"""Structured-pruning surgery for Keras 3 models: remove output channels for real, not with a mask.

`prune_keras(model, keep)` rebuilds a functional (or built Sequential) model, layer by layer in topological order,
into a NEW functional model with the same layer names. The producers named in `keep` (Conv1D/2D/3D,
SeparableConv1D/2D, Dense) keep only the listed output channels, and every layer downstream is sliced to match.

How: every tensor of the original graph carries the sorted ORIGINAL indices of its channels (the last axis,
channels-last) that survive; None means "all of them, unchanged". Producers set it from `keep`; channel-wise layers
(BatchNormalization, activations, pooling, padding, depthwise convs) pass it on and slice their per-channel weights;
consumers (the next Conv or Dense) slice their input dimension with it; merges check it (Add, Multiply, ...) or
combine it (Concatenate). Where pruned channels reach a layer we cannot slice exactly, an EdgepruneError says so:
nothing is ever skipped silently.

`coupled_groups(model)` lists producers whose outputs meet at an Add (Subtract, Multiply, ...): they must be given
the same keep list. `channels_of(model)` lists the producers that can be pruned and their widths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.pruning.keep import listing, validate_indices

L = keras.layers

_CONV = (L.Conv1D, L.Conv2D, L.Conv3D)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
# Merges that combine inputs element by element: every input must carry the same surviving channels.
_ELEMENTWISE_MERGE = (L.Add, L.Subtract, L.Maximum, L.Minimum, L.Average, L.Multiply)
# Layers that treat each channel on its own and hold no per-channel weights: surviving channels pass through.
_PASS_THROUGH = (
    L.ReLU, L.LeakyReLU, L.ELU, L.Activation, L.Identity, L.ActivityRegularization,
    L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
    L.GaussianNoise, L.GaussianDropout, L.AlphaDropout,
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Cropping3D,
    L.UpSampling1D, L.UpSampling2D, L.UpSampling3D, L.RepeatVector,
)
# Raw keras.ops calls in a functional graph (`x + y` on Keras tensors is ops.add): element-wise ones are supported.
_OPS_MERGE = {"Add", "Subtract", "Multiply", "TrueDivide", "Divide", "Maximum", "Minimum"}
_OPS_ELEMENTWISE = {"ReLU", "Relu", "Relu6", "Sigmoid", "Tanh", "Silu", "Gelu", "LeakyRelu", "HardSigmoid", "HardSilu",
                    "Elu", "Selu", "Softplus", "Softsign", "Exp", "Absolute", "Square", "Sqrt", "Negative", "Clip"}
# Activations that normalise or split across the channel axis: removing a channel changes the others.
_CHANNEL_MIXING_ACTIVATIONS = {"softmax", "log_softmax", "glu", "sparsemax"}



# ----------------------------------------------------------------------------------------------------------------
# Graph analysis: which layers produce channels, where they meet, where they may not go.


@dataclass
class _Graph:
    """What one walk over the functional graph learns; shared by prune_keras, coupled_groups and channels_of."""

    fn: Any  # the functional graph (the model itself, or a Sequential's internal functional model)
    nodes: list  # every call (Node), inputs first, in topological order
    kinds: dict[int, tuple[str, str]]  # id(node) -> (kind, why not supported when kind == "opaque")
    origins: dict[int, frozenset[str]]  # id(tensor) -> producers whose output channels this tensor carries
    producers: dict[str, int]  # producer layer name -> output channels, in topological order
    layer_types: dict[str, str]  # every top-level layer name -> class name
    groups: list[list[str]]  # coupled producers (two or more), each in topological order
    meets: list[list[str]]  # per group: the merge layers where its members meet
    via_concat: list[bool]  # per group: a channel Concatenate feeds a meeting (keep lists then differ by design)
    fixed: dict[str, str]  # producer -> the model output its channels reach (its width must not change)
    blocked: dict[str, str]  # producer -> why its channels cannot be pruned (an unsupported layer downstream)


def _functional(model: Any) -> Any:
    """The functional graph to walk: the model itself, or the one a built Sequential keeps internally."""
    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise EdgepruneError("the Sequential model is not built: start it with keras.Input(...) or call "
                                 "model.build(input_shape) before pruning")
        return fn
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise EdgepruneError(f"only functional and Sequential Keras models can be pruned, not {type(model).__name__} "
                             "(a subclassed model has no graph to rebuild)")
    return model


def _activation_name(fn: Any) -> str:
    return getattr(fn, "__name__", str(fn))


def _classify(op: Any, node: Any) -> tuple[str, str]:
    """How channels flow through one call: (kind, reason). Kind 'opaque' means it cannot take pruned channels."""
    tname = type(op).__name__
    unsupported = f"{tname} is not supported on a pruned channel path"
    if isinstance(op, L.InputLayer):
        return "input", ""
    if not isinstance(op, L.Layer):
        return _op_kind(op, node) or "opaque", unsupported
    if isinstance(op, keras.Model):
        return "opaque", unsupported  # nested model: its inner layers are not rebuilt
    if getattr(op, "data_format", "channels_last") != "channels_last":
        return "opaque", f"{tname} with data_format='{op.data_format}' is not supported (channels must be last)"
    if getattr(op, "quantization_mode", None):
        return "opaque", f"quantized {tname} ({op.quantization_mode}) is not supported on a pruned channel path"
    if isinstance(op, _CONV):
        if op.groups != 1:
            return "opaque", f"{tname} with groups={op.groups} is not supported on a pruned channel path"
        return "producer", ""
    if isinstance(op, (*_SEPARABLE, L.Dense)):
        return "producer", ""
    if isinstance(op, _DEPTHWISE):
        return "depthwise", ""
    if isinstance(op, L.BatchNormalization):
        rank = len(node.input_tensors[0].shape)
        if op.axis % rank != rank - 1:
            return "opaque", f"BatchNormalization over axis {op.axis} (not the channel axis) is not supported"
        return "bn", ""
    if isinstance(op, L.PReLU):
        return "prelu", ""
    if isinstance(op, L.Activation) and _activation_name(op.activation) in _CHANNEL_MIXING_ACTIVATIONS:
        return "opaque", f"Activation('{_activation_name(op.activation)}') mixes channels and is not supported"
    if isinstance(op, _PASS_THROUGH):
        return "pass", ""
    if isinstance(op, L.Flatten):
        if any(d is None for d in node.input_tensors[0].shape[1:]):
            return "opaque", "Flatten of a tensor with unknown dimensions is not supported on a pruned channel path"
        return "flatten", ""
    if isinstance(op, L.Reshape):
        cin, cout = node.input_tensors[0].shape[-1], node.outputs[0].shape[-1]
        if cin is None or cin != cout:
            return "opaque", f"Reshape changes the channel axis (last axis {cin} -> {cout})"
        return "reshape", ""
    if isinstance(op, L.Permute):
        if op.dims[-1] != len(op.dims):
            return "opaque", f"Permute{tuple(op.dims)} moves the channel axis"
        return "pass", ""
    if isinstance(op, _ELEMENTWISE_MERGE):
        return "merge", ""
    if isinstance(op, L.Concatenate):
        if any(t.shape[-1] is None for t in node.input_tensors):
            return "opaque", "Concatenate of tensors with unknown channel counts is not supported"
        rank = len(node.outputs[0].shape)
        # Along the channel axis the surviving channels are the union; along any other axis it acts as a merge.
        return ("concat" if op.axis % rank == rank - 1 else "merge"), ""
    return "opaque", unsupported


def _op_kind(op: Any, node: Any) -> str | None:
    """'merge' or 'pass' for an element-wise keras.ops call whose other arguments are scalars, else None."""
    if not type(op).__module__.startswith(("keras.src.ops.", "keras.src.activations")):
        return None
    flat = keras.tree.flatten((node.arguments.args, node.arguments.kwargs))
    # A constant array (e.g. a per-channel scale) would need slicing too: only scalars are safe.
    if any(np.ndim(a) != 0 for a in flat if not isinstance(a, keras.KerasTensor) and a is not None):
        return None
    name = type(op).__name__
    if name in _OPS_MERGE:
        return "merge"
    if name in _OPS_ELEMENTWISE and len(node.input_tensors) == 1:
        return "pass"
    return None


def _is_broadcast(t: Any, tensors: Sequence[Any]) -> bool:
    """A one-channel input broadcast against wider ones (e.g. a spatial attention map): it carries no channels."""
    return t.shape[-1] == 1 and any((u.shape[-1] or 0) > 1 for u in tensors)


def _analyse(model: Any) -> _Graph:
    """Walk the graph once: producers, their coupling at merges, and where their channels may not go."""
    fn = _functional(model)
    nodes = [n for d in sorted(fn._nodes_by_depth, reverse=True) for n in fn._nodes_by_depth[d]
             if n.operation is not None]
    kinds: dict[int, tuple[str, str]] = {}
    origins: dict[int, frozenset[str]] = {}
    concat_fed: set[int] = set()  # tensors whose channels passed through a channel Concatenate
    producers: dict[str, int] = {}
    meetings: list[tuple[str, frozenset[str], bool]] = []
    blocked: dict[str, str] = {}
    layer_types = {op.name: type(op).__name__ for op in fn.operations}

    for node in nodes:
        op = node.operation
        kind, reason = _classify(op, node)
        kinds[id(node)] = (kind, reason)
        ins = node.input_tensors
        o_in = [origins.get(id(t), frozenset()) for t in ins]
        via = any(id(t) in concat_fed for t in ins)
        if kind == "input":
            out = frozenset()
        elif kind == "producer":
            producers[op.name] = op.units if isinstance(op, L.Dense) else op.filters
            out, via = frozenset({op.name}), False
            act = _activation_name(getattr(op, "activation", None))
            if act in _CHANNEL_MIXING_ACTIVATIONS:  # e.g. Dense(..., activation="softmax") inside the model
                blocked[op.name] = f"its activation '{act}' mixes its output channels"
        elif kind in ("depthwise", "bn", "prelu", "pass", "flatten", "reshape"):
            out = o_in[0]
        elif kind == "merge":
            live = [o for t, o in zip(ins, o_in) if not _is_broadcast(t, ins)]
            out = frozenset().union(*live)
            if len(out) > 1:
                meetings.append((op.name, out, via))
            if out and any(not o for o in live):  # e.g. a skip connection straight from the model input
                for p in out:
                    blocked.setdefault(p, f"its channels meet channels that cannot be pruned (a model input's or an "
                                          f"unsupported layer's) at '{op.name}'")
        elif kind == "concat":
            out, via = frozenset().union(*o_in), True
        else:  # opaque: whatever channels reach it can never be pruned
            for p in frozenset().union(*o_in):
                blocked.setdefault(p, f"its channels reach '{op.name}' and {reason}")
            out = frozenset()
        for t in node.outputs:
            origins[id(t)] = out
            if via and out:
                concat_fed.add(id(t))

    fixed: dict[str, str] = {}
    for t in fn.outputs:
        for p in origins.get(id(t), frozenset()):
            fixed.setdefault(p, t._keras_history.operation.name)

    # Union-find over producers that meet at merges.
    parent = {p: p for p in producers}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for _, members, _ in meetings:
        first, *rest = sorted(members)
        for m in rest:
            parent[find(m)] = find(first)
    by_root: dict[str, list[str]] = {}
    for p in producers:  # topological order
        by_root.setdefault(find(p), []).append(p)
    groups = [ms for ms in by_root.values() if len(ms) > 1]
    groups.sort(key=lambda ms: list(producers).index(ms[0]))
    meets = [[name for name, members, _ in meetings if find(next(iter(members))) == find(g[0])] for g in groups]
    via_concat = [any(v for _, members, v in meetings if find(next(iter(members))) == find(g[0])) for g in groups]

    # A coupled group shares its fate: if one member may not change width, none of them may.
    for g in groups:
        out = next((fixed[m] for m in g if m in fixed), None)
        why = next((blocked[m] for m in g if m in blocked), None)
        for m in g:
            if out is not None:
                fixed.setdefault(m, out)
            if why is not None:
                blocked.setdefault(m, why)
    return _Graph(fn, nodes, kinds, origins, producers, layer_types, groups, meets, via_concat, fixed, blocked)


def channels_of(model: keras.Model) -> dict[str, int]:
    """Prunable producer layers -> output channel count, in topological order.

    Left out: producers whose channels reach a model output (the classifier) or a layer that cannot take pruned
    channels, and one-channel producers (nothing to remove). Coupled producers are listed: see coupled_groups.
    """
    g = _analyse(model)
    return {p: n for p, n in g.producers.items() if p not in g.fixed and p not in g.blocked and n > 1}


def unprunable(model: keras.Model) -> dict[str, str]:
    """Producer layers that cannot be pruned, with why (their channels reach a model output, or a layer that
    cannot take pruned channels)."""
    g = _analyse(model)
    out = {p: f"its channels reach the model output '{o}'" for p, o in g.fixed.items()}
    out.update({p: why for p, why in g.blocked.items() if p not in out})
    return out


def coupled_groups(model: keras.Model, include_unprunable: bool = False) -> list[set[str]]:
    """Sets of producer layers whose outputs meet at an Add, Subtract, Maximum, Minimum, Average or Multiply.

    Members of a group must be given the same keep list (their channels are summed or multiplied one to one).
    Groups that cannot be pruned at all (they reach a model output or an unsupported layer) are left out unless
    include_unprunable. Where a channel Concatenate feeds the meeting, the members' channels are offset, not equal:
    such groups are listed too, and prune_keras checks them at the merge itself.
    """
    g = _analyse(model)
    return [set(ms) for ms in g.groups
            if include_unprunable or not any(m in g.fixed or m in g.blocked for m in ms)]


# ----------------------------------------------------------------------------------------------------------------
# Validation of the keep request.


def _nested_owner(fn: Any, name: str) -> str | None:
    """The top-level nested model that contains a layer called `name`, if any (for a clearer error)."""
    def contains(m: Any) -> bool:
        return any(l.name == name or (isinstance(l, keras.Model) and contains(l)) for l in m.layers)
    return next((op.name for op in fn.operations if isinstance(op, keras.Model) and contains(op)), None)


def _validate(g: _Graph, keep: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """The effective plan: producer -> sorted kept indices, only for producers that actually lose channels."""
    if not isinstance(keep, Mapping):
        raise EdgepruneError(f"keep must map layer names to channel indices, not {type(keep).__name__}")
    prunable = [p for p, n in g.producers.items() if p not in g.fixed and p not in g.blocked and n > 1]
    plan: dict[str, np.ndarray] = {}
    for name, idx in keep.items():
        if name not in g.layer_types:
            owner = _nested_owner(g.fn, name)
            if owner is not None:
                raise EdgepruneError(f"layer '{name}' is inside the nested model '{owner}'; only top-level layers "
                                     "can be pruned (rebuild the model without nesting)")
            raise EdgepruneError(f"layer '{name}' not found; prunable layers: {listing(prunable)}")
        if name not in g.producers:
            raise EdgepruneError(f"layer '{name}' ({g.layer_types[name]}) does not produce prunable channels "
                                 f"(its channels, if any, follow its input); prunable layers: {listing(prunable)}")
        if name in g.fixed:
            raise EdgepruneError(f"could not prune {name} because its channels reach the model output "
                                 f"'{g.fixed[name]}', whose width must not change")
        if name in g.blocked:
            raise EdgepruneError(f"could not prune {name} because {g.blocked[name]}")
        n = g.producers[name]
        arr = validate_indices(name, idx, n)
        if len(arr) < n:  # keeping every channel is no change
            plan[name] = arr

    # Producers that meet at an Add (etc.) must keep the same channels; say so before any rebuilding.
    for members, meets, via in zip(g.groups, g.meets, g.via_concat):
        if via:
            continue  # offsets through a Concatenate: checked at the merge itself
        lists = [plan.get(m) for m in members]
        if all(x is None for x in lists):
            continue
        ref = next(x for x in lists if x is not None)
        if any(x is None or len(x) != len(ref) or (x != ref).any() for x in lists):
            first = next(m for m, x in zip(members, lists) if x is not None)
            said = ", ".join(f"{m} keeps all {g.producers[m]}" if x is None else
                             f"{m} keeps {len(x)} of {g.producers[m]}" for m, x in zip(members, lists))
            raise EdgepruneError(
                f"could not prune {first} because its output meets {listing([m for m in members if m != first])} "
                f"at {listing(meets, 5)} and their keep lists differ ({said}); give every layer of the coupled "
                f"group [{', '.join(members)}] the same keep list (see coupled_groups)")
    return plan


# ----------------------------------------------------------------------------------------------------------------
# Rebuilding.


@dataclass
class _Change:
    """How one layer changes: config updates, the surviving channels of its output, how to slice its weights."""

    config: dict[str, Any] = field(default_factory=dict)
    survivors: Any = None  # np.ndarray | None for every output tensor
    slicers: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None  # variable name -> slicing; None: copy
    note: str | None = None


def _expand(idx: np.ndarray, mult: int) -> np.ndarray:
    """Depthwise output rows of input channels idx: channel c with multiplier m is output c * mult + m."""
    return (idx[:, None] * mult + np.arange(mult)[None, :]).ravel()


def _full(s: Any, n: int) -> np.ndarray:
    return np.arange(n) if s is None else s


def _sources(g: _Graph, tensors: Sequence[Any]) -> str:
    return listing(sorted(frozenset().union(*(g.origins.get(id(t), frozenset()) for t in tensors))), 8)


def _plan_node(g: _Graph, node: Any, s_in: list[Any], out_idx: np.ndarray | None) -> _Change:
    """The change for one call whose input carries pruned channels or whose output is pruned."""
    op, ins = node.operation, node.input_tensors
    kind, reason = g.kinds[id(node)]
    name = op.name
    if kind == "opaque":
        pruned = [t for t, s in zip(ins, s_in) if s is not None]
        raise EdgepruneError(f"could not prune {name} because {reason} (it receives channels pruned from "
                             f"{_sources(g, pruned)})")

    if kind == "producer":
        in_idx = s_in[0]
        parts = []
        if in_idx is not None:
            what = "input features" if isinstance(op, L.Dense) else "input channels"
            parts.append(f"{what} {ins[0].shape[-1]} -> {len(in_idx)}")
        if out_idx is not None:
            what = "units" if isinstance(op, L.Dense) else "output channels"
            parts.append(f"{what} {g.producers[name]} -> {len(out_idx)}")

        def cols(w: np.ndarray) -> np.ndarray:  # last axis = output channels
            return w if out_idx is None else w[..., out_idx]

        if isinstance(op, _SEPARABLE):
            def depthwise(k: np.ndarray) -> np.ndarray:  # [k.., C, mult]
                return k if in_idx is None else k[..., in_idx, :]

            def pointwise(k: np.ndarray) -> np.ndarray:  # [1.., C * mult, out]
                rows = k if in_idx is None else k[..., _expand(in_idx, op.depth_multiplier), :]
                return cols(rows)
            slicers = {"depthwise_kernel": depthwise, "pointwise_kernel": pointwise, "bias": cols}
        else:
            def kernel(k: np.ndarray) -> np.ndarray:  # Conv [k.., Cin, Cout], Dense [Cin, units]
                return cols(k if in_idx is None else k[..., in_idx, :])
            slicers = {"kernel": kernel, "bias": cols}
        config = {}
        if out_idx is not None:
            config = {"units": len(out_idx)} if isinstance(op, L.Dense) else {"filters": len(out_idx)}
        return _Change(config, out_idx, slicers, f"{name}: {', '.join(parts)}")

    s = s_in[0] if ins else None
    c_in = ins[0].shape[-1] if ins else None
    if kind == "depthwise":
        rows = _expand(s, op.depth_multiplier)
        slicers = {"kernel": lambda k: k[..., s, :], "bias": lambda b: b[rows]}
        return _Change({}, rows, slicers, f"{name}: channels {c_in * op.depth_multiplier} -> {len(rows)} "
                                          f"(a depthwise conv follows its input, from {_sources(g, ins)})")
    if kind == "bn":
        per_channel = {v: (lambda w: w[s]) for v in ("gamma", "beta", "moving_mean", "moving_variance")}
        return _Change({}, s, per_channel, f"{name}: channels {c_in} -> {len(s)} (follows {_sources(g, ins)})")
    if kind == "prelu":
        # alpha has the input's shape with shared axes set to 1; slice it only if it is per channel.
        slicers = {"alpha": lambda a: a[..., s] if a.shape[-1] == c_in else a}
        return _Change({}, s, slicers, f"{name}: channels {c_in} -> {len(s)}")
    if kind == "pass":
        return _Change({}, s)
    if kind == "flatten":
        shape = ins[0].shape[1:]
        positions = int(np.prod(shape[:-1]))
        # Channels-last flatten: feature (h * W + w) * C + c holds channel c at position (h, w).
        flat = (np.arange(positions)[:, None] * c_in + s[None, :]).ravel()
        return _Change({}, flat, None, f"{name}: features {positions * c_in} -> {len(flat)} (channels-last: "
                                      f"feature (position * {c_in} + c) for each kept channel c)")
    if kind == "reshape":
        target = list(op.target_shape)
        if target[-1] != -1:
            target[-1] = len(s)
        return _Change({"target_shape": tuple(target)}, s, None, f"{name}: target shape {tuple(op.target_shape)} "
                                                                   f"-> {tuple(target)}")
    if kind == "merge":
        live = [(t, si) for t, si in zip(ins, s_in) if not _is_broadcast(t, ins)]
        ref_t, ref_s = live[0]
        ref = _full(ref_s, ref_t.shape[-1])
        for t, si in live[1:]:
            other = _full(si, t.shape[-1])
            if len(other) != len(ref) or (other != ref).any():
                said = "; ".join(f"input from {_sources(g, [u])} keeps "
                                 + (f"all {u.shape[-1]}" if ui is None else f"{len(ui)} of {u.shape[-1]}")
                                 for u, ui in live)
                raise EdgepruneError(f"could not prune {name} because its inputs keep different channels ({said}); "
                                     "layers whose outputs meet here must keep the same channels (see coupled_groups)")
        return _Change({}, next((si for _, si in live if si is not None), None))
    if kind == "concat":
        offsets = np.cumsum([0] + [t.shape[-1] for t in ins[:-1]])
        merged = np.concatenate([_full(si, t.shape[-1]) + off for t, si, off in zip(ins, s_in, offsets)])
        return _Change({}, merged, None, None)
    raise AssertionError(f"unhandled kind {kind}")  # every kind of _classify is handled above


def _load_weights(op: Any, new_op: Any, change: _Change) -> None:
    """Copy op's weights into new_op, sliced per change.slicers (by variable name) when given."""
    if not isinstance(op, L.Layer) or not op.weights:
        return
    if change.slicers is None:
        new_op.set_weights(op.get_weights())
        return
    arrays = {v.name: np.asarray(v.numpy()) for v in op.weights}
    unknown = sorted(set(arrays) - set(change.slicers))
    if unknown or len(arrays) != len(op.weights):
        raise EdgepruneError(f"could not prune {op.name} because its variables {unknown or list(arrays)} are not "
                             f"the standard {type(op).__name__} ones (a customised layer?)")
    for v in new_op.weights:
        w = change.slicers[v.name](arrays[v.name])
        if tuple(w.shape) != tuple(v.shape):
            raise EdgepruneError(f"could not prune {op.name} because '{v.name}' sliced to {tuple(w.shape)} but the "
                                 f"rebuilt layer expects {tuple(v.shape)}")
        v.assign(w.astype(v.dtype))


def _instantiate(op: Any, change: _Change) -> Any:
    """A fresh layer from op's config with change.config applied (raw keras.ops operations are reused as is)."""
    if not isinstance(op, L.Layer):
        return op  # stateless operation from keras.ops: safe to call again on new tensors
    try:
        config = op.get_config()
        config.update(change.config)
        return op.__class__.from_config(config)
    except Exception as e:  # custom layers without a faithful get_config
        raise EdgepruneError(f"could not rebuild layer '{op.name}' ({type(op).__name__}) from its config: {e}") from e


def prune_keras(model: keras.Model, keep: Mapping[str, Sequence[int]]) -> tuple[keras.Model, list[str]]:
    """A NEW functional model in which each producer named in `keep` keeps only those output channels.

    keep: producer layer name (Conv1D/2D/3D, SeparableConv1D/2D, Dense) -> output-channel indices to keep (any
    order; they are kept in their original order). Returns the model (same layer names, sliced weights, not
    compiled) and human-readable notes, one per changed layer. The original model is not modified.
    Raises EdgepruneError ("could not prune X because ...") for anything that cannot be done exactly.
    """
    g = _analyse(model)
    plan = _validate(g, keep)
    new_tensors: dict[int, Any] = {}
    survivors: dict[int, Any] = {}
    built: dict[int, tuple[Any, Any]] = {}  # id(original layer) -> (new layer, what it was sliced for)
    notes: list[str] = []

    for node in g.nodes:
        op = node.operation
        if g.kinds[id(node)][0] == "input":
            new_input = L.InputLayer.from_config(op.get_config())
            for t in node.outputs:
                new_tensors[id(t)], survivors[id(t)] = new_input.output, None
            continue
        s_in = [survivors[id(t)] for t in node.input_tensors]
        out_idx = plan.get(op.name)
        if out_idx is None and all(s is None for s in s_in):
            change = _Change()  # untouched: an exact copy
        else:
            change = _plan_node(g, node, s_in, out_idx)

        # A shared layer (called more than once) becomes one new layer, so all its calls must agree.
        signature = tuple(None if s is None else tuple(s) for s in s_in)
        if id(op) in built:
            new_op, seen = built[id(op)]
            if seen != signature:
                raise EdgepruneError(f"could not prune {op.name} because it is shared (called more than once) and "
                                     "its calls receive different surviving channels")
        else:
            new_op = _instantiate(op, change)
        args, kwargs = node.arguments.fill_in(new_tensors)
        outputs = keras.tree.flatten(new_op(*args, **kwargs))
        if id(op) not in built:
            _load_weights(op, new_op, change)
            built[id(op)] = (new_op, signature)
            if change.note:
                notes.append(change.note)
        for t_old, t_new in zip(node.outputs, outputs):
            new_tensors[id(t_old)], survivors[id(t_old)] = t_new, change.survivors

    for t in g.fn.outputs:  # _validate already refuses this; kept as a guard for the model's contract
        if survivors[id(t)] is not None:
            raise EdgepruneError(f"could not prune {_sources(g, [t])} because its channels reach the model output "
                                 f"'{t._keras_history.operation.name}', whose width must not change")
    inputs = keras.tree.map_structure(lambda t: new_tensors[id(t)], g.fn._inputs_struct)
    outputs = keras.tree.map_structure(lambda t: new_tensors[id(t)], g.fn._outputs_struct)
    pruned = keras.Model(inputs, outputs, name=model.name)
    before, after = int(model.count_params()), int(pruned.count_params())
    notes.insert(0, f"parameters {before:,} -> {after:,} ({before - after:,} removed, BN statistics counted)")
    return pruned, notes
