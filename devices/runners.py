"""Three ways to run the benchmark suite (`python -m benchmarks`) on a target, behind one interface:

    runner = make_runner("rpi4-emulated")     # or "desktop", "rpi4", "ssh://pi@192.168.1.20:22"
    result = runner.run([Path("export/ck")], Path("X_test.npy"), Path("Y_test.npy"), RunOptions(Path("runs/ck")))

Each writes what the suite writes (STEM.json, STEM.md, STEM.csv) plus STEM.outputs/ (every model's outputs on the
test clips, for `devices.compare`), and adds a "runner" section to STEM.json: how and where it ran, the profile,
and whether the timings are emulated. A target that cannot run the suite at all (unreachable, no Python, numpy
or runtime there, no qemu) gets a STEM.json marked failed and a RunnerError with one line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit

import benchmarks
from devices import aarch64
from devices.errors import DeviceError, ProfileError, RunnerError
from devices.profiles import Profile, emulated, get_profile, load_profiles

# The suite's package, wherever it is installed (a checkout, or site-packages beside devices/); `python -m
# benchmarks` runs from the folder that holds it.
BENCHMARKS = Path(benchmarks.__file__).resolve().parent
REPO = BENCHMARKS.parent
MODEL_SUFFIXES = (".tflite", ".onnx")
Log = Callable[[str], None]


@dataclass(frozen=True)
class RunOptions:
    """What to run and where the results go. None takes the profile's default; `subset=0` means every clip."""

    out: Path
    threads: tuple[int, ...] | None = None
    xnnpack: str | None = None
    subset: int | None = None
    runs: int | None = None
    min_seconds: float | None = None
    warmup_seconds: float | None = None
    timeout: float = 900.0


def suite_args(profile: Profile, options: RunOptions, models: list[str], test_x: str | None, test_y: str | None,
               out: str, outputs: str) -> list[str]:
    """The suite's command-line arguments (paths as the target sees them), profile defaults filled in. `test_x` is
    an .npz of every input, the targets and the metric's data (--test-data), or a features .npy (--test-x)."""
    pick = lambda value, default: default if value is None else value  # noqa: E731
    args = [*models, "--threads", ",".join(str(t) for t in pick(options.threads, profile.threads)),
            "--xnnpack", pick(options.xnnpack, profile.xnnpack), "--runs", str(pick(options.runs, profile.runs)),
            "--min-seconds", str(pick(options.min_seconds, profile.min_seconds)),
            "--warmup-seconds", str(pick(options.warmup_seconds, profile.warmup_seconds)),
            "--timeout", str(options.timeout), "--out", out, "--save-outputs", outputs]
    subset = pick(options.subset, profile.subset)
    if subset:
        args += ["--subset", str(subset)]
    if test_x:
        args += ["--test-data" if str(test_x).endswith(".npz") else "--test-x", test_x]
    if test_y:
        args += ["--test-y", test_y]
    return args


def _remote_name(test_x: Path | str, kind: str) -> str:
    """Where the test data goes on a board: test.npz (every input) or X_test.npy (features)."""
    return "test.npz" if str(test_x).endswith(".npz") else f"{kind}_test.npy"


def _check_models(bundles: Iterable[Path]) -> list[Path]:
    """The bundles (folders) and model files, each checked to exist and hold something the suite runs."""
    checked = []
    for path in map(Path, bundles):
        if path.is_dir():
            if not any(p.suffix in MODEL_SUFFIXES for p in path.iterdir()):
                raise DeviceError(f"{path}: no .tflite or .onnx file in this folder")
        elif not path.is_file():
            raise DeviceError(f"{path}: no such bundle or model file")
        checked.append(path)
    return checked


def _formats(bundles: list[Path]) -> set[str]:
    files = [p for b in bundles for p in (b.iterdir() if b.is_dir() else [b])]
    return {p.suffix for p in files if p.suffix in MODEL_SUFFIXES}


