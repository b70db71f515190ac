"""The reproduced DCASE quantization table: rows from the pipeline's step results, ours beside the seed's, written
as Markdown, CSV, JSON and a PNG plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from edgeprune.reproduce.seed_table import (FULL_WIDTH, LAYERS, ROWS, SEED, SEED_BASELINE, relations, seed_counts,
                                            size_comparison)
from edgeprune.results import save_png, write_stem
from edgeprune.tables import markdown_table
from edgeprune.machine import machine_description

PRECISIONS = ("fp32", "fp16", "dynamic", "int8")
LABELS = {"fp32": "float32", "fp16": "float16", "dynamic": "dynamic int8 (seed: uint8)", "int8": "full int8"}


def seed_params() -> dict[str, int]:
    """Parameters of the authors' pruned models (their kept counts, our architecture; BN statistics counted)."""
    from edgeprune.frameworks import get_adapter
    from edgeprune.models import arch_spec, build

    adapter = get_adapter("torch")
    return {row: adapter.count_params(build(arch_spec("dcase2021_baseline", **seed_counts(row)), "torch"))
            for row, _ in ROWS}


def build(settings, data_info: dict[str, Any], baseline: dict[str, Any], kept: dict[str, list[int]],
          recovery: dict[str, Any], exports: dict[str, Any], bench: dict[str, Any], seconds: dict[str, float],
          wall_seconds: float, command: str = "", paired: dict[str, Any] | None = None,
          choices: dict[str, Any] | None = None, executor: str = "local",
          padded: dict[str, Any] | None = None) -> dict[str, Any]:
    """The results document: our rows, the seed's, differences, relations, size comparison, step times (and which
    executor ran the steps of the invocation that wrote it). `padded`: the files `export --pad-for desktop`
    pads, each timed against the baseline's."""
    rows = []
    for name, layers in [("baseline", ())] + ROWS:
        ex = exports[name]
        row = {"row": name, "kept": {layer: len(kept[layer]) if layer in layers else FULL_WIDTH[layer]
                                     for layer in LAYERS},
               "params": ex["params"], "mmacs": round(ex["macs"] / 1e6, 1),
               "folded": ex.get("tflite_rewrites", {}).get("one_channel_conv_rows_as_channels", [])}
        for q in PRECISIONS:
            art = ex["artifacts"][q]
            row[f"acc_{q}"] = round(100 * art["accuracy"], 2)
            row[f"kb_{q}"] = round(art["size_bytes"] / 1024, 1)
        if name in recovery:
            row["acc_before_finetune"] = round(100 * recovery[name]["test_accuracy_before"], 2)
        row["mac_cut"] = round(1 - ex["macs"] / exports["baseline"]["macs"], 4)
        for q, timed in ((paired or {}).get(name) or {}).items():
            row[f"lat_cut_{q}"] = round(1 - timed["ratio"], 4)
            row[f"lat_over_mac_{q}"] = round((1 - timed["ratio"]) / row["mac_cut"], 3) if row["mac_cut"] > 0.01 \
                else None
        for device, result in bench.items():
            for q in PRECISIONS:
                key = f"{name}/{ex['artifacts'][q]['file']}"
                r = result["results"].get(key, {})
                if result["emulated"]:  # correctness only: does the board's arithmetic give x86's outputs?
                    row[f"agrees_{device}_{q}"] = _agreement(result.get("agreement"), key, r)
                else:
                    row[f"ms_{device}_{q}"] = None if r.get("median_ms") is None else round(r["median_ms"], 3)
        rows.append(row)
    latency_rows = []
    for name, choice in (choices or {}).items():
        ex = exports[name]
        row = {"row": name, "kept": {layer: choice["counts"].get(layer, FULL_WIDTH[layer]) for layer in LAYERS},
               "seed_kept": {layer: choice["seed_counts"].get(layer, FULL_WIDTH[layer]) for layer in LAYERS},
               "params": ex["params"], "mmacs": round(ex["macs"] / 1e6, 1),
               "mac_cut": round(1 - ex["macs"] / exports["baseline"]["macs"], 4)}
        twin = next(r for r in rows if r["row"] == name[: -len(" (latency)")])
        for q in PRECISIONS:
            row[f"acc_{q}"] = round(100 * ex["artifacts"][q]["accuracy"], 2)
            row[f"acc_{q}_seed_counts"] = twin[f"acc_{q}"]
            row[f"kb_{q}"] = round(ex["artifacts"][q]["size_bytes"] / 1024, 1)
        for q, timed in ((paired or {}).get(name) or {}).items():
            row[f"lat_cut_{q}"] = round(1 - timed["ratio"], 4)
            row[f"lat_over_mac_{q}"] = round((1 - timed["ratio"]) / row["mac_cut"], 3) if row["mac_cut"] > 0.01 \
                else None
            row[f"lat_cut_{q}_seed_counts"] = twin.get(f"lat_cut_{q}")
        latency_rows.append(row)
    sp = seed_params()
    seed_rows = [{"row": n, "kept": seed_counts(n), "params": sp[n], **SEED[n]} for n, _ in ROWS]
    diffs = []
    for r in rows:
        if r["row"] in SEED:
            s = SEED[r["row"]]
            diffs.append({"row": r["row"], **{f"acc_{q}": round(r[f"acc_{q}"] - s[f"acc_{q}"], 2)
                                              for q in ("fp32", "fp16", "dynamic")},
                          **{f"kb_{q}": round(r[f"kb_{q}"] - s[f"kb_{q}"], 1) for q in ("fp32", "fp16", "dynamic")}})
    synthetic = data_info.get("source") == "synthetic"
    title = ("DCASE 2021 task 1a quantization table (passive filter pruning), reproduced"
             + (" on the SYNTHETIC scenes, not the real DCASE data" if synthetic else f" on {data_info.get('source')}")
             + f" ({settings.profile} profile, {settings.framework})")
    return {
        "title": title, "settings": settings.to_json(), "data": data_info, "machine": machine_description(),
        "baseline": {**baseline, "accuracy_pct": round(100 * baseline["accuracy"], 2)}, "seed_baseline": SEED_BASELINE,
        "rows": rows, "seed_rows": seed_rows, "differences": diffs, "relations": relations(rows, baseline["n"]),
        "sizes": size_comparison(rows, sp), "recovery": recovery,
        "devices": {d: {"emulated": b["emulated"], "fingerprint": b.get("fingerprint"), "results_file": b.get("file")}
                    for d, b in bench.items()},
        "step_seconds": seconds, "wall_seconds": wall_seconds, "executor": executor,
        "command": command, "paired": paired, "latency_rows": latency_rows, "padded": padded,
        "exported": {n: {q: a.get("passed", True) for q, a in ex["artifacts"].items()} for n, ex in exports.items()},
    }


