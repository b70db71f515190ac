"""The `edgeprune` command. Each subcommand reads the previous stage's files, so any stage runs alone.

Errors in the user's input come out as one line on stderr and exit status 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from edgeprune.errors import EdgepruneError

DEFAULT_MODEL = "dcase2021_baseline"


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (generated for the task, cached) or a folder of real data: the DCASE X_/Y_ .npy "
                        "layout (scenes), a Speech Commands folder (keywords), train/validation/test folders of "
                        "air/bone/clean .wav (enhancement), or edgeprune's own layout (any task)")
    p.add_argument("--profile", default="quick", help="tiny | quick | full (data size and epochs; default quick)")


def _summary(report: dict, task) -> str:
    """'accuracy 0.6533, log-loss 1.2345' for the task's metrics present in a report."""
    shown = [(k, report.get(k)) for k in task.metric_names()]
    return ", ".join(f"{k.replace('_', '-')} {v:.4f}" for k, v in shown if isinstance(v, (int, float)))


def _arch_args(items: list[str]) -> dict:
    """--arg KEY=VALUE items -> architecture arguments (numbers, true/false and lists parsed as JSON)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EdgepruneError(f"--arg {item!r}: expected KEY=VALUE, e.g. fusion=dual or layers=6")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_train(args: argparse.Namespace) -> None:
    from edgeprune.models import get_entry
    from edgeprune.tasks import get_task
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    profile = get_profile(args.profile)
    task = get_task(args.task or get_entry(args.model).tasks[0])
    out = Path(args.out or f"runs/{args.model}-{task.name}-{args.framework}")
    data = run.data_for(args.data, profile, task=task)
    summary = run.train(args.model, args.framework, data, profile, out, seed=args.seed, force=args.force,
                        task=task.name, args=_arch_args(args.arg))
    print(f"saved {out}  (best epoch {summary['best_epoch']} of {summary['epochs']}, batch {summary['batch_size']}, "
          f"lr {summary['lr']:g}; validation {_summary(summary['validation'], task)}; "
          f"{summary['train_seconds']:.0f} s of training)")


def cmd_eval(args: argparse.Namespace) -> None:
    from edgeprune import checkpoint
    from edgeprune.fileio import refuse_overwrite, write_json
    from edgeprune.tables import markdown_table
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    if args.out:
        refuse_overwrite(Path(args.out), args.force)
    ckpt = checkpoint.load(Path(args.checkpoint), framework=args.framework)
    data = run.data_for(args.data, get_profile(args.profile), task=ckpt.task)
    report = run.evaluate(ckpt, data, args.split, full=not args.fast)
    print(f"{ckpt.path} ({ckpt.framework}, {ckpt.task.name}) on {args.split} ({report['n']} samples): "
          f"{_summary(report, ckpt.task)}")
    if "per_class_accuracy" in report:
        rows = [{"class": c, "accuracy": a} for c, a in report["per_class_accuracy"].items()]
        print(markdown_table(rows, ["class", "accuracy"]))
    else:
        keys = [k for k, v in report.items() if isinstance(v, (int, float)) and k not in ("n", "seconds")]
        print(markdown_table([{"metric": k, "value": report[k]} for k in keys], ["metric", "value"]))
    if args.out:
        write_json(Path(args.out), report, force=args.force)
        print(f"wrote {args.out}")


def cmd_info(args: argparse.Namespace) -> None:
    from edgeprune import checkpoint
    from edgeprune.models import arch_spec, build
    from edgeprune.models.measure import describe
    from edgeprune.tables import markdown_table

    target = args.target
    if Path(target).exists():
        ckpt = checkpoint.load(Path(target), framework=args.framework)
        model, framework, arch = ckpt.model, ckpt.framework, ckpt.arch
    else:
        framework, arch = args.framework or "torch", arch_spec(target, args.task)
        model = build(arch, framework)
    info = describe(model, framework, arch)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"{info['model']} ({framework}, {info['task']}): {info['params']:,} parameters, "
          f"{info['macs'] / 1e6:.1f} M MACs per input")
    print(markdown_table(info["layers"], ["name", "type", "output", "params", "macs"]))


def cmd_models(args: argparse.Namespace) -> None:
    from edgeprune.models import list_models

    for entry in list_models():
        print(f"{entry.name}: {entry.description} [tasks: {', '.join(entry.tasks)}; "
              f"{', '.join(sorted(entry.builders))}]")


def cmd_tasks(args: argparse.Namespace) -> None:
    from edgeprune.tasks import list_tasks

    for task in list_tasks():
        inputs = ", ".join(f"{f.name} [{', '.join(map(str, f.shape))}] ({f.axes})" for f in task.inputs)
        print(f"{task.name}: {task.description}; inputs {inputs}; output {task.output.name} ({task.output.kind}); "
              f"loss {task.loss}; best epoch by {task.select} ({task.select_mode})")


def cmd_data(args: argparse.Namespace) -> None:
    import numpy as np

    from edgeprune.tables import markdown_table
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    data = run.data_for(args.data, get_profile(args.profile), task=args.task)
    print(f"data: {data.task} from {data.info.get('source')}  ({data.info.get('cache', '')})"
          + (f"; generator {data.info['generator']}" if data.info.get("generator") else ""))
    rows = []
    for name, split in data.splits.items():
        row = {"split": name, "samples": len(split)}
        if data.classes is not None and split.y is not None and split.y.ndim == 1:
            row["classes"] = int(len(np.unique(split.y)))
        for key in ("devices", "speakers"):
            if key in split.meta:
                values, counts = np.unique(split.meta[key], return_counts=True)
                row[key] = (", ".join(f"{d}:{n}" for d, n in zip(values, counts)) if key == "devices"
                            else f"{len(values)} distinct")
        rows.append(row)
    print(markdown_table(rows, ["split", "samples", "classes", "devices", "speakers"]))


def cmd_features(args: argparse.Namespace) -> None:
    from edgeprune.data.extract import extract_folder

    splits = dict(item.split("=", 1) for item in args.split)
    out = extract_folder(Path(args.audio_root), {k: Path(v) for k, v in splits.items()}, Path(args.out),
                         sample_rate=args.sample_rate, force=args.force)
    print(f"wrote {out}")


def _layers(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def cmd_score(args: argparse.Namespace) -> None:
    from edgeprune import checkpoint
    from edgeprune.fileio import refuse_overwrite
    from edgeprune.pruning.run import calibration_set, score_checkpoint
    from edgeprune.scoring import get_criterion
    from edgeprune.tables import markdown_table
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    out = Path(args.out)
    refuse_overwrite(out, args.force)
    entry = get_criterion(args.criterion)
    ckpt = checkpoint.load(Path(args.checkpoint))
    calib = None
    if entry.needs_data:
        calib = calibration_set(run.data_for(args.data, get_profile(args.profile), task=ckpt.task), args.calib)
    scores = score_checkpoint(ckpt, args.criterion, _layers(args.layers), calib)
    rows = [{"layer": n, "channels": len(ls.scores), "rule_keeps": None if ls.keep is None else len(ls.keep),
             "min": float(ls.scores.min()), "max": float(ls.scores.max())} for n, ls in scores.layers.items()]
    print(markdown_table(rows, ["layer", "channels", "rule_keeps", "min", "max"]))
    scores.save(out, force=args.force)
    print(f"wrote {out} ({args.criterion}, {scores.record.get('seconds', 0):.3f} s)")


def cmd_prune(args: argparse.Namespace) -> None:
    from edgeprune import checkpoint
    from edgeprune.fileio import read_json, refuse_overwrite
    from edgeprune.pruning.run import calibration_set, prune_checkpoint, score_checkpoint
    from edgeprune.pruning.targets import Target, parse_budget
    from edgeprune.scoring import Scores, get_criterion
    from edgeprune.tables import markdown_table
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    out = Path(args.out)
    refuse_overwrite(out, args.force)
    layer_ratios = {}
    for item in args.layer_ratio or []:
        name, _, value = item.partition("=")
        try:
            layer_ratios[name] = float(value)
        except ValueError as exc:
            raise EdgepruneError(f"--layer-ratio '{item}': expected LAYER=RATIO, e.g. conv2=0.3") from exc
    chosen = [x for x in (args.keep, args.ratio, layer_ratios or None, args.rule or None, args.budget) if x is not None]
    if len(chosen) != 1:
        raise EdgepruneError("give exactly one target: --keep FILE, --ratio R, --layer-ratio L=R, --rule or --budget K=F")
    keep = None
    if args.keep:
        raw = read_json(Path(args.keep), what="keep-list file ({layer: [indices]})")
        if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
            raise EdgepruneError(f"{args.keep}: expected a JSON object {{layer: [channel indices to keep]}}")
        keep = raw
    if args.global_ranking and args.ratio is None:
        raise EdgepruneError("--global-ranking ranks every scored channel together for one --ratio; give --ratio R")
    budget = parse_budget(args.budget) if args.budget else None
    auto = args.round_to == "auto"
    try:
        round_to = 1 if auto else int(args.round_to)
    except ValueError:
        raise EdgepruneError(f"--round-to {args.round_to}: expected a channel multiple N or 'auto'") from None
    if round_to < 1:
        raise EdgepruneError(f"--round-to {args.round_to}: must be at least 1")
    latency = None
    if auto or (budget and budget[0] == "latency"):
        latency = _latency_table(args)
    elif args.device:
        raise EdgepruneError("--device applies to --budget latency=F and --round-to auto")
    predictor = None
    if latency is not None:
        from edgeprune.latency.table import channel_counts, predict

        doc, q = latency
        predictor = (lambda model, fw: predict(doc, q, channel_counts(model, fw)),
                     f"{q} on {doc.get('target', 'the target')}")
    target = Target(keep=keep, ratio=args.ratio, layer_ratios=layer_ratios, rule=args.rule, budget=budget,
                    round_to=round_to, global_ranking=args.global_ranking, latency=predictor,
                    steps=_latency_steps(latency) if auto else None)
    ckpt = checkpoint.load(Path(args.checkpoint))
    scores = None
    if args.scores:
        scores = Scores.load(Path(args.scores))
    elif keep is None:
        profile = get_profile(args.profile)
        calib = None
        if get_criterion(args.criterion).needs_data:
            calib = calibration_set(run.data_for(args.data, profile, task=ckpt.task), args.calib)
        scores = score_checkpoint(ckpt, args.criterion, _layers(args.layers), calib)
    result = prune_checkpoint(ckpt, target, scores, out, force=args.force,
                              scores_file=Path(args.scores) if args.scores else None,
                              group_reduction=args.group_reduction, ignored_layers=_layers(args.ignore))
    print(markdown_table(result.table, ["layer", "type", "channels_before", "channels_after", "params_before",
                                        "params_after", "macs_before", "macs_after", "criterion"]))
    for group in result.groups:
        print(f"coupled, pruned together: {', '.join(group)}")
    for note in result.notes:
        print(f"note: {note}")
    total = lambda key: sum(r[key] for r in result.table)  # noqa: E731
    if latency is not None:  # what the target's table predicts for this cut, beside the MAC cut
        from edgeprune.latency.table import channel_counts, predict

        doc, q = latency
        before = predict(doc, q, channel_counts(ckpt.model, ckpt.framework))
        after = predict(doc, q, channel_counts(result.model, ckpt.framework))
        mac_cut = 1 - total("macs_after") / total("macs_before")
        print(f"predicted {q} latency on {doc.get('target', 'the target')}: {before:.3f} -> {after:.3f} ms (cut "
              f"{1 - after / before:.1%} for a MAC cut of {mac_cut:.1%}); time the exported file to confirm")
    print(f"params {total('params_before'):,} -> {total('params_after'):,}, MACs {total('macs_before'):,} -> "
          f"{total('macs_after'):,}; wrote {out} (table in {out / 'pruning.json'})")


def _latency_table(args: argparse.Namespace) -> tuple[dict, str]:
    """The checkpoint's latency table on --device at --precision (built there, or read from the cache)."""
    from edgeprune.bench import load_devices
    from edgeprune.latency import build

    from edgeprune.latency.layer_grid import GRID_PRECISIONS

    if args.precision not in GRID_PRECISIONS:
        raise EdgepruneError(f"--precision {args.precision}: the latency table has {', '.join(GRID_PRECISIONS)}")
    devices = load_devices()
    try:
        runner = devices.make_runner(args.device or "desktop", log=print)
        doc, _ = build.build(Path(args.checkpoint), runner, (args.precision,))
    except devices.DeviceError as exc:
        raise EdgepruneError(str(exc)) from None
    return doc, args.precision


