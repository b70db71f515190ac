"""The emulated aarch64 target: an arm64 Debian sysroot with Python 3.11 and the aarch64 wheels of the runtimes,
built on demand and cached, and the qemu-user command lines that run Python in it.

Nothing on the host changes: the arm64 .debs are fetched by apt-get with a private state directory (its own
sources list, package lists and download cache, no `dpkg --add-architecture`) and unpacked with `dpkg-deb -x`; the
wheels are fetched by pip for the aarch64 platform and unzipped. Needs apt-get, dpkg-deb and Debian's archive
keyring (any Debian host), pip, and qemu-user-static. Measured numbers are in devices/README.md.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

from devices.errors import EmulationError
from devices.profiles import Profile

DEBIAN_RELEASE = "bookworm"  # its python3.11 matches the project's Python, so the wheels' cp311 tags fit
DEBIAN_SOURCES = [
    "http://deb.debian.org/debian {release} main",
    "http://deb.debian.org/debian {release}-updates main",
    "http://deb.debian.org/debian-security {release}-security main",
]
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# python3.11 pulls libc and the rest; libstdc++6 is for the runtimes' C++ extensions, which Debian's python lacks.
DEBS = ["python3.11", "libstdc++6"]
# The same versions as this venv's, so the emulated-vs-native agreement check compares like with like.
RUNTIMES = ["numpy", "ai-edge-litert", "onnxruntime"]
PLATFORMS = ["manylinux_2_27_aarch64", "manylinux_2_28_aarch64", "manylinux2014_aarch64", "manylinux_2_17_aarch64"]
QEMU = "qemu-aarch64-static"

# /proc/cpuinfo identity of each core as the boards report it (MIDR fields and the kernel's HWCAP names): the
# runtimes' CPU detection reads it, and qemu 7.2 would show the x86 host's instead (ai-edge-litert segfaults).
CORES = {
    "cortex-a72": {"variant": "0x0", "part": "0xd08", "revision": 3,
                   "features": "fp asimd evtstrm crc32 cpuid"},
    "cortex-a76": {"variant": "0x4", "part": "0xd0b", "revision": 1,
                   "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                               "lrcpc dcpop asimddp"},
    "cortex-a53": {"variant": "0x0", "part": "0xd03", "revision": 4,
                   "features": "fp asimd evtstrm crc32 cpuid"},
}


def cache_root() -> Path:
    """Where sysroots are kept: $EDGEPRUNE_CACHE/aarch64, else ~/.cache/edgeprune/aarch64 (as the data cache)."""
    return Path(os.environ.get("EDGEPRUNE_CACHE", Path.home() / ".cache" / "edgeprune")) / "aarch64"


@dataclass(frozen=True)
class Sysroot:
    """A finished sysroot: `root` (the unpacked .debs, for qemu -L) and `site` (the wheels, for PYTHONPATH)."""

    path: Path

    @property
    def root(self) -> Path:
        return self.path / "root"

    @property
    def site(self) -> Path:
        return self.path / "site"

    @property
    def python(self) -> Path:
        return self.root / "usr" / "bin" / "python3.11"

    @property
    def info(self) -> dict[str, Any]:
        """What was built and how long it took (build.json)."""
        return json.loads((self.path / "build.json").read_text())


def runtime_pins() -> list[str]:
    """numpy, ai-edge-litert and onnxruntime pinned to the versions installed here (unpinned if not installed)."""
    pins = []
    for name in RUNTIMES:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def sysroot_key(pins: list[str]) -> str:
    """The cache folder name: a change of release or of any runtime version builds a new sysroot."""
    return f"{DEBIAN_RELEASE}-python3.11-" + "-".join(p.replace("==", "") for p in pins)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing), so two builds of one sysroot never race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_sysroot(log: Callable[[str], None] = print, cache: Path | None = None) -> Sysroot:
    """The cached sysroot for this venv's runtime versions, built first if needed (under a minute, about 230 MB)."""
    base = cache or cache_root()
    pins = runtime_pins()
    key = sysroot_key(pins)
    final = base / key
    # A sysroot only ever appears under its final name by a rename after a complete build, so existing = done.
    if final.is_dir():
        return Sysroot(final)
    with _locked(base / f"{key}.lock"):
        if final.is_dir():  # another process finished it while we waited for the lock
            return Sysroot(final)
        for stale in base.glob(f".{key}.tmp-*"):  # left by an interrupted build; nobody else holds the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=base))
        try:
            _build(tmp, pins, log)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return Sysroot(final)


