"""Structured-pruning surgery for PyTorch models: remove output channels for real, not with a mask.

Built on Torch-Pruning's DependencyGraph (DepGraph): it traces the model with example inputs and groups every
parameter coupled to a layer's output channels (BN, the next layer's input, residual adds, concat offsets,
flatten into Linear, depthwise convs, squeeze-excite multiplies), so removing a channel removes it everywhere.
This module adds what edgeprune needs on top: keep lists by module name (the mirror of `prune_keras`), validation
with one "could not prune X because Y" error per problem, checks for coupled layers whose keep lists disagree,
refusal of patterns Torch-Pruning cannot slice exactly (grouped convs, channel-spanning norms), and an adapter
that lets edgeprune's numpy scores drive Torch-Pruning's own pruners (`tp_importance`).

Public API: `prune_torch`, `replay_keep`, `coupled_groups`, `channels_of`, `tp_importance`.
Example inputs: a Tensor is the single positional argument, a tuple or list holds positional arguments, a dict
keyword arguments (never Torch-Pruning's own guess, which unpacks a bare tensor along its batch axis first).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning import ops as tp_ops

from edgeprune.errors import EdgepruneError
from edgeprune.pruning.keep import listing, validate_indices
from edgeprune.frameworks.torch_fw import count_params

# Layers a keep list may name (their output channels are the pruning unit).
ROOT_TYPES: tuple[type, ...] = (nn.Conv1d, nn.Conv2d, nn.Linear)
# Layers whose pruning Torch-Pruning supports but edgeprune cannot make exact or has not verified: a group that
# touches one is refused, with the reason.
_CHANNEL_MIXING_NORMS = (nn.GroupNorm, nn.LayerNorm)
_UNVERIFIED = (nn.LSTM, nn.GRU, nn.RNN, nn.MultiheadAttention, nn.Embedding)


# ----------------------------------------------------------------------------------------------------------------
# Tracing and analysis.


def _call(model: nn.Module, inputs: Any) -> Any:
    """Run the model on example inputs: tensor -> one argument, tuple/list -> positional, dict -> keywords."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (list, tuple)):
        return model(*inputs)
    return model(inputs)


def _is_depthwise(m: nn.Module) -> bool:
    """A depthwise conv: one filter per input channel, so its channels are its input's channels."""
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _is_grouped(m: nn.Module) -> bool:
    """A grouped conv that is not a plain depthwise conv (groups > 1, or a depthwise with a channel multiplier)."""
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and not _is_depthwise(m)


def _out_channels(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def _meet_label(node: Any) -> str | None:
    """How a graph node joins channels from several producers ('residual add', 'multiply', ...), else None."""
    if node.type == tp_ops.OPTYPE.CONCAT:
        return "concat"
    if node.type != tp_ops.OPTYPE.ELEMENTWISE or len(node.inputs) < 2:
        return None
    op = str(node.module._grad_fn).split("Backward")[0].lower()
    return {"add": "residual add", "sub": "subtract", "mul": "multiply", "div": "divide"}.get(op, op)


@dataclass
class _Root:
    """One prunable layer's channel group, seen from that layer with all its channels."""

    name: str
    module: nn.Module
    channels: int
    # Other prunable layers whose output channels are coupled to this one: name -> [(own index, their index)].
    members: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    meets: list[str] = field(default_factory=list)  # how the coupled producers meet
    reaches_output: bool = False
    blocked: str | None = None  # why this group cannot be pruned exactly
    unwrapped: list[str] = field(default_factory=list)  # bare nn.Parameters Torch-Pruning would slice


@dataclass
class _Analysis:
    """What one trace learns; shared by prune_torch, coupled_groups and channels_of."""

    dg: tp.DependencyGraph  # built on a copy of the caller's model
    modules: dict[str, nn.Module]  # every named module
    roots: dict[str, _Root]  # traced Conv1d/Conv2d/Linear (not grouped), in named_modules order
    output_shapes: list[tuple[int, ...]]


def _trace(model: nn.Module, example_inputs: Any) -> tuple[tp.DependencyGraph, list[tuple[int, ...]]]:
    """Torch-Pruning's dependency graph for `model` (which it puts in eval mode), plus the output shapes."""
    shapes: list[tuple[int, ...]] = []

    def mark_outputs(out: Any) -> list[torch.Tensor]:
        # Torch-Pruning marks a model output with an _OutputOp node only when the last op is not a module (a
        # classifier's Linear output gets none). One extra op per output makes every output visible in groups.
        tensors = [t for t in tp.utils.flatten_as_list(out) if isinstance(t, torch.Tensor)]
        shapes.extend(tuple(t.shape) for t in tensors)
        return [t * 1.0 for t in tensors if t.grad_fn is not None]

    try:
        with torch.enable_grad():  # the tracer follows autograd; a caller's no_grad() would break it
            dg = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_inputs, forward_fn=_call, output_transform=mark_outputs, verbose=False)
    except EdgepruneError:
        raise
    except Exception as e:  # noqa: BLE001 - any tracing failure becomes one clear line
        raise EdgepruneError(f"could not trace {type(model).__name__} for pruning: {type(e).__name__}: {e}") from e
    if not any(n.type == tp_ops.OPTYPE.OUTPUT for n in dg.module2node.values()):
        raise EdgepruneError(f"could not trace {type(model).__name__} for pruning: it returned no tensor that "
                             "depends on its parameters")
    return dg, shapes