def _latency_steps(latency: tuple[dict, str]) -> Callable[[tuple[str, ...]], list[int] | None]:
    """The counts worth keeping on the target for a group of coupled layers (--round-to auto); None where no
    member has an output sweep in the table."""
    from edgeprune.latency.table import steps_of

    doc, q = latency
    layers = doc["precisions"][q]["layers"]

    def steps(members: tuple[str, ...]) -> list[int] | None:
        swept = [n for n in members if len(layers.get(n, {}).get("out", {})) > 1]
        return steps_of(doc, q, members) if swept else None
    return steps


def cmd_export(args: argparse.Namespace) -> None:
    """`edgeprune export`, with --pad-for DEVICE: the pruned layers' widths per TFLite precision from the parent's
    latency table on that target (export sits below the latency tables, which export to time)."""
    from edgeprune.export.cli import cmd_export as export_command

    pad = None
    if args.pad_for:
        from edgeprune.bench import load_devices
        from edgeprune.export.convert import FORMATS, QUANTS, normalize_list
        from edgeprune.fileio import refuse_overwrite
        from edgeprune.latency.layer_grid import GRID_PRECISIONS
        from edgeprune.latency.padding import pad_plan

        quants = normalize_list(args.quant, QUANTS, "precision")
        if "tflite" not in normalize_list(args.format, FORMATS, "format") or \
                not any(q in GRID_PRECISIONS for q in quants):
            raise EdgepruneError(f"--pad-for {args.pad_for}: pads the {', '.join(GRID_PRECISIONS)} TFLite files; "
                                 f"--format {args.format} --quant {args.quant} writes none")
        refuse_overwrite(Path(args.out) / (args.name or Path(args.checkpoint).resolve().name), args.force)
        devices = load_devices()
        try:
            runner = devices.make_runner(args.pad_for, log=print)
            pad = pad_plan(Path(args.checkpoint), runner, quants, framework=args.framework)
        except devices.DeviceError as exc:
            raise EdgepruneError(str(exc)) from None
        print(f"[export] padding for {args.pad_for}: " + ("; ".join(
            f"{q} " + ", ".join(f"{n} -> {w}" for n, w in widths.items()) for q, widths in pad.items())
            or "none (no pruned layer runs faster wider there)"), flush=True)
    export_command(args, pad=pad)


