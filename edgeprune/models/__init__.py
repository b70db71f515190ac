"""Model architectures, registered by name for both frameworks with the tasks they serve, the inputs each takes,
how to run them on a task's data, and how they are measured."""

from edgeprune.models.input_spec import InputSpec
from edgeprune.models.registry import (ModelEntry, arch_spec, build, builder, get_entry, input_spec, input_specs,
                                       list_models, output_axes, register_model, task_of)

__all__ = ["InputSpec", "ModelEntry", "arch_spec", "build", "builder", "get_entry", "input_spec", "input_specs",
           "list_models", "output_axes", "register_model", "task_of"]
