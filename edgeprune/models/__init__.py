"""Model architectures, registered by name for both frameworks."""

from edgeprune.models.registry import arch_spec, build, get_entry, list_models

__all__ = ["arch_spec", "build", "get_entry", "list_models"]
