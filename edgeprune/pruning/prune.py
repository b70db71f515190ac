"""`edgeprune.prune`: score and prune any PyTorch or Keras model in one call, coupled groups and all.

    import edgeprune
    result = edgeprune.prune(model, torch.zeros(1, 3, 40, 101), criterion="l1", target=edgeprune.Ratio(0.3))
    result = edgeprune.prune(keras_model, criterion="l1", target=edgeprune.Budget(macs=0.5))
    result.model, result.keep, result.table, result.notes

Finds the prunable groups (`pruning.groups`: coupled layers share one keep-list; layers whose channels reach a
model output and ignored layers are left out, with a note), scores every member with the criterion, ranks each
group on its members' normalised scores, turns the target into keep-lists and cuts the model for real with the
framework's surgery. The input model is left untouched. `edgeprune prune` runs the same code on checkpoints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.frameworks import framework_of
from edgeprune.models.measure import layer_table, measure
from edgeprune.pruning.api import cut
from edgeprune.pruning.groups import Groups, find_groups, group_scores
from edgeprune.pruning.targets import Target
from edgeprune.scoring import Scores, get_criterion, score
from edgeprune.scoring.kernels import named_layers, scorable_layers


@dataclass(frozen=True)
class Ratio:
    """Remove this fraction of every group's channels (counted in channels, as Torch-Pruning's ratio); with
    `global_ranking`, this fraction of all scored channels, the lowest-scored wherever they are."""

    value: float
    global_ranking: bool = False


@dataclass(frozen=True)
class Budget:
    """Keep this fraction of the model's parameters or MACs (exactly one), met within `tolerance` of the model."""

    params: float | None = None
    macs: float | None = None
    tolerance: float = 0.01


@dataclass
class PruneResult:
    model: Any
    keep: dict[str, list[int]]  # every pruned layer's kept channels (coupled members share theirs)
    notes: list[str] = field(default_factory=list)
    table: list[dict[str, Any]] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)  # the coupled groups that were pruned together
    scores: Scores | None = None
    seconds: float = 0.0


def as_target(target: Any, round_to: int = 1) -> Target:
    """A Ratio, a Budget, keep-lists ({layer: [indices]}) or a Target."""
    if isinstance(target, Target):
        return target
    if isinstance(target, Ratio):
        return Target(ratio=target.value, round_to=round_to, global_ranking=target.global_ranking)
    if isinstance(target, Budget):
        chosen = [(k, v) for k, v in (("params", target.params), ("macs", target.macs)) if v is not None]
        if len(chosen) != 1:
            raise EdgepruneError("Budget: give exactly one of params= or macs= (the fraction of the model to keep)")
        kind, fraction = chosen[0]
        if not 0 < fraction < 1:
            raise EdgepruneError(f"Budget({kind}={fraction}): the fraction to keep must be in (0, 1)")
        return Target(budget=(kind, float(fraction)), round_to=round_to, tolerance=target.tolerance)
    if isinstance(target, dict):
        return Target(keep=target, round_to=round_to)
    raise EdgepruneError(f"target: got {type(target).__name__}; expected Ratio(r), Budget(params=f or macs=f) or "
                         "keep-lists {layer: [channel indices]}")


def prune(model: Any, example_inputs: Any = None, criterion: str = "l1", target: Any = Ratio(0.3), *,
          data: Any = None, layers: Sequence[str] | None = None, ignored_layers: Sequence[Any] | None = None,
          round_to: int = 1, group_reduction: str = "mean", scores: Scores | None = None,
          **criterion_options: Any) -> PruneResult:
    """Prune `model` (torch.nn.Module or keras.Model) for real and return the smaller model with its keep-lists,
    per-layer table and notes.

    example_inputs: what the model is called with (a tensor, a tuple of tensors, or numpy arrays), needed to
        trace a PyTorch model; Keras models know their inputs. criterion: a registered criterion (l1, l2,
        passive, activation_l1; the data-driven ones score `data`, inputs in the model's layout). target: Ratio,
        Budget or keep-lists. layers: restrict pruning to the groups of these layers (default every prunable
        layer). ignored_layers: names (or the layer objects) never to prune. round_to: kept counts a multiple of
        N. group_reduction: how coupled members' normalised scores combine ("mean" or "sum"). scores: scores
        computed earlier (then `criterion` is not run).
    """
    start = time.perf_counter()
    framework = framework_of(model)
    examples = _examples(example_inputs, framework)
    ignored = _names(model, ignored_layers or ())
    plan = find_groups(model, framework, examples, ignored)
    if scores is not None and layers is None:  # scores computed earlier chose the layers
        layers = [m for g in plan.groups for m in g.members if m in scores.layers]
    if layers is not None:
        wanted = {g.name for g in plan.groups if set(g.members) & set(layers)}
        missing = [name for name in layers if plan.of(name) is None]
        if missing:
            raise EdgepruneError(f"layer(s) {', '.join(missing)} cannot be pruned: "
                                 + "; ".join(f"{m}: {plan.left_out.get(m, 'not found')}" for m in missing))
        plan = Groups([g for g in plan.groups if g.name in wanted], plan.left_out)
    if not plan.groups:
        raise EdgepruneError("nothing to prune: " + ("; ".join(plan.notes()) or "the model has no conv or dense layers"))
    goal = as_target(target, round_to)
    notes = plan.notes()
    shapes = _shapes(examples, model, framework)

    def measured(keep: dict[str, list[int]]) -> dict[str, float]:
        child = cut(model, framework, plan.expand(keep), examples)[0]
        out = measure(child, framework, input_shapes=shapes)
        if goal.latency is not None:
            out["latency"] = goal.latency[0](child, framework)
        return out

    if goal.keep is not None:
        keep = _explicit(goal.keep, plan)
        used = None
    else:
        used = scores if scores is not None else _score(model, criterion, plan, data, criterion_options)
        gscores, unscored = group_scores(used, plan, group_reduction)
        notes += unscored
        coupled = [g for g in plan.groups if len(g.members) > 1 and g.name in gscores.layers]
        if goal.rule and coupled:
            raise EdgepruneError(f"the '{used.criterion}' rule keeps each layer's own filters; coupled layers "
                                 f"{', '.join(coupled[0].members)} need one keep-list: prune to a ratio or a budget")
        goal = _steps_by_group(_by_group(goal, plan), plan)
        from edgeprune.pruning.targets import resolve

        keep = resolve(goal, gscores, {n: c for n, c in plan.channels().items() if n in gscores.layers},
                       measure=measured)
    keep = plan.expand(keep)
    pruned, surgery_notes = cut(model, framework, keep, examples)
    label = "explicit" if used is None else used.criterion
    table = layer_table(model, pruned, framework, criterion=label, input_shapes=shapes)
    return PruneResult(pruned, keep, notes + list(surgery_notes), table,
                       [list(g.members) for g in plan.groups if len(g.members) > 1], used,
                       time.perf_counter() - start)