def _agreement(agreement: dict[str, Any] | None, key: str, result: dict[str, Any]) -> str:
    if not result.get("ok"):
        return "FAILED: " + str(result.get("error"))
    if agreement is None or key not in agreement:
        return "not compared (no desktop run)"
    a = agreement[key]
    diff = f"max diff {a['max_abs_diff']:.1e}" if a.get("max_steps") is None else f"{a['max_steps']:.0f} steps"
    return (f"yes ({a['clips']} clips, {diff})" if a["ok"] else f"NO: {a.get('why')}")


def markdown(doc: dict[str, Any]) -> str:
    """The human-readable results file."""
    m = doc["machine"]
    rows = [{**r, **{f"C{i + 1}": r["kept"][layer] for i, layer in enumerate(LAYERS)}} for r in doc["rows"]]
    seed_rows = [{**r, **{f"C{i + 1}": r["kept"][layer] for i, layer in enumerate(LAYERS)}} for r in doc["seed_rows"]]
    acc = [f"acc_{q}" for q in PRECISIONS]
    kb = [f"kb_{q}" for q in PRECISIONS]
    heads = [f"acc % {LABELS[q]}" for q in PRECISIONS] + [f"KB {LABELS[q]}" for q in PRECISIONS]
    seed_cols = [c for c in acc + kb if "int8" not in c]
    b = doc["baseline"]
    parts = [
        f"# {doc['title']}", "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}.  ",
        f"Data: {doc['data'].get('source')}, test split {b['n']} clips. Wall time "
        f"{sum(doc['step_seconds'].values()) / 60:.1f} min, the sum of the steps below (each step's first run; the "
        f"invocation that wrote this file: {doc['wall_seconds']:.0f} s on the {doc.get('executor', 'local')} "
        f"executor, {doc['settings'].get('threads', 1)} thread(s) per step).", "",
        f"Baseline (unpruned): {b['accuracy_pct']:.2f} % test accuracy, log-loss {b['log_loss']:.3f}, "
        f"{b['params']:,} parameters (seed: {doc['seed_baseline']['accuracy']} %, log-loss "
        f"{doc['seed_baseline']['log_loss']}, on the real DCASE 2021 1a data).", "",
        "## Ours", "",
        "Accuracy: each .tflite in LiteRT, one clip at a time, on the whole test split. KB = file bytes / 1024. "
        "Kept filters per conv layer (of 16 / 16 / 32) by the passive rule on our baseline; params count BN statistics.",
        "",
        markdown_table(rows, ["row", "C1", "C2", "C3", "params", "mmacs", "acc_before_finetune"] + acc + kb,
                       ["pruned", "C1", "C2", "C3", "params", "M MACs", "acc % before fine-tune"] + heads),
        "", "## The seed (Singh and Plumbley 2022, real DCASE 2021 1a data)", "",
        "Kept counts are the authors' stored indices; params are those counts in our architecture.", "",
        markdown_table(seed_rows, ["row", "C1", "C2", "C3", "params"] + seed_cols,
                       ["pruned", "C1", "C2", "C3", "params"] + [h for h, c in zip(heads, acc + kb) if c in seed_cols]),
        "", "## Differences (ours minus seed)", "",
        markdown_table(doc["differences"], ["row"] + seed_cols, ["pruned"] + [h for h, c in zip(heads, acc + kb)
                                                                               if c in seed_cols]),
        "", "## Relations the seed's table shows, checked on ours", "",
        markdown_table([{**r, "holds": "yes" if r["holds"] else "NO"} for r in doc["relations"]],
                       ["relation", "holds", "detail"]),
        "", "## Sizes against the seed's (explained where more than 10 % apart)", "",
        markdown_table(doc["sizes"], ["row", "precision", "ours_kb", "seed_kb", "diff_pct", "ours_bytes_per_param",
                                      "seed_bytes_per_param", "explanation"],
                       ["pruned", "precision", "ours KB", "seed KB", "diff %", "ours B/param", "seed B/param",
                        "why"]),
    ]
    for device, info in doc["devices"].items():
        fp = info.get("fingerprint") or {}
        where = f"Device: {fp.get('cpu_model') or fp.get('cpu') or '?'}; results: `{info.get('results_file')}`."
        if info["emulated"]:
            parts += ["", f"## {device}: EMULATED under qemu-aarch64 (outputs against the desktop run; timings are "
                          "not device latency and are not shown)", "", where, "",
                      markdown_table(rows, ["row"] + [f"agrees_{device}_{q}" for q in PRECISIONS],
                                     ["pruned"] + [LABELS[q] for q in PRECISIONS])]
        else:
            parts += ["", f"## Latency on {device} (ms; median, 1 thread, XNNPACK, benchmark_model-style timing)", "",
                      where, "", markdown_table(rows, ["row"] + [f"ms_{device}_{q}" for q in PRECISIONS],
                                                ["pruned"] + [LABELS[q] for q in PRECISIONS])]
    if doc.get("paired"):
        cols = [c for q in PRECISIONS for c in (f"lat_cut_{q}", f"lat_over_mac_{q}")]
        parts += ["", "## Latency cut against MAC cut (this machine; each row's file and the baseline's timed in "
                      "alternating blocks in one process, 1 thread, XNNPACK; cut = 1 - median per-round ratio)", "",
                  markdown_table([r for r in rows if r["row"] != "baseline"], ["row", "mac_cut"] + cols,
                                 ["pruned", "MAC cut"] + [("latency cut " if c.startswith("lat_cut") else
                                                           "cut / MAC cut ") + LABELS[c.rsplit("_", 1)[1]]
                                                          for c in cols])]
        parts += [""] + [f"- {line}" for line in ship_precision(doc) + [slower_than_baseline(doc)]]
    if doc.get("padded") is not None:
        parts += ["", "## Padded for this machine (`edgeprune export --pad-for desktop`: pruned layers padded back "
                      "with zero channels where the baseline's latency table predicts the wider count faster; the "
                      "same outputs; float32, float16 and full int8, the precisions the table has)", ""]
        parts += [markdown_table(padded_rows(doc), ["row", "precision", "widths", "kb", "kb_padded", "lat_cut",
                                                    "lat_cut_padded", "rounds"],
                                 ["pruned", "precision", "padded", "KB as pruned", "KB padded", "latency cut as pruned",
                                  "latency cut padded", "padded / baseline, range over the rounds"])
                  if doc["padded"] else "No pruned file is predicted faster with padding on this machine."]
        parts += ["", f"- {slower_than_baseline(doc, padded=True)}"]
    if doc.get("latency_rows"):
        lrows = [{**r, "counts": "/".join(str(r["kept"][n]) for n in LAYERS),
                  "seed": "/".join(str(r["seed_kept"][n]) for n in LAYERS)} for r in doc["latency_rows"]]
        cols = ["row", "seed", "counts", "mac_cut", "acc_fp32_seed_counts", "acc_fp32", "acc_int8_seed_counts",
                "acc_int8", "lat_cut_fp32_seed_counts", "lat_cut_fp32", "lat_cut_int8_seed_counts", "lat_cut_int8"]
        parts += ["", "## Latency-aware rows (within the seed row's MAC budget, each pruned layer at the end of one "
                      "of its measured full-int8 latency stairs on this machine or on its lowest stair, the fastest "
                      "predicted within 5 % of the most MACs the budget allows; passive's best channels; fine-tuned "
                      "and exported the same way)", "",
                  markdown_table(lrows, cols, ["row", "seed counts C1/C2/C3", "latency-aware counts", "MAC cut",
                                               "acc % fp32 (seed counts)", "acc % fp32", "acc % int8 (seed counts)",
                                               "acc % int8", "latency cut fp32 (seed counts)", "latency cut fp32",
                                               "latency cut int8 (seed counts)", "latency cut int8"])]
    parts += ["", "## Notes", ""] + [f"- {n}" for n in notes(doc)]
    parts += ["", "## Wall time per step (s)", "",
              markdown_table([{"step": k, "seconds": v} for k, v in doc["step_seconds"].items()], ["step", "seconds"]),
              ""]
    return "\n".join(parts)