def _analyse_root(dg: tp.DependencyGraph, name: str, module: nn.Module) -> _Root:
    """The full group of `module`'s output channels: coupled producers, followers, output, blockers."""
    n = _out_channels(module)
    root = _Root(name, module, n)
    group = dg.get_pruning_group(module, dg.get_pruner_of_module(module).prune_out_channels, list(range(n)))
    for item in group.items:
        dep, target = item.dep, item.dep.target
        m = target.module
        label = _meet_label(target)
        if label is not None and label not in root.meets and label != "concat":
            root.meets.append(label)
        if target.type == tp_ops.OPTYPE.OUTPUT:
            root.reaches_output = True
            continue
        if target.type == tp_ops.OPTYPE.PARAMETER:
            root.unwrapped.append(dg._param_to_name.get(m, "a parameter"))
            continue
        if not isinstance(m, nn.Module) or m is module:
            continue
        other = dg._module2name.get(m, type(m).__name__)
        if root.blocked is None:
            if _is_grouped(m):
                root.blocked = (f"its channels reach the grouped conv '{other}' (groups={m.groups}), whose channel "
                                "groups cannot be sliced exactly")
            elif isinstance(m, _CHANNEL_MIXING_NORMS):
                root.blocked = (f"its channels reach '{other}' ({type(m).__name__}), which normalises across "
                                "channels, so removing channels would change the others")
            elif isinstance(m, _UNVERIFIED):
                root.blocked = f"its channels reach '{other}' ({type(m).__name__}), which edgeprune cannot prune yet"
        if not dg.is_out_channel_pruning_fn(dep.handler):
            continue
        if isinstance(m, ROOT_TYPES) and not _is_depthwise(m):
            pairs = root.members.setdefault(other, [])
            pairs.extend(zip((int(i) for i in item.root_idxs), (int(j) for j in item.idxs)))
    return root


def _analyse(model: nn.Module, example_inputs: Any) -> _Analysis:
    """Trace `model` (already a copy: tracing puts it in eval mode) and analyse every prunable layer's group."""
    dg, shapes = _trace(model, example_inputs)
    modules = dict(model.named_modules())
    roots = {}
    for name, m in modules.items():
        if isinstance(m, ROOT_TYPES) and not _is_grouped(m) and not _is_depthwise(m) and m in dg.module2node:
            roots[name] = _analyse_root(dg, name, m)
    return _Analysis(dg, modules, roots, shapes)


def _prunable(a: _Analysis) -> list[str]:
    return [r.name for r in a.roots.values() if not r.reaches_output and r.blocked is None]


def channels_of(model: nn.Module, example_inputs: Any = None) -> dict[str, int]:
    """Prunable layers -> output channel count, in named_modules order.

    With example_inputs the model is traced and the list is exact: layers that produce the model's output, layers
    that do not run, and layers whose channels reach something that cannot be sliced exactly are left out. Without
    them it is every Conv1d, Conv2d and Linear that is not grouped or depthwise: the classifier is then listed too.
    Coupled layers are listed separately; see coupled_groups for their grouping.
    """
    if example_inputs is None:
        return {name: _out_channels(m) for name, m in model.named_modules()
                if isinstance(m, ROOT_TYPES) and not _is_grouped(m) and not _is_depthwise(m)}
    a = _analyse(copy.deepcopy(model), example_inputs)
    return {name: a.roots[name].channels for name in _prunable(a)}


