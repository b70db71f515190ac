"""The `edgeprune` command. Each subcommand reads the previous stage's files, so any stage runs alone.

Errors in the user's input come out as one line on stderr and exit status 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgeprune.errors import EdgepruneError

DEFAULT_MODEL = "dcase2021_baseline"


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (generated, cached) or a folder with X_train.npy, Y_train.npy, X_test.npy, ...")
    p.add_argument("--profile", default="quick", help="tiny | quick | full (data size and epochs; default quick)")


def cmd_train(args: argparse.Namespace) -> None:
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    profile = get_profile(args.profile)
    out = Path(args.out or f"runs/{args.model}-{args.framework}")
    data = run.data_for(args.data, profile)
    summary = run.train(args.model, args.framework, data, profile, out, seed=args.seed, force=args.force)
    print(f"saved {out}  (best epoch {summary['best_epoch']}, validation accuracy "
          f"{summary['validation']['accuracy']:.3f}, log-loss {summary['validation']['log_loss']:.3f})")


def cmd_eval(args: argparse.Namespace) -> None:
    from edgeprune import checkpoint
    from edgeprune.fileio import refuse_overwrite, write_json
    from edgeprune.tables import markdown_table
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    if args.out:
        refuse_overwrite(Path(args.out), args.force)
    ckpt = checkpoint.load(Path(args.checkpoint), framework=args.framework)
    data = run.data_for(args.data, get_profile(args.profile))
    report = run.evaluate(ckpt, data, args.split)
    print(f"{ckpt.path} ({ckpt.framework}) on {args.split} ({report['n']} clips): "
          f"accuracy {report['accuracy']:.4f}, log-loss {report['log_loss']:.4f}")
    rows = [{"class": c, "accuracy": a} for c, a in report["per_class_accuracy"].items()]
    print(markdown_table(rows, ["class", "accuracy"]))
    if args.out:
        write_json(Path(args.out), report, force=args.force)
        print(f"wrote {args.out}")


def cmd_info(args: argparse.Namespace) -> None:
    from edgeprune import checkpoint
    from edgeprune.models import arch_spec, build
    from edgeprune.tables import markdown_table
    from edgeprune.training.run import describe

    target = args.target
    if Path(target).exists():
        ckpt = checkpoint.load(Path(target), framework=args.framework)
        model, framework, arch = ckpt.model, ckpt.framework, ckpt.arch
    else:
        framework, arch = args.framework or "torch", arch_spec(target)
        model = build(arch, framework)
    info = describe(model, framework, arch)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"{info['model']} ({framework}): {info['params']:,} parameters, {info['macs'] / 1e6:.1f} M MACs per input")
    print(markdown_table(info["layers"], ["name", "type", "output", "params", "macs"]))


def cmd_models(args: argparse.Namespace) -> None:
    from edgeprune.models import list_models

    for entry in list_models():
        print(f"{entry.name}: {entry.description} [{', '.join(sorted(entry.builders))}]")


def cmd_data(args: argparse.Namespace) -> None:
    import numpy as np

    from edgeprune.tables import markdown_table
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    data = run.data_for(args.data, get_profile(args.profile))
    print(f"data: {data.info.get('source')}  ({data.info.get('cache', '')})")
    rows = []
    for name, split in data.splits.items():
        row = {"split": name, "clips": len(split), "classes": int(len(np.unique(split.y)))}
        if split.devices is not None:
            row["devices"] = ", ".join(f"{d}:{n}" for d, n in zip(*np.unique(split.devices, return_counts=True)))
        rows.append(row)
    print(markdown_table(rows, ["split", "clips", "classes", "devices"]))


def cmd_features(args: argparse.Namespace) -> None:
    from edgeprune.data.extract import extract_folder

    splits = dict(item.split("=", 1) for item in args.split)
    out = extract_folder(Path(args.audio_root), {k: Path(v) for k, v in splits.items()}, Path(args.out),
                         sample_rate=args.sample_rate, force=args.force)
    print(f"wrote {out}")


def cmd_demo(args: argparse.Namespace) -> None:
    from edgeprune.demo import run_demo

    run_demo(Path(args.out), profile_name=args.profile, data_source=args.data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeprune", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a registered model from scratch")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--framework", default="torch", choices=["torch", "keras"])
    _add_data_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="checkpoint folder (default runs/MODEL-FRAMEWORK)")
    p.add_argument("--force", action="store_true", help="replace an existing checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="accuracy, log-loss, per-class accuracy of a checkpoint")
    p.add_argument("checkpoint")
    _add_data_args(p)
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--framework", choices=["torch", "keras"], help="run in this twin (weights are transferred)")
    p.add_argument("--out", help="write the full report (confusion matrix included) as JSON")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("info", help="parameters, MACs and the layer table of a model name or checkpoint")
    p.add_argument("target", nargs="?", default=DEFAULT_MODEL, help="a registered model name or a checkpoint folder")
    p.add_argument("--framework", choices=["torch", "keras"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("models", help="list the registered models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("data", help="generate (or load) a data set and summarise its splits")
    _add_data_args(p)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("features", help="log-mel features from .wav files, in the layout --data reads")
    p.add_argument("audio_root", help="folder the file lists' paths are relative to")
    p.add_argument("--split", action="append", required=True, metavar="NAME=LIST",
                   help="e.g. train=evaluation_setup/fold1_train.csv (tab or comma separated: filename, scene_label)")
    p.add_argument("--out", required=True)
    p.add_argument("--sample-rate", type=int, default=44100, help="extraction rate (DCASE 2021 1a: 44100)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("demo", help="the main job on the built-in synthetic scenes, ending in a results table")
    p.add_argument("--out", default="runs/demo")
    _add_data_args(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except EdgepruneError as exc:
        if args.debug:
            raise
        print(f"edgeprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeprune: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