def _stream(lines: Iterable[str], log: Log, keep: int = 20) -> deque[str]:
    """Echo the suite's progress as it comes; keep the last lines for an error message."""
    tail: deque[str] = deque(maxlen=keep)
    for line in lines:
        line = line.rstrip("\n")
        log(line)
        if line.strip():
            tail.append(line.strip())
    return tail


class Runner(ABC):
    """Runs the suite on one target described by a profile."""

    kind = ""

    def __init__(self, profile: Profile, log: Log = print) -> None:
        self.profile, self.log = profile, log
        self.details: dict[str, Any] = {}  # what this runner adds to the result's "runner" section

    @property
    def target(self) -> str:
        """The target's name in messages and results."""
        return self.profile.name

    def run(self, bundles: list[Path], test_x: Path | None, test_y: Path | None, options: RunOptions) -> Path:
        """Run the suite on the target; return STEM.json (the suite's result plus a "runner" section). Models that
        fail are marked failed inside it; a target that cannot run the suite raises RunnerError after writing a
        STEM.json marked failed."""
        stem = Path(options.out)
        result, outputs = Path(f"{stem}.json"), Path(f"{stem}.outputs")
        stem.parent.mkdir(parents=True, exist_ok=True)
        # an old result left in place would look like this run's if this one fails before writing
        for old in (result, Path(f"{stem}.md"), Path(f"{stem}.csv")):
            old.unlink(missing_ok=True)
        shutil.rmtree(outputs, ignore_errors=True)
        started = time.time()
        try:
            models = _check_models(bundles)
            for path in (test_x, test_y):
                if path is not None and not Path(path).is_file():
                    raise DeviceError(f"{path}: test file not found")
            status, tail = self._execute(models, test_x, test_y, options, stem, outputs)
            if not result.is_file():
                last = tail[-1] if tail else "no output"
                raise RunnerError(f"{self.target}: the suite wrote no results (exit status {status}): {last}")
        except DeviceError as exc:
            failed = {"schema": 2, "failed": True, "error": str(exc), "results": []}
            self._write(result, outputs, failed, started, None)
            raise RunnerError(str(exc), result) from exc
        self._write(result, outputs, json.loads(result.read_text()), started, status)
        return result

    def _write(self, path: Path, outputs: Path, data: dict[str, Any], started: float, status: int | None) -> None:
        """Add the runner section (and where the outputs are, here) to a result, atomically."""
        data.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        data["emulated"] = self.profile.emulated
        data["outputs_dir"] = str(outputs.resolve()) if outputs.is_dir() else None
        data["runner"] = {"kind": self.kind, "target": self.target, "emulated": self.profile.emulated,
                          "exit_status": status, "seconds": round(time.time() - started, 1),
                          "profile": self.profile.as_dict(), **self.details}
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)

    def time_grid(self, folder: Path, out: Path, rounds: int = 8, block: int = 30, threads: int = 1) -> dict[str, Any]:
        """Time every .tflite in `folder` on the target (`python -m benchmarks.grid`); write and return its JSON."""
        raise RunnerError(f"{self.target}: latency grids are timed on the target itself (desktop or a board over "
                          "ssh); an emulated board's timings are not latency")

    @staticmethod
    def _grid_args(rounds: int, block: int, threads: int) -> list[str]:
        return ["--rounds", str(rounds), "--block", str(block), "--threads", str(threads)]

    @abstractmethod
    def _execute(self, models: list[Path], test_x: Path | None, test_y: Path | None, options: RunOptions,
                 stem: Path, outputs: Path) -> tuple[int, deque[str]]:
        """Run the suite so that it leaves STEM.json, STEM.md, STEM.csv and STEM.outputs/ here; return its exit
        status and last lines of output."""