def unprunable(model: nn.Module, example_inputs: Any) -> dict[str, str]:
    """Conv / Linear layers that cannot be pruned, with why (their channels reach the model's output, or a layer
    that cannot take pruned channels exactly; or they did not run)."""
    a = _analyse(copy.deepcopy(model), example_inputs)
    out = {}
    for name, m in model.named_modules():
        if not isinstance(m, ROOT_TYPES) or _is_grouped(m) or _is_depthwise(m):
            continue
        r = a.roots.get(name)
        if r is None:
            out[name] = "it did not run on the example inputs"
        elif r.reaches_output:
            out[name] = "its channels reach the model's output"
        elif r.blocked is not None:
            out[name] = r.blocked
    return out


def coupled_groups(model: nn.Module, example_inputs: Any, include_unprunable: bool = False) -> list[set[str]]:
    """Sets of layers (two or more) whose output channels are coupled, e.g. producers meeting at a residual add.

    Members of a group are pruned together: give them the same keep list, or name one and the others follow.
    Groups that cannot be pruned at all (they reach the model output or something that cannot be sliced exactly)
    are left out unless include_unprunable. Depthwise convs are not listed: their channels follow their input.
    """
    a = _analyse(copy.deepcopy(model), example_inputs)
    # Through a concat, coupling is partial (cat([a, b]) + c couples a with part of c, b with the rest), so the
    # groups seen from each layer overlap: merge overlapping sets into one group of mutually constrained layers.
    groups: list[tuple[set[str], bool]] = []  # (members, prunable)
    for r in a.roots.values():
        members, ok = {r.name, *r.members}, not (r.reaches_output or r.blocked)
        for g in [g for g in groups if g[0] & members]:
            groups.remove(g)
            members, ok = members | g[0], ok and g[1]
        groups.append((members, ok))
    order = list(a.roots)
    groups.sort(key=lambda g: min(order.index(n) for n in g[0]))
    return [members for members, ok in groups if len(members) > 1 and (ok or include_unprunable)]


# ----------------------------------------------------------------------------------------------------------------
# Validation of the keep request.


