"""A non-editable install carries what an installed edgeprune finds by import: the benchmark suite and devices/
(with its profiles and board script), never the committed results."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_the_suite_and_the_device_profiles(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("edgeprune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("edgeprune/cli.py", "edgeprune/__main__.py", "edgeprune/tasks/enhancement.py",
                   "benchmarks/__main__.py", "benchmarks/metrics.py", "benchmarks/arrays.py", "benchmarks/worker.py",
                   "devices/runners.py", "devices/profiles.toml", "devices/provision_rpi.sh"):
        assert needed in names, needed
    assert not [n for n in names if n.startswith("benchmarks/results/")]
    assert not [n for n in names if n.startswith("tests/")]