def cmd_prune_layers(args: argparse.Namespace) -> None:
    from edgeprune import checkpoint
    from edgeprune.data.datasets import sample_indices
    from edgeprune.fileio import refuse_overwrite
    from edgeprune.pruning.layer_run import save_layer_drop, search_layers
    from edgeprune.models.encoder import encoder_layers
    from edgeprune.scoring.layer_states import parse_measure
    from edgeprune.tables import markdown_table
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    out = Path(args.out)
    refuse_overwrite(out, args.force)
    if args.calib < 1:
        raise EdgepruneError(f"--calib {args.calib}: the number of calibration samples must be positive")
    parse_measure(args.measure)
    ckpt = checkpoint.load(Path(args.checkpoint), framework="torch")
    n_layers = len(encoder_layers(ckpt.model))
    if not 1 <= args.remove < n_layers:
        raise EdgepruneError(f"--remove {args.remove}: K must be at least 1 and below the encoder's {n_layers} "
                             "layers")
    if min(args.beam, args.top) < 1:
        raise EdgepruneError(f"--beam {args.beam} --top {args.top}: both must be at least 1")
    data = run.data_for(args.data, get_profile(args.profile), task=ckpt.task)
    calib = data["train"].take(sample_indices(data["train"], args.calib, args.seed))
    found = search_layers(ckpt, args.measure, args.remove, calib, None if args.no_verify else data["validation"],
                          mode=args.search, beam=args.beam, top=args.top, seed=args.seed)
    metric = found.get("metric")
    rows = [{"removed": ", ".join(map(str, c["removed"])), "score": round(c["score"], 4),
             **({f"validation_{metric}": round(c[metric], 4)} if metric else {})} for c in found["candidates"]]
    print(markdown_table(rows, list(rows[0])))
    save_layer_drop(ckpt, found["removed"], out, {"criterion": "comflp", "measure": args.measure,
                                                  "search": args.search}, force=args.force, search=found)
    print(f"removed layers {found['removed']} ({args.measure}; matrix {found['states_s'] + found['measure_s']:.1f} s, "
          f"search {found['search_s']:.2f} s, verify {found['verify_s']:.1f} s); wrote {out}")


