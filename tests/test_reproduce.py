"""`edgeprune reproduce dcase-table`: the whole path on a tiny profile, resuming, the seed comparison and its checks."""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys

import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.reproduce.seed_table import ROWS, SEED, relations, seed_counts, size_comparison
from edgeprune.reproduce.executor_study import untimed, untimed_columns
from edgeprune.reproduce.steps import StepLog

CLI = [sys.executable, "-m", "edgeprune.cli"]


def _reproduce(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    # one thread per step, so that the Ray run below has two steps at once on 2 CPUs
    return subprocess.run(CLI + ["reproduce", "dcase-table", "--profile", "tiny", "--bench-runs", "3", "--threads", "1",
                                 "--work", str(tmp_path / "work"), "--out", str(tmp_path / "table"), *extra],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The command end to end on the tiny profile (100 training clips, one epoch), then once more to resume."""
    tmp = tmp_path_factory.mktemp("reproduce")
    first = _reproduce(tmp)
    assert first.returncode == 0, first.stderr[-2000:]
    doc = json.loads((tmp / "table.json").read_text())
    second = _reproduce(tmp)
    assert second.returncode == 0, second.stderr[-2000:]
    return tmp, doc, first.stdout, second.stdout


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory):
    """The same command as tiny_run, its steps as Ray tasks on a Ray started here with 2 CPUs."""
    pytest.importorskip("ray", reason="the cluster extra (make test installs it)")
    tmp = tmp_path_factory.mktemp("reproduce-ray")
    proc = _reproduce(tmp, "--executor", "ray", "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp, json.loads((tmp / "table.json").read_text())


def test_the_ray_executor_gives_the_same_table_and_state_as_local(tiny_run, ray_run):
    # Steps that read a clock, and the latency-aware rows whose counts come from the latency table's timings, differ
    # from run to run on any executor (`untimed` leaves them out); every other step's result must be the same.
    tmp, doc, _, _ = tiny_run
    ray_tmp, ray_doc = ray_run
    local_state = json.loads((tmp / "work" / "state.json").read_text())
    ray_state = json.loads((ray_tmp / "work" / "state.json").read_text())
    assert local_state["settings"] == ray_state["settings"]
    assert set(local_state["steps"]) == set(ray_state["steps"])
    assert untimed(local_state, tmp / "work") == untimed(ray_state, ray_tmp / "work")
    assert len(untimed(local_state, tmp / "work")) >= 2 + 4 * len(ROWS)  # train, evaluate, each row's steps
    assert all("worker" in step for step in ray_state["steps"].values())
    # the seed's rows of the table: every column but the timings
    assert untimed_columns(doc["rows"]) == untimed_columns(ray_doc["rows"])
    assert (doc["executor"], ray_doc["executor"]) == ("local", "ray")
    assert ray_doc["command"].replace(str(ray_tmp), "TMP") == doc["command"].replace(str(tmp), "TMP")


def test_tiny_run_writes_the_table_in_the_seeds_layout(tiny_run):
    tmp, doc, _, _ = tiny_run
    assert [r["row"] for r in doc["rows"]] == ["baseline"] + [name for name, _ in ROWS]
    assert "SYNTHETIC" in doc["title"]
    md = (tmp / "table.md").read_text()
    assert md.startswith("# DCASE 2021 task 1a quantization table")
    for heading in ("## Ours", "## The seed", "## Differences", "## Relations", "## Sizes", "## Latency on desktop",
                    "## Latency cut against MAC cut", "## Wall time per step"):
        assert heading in md
    for r in doc["rows"][1:]:  # every pruned row timed against the baseline at every precision, in pairs
        assert 0 < r["mac_cut"] < 1 and doc["exported"][r["row"]]["fp32"]
        for q in ("fp32", "fp16", "dynamic", "int8"):  # a file parity rejected (a 1-epoch model at int8) is not timed
            assert (f"lat_cut_{q}" in r) == doc["exported"][r["row"]][q]
        for q, timed in doc["paired"][r["row"]].items():
            assert r["lat_cut_" + q] == pytest.approx(1 - timed["ratio"], abs=1e-4)
    # every seed row gets a latency-aware twin that stays within the row's MAC budget (the search's constraint)
    assert [r["row"] for r in doc["latency_rows"]] == [f"{name} (latency)" for name, _ in ROWS]
    seed_rows = {r["row"]: r for r in doc["rows"]}
    for r in doc["latency_rows"]:
        assert r["mac_cut"] >= seed_rows[r["row"][: -len(" (latency)")]]["mac_cut"] - 1e-9
        assert r["acc_int8_seed_counts"] == seed_rows[r["row"][: -len(" (latency)")]]["acc_int8"]
        assert ("lat_cut_int8" in r) == doc["exported"][r["row"]]["int8"]  # timed unless parity rejected it
    assert "## Latency-aware rows" in md
    assert "## Padded for this machine" in md and isinstance(doc["padded"], dict)  # what --pad-for would ship
    assert (tmp / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = list(csv.DictReader((tmp / "table.csv").open()))
    assert [line["row"] for line in lines] == [r["row"] for r in doc["rows"]]
    c1 = next(line for line in lines if line["row"] == "C1")
    assert float(c1["seed_kb_fp32"]) == SEED["C1"]["kb_fp32"]
    assert float(c1["diff_kb_fp32"]) == pytest.approx(float(c1["kb_fp32"]) - SEED["C1"]["kb_fp32"], abs=0.01)


def test_the_recorded_command_parses_back_to_the_same_run(tiny_run):
    from edgeprune.cli import build_parser
    from edgeprune.reproduce.cli import settings_from_args

    tmp, doc, _, _ = tiny_run
    argv = shlex.split(doc["command"])
    assert argv[:3] == ["edgeprune", "reproduce", "dcase-table"]
    args = build_parser().parse_args(argv[1:])
    settings = settings_from_args(args).to_json()
    assert settings == doc["settings"]
    assert settings["bench_runs"] == 3 and "--bench-runs 3" in doc["command"]
    assert (args.work, args.out) == (str(tmp / "work"), str(tmp / "table"))


def test_tiny_run_prunes_only_the_rows_layers_with_the_passive_rule(tiny_run):
    tmp, doc, _, _ = tiny_run
    kept = json.loads((tmp / "work" / "scores.json").read_text())["layers"]
    rows = {r["row"]: r for r in doc["rows"]}
    assert rows["baseline"]["kept"] == {"conv1": 16, "conv2": 16, "conv3": 32}
    for name, layers in ROWS:
        for layer, full in (("conv1", 16), ("conv2", 16), ("conv3", 32)):
            want = len(kept[layer]["keep"]) if layer in layers else full
            assert rows[name]["kept"][layer] == want
        # the passive rule always removes at least one filter of each pruned layer
        assert rows[name]["params"] < rows["baseline"]["params"]


def test_tiny_run_measures_every_precision_and_the_relations_on_size_hold(tiny_run):
    _, doc, _, _ = tiny_run
    for r in doc["rows"]:
        assert r["kb_fp32"] > r["kb_fp16"] > r["kb_dynamic"]
        assert r["kb_int8"] < r["kb_dynamic"] < r["kb_fp32"] / 2.5
        for q in ("fp32", "fp16", "dynamic", "int8"):
            assert 0 <= r[f"acc_{q}"] <= 100
            assert (r[f"ms_desktop_{q}"] or 0) > 0 if doc["exported"][r["row"]][q] else r[f"ms_desktop_{q}"] is None
    # The size relations follow from the arithmetic of the formats and of pruning, so they hold on any model. The
    # accuracy relations do not hold by construction: a one-epoch model is near chance and one clip of 60 is
    # 1.7 points, so here they are only checked to be computed; the committed quick and full runs carry them.
    by_name = {x["relation"]: x for x in doc["relations"]}
    assert all(by_name[name]["holds"] for name in by_name if name.startswith(("sizes", "size falls")))
    assert len(by_name) == 4 and all(isinstance(x["holds"], bool) for x in by_name.values())
    assert set(doc["step_seconds"]) >= {"train baseline", "export C1+C2+C3", "benchmark on desktop"}


def test_a_second_run_resumes_without_redoing_any_step(tiny_run):
    tmp, doc, first, second = tiny_run
    assert "train baseline ..." in first
    assert "..." not in second.replace("done before", "")  # no step started
    assert second.count("reused") == len(doc["step_seconds"])
    again = json.loads((tmp / "table.json").read_text())
    assert again["rows"] == doc["rows"]


def test_changed_settings_in_the_same_work_folder_are_refused(tiny_run):
    tmp, _, _, _ = tiny_run
    before = sorted(p.name for p in tmp.iterdir())
    proc = _reproduce(tmp, "--seed", "1")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("edgeprune: error: ")
    assert "seed" in proc.stderr and "--force" in proc.stderr
    assert sorted(p.name for p in tmp.iterdir()) == before


@pytest.mark.parametrize("extra, message", [
    (["--devices", "toaster"], "unknown device 'toaster'"),
    (["--executor", "ray", "--ray-address", "127.0.0.1:9"], "--ray-address 127.0.0.1:9: no Ray head answers there"),
    (["--threads", "0"], "--threads 0: must be at least 1"),
    (["--checkpoint", "no/such/checkpoint"], "no/such/checkpoint"),
    (["--finetune-epochs", "0"], "at least 1"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, extra, message):
    proc = _reproduce(tmp_path, *extra)
    assert proc.returncode == 2
    assert message in proc.stderr.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


def _row(name: str, **over) -> dict:
    base = {"row": name, "params": 30000, "kept": seed_counts(name), "acc_fp32": 50.0, "acc_fp16": 50.0,
            "acc_dynamic": 50.0, **{f"kb_{q}": SEED[name][f"kb_{q}"] for q in ("fp32", "fp16", "dynamic")}}
    return {**base, **over}


def test_relations_hold_on_the_seeds_own_figures():
    rows = [{"row": n, "params": 1, "kept": seed_counts(n), **SEED[n]} for n, _ in ROWS]
    assert all(r["holds"] for r in relations(rows))


def test_relations_report_each_kind_of_violation():
    rows = [_row(n) for n, _ in ROWS]
    rows[0] = _row("C1", acc_fp16=50.3, acc_dynamic=48.5)
    rows[3] = _row("C1+C2", kb_fp32=200.0)  # larger than C1 and C2, which it should be below
    result = {r["relation"]: r for r in relations(rows)}
    assert not result["float16 accuracy within 0.2 points of float32"]["holds"]
    assert "C1: +0.30" in result["float16 accuracy within 0.2 points of float32"]["detail"]
    assert not result["dynamic-range int8 accuracy within 1 point of float32"]["holds"]
    assert result["sizes ordered float32 > float16 > dynamic-range int8"]["holds"]
    in_clips = relations(rows, n_clips=1000)[0]["detail"]
    assert in_clips == "C1: +0.30 (3 of 1000 clips)"
    falls = result["size falls as more layers are pruned (row by row, as in the seed)"]
    assert not falls["holds"] and "C1+C2 200.0 KB not below C1" in falls["detail"]


def test_size_comparison_explains_only_differences_over_ten_percent():
    seed_params = {n: 40000 for n, _ in ROWS}
    close = _row("C2", params=40000, kb_fp32=SEED["C2"]["kb_fp32"] * 1.05)
    far = _row("C3", params=48000, kept={"conv1": 16, "conv2": 16, "conv3": 28}, kb_fp32=SEED["C3"]["kb_fp32"] * 1.2)
    out = {(r["row"], r["precision"]): r for r in size_comparison([close, far], seed_params)}
    assert out[("C2", "fp32")]["explanation"] == ""
    why = out[("C3", "fp32")]["explanation"]
    assert "conv3 28 vs 22" in why and "+20%" in why
    assert out[("C3", "fp32")]["diff_pct"] == pytest.approx(20.0)


def test_step_log_reuses_finished_steps_and_redoes_missing_outputs(tmp_path):
    calls = []
    target = tmp_path / "w" / "thing.txt"

    def make():
        calls.append(1)
        target.write_text("x")
        return {"n": len(calls)}

    log = StepLog(tmp_path / "w", {"a": 1}, progress=False)
    assert log.run("make", make, outputs=(target,), inputs=()) == {"n": 1}
    log = StepLog(tmp_path / "w", {"a": 1}, progress=False)
    assert log.run("make", make, outputs=(target,), inputs=()) == {"n": 1}
    assert len(calls) == 1
    target.unlink()
    assert log.run("make", make, outputs=(target,), inputs=()) == {"n": 2}
    with pytest.raises(EdgepruneError, match="other settings"):
        StepLog(tmp_path / "w", {"a": 2}, progress=False)


def test_only_files_slower_in_every_paired_round_are_called_slower():
    from edgeprune.reproduce.dcase_results import slower_than_baseline

    def timed(ratio, low, high):
        return {"ratio": ratio, "ratio_spread": [low, high], "parent_ms": 1.0, "pruned_ms": ratio}

    doc = {"paired": {"C3": {"fp32": timed(1.033, 1.015, 1.081), "int8": timed(1.004, 0.966, 1.018)},
                      "C1": {"fp32": timed(0.771, 0.722, 0.793)}}}
    line = slower_than_baseline(doc)
    assert "C3 float32 (1.033; rounds 1.015-1.081)" in line
    assert "int8" not in line and "C1" not in line  # a median above 1 with a round below it is noise, not slower
    del doc["paired"]["C3"]["fp32"]
    assert slower_than_baseline(doc).startswith("No pruned file is slower")


def test_a_padded_file_stands_for_its_row_in_what_export_pad_for_ships():
    from edgeprune.reproduce.dcase_results import padded_rows, slower_than_baseline

    def timed(ratio, low, high, **extra):
        return {"ratio": ratio, "ratio_spread": [low, high], **extra}

    doc = {"rows": [{"row": "C3", "kept": {"conv1": 16, "conv2": 16, "conv3": 26}, "kb_fp32": 167.0,
                     "lat_cut_fp32": -0.033}],
           "paired": {"C3": {"fp32": timed(1.033, 1.015, 1.081), "int8": timed(1.004, 0.966, 1.018)}},
           "padded": {"C3": {"fp32": timed(0.998, 0.981, 1.012, widths={"conv3": 32}, size_bytes=194_560)}}}
    assert "C3 float32" in slower_than_baseline(doc)  # as pruned
    assert slower_than_baseline(doc, padded=True).startswith("No pruned file, padded where it is above, is slower")
    (row,) = padded_rows(doc)
    assert row == {"row": "C3", "precision": "float32", "widths": "conv3 26 -> 32", "kb": 167.0, "kb_padded": 190.0,
                   "lat_cut": -0.033, "lat_cut_padded": 0.002, "rounds": "0.981-1.012"}