def _validate(a: _Analysis, keep: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """The effective plan: layer -> sorted kept indices, in named_modules order, only for layers that change."""
    if not isinstance(keep, Mapping):
        raise EdgepruneError(f"keep must map layer names to channel indices, not {type(keep).__name__}")
    requested: dict[str, np.ndarray] = {}
    for name, idx in keep.items():
        m = a.modules.get(name) if isinstance(name, str) and name else None
        if m is None:
            raise EdgepruneError(f"layer '{name}' not found; prunable layers: {listing(_prunable(a))}")
        kind = type(m).__name__
        if _is_depthwise(m):
            raise EdgepruneError(f"could not prune {name} because a depthwise conv's channels follow its input; "
                                 "prune the layer that feeds it")
        if _is_grouped(m):
            raise EdgepruneError(f"could not prune {name} because it is a grouped conv (groups={m.groups}), whose "
                                 "channel groups cannot be sliced exactly")
        if not isinstance(m, ROOT_TYPES):
            raise EdgepruneError(f"layer '{name}' ({kind}) is not a Conv1d, Conv2d or Linear, so it has no output "
                                 f"channels of its own to prune; prunable layers: {listing(_prunable(a))}")
        root = a.roots.get(name)
        if root is None:
            raise EdgepruneError(f"could not prune {name} because it does not run when the model is called on the "
                                 "example inputs")
        if root.reaches_output:
            raise EdgepruneError(f"could not prune {name} because it produces the model's output")
        if root.blocked is not None:
            raise EdgepruneError(f"could not prune {name} because {root.blocked}")
        requested[name] = validate_indices(name, idx, root.channels)

    # Coupled layers named together must agree channel for channel (through concat offsets where there are any).
    for name, kept in requested.items():
        root = a.roots[name]
        for other, pairs in root.members.items():
            if other not in requested:
                continue
            theirs = set(requested[other].tolist())
            own = set(kept.tolist())
            if any((i in own) != (j in theirs) for i, j in pairs):
                how = listing(root.meets, 3) if root.meets else "a shared consumer"
                group = sorted({name, *root.members}, key=list(a.roots).index)
                raise EdgepruneError(
                    f"could not prune {name} because it is coupled with {other} ({how}) and their keep lists differ "
                    f"({name} keeps {len(kept)} of {root.channels}, {other} keeps {len(requested[other])} of "
                    f"{a.roots[other].channels}); give every layer of the coupled group [{', '.join(group)}] the "
                    "same keep list, or name only one of them (see coupled_groups)")
    order = list(a.modules)
    return {k: requested[k] for k in sorted(requested, key=order.index) if len(requested[k]) < a.roots[k].channels}


# ----------------------------------------------------------------------------------------------------------------
# Pruning.


def prune_torch(model: nn.Module, keep: Mapping[str, Sequence[int]], example_inputs: Any
                ) -> tuple[nn.Module, list[str]]:
    """A pruned deep copy of `model` in which each layer named in `keep` keeps only the listed output channels.

    keep: module name (as in `model.named_modules()`) of a Conv1d, Conv2d or Linear -> output-channel indices to
    keep (any order; they stay in their original order). Every coupled parameter is sliced to match: BN, the next
    layer's input, flatten into Linear, depthwise convs, and producers coupled through residual adds or multiplies
    (name one of them and the others follow; name several and their lists must agree).
    example_inputs: what the model is called with for tracing (see the module docstring).
    Returns the pruned model (same class and module names, same train/eval mode as `model`) and human-readable
    notes: the parameter count first, then one line per layer that changed. `model` itself is not modified.
    Raises EdgepruneError ("could not prune X because ...") for anything that cannot be done exactly.
    """
    pruned = copy.deepcopy(model)
    a = _analyse(pruned, example_inputs)
    plan = _validate(a, keep)
    dg = a.dg
    # The original indices still alive in each prunable layer: keep lists speak in original indices, while
    # Torch-Pruning speaks in current ones, which shift once a coupled layer has been pruned through another.
    alive = {name: list(range(r.channels)) for name, r in a.roots.items()}
    notes: list[str] = []
    for name, kept in plan.items():
        root = a.roots[name]
        keep_set = set(kept.tolist())
        remove = [pos for pos, orig in enumerate(alive[name]) if orig not in keep_set]
        if not remove:
            continue  # an earlier coupled layer with the same keep list already did this
        module = a.modules[name]
        group = dg.get_pruning_group(module, dg.get_pruner_of_module(module).prune_out_channels, remove)
        if not dg.check_pruning_group(group):
            raise EdgepruneError(f"could not prune {name} because it would remove every channel of a layer coupled "
                                 "to it")
        removed: dict[str, list[int]] = {}  # layer -> current positions this group removes from its output
        for item in group.items:
            m = item.dep.target.module
            if isinstance(m, nn.Module) and dg.is_out_channel_pruning_fn(item.dep.handler):
                other = dg._module2name.get(m)
                if other is not None and other not in removed and isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                    removed[other] = sorted({int(i) for i in item.idxs})
        before = {n: len(alive[n]) for n in removed if n in alive}
        group.prune()
        for other, pos in removed.items():
            if other in alive:
                gone = set(pos)
                alive[other] = [o for p, o in enumerate(alive[other]) if p not in gone]

        how = listing(root.meets, 3) if root.meets else "coupled"
        notes.append(f"{name}: keeps {len(alive[name])} of {root.channels} output channels")
        for other in sorted(removed, key=list(a.modules).index):
            if other == name:
                continue
            if other in alive and other not in plan:
                n_orig = a.roots[other].channels
                # Through a concat a layer can follow several others: say where this step started from.
                was = f" (had {before[other]} before this step)" if before[other] != n_orig else ""
                notes.append(f"{other}: follows {name} ({how}), keeps {len(alive[other])} of {n_orig} output "
                             f"channels{was}")
            elif other not in alive:  # not a layer keep may name: a depthwise conv, for one
                kind = "depthwise conv" if _is_depthwise(a.modules[other]) else type(a.modules[other]).__name__
                notes.append(f"{other}: {kind}, follows {name}: keeps {_out_channels(a.modules[other])} channels")
        if root.unwrapped:
            notes.append(f"{name}: also sliced the bare parameter(s) {listing(root.unwrapped, 5)} along their last "
                         "non-singleton dimension (Torch-Pruning's rule for parameters outside a layer)")

    pruned.train(model.training)  # tracing put the copy in eval mode
    _check_runs(pruned, example_inputs, a.output_shapes, list(plan))
    before_n, after_n = count_params(model), count_params(pruned)
    notes.insert(0, f"parameters {before_n:,} -> {after_n:,} ({before_n - after_n:,} removed, BN statistics counted)")
    return pruned, notes


def _check_runs(pruned: nn.Module, example_inputs: Any, shapes: list[tuple[int, ...]], names: list[str]) -> None:
    """The pruned model must still run and give outputs of the original shapes (a guard on Torch-Pruning)."""
    if not names:
        return
    training = pruned.training
    pruned.eval()
    try:
        with torch.no_grad():
            out = _call(pruned, example_inputs)
    except Exception as e:  # noqa: BLE001
        raise EdgepruneError(f"could not prune {listing(names, 5)} because the pruned model fails on the example "
                             f"inputs ({type(e).__name__}: {e}); some op between them and their consumers is not "
                             "understood by Torch-Pruning") from e
    finally:
        pruned.train(training)
    got = [tuple(t.shape) for t in tp.utils.flatten_as_list(out) if isinstance(t, torch.Tensor)]
    if got != shapes:
        raise EdgepruneError(f"could not prune {listing(names, 5)} because the pruned model's outputs have shapes "
                             f"{got}, not {shapes}")


def replay_keep(model: nn.Module, keep: Mapping[str, Sequence[int]], example_inputs: Any
                ) -> tuple[nn.Module, list[str]]:
    """Rebuild a pruned architecture from recorded keep lists: prune_torch on a fresh model of the original
    architecture. The result's state_dict matches (key for key, shape for shape) the model first pruned with
    these keep lists, so saved pruned weights load into it."""
    return prune_torch(model, keep, example_inputs)


# ----------------------------------------------------------------------------------------------------------------
# Torch-Pruning importance from edgeprune scores.


class ScoreImportance(tp.importance.Importance):
    """A Torch-Pruning importance that returns given per-channel scores (higher = more important).

    A group's score for each channel is the mean of the scores of every scored layer in the group whose output
    channels are coupled to it (for an uncoupled layer: exactly its own scores). Scores are per current channel:
    score once per pruning step (BasePruner with iterative_steps=1), since pruning shifts the indices.
    """

    def __init__(self, scores: Mapping[str, Any], missing: str = "error") -> None:
        if missing not in ("error", "skip"):
            raise EdgepruneError(f"missing must be 'error' or 'skip', not {missing!r}")
        # Accept numpy arrays, sequences, or anything with a .scores array (edgeprune's LayerScores).
        self.scores = {k: np.asarray(getattr(v, "scores", v), dtype=np.float64).reshape(-1) for k, v in scores.items()}
        self.missing = missing

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        dg = group._DG
        root_item = group[0]
        position = {int(r): k for k, r in enumerate(root_item.root_idxs)}
        total, count = np.zeros(len(position)), np.zeros(len(position))
        for item in group.items:
            m = item.dep.target.module
            if not (isinstance(m, ROOT_TYPES) and dg.is_out_channel_pruning_fn(item.dep.handler)):
                continue
            name = dg._module2name.get(m)
            if name not in self.scores:
                continue
            s, n = self.scores[name], _out_channels(m)
            if len(s) != n:
                raise EdgepruneError(f"scores for '{name}' have {len(s)} entries but it has {n} output channels "
                                     "(scores are per current channel: score again after each pruning step)")
            for j, r in zip(item.idxs, item.root_idxs):
                k = position.get(int(r))
                if k is not None:
                    total[k] += s[int(j)]
                    count[k] += 1
        if (count == 0).any():
            if self.missing == "skip":
                return None  # BasePruner leaves a group without importance alone
            root = dg._module2name.get(root_item.dep.target.module, "?")
            scored = listing(sorted(self.scores))
            raise EdgepruneError(f"no scores for the group of '{root}' (scored layers: {scored}); score it, or put "
                                 "it in ignored_layers")
        return torch.as_tensor(total / count, dtype=torch.float32)


def tp_importance(scores: Mapping[str, Any], missing: str = "error") -> ScoreImportance:
    """A `torch_pruning.importance.Importance` returning these per-channel scores (layer name -> one float per
    output channel, higher = more important) for Torch-Pruning's pruners, e.g.
    `tp.pruner.BasePruner(model, x, importance=tp_importance(scores), pruning_ratio=0.25, ignored_layers=[fc])`.
    A group with no scored layer raises EdgepruneError, or is left unpruned with missing='skip'."""
    return ScoreImportance(scores, missing)


__all__ = ["ROOT_TYPES", "ScoreImportance", "channels_of", "coupled_groups", "prune_torch", "replay_keep",
           "tp_importance"]