def cmd_prune_blocks(args: argparse.Namespace) -> None:
    from edgeprune import checkpoint
    from edgeprune.fileio import refuse_overwrite
    from edgeprune.models.measure import measure
    from edgeprune.pruning import block_run
    from edgeprune.tables import markdown_table
    from edgeprune.training import few_sample, run
    from edgeprune.training.profiles import get_profile

    out = Path(args.out)
    refuse_overwrite(out, args.force)
    targets = {k: v for k, v in (("macs", args.macs), ("params", args.params)) if v is not None}
    if (args.drop is None) == (not targets):
        raise EdgepruneError("give --drop K (block level) or --macs / --params reductions (filter level)")
    if args.recover_steps < 0:
        raise EdgepruneError(f"--recover-steps {args.recover_steps}: must be 0 or more")
    ckpt = checkpoint.load(Path(args.checkpoint), framework="torch")
    if ckpt.transforms:
        raise EdgepruneError(f"{ckpt.path}: already compressed; CMa-FSMC starts from an unpruned model")
    data = run.data_for(args.data, get_profile(args.profile), task=ckpt.task)
    x, _, _ = block_run.few_samples(data["train"], args.samples, args.seed, ckpt.arch, len(data.classes or []))
    found = block_run.choose(ckpt, x, drop=args.drop, targets=targets or None, threshold=args.threshold,
                             seed=args.seed)
    print(markdown_table([{"block": b, "doc": d, **({"rate": found["rates"][b]} if "rates" in found else {})}
                          for b, d in found["doc"].items()], ["block", "doc"] + (["rate"] if "rates" in found else [])))
    record = {"samples": args.samples, "seed": args.seed, "doc": found["doc"]}
    if args.drop is not None:
        student, transform = block_run.block_student(ckpt, found["drop"], {"criterion": "doc", **record})
    else:
        student, transform = block_run.filter_student(ckpt, found["widths"], {"rates": found["rates"], **record})
    recovery = None
    if args.recover_steps:
        recovery = few_sample.mimic(student, ckpt.model, x, few_sample.Schedule(args.recover_steps),
                                    mix=not args.no_mix, threshold=args.threshold, seed=args.seed)
    checkpoint.save(out, student, "torch", ckpt.arch, ckpt.classes, transforms=[transform], force=args.force,
                    extra={"recovery": recovery})
    before, after = measure(ckpt.model, "torch", ckpt.arch), measure(student, "torch", ckpt.arch)
    accuracy = run.evaluate(checkpoint.load(out, framework="torch"), data, full=False).get("accuracy")
    print(f"{'removed ' + ', '.join(found['drop']) if args.drop is not None else 'cut block widths'}: MACs "
          f"-{(1 - after['macs'] / before['macs']) * 100:.2f} %, parameters "
          f"-{(1 - after['params'] / before['params']) * 100:.2f} %; recovered {args.recover_steps} steps on "
          f"{args.samples} samples{'' if args.no_mix else ' with CMaMix'}; test accuracy "
          f"{'n/a' if accuracy is None else f'{accuracy:.4f}'}; wrote {out}")