def ship_precision(doc: dict[str, Any]) -> list[str]:
    """Which file to ship on this machine for speed: the baseline's fastest precision in the paired runs (int8 is
    not always faster: XNNPACK runs fp16 files as float32 on x86, and some ARM cores are slow on int8)."""
    paired = doc.get("paired") or {}
    lines = []
    for name, by_q in paired.items():
        fastest = min(by_q, key=lambda q: by_q[q]["pruned_ms"])
        base = min(by_q, key=lambda q: by_q[q]["parent_ms"])
        lines.append(f"{name}: fastest file here is {LABELS[fastest]} ({by_q[fastest]['pruned_ms']:.3f} ms; "
                     + ", ".join(f"{LABELS[q]} {v['pruned_ms']:.3f}" for q, v in by_q.items())
                     + f"); the baseline's is {LABELS[base]}")
    return lines


def slower_than_baseline(doc: dict[str, Any], padded: bool = False) -> str:
    """Which pruned files are slower than the baseline's in EVERY paired round (the lowest per-round ratio above 1):
    slower beyond the pairs' noise, not by a median within it. `padded`: with the padded file wherever one was
    made (what `export --pad-for` ships)."""
    timed = {name: dict(by_q) for name, by_q in (doc.get("paired") or {}).items()}
    if padded:
        for name, by_q in (doc.get("padded") or {}).items():
            timed.setdefault(name, {}).update(by_q)
    slower = [f"{name} {LABELS[q]} ({v['ratio']:.3f}; rounds {v['ratio_spread'][0]:.3f}-{v['ratio_spread'][1]:.3f})"
              for name, by_q in timed.items() for q, v in by_q.items() if v["ratio_spread"][0] > 1]
    which = "pruned file, padded where it is above" if padded else "pruned file"
    if not slower:
        return f"No {which}{',' if padded else ''} is slower than the baseline's in every paired round."
    return (f"Slower than the baseline's file in every paired round ({which}; time ratio, its range over the "
            "rounds): " + ", ".join(slower) + ". Every other file is faster in some round.")


