"""`edgeprune sweep SPEC.yaml`."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeprune.reproduce.cli import add_executor_arguments, executor_from_args

SPEC_HELP = """\
SPEC.yaml fields: checkpoint (an unpruned checkpoint), methods (criteria, e.g. [l1, passive]), targets (ratio=R:
channels removed per layer; params=F or macs=F: fraction of the parent kept), precisions (default [fp32, int8];
of fp32, fp16, dynamic, int8), seeds (default [0]), data (default synthetic), profile (default quick), layers
(default: every prunable one), finetune_epochs, calib (default 64), devices (default [desktop]), bench_runs
(default 10), threads (default: every CPU of this machine)."""


def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sweep", help="a grid of methods x targets x precisions x seeds on one checkpoint: "
                                            "each point scored, pruned, recovered, exported and benchmarked; one "
                                            "table and a Pareto plot (resumable)",
                              epilog=SPEC_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="the sweep's YAML spec")
    p.add_argument("--work", help="work folder with every step's files (default runs/sweep/SPEC-NAME)")
    p.add_argument("--out", help="results stem: OUT.md/.csv/.json/.png (default WORK/sweep)")
    p.add_argument("--force", action="store_true", help="start over: delete the work folder first")
    add_executor_arguments(p, "the sweep")
    p.set_defaults(func=cmd_sweep)
    return p


def cmd_sweep(args: argparse.Namespace) -> None:
    from edgeprune.sweep.run import run
    from edgeprune.sweep.spec import check_against_checkpoint, load_spec

    spec = load_spec(Path(args.spec))
    check_against_checkpoint(spec, f"{args.spec}:")  # before Ray starts
    executor = executor_from_args(args, spec.threads)
    try:
        run(spec, Path(args.spec), Path(args.work) if args.work else None, Path(args.out) if args.out else None,
            force=args.force, executor=executor, checked=True)
    finally:
        executor.close()
