"""`edgeprune reproduce dcase-table | speech-models | cmc-asp | comflp | ssl-compression | cma-fsmc ...`"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeprune.errors import EdgepruneError

JOBS = ("dcase-table", "speech-models", "cmc-asp", "comflp", "ssl-compression", "cma-fsmc")
DECLARED = ("dcase-table", "cma-fsmc")  # jobs whose steps are declared, so any executor runs them


def add_reproduce_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("reproduce", help="reproduce a published table end to end (resumable)")
    p.add_argument("job", choices=JOBS, help="dcase-table: the DCASE 2021 1a passive-pruning quantization table; "
                                             "speech-models: the reference speech models trained and evaluated "
                                             "(uses --profile, --seed, --work, --out, --force); cmc-asp: CMC-ASP "
                                             "against other criteria on se-crn at the same MAC reductions; "
                                             "comflp: correlation-based layer-pruning search on speech-encoder "
                                             "against metric-greedy; ssl-compression: MelHuBERT-style "
                                             "pre-training, then weight, head, FFN-row, low-rank and distillation "
                                             "compression, probed, exported and timed; cma-fsmc: concept-mask "
                                             "block and filter pruning of resnet-kws from a few samples against "
                                             "MiR, PRACTISE and L1")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (default; the table says so) or a folder of DCASE 2021 1a features (X_/Y_ npy)")
    p.add_argument("--profile", default="quick", help="tiny | quick | full (data size and epochs; default quick)")
    p.add_argument("--devices", help="comma-separated benchmark targets (default: dcase-table desktop; cmc-asp "
                                     "desktop,rpi4-emulated)")
    p.add_argument("--checkpoint", help="start from this trained baseline instead of training one")
    p.add_argument("--framework", choices=["keras", "torch"],
                   help="twin to prune and convert (default: dcase-table keras, the seed's framework and "
                        "TFLiteConverter; cmc-asp torch)")
    p.add_argument("--fusion", choices=["early", "dual"], default="dual", help="cmc-asp: se-crn's fusion (default dual)")
    p.add_argument("--finetune-epochs", type=int,
                   help="fine-tuning epochs (default: dcase-table tiny 1, quick 3, full 10, the seed used 30; "
                        "cmc-asp tiny 1, quick 10, full 20)")
    p.add_argument("--calib", type=int,
                   help="dcase-table: calibration clips for full-integer int8 (default 200); cmc-asp: scoring "
                        "samples for the data-driven criteria (default 64)")
    p.add_argument("--layers", type=int,
                   help="comflp: layers of the parent it trains (default 12; tiny 4; not with --checkpoint)")
    p.add_argument("--remove", help="comflp: layer counts K to remove, e.g. 6,4 (default 6,4; tiny 2); the first "
                                    "is exported")
    p.add_argument("--measures", help="comflp: layer measures, some of svcca-U,svcca-T,dc,cka,bi (default all)")
    p.add_argument("--distill", action="store_true",
                   help="comflp: fine-tune with distillation from the parent's outputs")
    p.add_argument("--loss-type", choices=["masked", "nomasked"], default="masked",
                   help="ssl-compression: pre-training input masking (default masked)")
    p.add_argument("--distill-objective", choices=["kl", "hidden"], default="kl",
                   help="ssl-compression: the students' objective: the seed's KL on the teacher's cluster predictions "
                        "(default) or DistilHuBERT's prediction of the teacher's hidden layers")
    p.add_argument("--samples", help="cma-fsmc: sample counts, e.g. 50,100,500 (default; tiny 12,24)")
    p.add_argument("--bench-runs", type=int, help="timed runs per artifact (default 30; cmc-asp tiny 3)")
    p.add_argument("--threshold", action="append", default=[], metavar="KEY=VALUE",
                   help="export parity gate, as for `edgeprune export`")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int,
                   help="dcase-table, cma-fsmc: threads each step trains and converts on, under either executor "
                        "(default: every CPU of this machine; results depend on it; with --executor ray, 1 runs one "
                        "step per CPU)")
    add_executor_arguments(p, "dcase-table, cma-fsmc")
    p.add_argument("--work", help="work folder with every step's files (default runs/reproduce/...)")
    p.add_argument("--out", help="results stem: OUT.md/.csv/.json/.png, rewritten on every run (default "
                                 "WORK/dcase_table, under runs/)")
    p.add_argument("--force", action="store_true", help="start over: delete the work folder first")
    p.set_defaults(func=cmd_reproduce)
    return p


def add_executor_arguments(p: argparse.ArgumentParser, applies_to: str) -> None:
    """--executor, --ray-address, --workers (for the jobs whose steps are declared: `applies_to`)."""
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help=f"{applies_to}: run the steps here one at a time (local, default) or as Ray tasks, "
                        "independent ones at once (ray; needs edgeprune[cluster]); the results and the resume state "
                        "are the same")
    p.add_argument("--ray-address", help="HOST:PORT of a running Ray head (`ray start --head`); default: start Ray "
                                         "on this machine")
    p.add_argument("--workers", type=int, help="CPUs of a Ray started on this machine (default: all)")


def executor_from_args(args: argparse.Namespace, threads: int):
    """The executor the arguments ask for (Ray is imported only for --executor ray)."""
    from edgeprune.reproduce.executors import make_executor

    return make_executor(args.executor, threads=threads, address=args.ray_address, workers=args.workers)


def settings_from_args(args: argparse.Namespace):
    """The run's Settings from parsed arguments (the results file's command line parses back to the same)."""
    from edgeprune.export.cli import _thresholds
    from edgeprune.reproduce.dcase_table import Settings

    if args.bench_runs is not None and args.bench_runs < 1:
        raise EdgepruneError(f"--bench-runs {args.bench_runs}: must be at least 1")
    return Settings(data=args.data, profile=args.profile, framework=args.framework or "keras",
                    checkpoint=args.checkpoint, seed=args.seed, calib=200 if args.calib is None else args.calib,
                    finetune_epochs=args.finetune_epochs, devices=_devices(args.devices or "desktop"),
                    bench_runs=30 if args.bench_runs is None else args.bench_runs,
                    thresholds=_thresholds(args.threshold), threads=args.threads)


def _devices(text: str) -> list[str]:
    return [d.strip() for d in text.split(",") if d.strip()]


def cmc_settings_from_args(args: argparse.Namespace):
    """The cmc-asp job's Settings from parsed arguments."""
    from edgeprune.reproduce.cmc_asp import Settings

    if args.bench_runs is not None and args.bench_runs < 1:
        raise EdgepruneError(f"--bench-runs {args.bench_runs}: must be at least 1")
    if args.data != "synthetic":
        raise EdgepruneError("cmc-asp runs on the synthetic air + bone speech; --data is for dcase-table")
    extra = {"devices": _devices(args.devices)} if args.devices else {}
    return Settings(profile=args.profile, framework=args.framework or "torch", fusion=args.fusion,
                    checkpoint=args.checkpoint, seed=args.seed, calib=64 if args.calib is None else args.calib,
                    finetune_epochs=args.finetune_epochs, bench_runs=args.bench_runs, **extra)


