"""Importance scoring: per-output-channel scores for conv layers of PyTorch and Keras models.

    from edgeprune.scoring import score, ranked_keep
    s = score(model, "passive")                 # data-free; s.layers["conv1"].keep is the rule's keep set
    s = score(model, "activation_l1", data=x)   # x: features [N, 40, 500] (or laid-out / multi-input arrays)
    keep = ranked_keep(s.layers["conv2"].scores, ratio=0.25, round_to=8)

Criteria compute on numpy arrays; only kernel and activation extraction is per framework (`kernels.py`,
`activation.py`). Criteria: "l1", "l2", "passive" (data-free), "activation_l1", "cmc_asp" (data-driven; cmc_asp
for two-input air + bone models).
"""

from edgeprune.scoring.base import LayerScores, Scores, ranked_keep
from edgeprune.scoring.kernels import conv_kernels, resolve_layers, scorable_layers
from edgeprune.scoring.registry import CriterionEntry, get_criterion, list_criteria, register_criterion, score
from edgeprune.scoring.activation import ActivationMeans, activation_l1_means
from edgeprune.scoring.magnitude import filter_norms
from edgeprune.scoring.passive import PassiveResult, passive_layer, prototypes

__all__ = [
    "ActivationMeans", "CriterionEntry", "LayerScores", "PassiveResult", "Scores", "activation_l1_means",
    "conv_kernels", "filter_norms", "get_criterion", "list_criteria", "passive_layer", "prototypes", "ranked_keep",
    "register_criterion", "resolve_layers", "scorable_layers", "score",
]
