"""Recovery: the seed's C1+C2+C3 cut (11/16, 11/16, 22/32 filters, chosen by passive ranking), fine-tuned with the
quick profile, stays within 3 accuracy points of its unpruned parent on the synthetic scenes."""

import pytest

from edgeprune import checkpoint
from edgeprune.pruning.run import finetune_checkpoint, prune_checkpoint, score_checkpoint
from edgeprune.pruning.targets import Target
from edgeprune.scoring import ranked_keep
from edgeprune.training import run
from edgeprune.training.profiles import get_profile

SEED_KEEP_COUNTS = {"conv1": 11, "conv2": 11, "conv3": 22}


@pytest.mark.slow
def test_c123_cut_recovers_within_three_points(quick_baseline, tmp_path):
    path, data = quick_baseline
    parent = checkpoint.load(path)
    scores = score_checkpoint(parent, "passive")
    keep = {}
    for layer, n in SEED_KEEP_COUNTS.items():
        s = scores.layers[layer].scores
        keep[layer] = ranked_keep(s, ratio=(len(s) - n) / len(s))
        assert len(keep[layer]) == n
    prune_checkpoint(parent, Target(keep=keep), None, tmp_path / "pruned")
    pruned = checkpoint.load(tmp_path / "pruned")
    assert pruned.transforms[-1].record["params"] == 24_056
    cut = run.evaluate(pruned, data)["accuracy"]
    finetune_checkpoint(pruned, data, get_profile("quick"), tmp_path / "ft", teacher=parent, progress=False)
    after = run.evaluate(checkpoint.load(tmp_path / "ft"), data)["accuracy"]
    before = run.evaluate(parent, data)["accuracy"]
    print(f"C1+C2+C3: parent {before:.4f}, pruned {cut:.4f}, fine-tuned {after:.4f} (test accuracy)")
    assert after >= before - 0.03
