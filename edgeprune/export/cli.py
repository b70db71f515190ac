"""`edgeprune export`: the CLI front of edgeprune.export.export (registered in edgeprune/cli.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeprune.errors import EdgepruneError


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="export a checkpoint to ONNX / TFLite at fp32, fp16, dynamic, int8, "
                                             "each artifact checked against the source model")
    _add_arguments(p)
    p.set_defaults(func=cmd_export)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint")
    p.add_argument("--format", default="tflite,onnx", help="comma-separated: tflite, onnx (default both)")
    p.add_argument("--quant", default="all",
                   help="comma-separated: fp32, fp16, dynamic (int8 weights; the seed's uint8), int8 (full integer) "
                        "or all (default)")
    p.add_argument("--calib", type=int, default=200,
                   help="calibration samples: N drawn across the training split by --seed (stratified by class)")
    p.add_argument("--eval", type=int, default=200,
                   help="parity samples: N drawn across the test split by --seed (stratified by class)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration and parity draws")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (generated, cached) or a folder with X_train.npy, Y_train.npy, X_test.npy, ...")
    p.add_argument("--profile", default="quick", help="tiny | quick | full (data size for synthetic data)")
    p.add_argument("--framework", choices=["torch", "keras"],
                   help="export this twin (default: the checkpoint's; weights transfer exactly)")
    p.add_argument("--float-io", action="store_true", help="full-integer int8 with float32 input/output")
    p.add_argument("--no-fold", action="store_true",
                   help="keep convolutions over one input channel as they are in the TFLite files (default: their "
                        "kernel rows become channels of a one-row conv; exact, faster at int8 with XNNPACK)")
    p.add_argument("--threshold", action="append", default=[], metavar="KEY=VALUE",
                   help="parity threshold, e.g. fp32_cosine=0.9999, int8_top1=0.95 (classifiers), "
                        "int8_frame_agreement=0.9 (per-frame outputs), int8_snr_db=15 (masks)")
    p.add_argument("--threads", type=int, default=1, help="LiteRT / onnxruntime threads for the parity runs")
    p.add_argument("--out", default="export", help="bundles go to OUT/NAME (default export/)")
    p.add_argument("--name", help="bundle name (default: the checkpoint folder's name)")
    p.add_argument("--pad-for", metavar="DEVICE",
                   help="pad pruned layers back with zero channels in the float32 / float16 / int8 TFLite files "
                        "where the parent's latency table on DEVICE (built there once, then cached) predicts a wider "
                        "count faster: the same outputs, a larger file")
    p.add_argument("--vs", metavar="PARENT_BUNDLE",
                   help="time every TFLite file against the parent bundle's file of the same precision (alternating "
                        "blocks, one process, on this machine) and add the latency cut beside the MAC cut to the "
                        "manifest and REPORT.md")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")


def _thresholds(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise EdgepruneError(f"--threshold {item!r}: expected KEY=NUMBER, e.g. int8_top1=0.95") from None
        if not sep:
            raise EdgepruneError(f"--threshold {item!r}: expected KEY=NUMBER")
    return out


def cmd_export(args: argparse.Namespace, pad: dict[str, dict[str, int]] | None = None) -> None:
    """The export command; `pad`: per TFLite precision, the widths to pad pruned layers to (see --pad-for)."""
    from edgeprune.checkpoint import read_spec
    from edgeprune.data.datasets import sample_indices
    from edgeprune.export import export
    from edgeprune.export.manifest import table_columns, table_rows
    from edgeprune.fileio import refuse_overwrite
    from edgeprune.models import task_of
    from edgeprune.tables import markdown_table
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    ckpt_path = Path(args.checkpoint)
    if args.vs and not (Path(args.vs) / "manifest.json").is_file():
        raise EdgepruneError(f"--vs {args.vs}: not an export bundle (no manifest.json)")
    spec = read_spec(ckpt_path)
    name = args.name or ckpt_path.resolve().name
    refuse_overwrite(Path(args.out) / name, args.force)  # before loading data
    if args.calib < 1 or args.eval < 1:
        raise EdgepruneError("--calib and --eval must be at least 1")
    task = task_of(spec["arch"])
    data = run.data_for(args.data, get_profile(args.profile), task=task)
    run.check_data(data, spec["arch"], str(ckpt_path))
    if spec.get("classes") and data.classes and len(data.classes) != len(spec["classes"]):
        raise EdgepruneError(f"data '{args.data}' has {len(data.classes)} classes; {ckpt_path} has {len(spec['classes'])}")
    train, test = data["train"], data["test"]
    calib = train.take(sample_indices(train, args.calib, args.seed, task.stratify))
    if len(calib) < args.calib:
        print(f"[export] note: the training split has {len(calib)} samples; calibrating on all of them", flush=True)
    held = test.take(sample_indices(test, args.eval, args.seed, task.stratify))
    try:
        manifest = export(ckpt_path, args.out, formats=args.format, quant=args.quant, calib=calib.inputs,
                          eval_x=held.inputs, eval_y=held.y, eval_meta=held.meta, int8_io=not args.float_io,
                          thresholds=_thresholds(args.threshold), force=args.force, progress=True, name=args.name,
                          framework=args.framework, num_threads=args.threads,
                          fold_convs=not args.no_fold, pad=pad)
    except EdgepruneError as exc:
        manifest = getattr(exc, "manifest", None)
        if manifest is not None:
            print(markdown_table(table_rows(manifest), table_columns(manifest)))
        raise
    print(markdown_table(table_rows(manifest), table_columns(manifest)))
    if args.vs:
        from edgeprune.export.manifest import compare_to_parent

        rows = compare_to_parent(Path(args.out) / manifest["name"], Path(args.vs))
        print(markdown_table(rows, ["file", "parent_ms", "ms", "mac_cut", "latency_cut", "cut_over_mac_cut"]))
    print(f"wrote {Path(args.out) / manifest['name']} ({manifest['seconds']['total']:.1f} s)")