def padded_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per padded file: its widths, size and latency cut beside the file as pruned."""
    rows = {r["row"]: r for r in doc["rows"] + (doc.get("latency_rows") or [])}
    out = []
    for name, by_q in (doc.get("padded") or {}).items():
        for q, v in by_q.items():
            r = rows.get(name, {})
            kept = r.get("kept", {})
            out.append({"row": name, "precision": LABELS[q],
                        "widths": ", ".join(f"{n} {kept.get(n, '?')} -> {w}" for n, w in v["widths"].items()),
                        "kb": r.get(f"kb_{q}"), "kb_padded": round(v["size_bytes"] / 1024, 1),
                        "lat_cut": r.get(f"lat_cut_{q}"), "lat_cut_padded": round(1 - v["ratio"], 4),
                        "rounds": f"{v['ratio_spread'][0]:.3f}-{v['ratio_spread'][1]:.3f}"})
    return out


def notes(doc: dict[str, Any]) -> list[str]:
    """What a reader needs to read the figures, derived from them."""
    rows = {r["row"]: r for r in doc["rows"]}
    rejected = [f"{name} {q}" for name, r in (doc.get("exported") or {}).items() for q, ok in r.items() if not ok]
    ours = rows["C1+C2+C3"]["kept"]
    out = [f"Kept filters: the passive rule on our baseline keeps C1 {ours['conv1']}, C2 {ours['conv2']}, C3 "
           f"{ours['conv3']}; the authors' stored indices keep C1 11, C2 11, C3 22."]
    base = rows["baseline"]["acc_fp32"]
    above = [n for n, r in rows.items() if n != "baseline" and r["acc_fp32"] > base]
    if above:
        s = doc["settings"]
        out.append(f"{len(above)} of 6 pruned rows score above the unpruned baseline ({base:.2f} %): the baseline "
                   f"trained for the {s['profile']} profile's epochs only, and each pruned model then trains "
                   f"{s['finetune_epochs'] or 'the profile'} more epochs from those weights, so the comparison favours "
                   "the pruned rows. In the seed, trained to convergence, every pruned row is below its baseline.")
    if rejected:
        out.append(f"Files that failed the export's parity gate (kept under rejected/, their accuracy shown, not "
                   f"timed): {', '.join(rejected)}.")
    if doc["data"].get("source") == "synthetic":
        out.append("Accuracies are on the synthetic scenes and are not comparable with the seed's real-data figures; "
                   "the relations between columns and the sizes are.")
    return out


def csv_text(doc: dict[str, Any]) -> str:
    """One line per row: ours, the seed's figures and the differences side by side."""
    seed = {r["row"]: r for r in doc["seed_rows"]}
    lines = []
    for r in doc["rows"]:
        s = seed.get(r["row"], {})
        line = {"row": r["row"], **{f"kept_{k}": v for k, v in r["kept"].items()}, "params": r["params"],
                "mmacs": r["mmacs"], "acc_before_finetune": r.get("acc_before_finetune")}
        for key in [k for k in r if k.startswith(("acc_", "kb_", "ms_", "agrees_", "mac_cut", "lat_"))
                    and k != "acc_before_finetune"]:
            line[key] = r[key]
            if key in SEED.get(r["row"], {}):
                line[f"seed_{key}"] = s[key]
                line[f"diff_{key}"] = round(r[key] - s[key], 2)
        lines.append(line)
    fields = list(dict.fromkeys(k for line in lines for k in line))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(lines)
    return buf.getvalue()


