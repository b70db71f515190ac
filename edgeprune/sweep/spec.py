"""The sweep spec: a YAML file naming one checkpoint and the grid (methods x targets x precisions x seeds) to run
on it. Every field is checked before any work, each bad one with a line that names it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError

PRECISIONS = ("fp32", "fp16", "dynamic", "int8")
REQUIRED = ("checkpoint", "methods", "targets")


@dataclass
class SweepSpec:
    """One sweep: every point is score -> prune -> recover -> export -> benchmark of `checkpoint`."""

    checkpoint: str
    methods: list[str]  # scoring criteria, as `edgeprune score --criterion`
    targets: list[str]  # ratio=R (channels removed per layer), params=F or macs=F (fraction of the parent kept)
    precisions: list[str] = field(default_factory=lambda: ["fp32", "int8"])
    seeds: list[int] = field(default_factory=lambda: [0])
    data: str = "synthetic"
    profile: str = "quick"  # data size, and the recovery's epochs unless finetune_epochs says
    layers: list[str] | None = None  # layers to score and prune (default: every prunable one)
    finetune_epochs: int | None = None
    calib: int = 64  # samples for the data-driven criteria and for full-integer int8
    devices: list[str] = field(default_factory=lambda: ["desktop"])
    bench_runs: int = 10
    threads: int | None = None  # threads each step trains and converts on (results depend on it; None: every CPU)

    def __post_init__(self) -> None:
        if self.threads is None:
            from edgeprune.reproduce.steps import default_threads

            self.threads = default_threads()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load_spec(path: Path) -> SweepSpec:
    """Read and check SPEC.yaml (fields and types; `check_against_checkpoint` checks the rest)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise EdgepruneError(f"sweep spec not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise EdgepruneError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise EdgepruneError(f"{path}: expected a mapping of fields ({', '.join(_fields())})")
    unknown = [k for k in raw if k not in _fields()]
    if unknown:
        raise EdgepruneError(f"{path}: unknown field '{unknown[0]}'; fields: {', '.join(_fields())}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise EdgepruneError(f"{path}: field '{missing[0]}' is required")
    where = f"{path}:"
    spec = SweepSpec(
        checkpoint=_text(raw, "checkpoint", where),
        methods=_list(raw, "methods", str, where), targets=_list(raw, "targets", str, where),
        precisions=_list(raw, "precisions", str, where, ["fp32", "int8"]), seeds=_list(raw, "seeds", int, where, [0]),
        data=_text(raw, "data", where, "synthetic"), profile=_text(raw, "profile", where, "quick"),
        layers=_list(raw, "layers", str, where, None), finetune_epochs=_int(raw, "finetune_epochs", where, None),
        calib=_int(raw, "calib", where, 64), devices=_list(raw, "devices", str, where, ["desktop"]),
        bench_runs=_int(raw, "bench_runs", where, 10), threads=_int(raw, "threads", where, None))
    for name, values in (("precisions", spec.precisions),):
        bad = [v for v in values if v not in PRECISIONS]
        if bad:
            raise EdgepruneError(f"{where} {name}: '{bad[0]}' is not a precision; expected some of "
                                 f"{', '.join(PRECISIONS)}")
    for name in ("calib", "bench_runs", "threads", "finetune_epochs"):
        value = getattr(spec, name)
        if value is not None and value < 1:
            raise EdgepruneError(f"{where} {name}: {value} must be at least 1")
    for target in spec.targets:
        parse_target(target, where)
    if min(spec.seeds) < 0:
        raise EdgepruneError(f"{where} seeds: {min(spec.seeds)} is negative")
    if all(d.endswith("-emulated") for d in spec.devices):
        raise EdgepruneError(f"{where} devices: every one is emulated; a sweep measures its metric and latency on a "
                             "device that is not (e.g. desktop), emulated boards only check its outputs")
    for name in ("methods", "targets", "precisions", "seeds", "devices"):
        values = getattr(spec, name)
        if len(set(values)) != len(values):
            raise EdgepruneError(f"{where} {name}: {values} names a value twice")
    return spec


def parse_target(text: str, where: str = "") -> tuple[str, float]:
    """'ratio=0.25' (channels removed per layer), 'params=0.5' or 'macs=0.5' (fraction of the parent kept)."""
    kind, _, value = text.partition("=")
    if kind not in ("ratio", "params", "macs"):
        raise EdgepruneError(f"{where} targets: '{text}' is not a target; expected ratio=R, params=F or macs=F "
                             "(latency budgets need a device's table: use `edgeprune prune --budget latency=F`)")
    try:
        number = float(value)
    except ValueError:
        raise EdgepruneError(f"{where} targets: '{text}': '{value}' is not a number") from None
    if not 0 < number < 1:
        raise EdgepruneError(f"{where} targets: '{text}': the value must be in (0, 1)")
    return kind, number


def target_of(text: str):
    """The pruning Target a spec target names."""
    from edgeprune.pruning.targets import Target

    kind, value = parse_target(text)
    return Target(ratio=value) if kind == "ratio" else Target(budget=(kind, value))


def check_against_checkpoint(spec: SweepSpec, where: str) -> None:
    """The checkpoint exists and is unpruned, the methods are known and apply to it, the layers are its own, the
    devices are known, and every target can be met: each is tried on the checkpoint with L1 scores (how many
    channels a target keeps does not depend on which ones the scores pick)."""
    from edgeprune import checkpoint
    from edgeprune.pruning import api
    from edgeprune.pruning.prune import prune
    from edgeprune.pruning.run import score_checkpoint
    from edgeprune.reproduce.shared import check_devices
    from edgeprune.scoring import get_criterion
    from edgeprune.training.profiles import get_profile

    get_profile(spec.profile)
    for method in spec.methods:
        try:
            get_criterion(method)
        except EdgepruneError as exc:
            raise EdgepruneError(f"{where} methods: {exc}") from None
    check_devices(spec.devices)
    ckpt = checkpoint.load(Path(spec.checkpoint))
    if ckpt.transforms:
        raise EdgepruneError(f"{where} checkpoint: {spec.checkpoint} is already pruned; a sweep starts from an "
                             "unpruned model")
    if len(ckpt.inputs) != 1:
        raise EdgepruneError(f"{where} checkpoint: {spec.checkpoint} has {len(ckpt.inputs)} inputs; sweeps take "
                             "single-input models")
    from edgeprune.reproduce.shared import cached_data
    from edgeprune.training.run import check_data

    try:
        check_data(cached_data(spec.data, spec.profile, ckpt.task.name), ckpt.arch, spec.checkpoint)
    except EdgepruneError as exc:
        raise EdgepruneError(f"{where} data: {exc}") from None
    try:
        scores = score_checkpoint(ckpt, "l1", spec.layers)
    except EdgepruneError as exc:
        raise EdgepruneError(f"{where} layers: {exc}") from None
    examples = api.example_inputs(ckpt.framework, ckpt.arch) if ckpt.framework == "torch" else None
    for text in spec.targets:
        try:
            prune(ckpt.model, examples, target=target_of(text), scores=scores)
        except EdgepruneError as exc:
            raise EdgepruneError(f"{where} targets: '{text}' on {spec.checkpoint}: {exc}") from None


def _fields() -> list[str]:
    return list(SweepSpec.__dataclass_fields__)


OPTIONAL = ("layers", "finetune_epochs", "threads")  # the fields that may be null (their default)


def _text(raw: dict, name: str, where: str, default: Any = ...) -> Any:
    value = raw.get(name, default)
    if value is ...:
        raise EdgepruneError(f"{where} field '{name}' is required")
    if not isinstance(value, str):
        raise EdgepruneError(f"{where} {name}: expected text, got {value!r}")
    return value


def _int(raw: dict, name: str, where: str, default: Any) -> Any:
    value = raw.get(name, default)
    if value is None and name in OPTIONAL:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise EdgepruneError(f"{where} {name}: expected a whole number, got {value!r}")
    return value


def _list(raw: dict, name: str, kind: type, where: str, default: Any = ...) -> Any:
    value = raw.get(name, default)
    if value is ...:
        raise EdgepruneError(f"{where} field '{name}' is required")
    if value is None and name in OPTIONAL:
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise EdgepruneError(f"{where} {name}: expected a non-empty list")
    for item in value:
        if not isinstance(item, kind) or isinstance(item, bool):
            raise EdgepruneError(f"{where} {name}: {item!r} is not {'a whole number' if kind is int else 'text'}")
    return list(value)