class LocalRunner(Runner):
    """This machine: `python -m benchmarks` in a subprocess of this venv's Python."""

    kind = "local"

    @contextmanager
    def _python(self) -> Iterator[tuple[list[str], dict[str, str] | None, list[str]]]:
        """The command that starts the suite's Python, its environment (None: inherit) and extra suite args."""
        yield [sys.executable], None, []

    def _execute(self, models, test_x, test_y, options, stem, outputs):
        args = suite_args(self.profile, options, [str(m.resolve()) for m in models],
                          test_x and str(Path(test_x).resolve()), test_y and str(Path(test_y).resolve()),
                          str(stem.resolve()), str(outputs.resolve()))
        with self._python() as (python, env, extra):
            proc = subprocess.Popen([*python, "-m", "benchmarks", *args, *extra], cwd=REPO, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
            assert proc.stdout is not None
            with proc:
                tail = _stream(proc.stdout, self.log)
            return proc.returncode, tail


    def time_grid(self, folder, out, rounds=8, block=30, threads=1):
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "benchmarks.grid", str(Path(folder).resolve()), "--out",
                               str(out.resolve()), *self._grid_args(rounds, block, threads)], cwd=REPO, text=True,
                              capture_output=True)
        if proc.returncode != 0 or not out.is_file():
            last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise RunnerError(f"{self.target}: the latency grid did not run: {last}")
        return json.loads(out.read_text())


class EmulatedRunner(LocalRunner):
    """A board emulated here: the suite under qemu-aarch64 with the board's core, in the cached arm64 sysroot.
    Outputs are the board's; timings are not (hundreds of times slower), so they are flagged emulated everywhere."""

    kind = "emulated"

    def time_grid(self, folder, out, rounds=8, block=30, threads=1):
        return Runner.time_grid(self, folder, out, rounds, block, threads)

    @contextmanager
    def _python(self):
        qemu = aarch64.check_host()
        sysroot = aarch64.ensure_sysroot(self.log)
        python = aarch64.qemu_python(sysroot, self.profile.qemu_cpu or "")
        self.details = {"qemu": qemu, "qemu_cpu": self.profile.qemu_cpu, "sysroot": str(sysroot.path),
                        "note": "emulated timings: hundreds of times slower than the board; never device latency"}
        with tempfile.TemporaryDirectory(prefix="edgeprune-cpuinfo-") as tmp:
            cpuinfo = Path(tmp) / "cpuinfo"
            cpuinfo.write_text(aarch64.fake_cpuinfo(self.profile))
            # The suite starts one worker per model; qemu-user cannot re-exec itself, so the suite is told the
            # emulator's command line for them (the namespace and its cpuinfo are inherited).
            yield (aarch64.in_namespace(cpuinfo, python), aarch64.guest_env(sysroot),
                   ["--emulated", "--worker-python", shlex.join(python)])


@dataclass(frozen=True)
class SSHTarget:
    """Where a board is and how to log in: key authentication only (a password prompt would hang a batch run)."""

    host: str
    user: str
    port: int = 22
    key: Path | None = None
    python: str = "python3"

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"


def _remote(path: str) -> str:
    """A shell word for a remote path; a leading ~/ stays expandable (the profile's Python is ~/edgeprune/...)."""
    return '"$HOME"/' + shlex.quote(path[2:]) if path.startswith("~/") else shlex.quote(path)


# Run on the board before anything is copied: which Python it is and what it can import.
_PROBE = ("import importlib.util as u, json, platform; print(json.dumps({'python': platform.python_version(), "
          "'machine': platform.machine(), 'have': [m for m in ('numpy', 'ai_edge_litert', 'tflite_runtime', "
          "'tensorflow', 'onnxruntime') if u.find_spec(m)]}))")


