"""Model architectures, registered by name for both frameworks, and the input spec each one takes."""

from edgeprune.models.input_spec import InputSpec
from edgeprune.models.registry import arch_spec, build, get_entry, input_spec, list_models

__all__ = ["InputSpec", "arch_spec", "build", "get_entry", "input_spec", "list_models"]
