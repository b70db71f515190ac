"""`edgeprune bench`: run the benchmark suite on a target (this machine, a board over SSH, or a board emulated
under qemu) through devices/, and optionally check that its outputs agree with another run's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError

def load_devices():
    """devices/ (targets and runners), installed beside edgeprune and benchmarks/."""
    import devices

    return devices


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="benchmark exported bundles on this machine, a board over SSH, or an "
                                            "emulated board (size, latency, memory, accuracy, saved outputs)")
    _add_arguments(p)
    p.set_defaults(func=cmd_bench)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundles", nargs="+", metavar="BUNDLE",
                   help="bundle folders from `edgeprune export`, or model files")
    p.add_argument("--device", default="desktop",
                   help="desktop | rpi4 | rpi5 | zero2w (ssh to the profile's host) | rpi4-emulated | rpi5-emulated | "
                        "zero2w-emulated (qemu) | ssh://user@host[:port] (default desktop)")
    p.add_argument("--board", help="profile of an ssh:// device: rpi4 (default), rpi5, zero2w, desktop")
    p.add_argument("--key", help="ssh private key (default: the ssh agent and ~/.ssh keys)")
    p.add_argument("--python", help="Python on the board (default: the profile's, which provision_rpi.sh sets up)")
    p.add_argument("--threads", help="thread counts, e.g. 1,4 (default: the profile's)")
    p.add_argument("--xnnpack", help="for .tflite: on, off or on,off (default: the profile's)")
    p.add_argument("--subset", type=int, help="evaluate the first N test clips; 0 = all (default: the profile's)")
    p.add_argument("--runs", type=int, help="minimum timed invokes per model (default: the profile's)")
    p.add_argument("--min-seconds", type=float, help="minimum timed seconds per model (default: the profile's)")
    p.add_argument("--warmup-seconds", type=float, help="minimum warm-up seconds per model (default: the profile's)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per model before one retry")
    p.add_argument("--test-data", help="test data .npz: one array per input, y, meta/* (instead of --data)")
    p.add_argument("--test-x", help="test features .npy of a one-input classifier, e.g. [N, 40, 500] (instead of --data)")
    p.add_argument("--test-y", help="test labels .npy [N] (with --test-x)")
    p.add_argument("--data", default="synthetic",
                   help="without --test-data / --test-x: 'synthetic' (generated for the bundles' task, cached) or a "
                        "folder of real data; its test split is used")
    p.add_argument("--profile", default="quick", help="tiny | quick | full (data size for synthetic data)")
    p.add_argument("--compare", metavar="RESULT_JSON",
                   help="check that the outputs agree with this earlier result (e.g. a desktop run): float within "
                        "1e-4, int8 within one quantisation step, same accuracy; exit non-zero if not")
    p.add_argument("--out", help="result stem: STEM.json, STEM.md, STEM.csv, STEM.outputs/ "
                                 "(default runs/bench/BUNDLE-DEVICE)")
    p.add_argument("--force", action="store_true", help="replace an existing result")


def _threads(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        threads = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise EdgepruneError(f"--threads '{text}': expected numbers like 1,4") from None
    if not threads or min(threads) < 1:
        raise EdgepruneError(f"--threads '{text}': every count must be at least 1")
    return threads


def _default_stem(bundles: list[str], device: str) -> Path:
    name = Path(bundles[0]).resolve().name if len(bundles) == 1 else "bundles"
    slug = device.replace("ssh://", "ssh-").replace("@", "-at-").replace(":", "-").replace("/", "-")
    return Path("runs") / "bench" / f"{name}-{slug}"


def _test_arrays(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path | None]:
    """The test set for the suite: the given files, or the --data test split of the bundles' task written to
    `tmp` as a --test-data file."""
    if args.test_data:
        if args.test_x or args.test_y:
            raise EdgepruneError("give --test-data or --test-x/--test-y, not both")
        if not Path(args.test_data).is_file():
            raise EdgepruneError(f"{args.test_data}: file not found")
        return Path(args.test_data), None
    if args.test_x:
        for path in (args.test_x, args.test_y):
            if path and not Path(path).is_file():
                raise EdgepruneError(f"{path}: file not found")
        return Path(args.test_x), Path(args.test_y) if args.test_y else None
    if args.test_y:
        raise EdgepruneError("--test-y needs --test-x")
    from edgeprune.data.datasets import save_test_data
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    task = _bundle_task(args.bundles)
    test = run.data_for(args.data, get_profile(args.profile), task=task)["test"]
    return save_test_data(tmp / "test.npz", test), None


def _bundle_task(bundles: list[str]) -> str:
    """The task the bundles were exported for (their manifests'); bundles of different tasks are refused."""
    from edgeprune.fileio import read_json

    tasks = set()
    for b in bundles:
        manifest = Path(b) / "manifest.json" if Path(b).is_dir() else Path(b).parent / "manifest.json"
        if manifest.is_file():
            tasks.add((read_json(manifest, "bundle manifest").get("task") or {}).get("name") or "scenes")
    if len(tasks) > 1:
        raise EdgepruneError(f"the bundles serve different tasks ({', '.join(sorted(tasks))}); benchmark each task "
                             "on its own")
    return tasks.pop() if tasks else "scenes"


def cmd_bench(args: argparse.Namespace) -> None:
    from edgeprune.fileio import refuse_overwrite
    from edgeprune.tables import markdown_table

    devices = load_devices()
    try:
        runner = devices.make_runner(args.device, board=args.board, key=Path(args.key) if args.key else None,
                                     python=args.python)
    except devices.DeviceError as exc:
        raise EdgepruneError(str(exc)) from None
    stem = Path(args.out) if args.out else _default_stem(args.bundles, args.device)
    refuse_overwrite(Path(f"{stem}.json"), args.force)
    if args.subset is not None and args.subset < 0:
        raise EdgepruneError(f"--subset {args.subset}: must be 0 (all clips) or more")
    if args.compare and not Path(args.compare).is_file():  # before a run that may take minutes
        raise EdgepruneError(f"--compare {args.compare}: file not found")
    options = devices.RunOptions(out=stem, threads=_threads(args.threads), xnnpack=args.xnnpack, subset=args.subset,
                                 runs=args.runs, min_seconds=args.min_seconds, warmup_seconds=args.warmup_seconds,
                                 timeout=args.timeout)
    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-") as tmp:
        test_x, test_y = _test_arrays(args, Path(tmp))
        try:
            result = runner.run([Path(b) for b in args.bundles], test_x, test_y, options)
        except devices.DeviceError as exc:
            raise EdgepruneError(f"{exc} (recorded as failed in {stem}.json)") from None
    data: dict[str, Any] = json.loads(result.read_text())
    if data.get("emulated"):
        print(f"note: {runner.target} is emulated (qemu): outputs and accuracy are the board's, timings are not "
              "(hundreds of times slower; never device latency)")
    print(f"wrote {result} (and .md, .csv; outputs in {stem}.outputs/)")
    if args.compare:
        try:
            rows = devices.compare_outputs(result, Path(args.compare))
        except devices.DeviceError as exc:
            raise EdgepruneError(str(exc)) from None
        print(markdown_table(rows, ["model", "precision", "clips", "max_abs_diff", "max_steps", "metric", "metric_a",
                                    "metric_b", "ok", "why"],
                             ["model", "precision", "clips", "max_abs_diff", "max_steps", "metric", "this",
                              "reference", "agrees", "why not"]))
        if not devices.agree(rows):
            raise EdgepruneError(f"outputs on {runner.target} disagree with {args.compare} for "
                                 f"{sum(not r['ok'] for r in rows)} of {len(rows)} models (table above)")
    failed = [r for r in data["results"] if not r.get("ok")]
    if failed:
        raise EdgepruneError(f"{len(failed)} of {len(data['results'])} models failed on {runner.target} (first: "
                             f"{failed[0].get('error')}); see {result}")