class SSHRunner(Runner):
    """A board over SSH (paramiko): copy benchmarks/, the bundles and the test arrays to a temporary folder there,
    run the suite with the board's Python, copy the results back, remove the folder."""

    kind = "ssh"

    def __init__(self, profile: Profile, target: SSHTarget, log: Log = print, connect_timeout: float = 10.0) -> None:
        super().__init__(profile, log)
        self.ssh, self.connect_timeout = target, connect_timeout

    @property
    def target(self) -> str:
        return self.ssh.url

    def _connect(self):
        import paramiko

        client = paramiko.SSHClient()
        client.load_system_host_keys()  # a board whose key changed is refused (BadHostKeyException)
        client.set_missing_host_key_policy(_NoteNewHost(self.log, self.details))
        key = str(self.ssh.key) if self.ssh.key else None
        try:
            client.connect(self.ssh.host, port=self.ssh.port, username=self.ssh.user, key_filename=key,
                           look_for_keys=key is None, allow_agent=key is None, timeout=self.connect_timeout,
                           banner_timeout=self.connect_timeout, auth_timeout=self.connect_timeout)
        except paramiko.AuthenticationException:
            tried = key or "the ssh agent and ~/.ssh keys"
            raise RunnerError(f"{self.target}: authentication failed for {self.ssh.user} with {tried} "
                              "(install the public key there: ssh-copy-id)") from None
        except paramiko.BadHostKeyException:
            raise RunnerError(f"{self.target}: host key differs from ~/.ssh/known_hosts (if the board was reinstalled, "
                              f"ssh-keygen -R {self.ssh.host})") from None
        except socket.gaierror as exc:
            raise RunnerError(f"cannot reach {self.target}: unknown host ({exc.strerror})") from None
        except (OSError, paramiko.SSHException) as exc:  # refused, timed out, no route; NoValidConnectionsError
            # NoValidConnectionsError holds one error per address tried: their reasons say more than its message
            errors = list(getattr(exc, "errors", {}).values()) or [exc]
            reason = "; ".join(sorted({e.strerror or str(e) or type(e).__name__ for e in errors}))
            raise RunnerError(f"cannot reach {self.target}: {reason}") from None
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(30)  # a long board run must not lose an idle connection
        return client

    def _exec(self, client, command: str, stream: bool = False) -> tuple[int, deque[str]]:
        """Run a shell command there; stderr is merged into stdout. Stream it to the log if asked."""
        channel = client.get_transport().open_session()
        channel.set_combine_stderr(True)
        channel.exec_command(command)
        lines = (raw.decode("utf-8", "replace") for raw in channel.makefile("rb"))
        tail = _stream(lines, self.log if stream else (lambda line: None))
        return channel.recv_exit_status(), tail

    def _preflight(self, client, formats: set[str]) -> None:
        """One clear error before any copying if the board's Python cannot run these models."""
        python = self.ssh.python
        status, out = self._exec(client, f"{_remote(python)} -c {shlex.quote(_PROBE)}")
        if status != 0:
            last = out[-1] if out else f"exit status {status}"
            raise RunnerError(f"{self.target}: {python} cannot run there ({last}); run devices/provision_rpi.sh on "
                              f"the board or pass --python")
        try:
            probe = json.loads(out[-1])  # the last line: a login script may print before it
        except (IndexError, ValueError):
            raise RunnerError(f"{self.target}: {python} printed no probe result ({' '.join(out)[-200:]})") from None
        self.details.update(remote_python=probe["python"], remote_machine=probe["machine"])
        if probe["machine"] != self.profile.arch:
            self.log(f"[ssh] note: {self.target} is {probe['machine']}, profile '{self.profile.name}' is "
                     f"{self.profile.arch}: pass --board to use the right profile's defaults")
        if tuple(int(v) for v in probe["python"].split(".")[:2]) < (3, 9):
            raise RunnerError(f"{self.target}: {python} is Python {probe['python']}; the suite needs 3.9 or newer")
        have, missing = set(probe["have"]), []
        if "numpy" not in have:
            missing.append("numpy")
        if ".tflite" in formats and not have & {"ai_edge_litert", "tflite_runtime", "tensorflow"}:
            missing.append("a TFLite runtime (ai-edge-litert)")
        if ".onnx" in formats and "onnxruntime" not in have:
            missing.append("onnxruntime")
        if missing:
            raise RunnerError(f"{self.target}: {python} there has no {', '.join(missing)}; run "
                              f"devices/provision_rpi.sh on the board (or pass --python)")

    def _execute(self, models, test_x, test_y, options, stem, outputs):
        import paramiko

        client = self._connect()
        try:
            return self._session(client, models, test_x, test_y, options, stem, outputs)
        except (OSError, paramiko.SSHException) as exc:  # the connection dropped, or the board's disk is full
            raise RunnerError(f"{self.target}: {type(exc).__name__}: {exc}") from None
        finally:
            client.close()

    def time_grid(self, folder, out, rounds=8, block=30, threads=1):
        import paramiko

        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        client = self._connect()
        try:
            self._preflight(client, {".tflite"})
            status, lines = self._exec(client, "mktemp -d /tmp/edgeprune-grid.XXXXXX")
            if status != 0 or not lines:
                raise RunnerError(f"{self.target}: cannot make a temporary folder there ({' '.join(lines)})")
            remote = lines[-1]
            try:
                sftp = client.open_sftp()
                sftp.mkdir(f"{remote}/benchmarks")
                for path in sorted(BENCHMARKS.glob("*.py")):
                    sftp.put(str(path), f"{remote}/benchmarks/{path.name}")
                sftp.mkdir(f"{remote}/grid")
                for path in sorted(Path(folder).glob("*.tflite")):
                    sftp.put(str(path), f"{remote}/grid/{path.name}")
                args = ["grid", "--out", "grid.json", *self._grid_args(rounds, block, threads)]
                status, tail = self._exec(client, f"cd {shlex.quote(remote)} && {_remote(self.ssh.python)} -m "
                                                  f"benchmarks.grid {shlex.join(args)}", stream=True)
                if status != 0:
                    raise RunnerError(f"{self.target}: the latency grid did not run: "
                                      f"{tail[-1] if tail else f'exit status {status}'}")
                tmp = out.with_name(f".{out.name}.tmp")
                sftp.get(f"{remote}/grid.json", str(tmp))
                os.replace(tmp, out)
            finally:
                self._exec(client, f"rm -rf {shlex.quote(remote)}")
        except (OSError, paramiko.SSHException) as exc:
            raise RunnerError(f"{self.target}: {type(exc).__name__}: {exc}") from None
        finally:
            client.close()
        return json.loads(out.read_text())

    def _session(self, client, models, test_x, test_y, options, stem, outputs) -> tuple[int, deque[str]]:
        """Everything between logging in and out: check, copy, run, copy back, clean up."""
        self._preflight(client, _formats(models))
        status, out = self._exec(client, "mktemp -d /tmp/edgeprune-bench.XXXXXX")
        if status != 0 or not out:
            raise RunnerError(f"{self.target}: cannot make a temporary folder there ({' '.join(out)})")
        remote = out[-1]
        self.details["remote_dir"] = remote
        try:
            sftp = client.open_sftp()
            names = self._push(sftp, remote, models, test_x, test_y)
            args = suite_args(self.profile, options, names, test_x and f"data/{_remote_name(test_x, 'X')}",
                              test_y and "data/Y_test.npy", "results/run", "results/outputs")
            command = f"cd {shlex.quote(remote)} && {_remote(self.ssh.python)} -m benchmarks {shlex.join(args)}"
            status, tail = self._exec(client, command, stream=True)
            self._pull(sftp, remote, stem, outputs)
            return status, tail
        finally:
            self._exec(client, f"rm -rf {shlex.quote(remote)}")

    def _push(self, sftp, remote: str, models: list[Path], test_x: Path | None, test_y: Path | None) -> list[str]:
        """Copy the suite (without results/), the bundles and the test arrays; return the models' remote paths."""
        sftp.mkdir(f"{remote}/benchmarks")
        for path in sorted(BENCHMARKS.glob("*.py")):  # the suite is flat; results/ and __pycache__ stay here
            sftp.put(str(path), f"{remote}/benchmarks/{path.name}")
        sftp.mkdir(f"{remote}/bundles")
        sftp.mkdir(f"{remote}/data")
        names: list[str] = []
        for model in models:
            # keep the bundle folder's name (results and comparisons match models by bundle/file)
            folder = model.resolve() if model.is_dir() else model.resolve().parent
            name, n = folder.name, 1
            while any(existing.split("/")[1] == name for existing in names):
                n += 1
                name = f"{folder.name}-{n}"
            sftp.mkdir(f"{remote}/bundles/{name}")
            files = sorted(p for p in model.iterdir() if p.is_file()) if model.is_dir() else [model]
            for path in files:
                sftp.put(str(path), f"{remote}/bundles/{name}/{path.name}")
            names.append(f"bundles/{name}" + ("" if model.is_dir() else f"/{model.name}"))
        for local, there in ((test_x, test_x and _remote_name(test_x, "X")), (test_y, "Y_test.npy")):
            if local:
                sftp.put(str(local), f"{remote}/data/{there}")
        return names

    def _pull(self, sftp, remote: str, stem: Path, outputs: Path) -> None:
        """Copy back what the suite wrote (nothing, if it wrote nothing)."""
        for suffix in (".json", ".md", ".csv"):
            try:
                sftp.get(f"{remote}/results/run{suffix}", f"{stem}{suffix}")
            except FileNotFoundError:
                pass
        try:
            files = sftp.listdir(f"{remote}/results/outputs")
        except FileNotFoundError:
            return
        outputs.mkdir(parents=True, exist_ok=True)
        for name in files:
            sftp.get(f"{remote}/results/outputs/{name}", str(outputs / name))


