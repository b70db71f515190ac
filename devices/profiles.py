"""Target profiles, read from profiles.toml beside this file: the data lives there, this module only types it."""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from devices.errors import ProfileError

PROFILES_FILE = Path(__file__).with_name("profiles.toml")


@dataclass(frozen=True)
class SSHDefaults:
    """How a board is reached when the command line does not say: host, user, port, and the Python to run."""

    host: str | None = None
    user: str = "pi"
    port: int = 22
    python: str = "python3"


@dataclass(frozen=True)
class Profile:
    """One target. `threads`, `subset`, `runs`, `xnnpack`, `min_seconds` and `warmup_seconds` are the defaults of
    `python -m benchmarks` on it; `emulated` is True for the qemu variant of a board."""

    name: str
    description: str
    arch: str
    cores: int
    threads: tuple[int, ...]
    qemu_cpu: str | None = None
    subset: int | None = None
    runs: int = 50
    xnnpack: str = "on,off"
    min_seconds: float = 1.0
    warmup_seconds: float = 0.5
    ssh: SSHDefaults | None = None
    emulated: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, recorded in every result file."""
        return asdict(self)


def _read(path: Path = PROFILES_FILE) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"{path}: cannot be read ({exc})") from exc


def _profile(name: str, raw: dict[str, Any]) -> Profile:
    try:
        cores = (os.cpu_count() or 1) if raw["cores"] == "auto" else int(raw["cores"])
        # dict.fromkeys: "all" on a 1-core machine must not run thread count 1 twice
        threads = tuple(dict.fromkeys(cores if t == "all" else int(t) for t in raw["threads"]))
        ssh = SSHDefaults(**raw["ssh"]) if "ssh" in raw else None
        return Profile(name=name, description=raw["description"], arch=raw["arch"], cores=cores, threads=threads,
                       qemu_cpu=raw.get("qemu_cpu"), subset=raw.get("subset"), runs=int(raw.get("runs", 50)),
                       xnnpack=raw.get("xnnpack", "on,off"), ssh=ssh)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"{PROFILES_FILE}: profile [{name}] is malformed ({type(exc).__name__}: {exc})") from exc


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, Profile]:
    """Every board profile by name (the [emulation] table is not a profile: see `emulated`)."""
    return {name: _profile(name, raw) for name, raw in _read(path).items() if name != "emulation"}


def get_profile(name: str) -> Profile:
    """The profile called `name`, or a ProfileError listing the known ones."""
    profiles = load_profiles()
    if name not in profiles:
        raise ProfileError(f"unknown device profile '{name}'; known: {', '.join(profiles)}")
    return profiles[name]


def emulated(profile: Profile) -> Profile:
    """The qemu variant of a board: same core and cores, the [emulation] table's run defaults."""
    if not profile.qemu_cpu:
        raise ProfileError(f"profile '{profile.name}' has no qemu_cpu: it cannot be emulated")
    over = _read()["emulation"]
    return replace(profile, name=f"{profile.name}-emulated", emulated=True, threads=tuple(over["threads"]),
                   subset=over["subset"], runs=over["runs"], xnnpack=over["xnnpack"],
                   min_seconds=over["min_seconds"], warmup_seconds=over["warmup_seconds"])