def _score(model: Any, criterion: str, plan: Groups, data: Any, options: dict[str, Any]) -> Scores:
    """Every member of every group the criterion can score (conv-only criteria skip dense members)."""
    entry = get_criterion(criterion)
    members = [m for g in plan.groups for m in g.members]
    if entry.conv_only:
        convs = set(scorable_layers(model))
        members = [m for m in members if m in convs]
        if not members:
            raise EdgepruneError(f"criterion '{criterion}' scores conv layers only, and no prunable layer is one")
    return score(model, criterion, layers=members, data=data, **options)


def _explicit(keep: dict[str, Any], plan: Groups) -> dict[str, list[int]]:
    """User keep-lists: every named layer must be prunable; coupled members must agree."""
    out: dict[str, list[int]] = {}
    for layer, idx in keep.items():
        group = plan.of(layer)
        if group is None:
            raise EdgepruneError(f"layer '{layer}' cannot be pruned: {plan.left_out.get(layer, 'not found')}")
        idx = sorted(int(i) for i in idx)
        if group.name in out and out[group.name] != idx:
            raise EdgepruneError(f"coupled layers {', '.join(group.members)} were given different keep-lists; give "
                                 "one (or name one member)")
        out[group.name] = idx
    return out


def _by_group(goal: Target, plan: Groups) -> Target:
    """Per-layer ratios named by any member apply to its group."""
    if not goal.layer_ratios:
        return goal
    from dataclasses import replace

    ratios = {}
    for layer, r in goal.layer_ratios.items():
        group = plan.of(layer)
        if group is None:
            raise EdgepruneError(f"layer '{layer}' cannot be pruned: {plan.left_out.get(layer, 'not found')}")
        ratios[group.name] = r
    return replace(goal, layer_ratios=ratios)


def _steps_by_group(goal: Target, plan: Groups) -> Target:
    """A target's latency steps asked per group: a coupled group's count pays for every member's time."""
    if not callable(goal.steps):
        return goal
    from dataclasses import replace

    found = {g.name: goal.steps(g.members) for g in plan.groups}
    return replace(goal, steps={name: s for name, s in found.items() if s})


def _examples(example_inputs: Any, framework: str) -> Any:
    """Torch: a tuple of tensors (numpy arrays converted); Keras: ignored (the model has its inputs)."""
    if framework != "torch":
        return None
    if example_inputs is None:
        return None
    import torch

    items = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    return tuple(torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x
                 for x in items)


def _shapes(examples: Any, model: Any, framework: str) -> list[tuple[int, ...]]:
    """One sample's shape per input (for the layer table and MACs)."""
    if framework == "torch":
        return [tuple(x.shape[1:]) for x in examples]
    return [tuple(t.shape[1:]) for t in model.inputs]


def _names(model: Any, ignored: Sequence[Any]) -> list[str]:
    """Layer names for names or layer objects."""
    if isinstance(ignored, (str, bytes)):
        ignored = [ignored]
    layers = named_layers(model)
    by_object = {id(layer): name for name, layer in layers.items()}
    out = []
    for item in ignored:
        if isinstance(item, str):
            out.append(item)
        elif id(item) in by_object:
            out.append(by_object[id(item)])
        else:
            raise EdgepruneError(f"ignored_layers: {type(item).__name__} is not a layer of this model")
    return out