class _NoteNewHost:
    """Trust a board's host key on first use, and say so with its fingerprint (paramiko's policy interface)."""

    def __init__(self, log: Log, details: dict[str, Any]) -> None:
        self.log, self.details = log, details

    def missing_host_key(self, client, hostname: str, key) -> None:
        digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
        fingerprint = f"{key.get_name()} SHA256:{digest}"
        self.details["host_key"] = fingerprint
        self.log(f"[ssh] note: {hostname} is not in ~/.ssh/known_hosts; accepting its key {fingerprint}")


def device_names() -> list[str]:
    """Every --device name: the profiles, the emulated boards, and ssh://user@host[:port]."""
    profiles = load_profiles()
    return [*profiles, *(f"{n}-emulated" for n, p in profiles.items() if p.qemu_cpu), "ssh://user@host[:port]"]


def make_runner(device: str, board: str | None = None, key: Path | None = None, python: str | None = None,
                log: Log = print) -> Runner:
    """The runner for a --device name: `desktop` (local), `BOARD-emulated` (qemu), `BOARD` (ssh to the profile's
    host) or `ssh://user@host[:port]` (ssh; `board` names its profile, default rpi4). `key` and `python` override
    the profile's ssh defaults."""
    if device.startswith("ssh://"):
        url = urlsplit(device)
        if not url.hostname:
            raise ProfileError(f"--device {device}: expected ssh://user@host[:port]")
        try:
            port = url.port
        except ValueError:
            raise ProfileError(f"--device {device}: the port must be a number") from None
        profile = get_profile(board or "rpi4")
        return SSHRunner(profile, _ssh_target(profile, url.hostname, url.username, port, key, python), log)
    if board is not None:
        raise ProfileError(f"--board applies to ssh:// devices; '{device}' names its profile already")
    if device.endswith("-emulated"):
        return EmulatedRunner(emulated(get_profile(device[: -len("-emulated")])), log)
    profiles = load_profiles()
    if device not in profiles:
        raise ProfileError(f"unknown device '{device}'; known: {', '.join(device_names())}")
    profile = profiles[device]
    if profile.ssh is None:
        if key or python:
            raise ProfileError(f"--key and --python apply to boards reached over ssh, not '{device}'")
        return LocalRunner(profile, log)
    return SSHRunner(profile, _ssh_target(profile, None, None, None, key, python), log)


def _ssh_target(profile: Profile, host: str | None, user: str | None, port: int | None, key: Path | None,
                python: str | None) -> SSHTarget:
    defaults = profile.ssh
    host = host or (defaults.host if defaults else None)
    if not host:
        raise ProfileError(f"profile '{profile.name}' has no ssh host: use --device ssh://user@host")
    return SSHTarget(host=host, user=user or (defaults.user if defaults else os.environ.get("USER", "root")),
                     port=port or (defaults.port if defaults else 22), key=key,
                     python=python or (defaults.python if defaults else "python3"))
