"""Models by name. A model is registered once with a builder per framework; its architecture spec is the
builder's keyword arguments, so a checkpoint (weights + JSON spec) rebuilds it, pruned widths included."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from edgeprune.errors import EdgepruneError
from edgeprune.models.input_spec import InputSpec

FRAMEWORKS = ("torch", "keras")


@dataclass
class ModelEntry:
    """One registered architecture: default arguments, builders, and the input it expects."""

    name: str
    description: str
    defaults: dict[str, Any]
    builders: dict[str, Callable[..., Any]] = field(default_factory=dict)
    input_spec: Callable[[dict[str, Any], str], InputSpec] | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, description: str, defaults: dict[str, Any], framework: str):
    """Decorator: register `fn(**arch) -> model` as the `framework` builder of model `name`."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        entry = _REGISTRY.setdefault(name, ModelEntry(name, description, dict(defaults)))
        entry.builders[framework] = fn
        return fn

    return wrap


def register_input(name: str):
    """Decorator: register `fn(args, framework) -> InputSpec`, the input of model `name` built from `args`
    (below the model's builders, which create its entry)."""

    def wrap(fn: Callable[[dict[str, Any], str], InputSpec]) -> Callable[[dict[str, Any], str], InputSpec]:
        _REGISTRY[name].input_spec = fn
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


def arch_spec(name: str, **overrides: Any) -> dict[str, Any]:
    """A complete architecture spec: the model name plus all builder arguments (defaults filled in)."""
    entry = get_entry(name)
    unknown = set(overrides) - set(entry.defaults)
    if unknown:
        raise EdgepruneError(f"model '{name}' has no argument(s) {sorted(unknown)}; it takes {sorted(entry.defaults)}")
    return {"model": name, "args": {**entry.defaults, **overrides}}


def build(spec: dict[str, Any], framework: str) -> Any:
    """Build a fresh model from an architecture spec in `framework` ('torch' or 'keras')."""
    if framework not in FRAMEWORKS:
        raise EdgepruneError(f"unknown framework '{framework}'; expected one of {', '.join(FRAMEWORKS)}")
    entry = get_entry(spec["model"])
    if framework not in entry.builders:
        raise EdgepruneError(f"model '{entry.name}' has no {framework} implementation")
    args = {**entry.defaults, **spec.get("args", {})}
    return entry.builders[framework](**args)


def input_spec(spec: dict[str, Any], framework: str) -> InputSpec:
    """The input of the model an architecture spec builds in `framework` (shape, layout, tensor name)."""
    if framework not in FRAMEWORKS:
        raise EdgepruneError(f"unknown framework '{framework}'; expected one of {', '.join(FRAMEWORKS)}")
    entry = get_entry(spec["model"])
    if entry.input_spec is None:
        raise EdgepruneError(f"model '{entry.name}' registers no input spec; export it with export_model(model, "
                             "InputSpec(...)) instead")
    return entry.input_spec({**entry.defaults, **spec.get("args", {})}, framework)


def _load_builtin() -> None:
    # Importing the model modules runs their @register decorators; frameworks are imported lazily inside them.
    from edgeprune.models import dcase_baseline  # noqa: F401
