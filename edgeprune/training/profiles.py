"""Training profiles: how much data and how many epochs. `quick` takes minutes on 2 cores; `full` is the
reference run; `tiny` exists so tests can run a whole pipeline in seconds."""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.data.datasets import SyntheticSpec
from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class Profile:
    name: str
    epochs: int
    batch_size: int
    lr: float
    synthetic: SyntheticSpec  # the synthetic set this profile trains on (real data ignores it)


PROFILES = {
    "tiny": Profile("tiny", epochs=1, batch_size=16, lr=1e-3, synthetic=SyntheticSpec(n_train=100, n_validation=40, n_test=60)),
    # Batch 8: on 2 CPU cores it trains as many samples/s as batch 32 and gives four times the optimiser steps,
    # which a six-epoch run needs.
    "quick": Profile("quick", epochs=6, batch_size=8, lr=1e-3, synthetic=SyntheticSpec()),
    "full": Profile("full", epochs=30, batch_size=32, lr=1e-3,
                    synthetic=SyntheticSpec(n_train=5000, n_validation=1000, n_test=2000)),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise EdgepruneError(f"unknown profile '{name}'; expected one of {', '.join(PROFILES)}")
    return PROFILES[name]