def _run(cmd: list[str], what: str, **kwargs) -> str:
    """Run a build step; a failure becomes one line naming the step and the tool's last words."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as exc:
        raise EmulationError(f"{what}: {cmd[0]} not found ({exc.strerror})") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise EmulationError(f"{what} failed (exit status {proc.returncode}): {last}")
    return proc.stdout


def _apt(state: Path) -> list[str]:
    """apt-get with a private arm64 state: the host's own lists, cache and dpkg status are never touched. The host's
    apt.conf.d still applies (proxies, mirrors' date checks)."""
    return ["apt-get", "-q", "-y",
            "-o", "APT::Architecture=arm64", "-o", "APT::Architectures=arm64",
            "-o", f"Dir::Etc::SourceList={state / 'sources.list'}", "-o", f"Dir::Etc::SourceParts={state / 'empty'}",
            "-o", f"Dir::Etc::PreferencesParts={state / 'empty'}",
            "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::State::status={state / 'status'}",
            "-o", f"Dir::Cache::Archives={state / 'archives'}",
            "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
            # the sandbox user _apt cannot write into root's home, where the cache usually is; and no lock is
            # needed: nothing here is shared with the host's apt (which may be running meanwhile)
            "-o", "APT::Sandbox::User=root", "-o", "Debug::NoLocking=1"]


def _build(tmp: Path, pins: list[str], log: Callable[[str], None]) -> None:
    started = time.time()
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise EmulationError("building the aarch64 sysroot needs apt-get and dpkg-deb (a Debian or Ubuntu host)")
    if not KEYRING.is_file():
        raise EmulationError(f"{KEYRING} not found: apt-get install debian-archive-keyring")
    state = tmp / "apt"
    for sub in ("lists/partial", "archives/partial", "empty"):
        (state / sub).mkdir(parents=True)
    (state / "status").touch()  # an empty dpkg status: apt resolves the whole dependency closure
    (state / "sources.list").write_text("".join(
        f"deb [arch=arm64 signed-by={KEYRING}] {line.format(release=DEBIAN_RELEASE)}\n" for line in DEBIAN_SOURCES))
    log(f"[aarch64] building the arm64 sysroot in {tmp.parent} (Debian {DEBIAN_RELEASE}; once, under a minute)")
    _run(_apt(state) + ["update"], "apt-get update (arm64 package lists)")
    _run(_apt(state) + ["install", "--download-only", "--no-install-recommends", *DEBS],
         f"apt-get download of the arm64 {' '.join(DEBS)}")
    debs = sorted((state / "archives").glob("*.deb"))
    root = tmp / "root"
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}")
    log(f"[aarch64] unpacked {len(debs)} arm64 packages; fetching the aarch64 wheels of {', '.join(pins)}")
    wheels = tmp / "wheels"
    platforms = [arg for plat in PLATFORMS for arg in ("--platform", plat)]
    _run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--only-binary=:all:",
          "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", *platforms, "-d", str(wheels),
          *pins], "pip download of the aarch64 wheels")
    site = tmp / "site"
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)
    # Smoke test without the runtimes (they need the fake cpuinfo and its namespace): Python and numpy start.
    built = Sysroot(tmp)
    probe = _run([*qemu_python(built, "cortex-a53"), "-c",
                  "import platform, numpy; print(platform.machine(), platform.python_version(), numpy.__version__)"],
                 "the sysroot's smoke test under qemu", env=guest_env(built)).split()
    if probe[:1] != ["aarch64"]:
        raise EmulationError(f"the sysroot's Python reports machine {probe[:1]}, expected aarch64")
    shutil.rmtree(state)
    shutil.rmtree(wheels)
    info = {"release": DEBIAN_RELEASE, "debs": [d.name for d in debs], "wheels": pins, "python": probe[1],
            "seconds": round(time.time() - started, 1), "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (tmp / "build.json").write_text(json.dumps(info, indent=1) + "\n")
    log(f"[aarch64] sysroot ready ({info['seconds']} s)")


def _unshare() -> list[str]:
    """A private mount namespace: root makes one directly; anyone else inside a user namespace of their own
    (allowed by default on Debian; refused where unprivileged user namespaces are switched off)."""
    return ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--mount"]


def check_host() -> str:
    """Raise a one-line EmulationError unless this machine can run the emulated target; return qemu's version."""
    if not shutil.which(QEMU):
        raise EmulationError(f"{QEMU} not found: apt-get install qemu-user-static")
    for tool in ("unshare", "mount"):
        if not shutil.which(tool):
            raise EmulationError(f"{tool} not found: apt-get install util-linux mount")
    probe = subprocess.run([*_unshare(), "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise EmulationError("emulated targets need root, or unprivileged user namespaces: qemu 7.2 shows the guest "
                             "this machine's x86 /proc/cpuinfo (ai-edge-litert then crashes), and hiding it needs a "
                             f"private mount namespace ({(probe.stderr.strip() or 'unshare failed').splitlines()[-1]})")
    return _run([QEMU, "--version"], f"{QEMU} --version").splitlines()[0]


def fake_cpuinfo(profile: Profile) -> str:
    """/proc/cpuinfo as the board shows it, one block per core, plus a Model line that says it is emulated (the
    suite's fingerprint reports that line as the CPU)."""
    core = CORES.get(profile.qemu_cpu or "")
    if core is None:
        raise EmulationError(f"no cpuinfo for core '{profile.qemu_cpu}'; known: {', '.join(CORES)}")
    block = ("processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n")
    blocks = "".join(block.format(n=n, **core) for n in range(profile.cores))
    return blocks + f"Model\t\t: {profile.description} (emulated: qemu-aarch64 -cpu {profile.qemu_cpu})\n"


def qemu_python(sysroot: Sysroot, cpu: str) -> list[str]:
    """The command line of the emulated Python (the board's core, never -cpu max: that has SVE2 and fp16)."""
    return [shutil.which(QEMU) or QEMU, "-cpu", cpu, "-L", str(sysroot.root), str(sysroot.python)]


def in_namespace(cpuinfo: Path, command: list[str]) -> list[str]:
    """`command` in a private mount namespace where `cpuinfo` replaces /proc/cpuinfo (the host's is untouched;
    children, such as the suite's per-model workers, see the same)."""
    return [*_unshare(), "sh", "-c", 'mount --bind "$1" /proc/cpuinfo && shift && exec "$@"', "sh", str(cpuinfo),
            *command]


def guest_env(sysroot: Sysroot) -> dict[str, str]:
    """The environment for the emulated Python: the wheels on its path and nothing from this venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PYTHONPATH": str(sysroot.site), "PYTHONNOUSERSITE": "1"}
