"""`edgeprune latency-table CKPT --device ...`: build (or read from the cache) a model's latency table on a target
and print where each prunable layer's latency steps."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeprune.errors import EdgepruneError


def add_latency_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("latency-table", help="time every prunable layer alone at its real shapes as its "
                                                    "channels change, on the target; print where latency steps")
    p.add_argument("checkpoint")
    p.add_argument("--device", default="desktop",
                   help="desktop | rpi4 | rpi5 | zero2w (ssh) | ssh://user@host[:port] (default desktop; emulated "
                        "boards are refused: emulation is not timing)")
    p.add_argument("--board", help="profile of an ssh:// device (default rpi4)")
    p.add_argument("--key", help="ssh private key")
    p.add_argument("--python", help="Python on the board")
    p.add_argument("--precision", default="fp32,int8",
                   help="comma-separated: fp32, fp16, int8 (default fp32,int8)")
    p.add_argument("--rounds", type=int, default=8, help="interleaved timing rounds (default 8)")
    p.add_argument("--block", type=int, default=30, help="invokes per file per round (default 30)")
    p.add_argument("--force", action="store_true", help="time again even if the cache holds a table")
    p.add_argument("--out", help="also copy the table here (it is always cached under runs/latency/)")
    p.set_defaults(func=cmd_latency_table)
    return p


def cmd_latency_table(args: argparse.Namespace) -> None:
    from edgeprune.bench import load_devices
    from edgeprune.latency import build, table
    from edgeprune.tables import markdown_table

    if min(args.rounds, args.block) < 1:
        raise EdgepruneError(f"--rounds {args.rounds} --block {args.block}: both must be at least 1")
    precisions = tuple(q.strip() for q in args.precision.split(",") if q.strip())
    devices = load_devices()
    try:
        runner = devices.make_runner(args.device, board=args.board, key=Path(args.key) if args.key else None,
                                     python=args.python, log=print)
    except devices.DeviceError as exc:
        raise EdgepruneError(str(exc)) from None
    try:
        doc, path = build.build(Path(args.checkpoint), runner, precisions, args.rounds, args.block, force=args.force)
    except devices.DeviceError as exc:
        raise EdgepruneError(str(exc)) from None
    rows = []
    for q in precisions:
        t = doc["precisions"][q]
        for name, entry in t["layers"].items():
            if len(entry["out"]) > 1:
                rows.append({"precision": q, "layer": name, "full_ms": round(entry["full_ms"], 4),
                             "channels": max(int(c) for c in entry["out"]),
                             "worth_keeping": ", ".join(map(str, table.steps_of(doc, q, name)))})
        rows.append({"precision": q, "layer": "(whole file)", "full_ms": round(t["whole_ms"], 4)})
        rows.append({"precision": q, "layer": "(rest: not in the grid)", "full_ms": round(t["rest_ms"], 4)})
    print(markdown_table(rows, ["precision", "layer", "channels", "full_ms", "worth_keeping"]))
    if args.out:
        table.save(doc, Path(args.out))
    print(f"latency table: {path}" + (f" (copied to {args.out})" if args.out else ""))
