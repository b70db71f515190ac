#!/usr/bin/env bash
# Prepare a fresh 64-bit Raspberry Pi OS board for `edgeprune bench --device rpi4|rpi5|zero2w|ssh://...`.
# Run it ON the board, as the user edgeprune logs in as (pi by default):
#   bash provision_rpi.sh            venv ~/edgeprune/venv with numpy, ai-edge-litert, onnxruntime; then the checks
#   bash provision_rpi.sh --check    only the checks: 64-bit OS, CPU governor, throttling, temperature, cooling
#   bash provision_rpi.sh numpy==2.4.6 ai-edge-litert==2.3.0 onnxruntime==1.31.1    pin them (match the desktop)
# EDGEPRUNE_VENV=DIR puts the venv elsewhere (then pass --python DIR/bin/python to edgeprune bench).
# Installs python3-venv with sudo apt-get if it is missing. Safe to re-run. Exit status 1 on an error; warnings
# (governor, throttling, heat) are printed and do not fail it.
# The same venv times latency tables: on the HOST, `edgeprune latency-table CKPT --device rpi4` builds the layer
# grid there, copies it here over ssh, times it with `python -m benchmarks.grid` and caches the table per board.
set -euo pipefail

VENV="${EDGEPRUNE_VENV:-$HOME/edgeprune/venv}"
CHECK_ONLY=0
PACKAGES=()
for arg in "$@"; do
  case "$arg" in
    --check) CHECK_ONLY=1 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "provision_rpi.sh: error: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) PACKAGES+=("$arg") ;;
  esac
done
if [ "${#PACKAGES[@]}" -eq 0 ]; then
  PACKAGES=(numpy ai-edge-litert onnxruntime)
fi

WARNINGS=0
warn() { echo "WARNING: $*" >&2; WARNINGS=$((WARNINGS + 1)); }
die() { echo "provision_rpi.sh: error: $*" >&2; exit 1; }

# --- the OS must be 64-bit: ai-edge-litert and onnxruntime publish aarch64 wheels, no armv7l ones ---
arch="$(uname -m)"
[ "$arch" = aarch64 ] || die "this is a $arch system: install the 64-bit Raspberry Pi OS (no armv7l wheels exist)"
model="$(tr -d '\0' </proc/device-tree/model 2>/dev/null || echo 'unknown board')"
case "$model" in
  *"Raspberry Pi 5"*) board=rpi5 ;;
  *"Raspberry Pi 4"*) board=rpi4 ;;
  *"Zero 2 W"*) board=zero2w ;;
  *) board=rpi4; warn "board '$model' has no profile of its own; the rpi4 profile's defaults will be used" ;;
esac
echo "board: $model ($arch, $(nproc) cores, profile $board)"

# --- the Python environment the runner logs in to ---
if [ "$CHECK_ONLY" -eq 0 ]; then
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    echo "installing python3-venv (sudo apt-get)"
    sudo apt-get update -q
    sudo apt-get install -y -q python3-venv python3-pip
  fi
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' || die "Python 3.9+ needed, found $(python3 -V)"
  if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip
  echo "installing ${PACKAGES[*]} into $VENV"
  "$VENV/bin/python" -m pip install -q "${PACKAGES[@]}"
fi
if [ -x "$VENV/bin/python" ]; then
  # the suite needs numpy and a runtime per format; importing the interpreter catches a broken wheel early
  "$VENV/bin/python" - <<'PY' || die "the venv's runtimes do not import (see above); re-run without --check"
from importlib.metadata import version

import numpy  # noqa: F401
import onnxruntime  # noqa: F401
from ai_edge_litert.interpreter import Interpreter  # noqa: F401

print("runtimes: " + ", ".join(f"{d} {version(d)}" for d in ("numpy", "ai-edge-litert", "onnxruntime")))
PY
else
  warn "no venv at $VENV yet: run without --check to create it"
fi

# --- CPU frequency governor: anything but performance ramps the clock during a run and blurs latencies ---
governors="$(cat /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor 2>/dev/null | sort -u | tr '\n' ' ' || true)"
governors="${governors% }"
if [ -z "$governors" ]; then
  warn "no cpufreq governor found; frequencies are unknown"
elif [ "$governors" != performance ]; then
  warn "CPU governor is '$governors', not performance: latencies include clock ramp-up. For the session:
    echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"
else
  echo "governor: performance"
fi

# --- throttling and heat: an under-volted or hot Pi slows down mid-run ---
if command -v vcgencmd >/dev/null 2>&1; then
  throttled="$(vcgencmd get_throttled | cut -d= -f2)"
  if [ "$((throttled))" -ne 0 ]; then
    reasons=""
    for entry in 0x1:"under-voltage now" 0x2:"ARM frequency capped now" 0x4:"throttled now" \
      0x8:"soft temperature limit now" 0x10000:"under-voltage since boot" 0x20000:"frequency capped since boot" \
      0x40000:"throttled since boot" 0x80000:"soft temperature limit since boot"; do
      if [ "$((throttled & ${entry%%:*}))" -ne 0 ]; then reasons="$reasons, ${entry#*:}"; fi
    done
    warn "get_throttled=$throttled (${reasons#, }): use the official power supply and cooling; reboot to clear"
  else
    echo "throttling: none since boot (get_throttled=$throttled)"
  fi
  temp="$(vcgencmd measure_temp | sed -E "s/temp=([0-9.]+).*/\1/")"
else
  warn "vcgencmd not found: under-voltage and throttling cannot be checked (apt-get install libraspberrypi-bin)"
  temp="$(awk '{ printf "%.1f", $1 / 1000 }' /sys/class/thermal/thermal_zone0/temp 2>/dev/null || echo unknown)"
fi
echo "temperature: $temp C"
if [ "$temp" != unknown ] && [ "${temp%.*}" -ge 70 ]; then
  warn "the SoC is at $temp C before any load: it throttles from 80-85 C; add cooling or let it cool down"
fi
fans="$(grep -l -i fan /sys/class/thermal/cooling_device*/type 2>/dev/null | wc -l)"
if [ "$fans" -gt 0 ]; then
  echo "cooling: fan present"
else
  echo "cooling: no fan reported (a heatsink, or a fan the kernel does not see, is fine: watch get_throttled)"
fi

echo
if [ "$WARNINGS" -gt 0 ]; then
  echo "$WARNINGS warning(s) above: results will record them (the suite's fingerprint reads governor and throttling)"
fi
echo "ready; on the desktop:"
echo "  edgeprune bench BUNDLE --device ssh://$(whoami)@$(hostname).local --board $board --python $VENV/bin/python"