def cmd_finetune(args: argparse.Namespace) -> None:
    from edgeprune import checkpoint
    from edgeprune.fileio import refuse_overwrite
    from edgeprune.pruning.run import finetune_checkpoint, parent_of
    from edgeprune.training import run
    from edgeprune.training.profiles import get_profile

    out = Path(args.out)
    refuse_overwrite(out, args.force)
    profile = get_profile(args.profile)
    if args.epochs is not None:
        from dataclasses import replace

        if args.epochs < 1:
            raise EdgepruneError(f"--epochs {args.epochs}: must be at least 1")
        profile = replace(profile, epochs=args.epochs)
    ckpt = checkpoint.load(Path(args.checkpoint))
    teacher = None
    if args.distill:
        parent = args.teacher or parent_of(ckpt)
        if not parent:
            raise EdgepruneError(f"{ckpt.path} records no parent model; give the teacher with --teacher CKPT")
        teacher = checkpoint.load(Path(parent))
    data = run.data_for(args.data, profile, task=ckpt.task)
    summary = finetune_checkpoint(ckpt, data, profile, out, teacher=teacher, temperature=args.temperature,
                                  alpha=args.alpha, seed=args.seed, force=args.force)
    metric, value = next(iter(summary["validation"].items()))
    print(f"saved {out}  (best epoch {summary['best_epoch']}, validation {metric} {value:.3f})")


