"""What the numbers were measured on: CPU, cores, frequency governor, temperature and throttling, OS, runtimes."""

from __future__ import annotations

import os
import platform
from typing import Any, Dict, Optional

from benchmarks.runtimes import runtime_versions


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _cpu_model() -> str:
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware"):
        for line in info.splitlines():
            if line.startswith(key) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_fingerprint() -> Dict[str, Any]:
    temp = _read("/sys/class/thermal/thermal_zone0/temp")
    # Raspberry Pi firmware reports under-voltage and throttling as a bit field (vcgencmd get_throttled).
    throttled = None
    if os.path.exists("/usr/bin/vcgencmd"):
        out = os.popen("vcgencmd get_throttled 2>/dev/null").read().strip()
        throttled = out.split("=", 1)[-1] if out else None
    return {
        "cpu": _cpu_model(), "machine": platform.machine(), "cores": os.cpu_count(),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "max_freq_khz": _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"),
        "temperature_c": None if temp is None else int(temp) / 1000,
        "throttled": throttled, "os": platform.platform(), "python": platform.python_version(),
        "runtimes": runtime_versions(),
    }
