"""Coupled groups: layers whose output channels must be removed together, scored together.

Producers meeting at a residual add or a squeeze-excite multiply give their channels one to one to the same
tensor, so they need one keep-list. Each group is ranked on one score per channel: every member's scores divided by
their mean (so a layer with large weights does not outvote the others), then reduced over the members (mean or
sum), as Torch-Pruning's group importances do. A layer outside every group is a group of one.

Layers left out, each with a note: those whose channels reach a model output (the classifier), those the surgery
cannot slice exactly, those the caller ignores, and groups coupled through a concatenation with offsets (their
members' channel counts differ, so one keep-list cannot serve them all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.scoring import LayerScores, Scores

REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class Group:
    """One unit of channel pruning: `members` get the same keep-list; `name` is the first member."""

    members: tuple[str, ...]
    channels: int

    @property
    def name(self) -> str:
        return self.members[0]


@dataclass
class Groups:
    groups: list[Group]
    left_out: dict[str, str] = field(default_factory=dict)  # layer -> why it is not pruned

    def notes(self) -> list[str]:
        return [f"left out '{layer}': {why}" for layer, why in self.left_out.items()]

    def channels(self) -> dict[str, int]:
        return {g.name: g.channels for g in self.groups}

    def of(self, layer: str) -> Group | None:
        return next((g for g in self.groups if layer in g.members), None)

    def expand(self, keep: dict[str, list[int]]) -> dict[str, list[int]]:
        """Keep-lists per group (by group name or any member) -> keep-lists for every member."""
        out: dict[str, list[int]] = {}
        for name, idx in keep.items():
            group = self.of(name)
            for member in group.members if group is not None else (name,):
                out[member] = list(idx)
        return out


def find_groups(model: Any, framework: str, example_inputs: Any = None, ignored: Sequence[str] = ()) -> Groups:
    """The prunable groups of a model, in model order, and the layers left out with why."""
    if framework == "torch":
        from edgeprune.pruning import torch_surgery as surgery

        if example_inputs is None:
            raise EdgepruneError("pruning a PyTorch model needs example inputs (a tensor or a tuple of tensors of "
                                 "the model's input shapes) to trace it")
        prunable = surgery.channels_of(model, example_inputs)
        reasons = surgery.unprunable(model, example_inputs)
        coupled = surgery.coupled_groups(model, example_inputs, include_unprunable=True)
    else:
        from edgeprune.pruning import keras_surgery as surgery

        prunable = surgery.channels_of(model)
        reasons = surgery.unprunable(model)
        coupled = surgery.coupled_groups(model, include_unprunable=True)
    unknown = [name for name in ignored if name not in reasons and name not in prunable]
    if unknown:
        raise EdgepruneError(f"ignored layer(s) {', '.join(unknown)} not found; prunable layers: "
                             f"{', '.join(prunable) or 'none'}")
    left: dict[str, str] = dict(reasons)
    order = list(prunable)
    groups: list[Group] = []
    grouped: set[str] = set()
    for members in coupled:
        members = sorted(members & set(prunable), key=order.index)
        if len(members) < 2:
            continue
        grouped.update(members)
        if any(m in ignored for m in members):
            left.update({m: f"coupled with an ignored layer ({', '.join(members)})" for m in members})
        elif len({prunable[m] for m in members}) > 1:
            left.update({m: f"coupled through a concatenation with offsets ({', '.join(members)})" for m in members})
        else:
            groups.append(Group(tuple(members), prunable[members[0]]))
    for name in order:
        if name in grouped:
            continue
        if name in ignored:
            left[name] = "ignored"
        else:
            groups.append(Group((name,), prunable[name]))
    groups.sort(key=lambda g: order.index(g.name))
    return Groups(groups, left)


def group_scores(scores: Scores, groups: Groups, reduction: str = "mean") -> tuple[Scores, list[str]]:
    """One score per channel and group: each member's scores over their mean, reduced over the members that were
    scored. Groups with no scored member are left out (returned as notes)."""
    if reduction not in REDUCTIONS:
        raise EdgepruneError(f"group reduction '{reduction}': expected one of {', '.join(REDUCTIONS)}")
    out: dict[str, LayerScores] = {}
    notes = []
    for g in groups.groups:
        members = [scores.layers[m] for m in g.members if m in scores.layers]
        if not members:
            notes.append(f"not scored: {', '.join(g.members)} (criterion '{scores.criterion}' scored none of them)")
            continue
        if len(g.members) == 1:
            out[g.name] = members[0]
            continue
        normalised = [ls.scores / ls.scores.mean() if np.isfinite(ls.scores).all() and ls.scores.mean() > 0
                      else ls.scores for ls in members]
        stacked = np.stack(normalised)
        combined = stacked.mean(axis=0) if reduction == "mean" else stacked.sum(axis=0)
        out[g.name] = LayerScores(g.name, combined, None, {"members": list(g.members), "reduction": reduction})
    return Scores(scores.criterion, out, dict(scores.record), scores.unit), notes
