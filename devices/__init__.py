"""Target profiles (profiles.toml) and the runners that take the benchmark suite to them: this machine, a board
over SSH, or a board emulated under qemu-aarch64. See devices/README.md."""

from devices.compare import agree, compare_outputs
from devices.errors import DeviceError, EmulationError, ProfileError, RunnerError
from devices.profiles import Profile, emulated, get_profile, load_profiles
from devices.runners import (EmulatedRunner, LocalRunner, Runner, RunOptions, SSHRunner, SSHTarget, device_names,
                             make_runner)

__all__ = ["agree", "compare_outputs", "DeviceError", "EmulationError", "ProfileError", "RunnerError", "Profile",
           "emulated", "get_profile", "load_profiles", "EmulatedRunner", "LocalRunner", "Runner", "RunOptions",
           "SSHRunner", "SSHTarget", "device_names", "make_runner"]
