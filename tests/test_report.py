"""`edgeprune report`: merges real benchmark runs into one table and a plot; bad input writes nothing."""

import csv
import json
import struct
from pathlib import Path

import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.cli import main
from edgeprune.report import device_label, report
from test_benchmarks import FAST, suite

RUN = [*FAST, "--xnnpack", "on"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(bundle):
    """Two real suite runs: a.json (int8 and fp32 TFLite, with the test set) and b.json (int8 ONNX, no test set,
    and a truncated TFLite that fails)."""
    ck, out = bundle / "export" / "ck", bundle / "report_runs"
    out.mkdir()
    truncated = out / "truncated.tflite"
    truncated.write_bytes((ck / "model_int8.tflite").read_bytes()[:500])
    code, _, stderr = suite(str(ck / "model_int8.tflite"), str(ck / "model_fp32.tflite"), "--test-x",
                            str(bundle / "X_test.npy"), "--test-y", str(bundle / "Y_test.npy"), *RUN,
                            "--out", str(out / "a"))
    assert code == 0, stderr
    code, _, stderr = suite(str(ck / "model_int8.onnx"), str(truncated), *RUN, "--out", str(out / "b"))
    assert code == 1, stderr  # the truncated file fails; the ONNX file still runs
    return out / "a.json", out / "b.json"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_merged_table_matches_the_inputs(runs, tmp_path):
    merged = report(list(runs), tmp_path / "rep")
    inputs = [json.loads(p.read_text()) for p in runs]
    expected = [(p.stem, data, r) for p, data in zip(runs, inputs) for r in data["results"]]
    assert len(merged["rows"]) == len(expected) == 4 and merged["failed"] == 1
    for row, (run, data, r) in zip(merged["rows"], expected):
        assert row["run"] == run and row["device"] == device_label(data["device"])
        assert row["model"] == f"{Path(r['file']).parent.name}/{Path(r['file']).name}"
        assert (row["precision"], row["params"], row["threads"]) == (r["precision"], r["params"], 1)
        assert row["size_kb"] == pytest.approx(r["size_bytes"] / 1024, abs=0.05)
        assert row["emulated_median_ms"] is None
        if r["ok"]:
            assert row["status"] == "ok"
            for key in ("median_ms", "p90_ms", "std_ms"):
                assert row[key] == pytest.approx(r["latency"][key], abs=5e-4)
        else:
            assert row["status"].startswith("FAILED: ") and "truncated.tflite" in row["status"]
            assert row["median_ms"] is None and row["p90_ms"] is None
    by_model = {row["model"].split("/")[1]: row for row in merged["rows"]}
    a_results = {Path(r["file"]).name: r for r in inputs[0]["results"]}
    for name in ("model_int8.tflite", "model_fp32.tflite"):
        assert by_model[name]["accuracy"] == pytest.approx(a_results[name]["metrics"]["accuracy"], abs=5e-5)
        assert by_model[name]["xnnpack"] == "on"
    assert by_model["model_int8.onnx"]["accuracy"] is None and by_model["model_int8.onnx"]["xnnpack"] is None
    assert [inp["device"] for inp in merged["inputs"]] == [data["device"] for data in inputs]

    # the same rows on disk, in all three tables
    assert json.loads((tmp_path / "rep.json").read_text()) == merged
    with open(tmp_path / "rep.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [(c["model"], c["median_ms"], c["status"]) for c in csv_rows] == [
        (r["model"], "" if r["median_ms"] is None else str(r["median_ms"]), r["status"]) for r in merged["rows"]]
    md = (tmp_path / "rep.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4 and "std_ms" in table[0]
    assert sum("FAILED" in line for line in table) == 1 and "truncated.tflite" in md
    assert "![size vs latency](rep.png)" in md


def test_plot_is_a_real_png_with_a_panel_per_device(runs, tmp_path):
    report(list(runs), tmp_path / "one")
    width, height = png_size(tmp_path / "one.png")
    assert width > 400 and height > 400 and (tmp_path / "one.png").stat().st_size > 20_000
    other = json.loads(runs[0].read_text())
    other["device"].update(cpu="Cortex-A76", machine="aarch64", cores=4)
    (tmp_path / "pi5.json").write_text(json.dumps(other))
    report([runs[0], tmp_path / "pi5.json"], tmp_path / "two")
    assert png_size(tmp_path / "two.png")[0] > 1.5 * width  # a second device gets its own panel


def test_emulated_timings_stay_out_of_the_latency_columns(runs, tmp_path):
    native = json.loads(runs[0].read_text())
    emulated = json.loads(runs[0].read_text())
    emulated["emulated"] = True
    emulated["device"].update(cpu="Cortex-A72", machine="aarch64")
    (tmp_path / "qemu.json").write_text(json.dumps(emulated))
    one = json.loads(runs[0].read_text())
    one["results"][1]["emulated"] = True  # a runner may mark single results instead of the whole file
    (tmp_path / "one.json").write_text(json.dumps(one))
    merged = report([runs[0], tmp_path / "qemu.json", tmp_path / "one.json"], tmp_path / "rep")
    rows = {run: [r for r in merged["rows"] if r["run"] == run] for run in ("a", "qemu", "one")}
    for r, source in zip(rows["qemu"], native["results"]):
        assert (r["median_ms"], r["p90_ms"], r["std_ms"]) == (None, None, None)
        assert r["emulated_median_ms"] == pytest.approx(source["latency"]["median_ms"], abs=5e-4)
    assert all(r["emulated_median_ms"] is None and r["median_ms"] is not None for r in rows["a"])
    assert [r["emulated_median_ms"] is None for r in rows["one"]] == [True, False]
    assert "Cortex-A72 (aarch64, 2 cores) EMULATED" in (tmp_path / "rep.md").read_text()


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ("{ not json", "not valid JSON"),
    ("[1, 2]", "not a benchmark results file"),
    ('{"schema": 3, "device": {}, "results": []}', "schema 3; expected schema 1 or 2"),
    ('{"schema": 1, "results": []}', "no 'device' object"),
    ('{"schema": 1, "device": {}, "results": [{"file": "m.tflite"}]}', r"results\[0\] has no 'file' and 'ok'"),
    ('{"schema": 1, "device": {}, "results": [{"file": "m.tflite", "ok": true}]}', "is ok but has no latency"),
    ('{"schema": 1, "device": {}, "results": [{"file": "m.tflite", "ok": true, "latency": {"median_ms": "fast"}}]}',
     r"results\[0\] \(m.tflite\): could not convert"),
])
def test_bad_input_is_one_error_and_writes_nothing(runs, tmp_path, content, message):
    bad = tmp_path / "in" / "bad.json"
    bad.parent.mkdir()
    if content is not None:
        bad.write_text(content)
    out = tmp_path / "out"
    with pytest.raises(EdgepruneError, match=message):
        report([runs[0], bad], out / "rep")  # a good file first: nothing from it may be written either
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_errors_are_one_line_and_outputs_are_not_overwritten(runs, tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgeprune: error:") and "missing.json" in err and len(err.splitlines()) == 1
    assert main(["report", str(runs[0]), str(runs[0]), "--out", str(tmp_path / "rep")]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["report", str(runs[0]), "--out", str(tmp_path / "rep")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["report", str(runs[0]), "--out", str(tmp_path / "rep")]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["report", str(runs[0]), "--out", str(tmp_path / "rep"), "--force"]) == 0