def plot(doc: dict[str, Any], path: Path) -> None:
    """Accuracy against size per precision, ours (filled) and the seed's (hollow), rows named on float32; latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"fp32": "tab:blue", "fp16": "tab:orange", "dynamic": "tab:green", "int8": "tab:red"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    ax = axes[0]
    for q in PRECISIONS:
        xs = [r[f"kb_{q}"] for r in doc["rows"]]
        ys = [r[f"acc_{q}"] for r in doc["rows"]]
        ax.scatter(xs, ys, color=colors[q], label=f"ours {LABELS[q]}")
        if q != "int8":
            ax.scatter([r[f"kb_{q}"] for r in doc["seed_rows"]], [r[f"acc_{q}"] for r in doc["seed_rows"]],
                       facecolors="none", edgecolors=colors[q], label=f"seed {LABELS[q]}")
    # rows named on the float32 points only: the other precisions sit at the same accuracy and overlap
    for rows in (doc["rows"], doc["seed_rows"]):
        for r in rows:
            ax.annotate(r["row"], (r["kb_fp32"], r["acc_fp32"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("size (KB)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs size (filled: ours, hollow: seed)")
    ax.legend(fontsize=7)
    ax = axes[1]
    devices = [d for d, info in doc["devices"].items() if not info["emulated"]]
    names = [r["row"] for r in doc["rows"]]
    width = 0.8 / max(1, len(PRECISIONS) * max(1, len(devices)))
    for j, device in enumerate(devices):
        for i, q in enumerate(PRECISIONS):
            vals = [r.get(f"ms_{device}_{q}") or 0 for r in doc["rows"]]
            offset = (j * len(PRECISIONS) + i) * width
            ax.bar([k + offset for k in range(len(names))], vals, width, color=colors[q],
                   label=f"{device} {LABELS[q]}", alpha=1 - 0.4 * j)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(names))])
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("median latency (ms, 1 thread)")
    ax.set_title("latency per row" if devices else "latency: no non-emulated device was asked")
    if devices:
        ax.legend(fontsize=7)
    fig.suptitle(doc["title"], fontsize=9)
    save_png(fig, path, dpi=110)


def write(doc: dict[str, Any], stem: Path) -> None:
    """STEM.json, STEM.md, STEM.csv and STEM.png, each written atomically."""
    write_stem(stem, doc, markdown(doc), csv_text(doc), plot)
