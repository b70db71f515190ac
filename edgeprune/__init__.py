"""edgeprune: score, prune, recover, export and benchmark audio models for edge devices."""

__version__ = "0.1.0"

import os as _os

# TensorFlow prints start-up chatter on stderr; our users get one clear line per problem instead.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