def cmd_demo(args: argparse.Namespace) -> None:
    from edgeprune.demo import run_demo

    run_demo(Path(args.out), profile_name=args.profile, data_source=args.data, devices=args.devices, force=args.force)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeprune", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a registered model from scratch")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"a registered model (edgeprune models; default {DEFAULT_MODEL})")
    p.add_argument("--task", help="the task to train it for (default: the model's first; edgeprune tasks)")
    p.add_argument("--arg", action="append", metavar="KEY=VALUE",
                   help="architecture argument (repeatable), e.g. --arg fusion=dual, --arg layers=6 (edgeprune info "
                        "--json lists them)")
    p.add_argument("--framework", default="torch", choices=["torch", "keras"])
    _add_data_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="checkpoint folder (default runs/MODEL-FRAMEWORK)")
    p.add_argument("--force", action="store_true", help="replace an existing checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="the task's metrics of a checkpoint (accuracy, PER, SI-SDR improvement, STOI, PESQ)")
    p.add_argument("checkpoint")
    p.add_argument("--fast", action="store_true", help="skip the slow metrics (STOI, PESQ)")
    _add_data_args(p)
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--framework", choices=["torch", "keras"], help="run in this twin (weights are transferred)")
    p.add_argument("--out", help="write the full report (confusion matrix included) as JSON")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("info", help="parameters, MACs and the layer table of a model name or checkpoint")
    p.add_argument("target", nargs="?", default=DEFAULT_MODEL, help="a registered model name or a checkpoint folder")
    p.add_argument("--framework", choices=["torch", "keras"])
    p.add_argument("--task", help="for a model name: the task it is built for (default its first)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("score", help="score the channels of a checkpoint's layers with a criterion")
    p.add_argument("checkpoint")
    p.add_argument("--criterion", default="passive", help="passive | l1 | l2 | activation_l1 (default passive)")
    p.add_argument("--layers", help="comma-separated layer names (default: every conv layer)")
    _add_data_args(p)
    p.add_argument("--calib", type=int, default=200, help="calibration samples for data-driven criteria")
    p.add_argument("--out", required=True, help="scores JSON")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("prune", help="remove channels for real (a pruned checkpoint gets one more transform); prints "
                                     "and saves a per-layer table")
    p.add_argument("checkpoint")
    p.add_argument("--scores", help="scores JSON from `edgeprune score` (else --criterion is run now)")
    p.add_argument("--criterion", default="passive")
    p.add_argument("--layers", help="comma-separated layers to score (default: every conv layer)")
    p.add_argument("--keep", help="JSON {layer: [channel indices to keep]}")
    p.add_argument("--ratio", type=float, help="fraction of channels to remove in every scored layer")
    p.add_argument("--layer-ratio", action="append", metavar="LAYER=R", help="per-layer ratio (repeatable)")
    p.add_argument("--rule", action="store_true", help="the criterion's own keep rule (passive)")
    p.add_argument("--budget", help="params=F or macs=F: keep this fraction of the parent, within 1 %%; "
                                    "latency=F: at most this fraction of its latency as the target's table "
                                    "predicts it (--device, --precision)")
    p.add_argument("--round-to", default="1",
                   help="keep channel counts a multiple of N, or 'auto': grow each to the count where the target's "
                        "measured latency steps (its latency table; --device, --precision)")
    p.add_argument("--device", help="target whose latency table a latency budget or --round-to auto uses (default "
                                    "desktop)")
    p.add_argument("--precision", default="int8", help="the precision that latency is predicted at (default int8)")
    p.add_argument("--global-ranking", action="store_true",
                   help="with --ratio: remove that fraction of all scored channels, lowest scores first wherever they "
                        "are (scores comparable across layers, e.g. cmc_asp), instead of per layer")
    p.add_argument("--ignore", help="comma-separated layers never to prune")
    p.add_argument("--group-reduction", default="mean", choices=["mean", "sum"],
                   help="how coupled layers' normalised scores combine into one ranking (default mean)")
    _add_data_args(p)
    p.add_argument("--calib", type=int, default=200)
    p.add_argument("--out", required=True, help="pruned checkpoint folder")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("prune-layers", help="remove whole transformer layers (CoMFLP): search the K layers on a "
                                            "layer-to-layer correlation matrix, verify the top candidates with the "
                                            "task metric on the validation split, remove the best for real")
    p.add_argument("checkpoint")
    p.add_argument("--remove", type=int, required=True, metavar="K", help="layers to remove")
    p.add_argument("--measure", default="svcca-U", help="svcca-U | svcca-T | dc | cka | bi (default svcca-U)")
    p.add_argument("--search", default="beam", choices=["beam", "exhaustive", "greedy", "random"])
    p.add_argument("--beam", type=int, default=10, help="beam width (default 10)")
    p.add_argument("--top", type=int, default=10, help="candidates verified on the validation split (default 10)")
    p.add_argument("--no-verify", action="store_true", help="take the matrix's best set without evaluating any")
    _add_data_args(p)
    p.add_argument("--calib", type=int, default=512,
                   help="calibration samples for the hidden states (default 512: svcca-U needs more samples than the "
                        "directions two states keep together)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="pruned checkpoint folder")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_prune_layers)

    p = sub.add_parser("prune-blocks", help="CMa-FSMC on a residual CNN from a few samples: remove the blocks "
                                            "whose concept masks change least (--drop K), or search per-block "
                                            "rates meeting a MACs / parameter cut (--macs R), then recover by "
                                            "mimicking the parent's features with CMaMix")
    p.add_argument("checkpoint")
    p.add_argument("--drop", type=int, metavar="K", help="blocks to remove (block level)")
    p.add_argument("--macs", type=float, metavar="R", help="MACs reduction to meet within 4e-4 (filter level)")
    p.add_argument("--params", type=float, metavar="R", help="parameter reduction to meet within 4e-4")
    p.add_argument("--samples", type=int, default=50, help="training samples drawn, stratified (default 50)")
    p.add_argument("--recover-steps", type=int, default=200, help="recovery steps of 16 samples (default 200; 0: none)")
    p.add_argument("--no-mix", action="store_true", help="recover without CMaMix")
    p.add_argument("--threshold", type=float, default=0.2, help="concept-mask threshold (default 0.2)")
    _add_data_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="pruned checkpoint folder")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_prune_blocks)

    p = sub.add_parser("finetune", help="recover accuracy of a pruned checkpoint (optionally with distillation)")
    p.add_argument("checkpoint")
    _add_data_args(p)
    p.add_argument("--epochs", type=int, help="override the profile's epochs")
    p.add_argument("--distill", action="store_true", help="distil from the unpruned parent (or --teacher)")
    p.add_argument("--teacher", help="teacher checkpoint (default: the pruned model's parent)")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the distillation term")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("models", help="list the registered models and their tasks")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("tasks", help="list the tasks: inputs, output, loss, metric")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("data", help="generate (or load) a data set and summarise its splits")
    p.add_argument("--task", default="scenes", help="scenes | keywords | phones | enhancement (default scenes)")
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

    from edgeprune.export.cli import add_export_parser

    add_export_parser(sub).set_defaults(func=cmd_export)  # --pad-for reads a latency table: joined here

    from edgeprune.reproduce.cli import add_reproduce_parser

    add_reproduce_parser(sub)

    from edgeprune.bench import add_bench_parser

    add_bench_parser(sub)

    from edgeprune.report import add_report_parser

    add_report_parser(sub)

    from edgeprune.latency.cli import add_latency_parser

    add_latency_parser(sub)

    from edgeprune.sweep.cli import add_sweep_parser

    add_sweep_parser(sub)

    p = sub.add_parser("demo", help="the headline job (the DCASE quantization table, quick profile) on the built-in data")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--devices", default="desktop", help="benchmark targets (default desktop)")
    p.add_argument("--force", action="store_true", help="start over instead of resuming")
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
