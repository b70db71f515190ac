"""edgeprune: score, prune, recover, export and benchmark audio models for edge devices."""

__version__ = "0.1.0"

__all__ = ["Budget", "Ratio", "prune"]

import os as _os

# TensorFlow prints start-up chatter on stderr; our users get one clear line per problem instead.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def prune(*args, **kwargs):
    """Score and prune any PyTorch or Keras model in one call: see `edgeprune.pruning.prune.prune`."""
    from edgeprune.pruning.prune import prune as _prune

    return _prune(*args, **kwargs)


def __getattr__(name: str):
    # Ratio and Budget live with the prune call; importing them lazily keeps `import edgeprune` light.
    if name in ("Ratio", "Budget"):
        from edgeprune.pruning import prune as _module

        return getattr(_module, name)
    raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")
