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
    synthetic: SyntheticSpec  # the synthetic scene set this profile trains on (real data ignores it)
    speech: dict = None  # task -> (train, validation, test) sizes of the synthetic speech sets
    clip_norm: float | None = None  # gradient clipping (a model's overrides may set it)
    warmup_steps: int = 0  # linear learning-rate warm-up over this many optimiser steps (transformers need it)


PROFILES = {
    "tiny": Profile("tiny", epochs=1, batch_size=16, lr=1e-3, synthetic=SyntheticSpec(n_train=100, n_validation=40, n_test=60),
                    speech={"keywords": (120, 48, 48), "phones": (60, 24, 24), "enhancement": (40, 16, 16)}),
    # Batch 8: on 2 CPU cores it trains as many samples/s as batch 32 and gives four times the optimiser steps,
    # which a six-epoch run needs.
    "quick": Profile("quick", epochs=6, batch_size=8, lr=1e-3, synthetic=SyntheticSpec(),
                     speech={"keywords": (2400, 480, 480), "phones": (1500, 200, 200), "enhancement": (800, 100, 100)}),
    "full": Profile("full", epochs=30, batch_size=32, lr=1e-3,
                    synthetic=SyntheticSpec(n_train=5000, n_validation=1000, n_test=2000),
                    speech={"keywords": (9600, 1200, 1200), "phones": (6000, 600, 600), "enhancement": (3200, 400, 400)}),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise EdgepruneError(f"unknown profile '{name}'; expected one of {', '.join(PROFILES)}")
    return PROFILES[name]


def for_model(profile: Profile, model: str) -> Profile:
    """The profile with a registered model's own overrides for it (epochs, batch size, learning rate, clipping)."""
    from dataclasses import replace

    from edgeprune.models import get_entry
    from edgeprune.models.registry import is_registered

    if not is_registered({"model": model}):
        return profile
    return replace(profile, **get_entry(model).training.get(profile.name, {}))
