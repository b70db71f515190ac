"""Models by name. A model is registered once (`register_model`) with the tasks it serves, its default arguments,
the arguments that follow from a task (input sizes, classes, head), and where each framework wants the task's
feature axes; then one builder per framework (`@builder`). Its architecture spec is the model name, the task and
the builder's keyword arguments, so a checkpoint (weights + JSON spec) rebuilds it, pruned widths included.

    register_model(ModelEntry("resnet-kws", "...", defaults={...}, tasks=("keywords",),
                              task_args=lambda task: {"n_mels": ..., "n_classes": task.n_classes},
                              layouts={"torch": (("NCHW", "1FT"),), "keras": (("NHWC", "FT1"),)}))

    @builder("resnet-kws", "torch")
    def build_torch(**args): ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from edgeprune.errors import EdgepruneError
from edgeprune.models.input_spec import InputSpec
from edgeprune.tasks import Task, get_task

FRAMEWORKS = ("torch", "keras")
KERAS_CONFIG = "keras:config"  # a user's Keras model rebuilt from its own config (model.to_json())


@dataclass
class ModelEntry:
    """One registered architecture.

    tasks: the tasks it serves, the default first. task_args(task) -> builder arguments that follow from the task.
    layouts: per framework, one (layout, axes) per task input, in the task's input order: the layout letters of
        the model's input tensor and the feature letter ("1": unit axis) of each of its non-batch axes.
    output_axes: per framework, the axis letters of the model's output without the batch axis (default: the
        task output's), e.g. {"torch": "FT", "keras": "TF"} for a mask whose Keras twin outputs [N, T, F].
    training: per profile name, overrides of the profile's epochs / batch_size / lr for this model.
    """

    name: str
    description: str
    defaults: dict[str, Any]
    tasks: tuple[str, ...]
    task_args: Callable[[Task], dict[str, Any]]
    layouts: dict[str, tuple[tuple[str, str], ...]]
    output_axes: dict[str, str] = field(default_factory=dict)
    training: dict[str, dict[str, Any]] = field(default_factory=dict)
    builders: dict[str, Callable[..., Any]] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Register an architecture (its builders are added with @builder)."""
    if entry.name in _REGISTRY:
        raise EdgepruneError(f"model '{entry.name}' is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def builder(name: str, framework: str):
    """Decorator: register `fn(**args) -> model` as the `framework` builder of model `name`."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if framework not in FRAMEWORKS:
            raise EdgepruneError(f"unknown framework '{framework}'; expected one of {', '.join(FRAMEWORKS)}")
        _REGISTRY[name].builders[framework] = fn
        return fn

    return wrap


def get_entry(name: str) -> ModelEntry:
    """The registry entry for `name`, or a clear error listing what exists."""
    _load_builtin()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise EdgepruneError(f"unknown model '{name}'; known models: {known}")
    return _REGISTRY[name]


def list_models() -> list[ModelEntry]:
    _load_builtin()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def is_registered(arch: dict[str, Any]) -> bool:
    """Whether an architecture spec names a registered model, not one a user brought (`module:function` or a
    Keras config; see `user_arch`)."""
    return ":" not in str(arch["model"])


def user_arch(model: Any, inputs: list[InputSpec], task: str | Task, builder: str | None = None,
              args: dict[str, Any] | None = None, output_axes: str | None = None) -> dict[str, Any]:
    """The architecture spec of a model edgeprune did not write: how to rebuild it (an importable
    `module:function` called with the JSON `args`, or, for Keras without a builder, the model's own config), the
    task it serves and its inputs. Never a pickle."""
    from edgeprune.frameworks import framework_of

    framework = framework_of(model)
    task = get_task(task)
    if builder is None and framework == "torch":
        raise EdgepruneError("a PyTorch model is rebuilt by a function: give builder='module:function' (and its "
                             "JSON arguments as args) that returns the architecture")
    if builder is not None and (builder.count(":") != 1 or not all(builder.split(":"))):
        raise EdgepruneError(f"builder {builder!r}: expected 'module:function', e.g. 'mymodels:resnet'")
    if len(inputs) != len(task.inputs):
        raise EdgepruneError(f"the {task.name} task has {len(task.inputs)} input(s); {len(inputs)} input spec(s) given")
    arch = {"model": builder or KERAS_CONFIG, "args": dict(args or {}), "task": task.name, "framework": framework,
            "inputs": [s.to_json() for s in inputs], "output_axes": output_axes or task.output.axes}
    if builder is None:
        arch["config"] = model.to_json()
    return arch


def task_of(arch: dict[str, Any]) -> Task:
    """The task of an architecture spec (specs written before tasks existed get the model's default task)."""
    if not is_registered(arch):
        return get_task(arch["task"])
    return get_task(arch.get("task") or get_entry(arch["model"]).tasks[0])


def has_twin(arch: dict[str, Any]) -> bool:
    """Whether the architecture exists in both frameworks (weights then transfer between them)."""
    return is_registered(arch) and len(get_entry(arch["model"]).builders) > 1


def arch_spec(name: str, task: str | Task | None = None, **overrides: Any) -> dict[str, Any]:
    """A complete architecture spec: model name, task, and every builder argument (defaults, then what the task
    implies, then `overrides`)."""
    entry = get_entry(name)
    task = get_task(task or entry.tasks[0])
    if task.name not in entry.tasks:
        raise EdgepruneError(f"model '{name}' serves the task(s) {', '.join(entry.tasks)}, not '{task.name}'")
    implied = entry.task_args(task)
    args = {**entry.defaults, **implied}
    unknown = set(overrides) - set(args)
    if unknown:
        raise EdgepruneError(f"model '{name}' has no argument(s) {sorted(unknown)}; it takes {sorted(args)}")
    fixed = sorted(k for k in set(overrides) & set(implied) if overrides[k] != implied[k])
    if fixed:
        raise EdgepruneError(f"model '{name}': {', '.join(fixed)} follow(s) from the {task.name} task "
                             f"({', '.join(f'{k}={implied[k]}' for k in fixed)}); input sizes and classes are "
                             "defined by the task")
    return {"model": name, "task": task.name, "args": {**args, **overrides}}


def build(spec: dict[str, Any], framework: str) -> Any:
    """Build a fresh model from an architecture spec in `framework` ('torch' or 'keras')."""
    if framework not in FRAMEWORKS:
        raise EdgepruneError(f"unknown framework '{framework}'; expected one of {', '.join(FRAMEWORKS)}")
    if not is_registered(spec):
        return _build_user(spec, framework)
    entry = get_entry(spec["model"])
    if framework not in entry.builders:
        raise EdgepruneError(f"model '{entry.name}' has no {framework} implementation "
                             f"(it has {', '.join(sorted(entry.builders))})")
    args = {**entry.defaults, **spec.get("args", {})}
    return entry.builders[framework](**args)


def input_specs(spec: dict[str, Any], framework: str) -> list[InputSpec]:
    """The inputs of the model an architecture spec builds in `framework`, in the task's input order: shapes from
    the task's features, layouts from the registration (a user's model: the specs it was saved with)."""
    if framework not in FRAMEWORKS:
        raise EdgepruneError(f"unknown framework '{framework}'; expected one of {', '.join(FRAMEWORKS)}")
    if not is_registered(spec):
        return [InputSpec.from_json(d) for d in spec["inputs"]]
    entry = get_entry(spec["model"])
    task = task_of(spec)
    if framework not in entry.layouts:
        raise EdgepruneError(f"model '{entry.name}' has no {framework} implementation")
    specs = []
    for feature, (layout, axes) in zip(task.inputs, entry.layouts[framework], strict=True):
        shape = tuple(1 if a == "1" else feature.shape[feature.axes.index(a)] for a in axes)
        specs.append(InputSpec(shape, layout, name=feature.name, axes=axes, feature_axes=feature.axes,
                               dtype=feature.dtype))
    return specs


def output_axes(spec: dict[str, Any], framework: str) -> str:
    """Axis letters of the model's output (no batch axis) in `framework`."""
    if not is_registered(spec):
        return spec.get("output_axes") or task_of(spec).output.axes
    return get_entry(spec["model"]).output_axes.get(framework) or task_of(spec).output.axes


def input_spec(spec: dict[str, Any], framework: str) -> InputSpec:
    """The input of a single-input model (see `input_specs`)."""
    specs = input_specs(spec, framework)
    if len(specs) != 1:
        raise EdgepruneError(f"model '{spec['model']}' takes {len(specs)} inputs ({', '.join(s.name for s in specs)})")
    return specs[0]


def _build_user(spec: dict[str, Any], framework: str) -> Any:
    """A user's model from its spec: its builder function called with its arguments, or its Keras config."""
    import importlib

    saved = spec.get("framework")
    if saved and saved != framework:
        raise EdgepruneError(f"'{spec['model']}' is a {saved} model edgeprune did not write: it has no {framework} twin")
    if spec["model"] == KERAS_CONFIG:
        import keras

        return keras.models.model_from_json(spec["config"])
    module, _, name = spec["model"].partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise EdgepruneError(f"cannot import the builder '{spec['model']}' ({type(exc).__name__}: {exc}); make its "
                             "module importable (PYTHONPATH) where the checkpoint is loaded") from exc
    return fn(**spec.get("args", {}))


def _load_builtin() -> None:
    # Importing the model modules runs their registrations; frameworks are imported lazily inside the builders.
    from edgeprune.models import dcase_baseline  # noqa: F401
    from edgeprune.models import hf_encoder, resnet_kws, se_crn, speech_encoder  # noqa: F401