def comflp_settings_from_args(args: argparse.Namespace):
    """The comflp job's Settings from parsed arguments."""
    from edgeprune.reproduce.comflp import Settings

    if args.bench_runs is not None and args.bench_runs < 1:
        raise EdgepruneError(f"--bench-runs {args.bench_runs}: must be at least 1")
    if args.data != "synthetic":
        raise EdgepruneError("comflp runs on the synthetic phones speech; --data is for dcase-table")
    if args.framework == "keras":
        raise EdgepruneError("comflp prunes the PyTorch speech-encoder; --framework keras is not available")
    extra: dict = {}
    if args.devices:
        extra["devices"] = _devices(args.devices)
    if args.remove:
        try:
            extra["remove"] = [int(v) for v in args.remove.split(",") if v.strip()]
        except ValueError:
            raise EdgepruneError(f"--remove {args.remove}: expected comma-separated layer counts, e.g. 6,4") from None
    if args.measures:
        extra["measures"] = _devices(args.measures)
    return Settings(profile=args.profile, checkpoint=args.checkpoint, seed=args.seed, layers=args.layers,
                    calib=args.calib, finetune_epochs=args.finetune_epochs, distill=args.distill,
                    bench_runs=args.bench_runs, **extra)


def cmd_reproduce(args: argparse.Namespace) -> None:
    if args.job not in DECLARED:
        given = [flag for flag, v in (("--executor ray", args.executor == "ray"), ("--ray-address", args.ray_address),
                                      ("--workers", args.workers), ("--threads", args.threads is not None)) if v]
        if given:
            raise EdgepruneError(f"{' '.join(given)}: {args.job} runs its steps one at a time in this process; the "
                                 f"executor and thread options apply to {', '.join(DECLARED)} (and edgeprune sweep)")
    if args.job == "cma-fsmc":
        from edgeprune.reproduce import cma_fsmc

        if args.data != "synthetic":
            raise EdgepruneError("cma-fsmc runs on the synthetic keywords speech; --data is for dcase-table")
        samples = None
        if args.samples:
            try:
                samples = [int(v) for v in args.samples.split(",") if v.strip()]
            except ValueError:
                raise EdgepruneError(f"--samples {args.samples}: expected comma-separated counts, e.g. 50,100,500") \
                    from None
        settings = cma_fsmc.Settings(profile=args.profile, seed=args.seed, samples=samples, threads=args.threads)
        cma_fsmc.check_settings(settings)
        executor = executor_from_args(args, settings.threads)
        try:
            cma_fsmc.run(settings, Path(args.work) if args.work else None, Path(args.out) if args.out else None,
                         force=args.force, executor=executor)
        finally:
            executor.close()
        return
    if args.job == "ssl-compression":
        from edgeprune.reproduce import ssl_compression

        if args.data != "synthetic":
            raise EdgepruneError("ssl-compression runs on the synthetic speech; --data is for dcase-table")
        ssl_compression.run(ssl_compression.Settings(profile=args.profile, seed=args.seed, loss_type=args.loss_type,
                                                     distill_objective=args.distill_objective),
                            Path(args.work) if args.work else None, Path(args.out) if args.out else None,
                            force=args.force)
        return
    if args.job == "comflp":
        from edgeprune.reproduce import comflp

        comflp.run(comflp_settings_from_args(args), Path(args.work) if args.work else None,
                   Path(args.out) if args.out else None, force=args.force)
        return
    if args.job == "speech-models":
        from edgeprune.reproduce import speech_models

        speech_models.run(args.profile, Path(args.work) if args.work else None, Path(args.out) if args.out else None,
                          force=args.force, seed=args.seed)
        return
    if args.job == "cmc-asp":
        from edgeprune.reproduce import cmc_asp

        cmc_asp.run(cmc_settings_from_args(args), Path(args.work) if args.work else None,
                    Path(args.out) if args.out else None, force=args.force)
        return
    from edgeprune.reproduce.dcase_table import check_settings, default_work, run

    settings = settings_from_args(args)
    check_settings(settings)
    work = Path(args.work) if args.work else default_work(settings)
    executor = executor_from_args(args, settings.threads)
    try:
        run(settings, work, Path(args.out) if args.out else None, force=args.force, executor=executor)
    finally:
        executor.close()
