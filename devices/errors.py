"""The one exception family of devices/: every message is a single line that says what failed and what to do."""

from __future__ import annotations

from pathlib import Path


class DeviceError(Exception):
    """A target that cannot be named, reached, built or run."""


class ProfileError(DeviceError):
    """An unknown profile or device name, or a malformed profiles.toml."""


class EmulationError(DeviceError):
    """The emulated aarch64 target cannot be set up on this machine (missing qemu, not root, failed download)."""


class RunnerError(DeviceError):
    """The suite could not run on the target. `result` is the result file written for the record (marked failed)."""

    def __init__(self, message: str, result: Path | None = None) -> None:
        super().__init__(message)
        self.result = result
