"""`edgeprune latency-table`: a tiny resnet-kws's layers timed alone on this machine and over a real sshd, the
cache, and the prediction, which gives the whole file's time back at full width by construction."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from edgeprune import checkpoint
from edgeprune.latency import build, layer_grid, table
from edgeprune.models import arch_spec, build as build_model
from edgeprune.models.registry import input_specs

CLI = [sys.executable, "-m", "edgeprune"]
ARCH = arch_spec("resnet-kws", "keywords", channels=4, blocks=(1,))
FAST = ["--rounds", "1", "--block", "2"]


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("latency") / "parent"
    checkpoint.save(path, build_model(ARCH, "torch"), "torch", ARCH, None)
    return path


@pytest.fixture(scope="module")
def local(parent):
    work = parent.parent
    first = subprocess.run(CLI + ["latency-table", str(parent), *FAST], capture_output=True, text=True, cwd=work)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run(CLI + ["latency-table", str(parent), *FAST], capture_output=True, text=True, cwd=work)
    assert second.returncode == 0, second.stderr[-2000:]
    (path,) = (work / "runs" / "latency").glob("*/resnet-kws-*.json")
    return table.load(path), first.stdout, second.stdout


def test_every_layer_is_timed_at_every_width_it_can_take(local):
    doc, _, _ = local
    for q in ("fp32", "int8"):
        layers = doc["precisions"][q]["layers"]
        assert set(layers) == {"conv0", "block1.conv1", "block1.conv2", "fc"}
        assert sorted(map(int, layers["block1.conv1"]["out"])) == [1, 2, 3, 4]  # its own channels
        assert sorted(map(int, layers["block1.conv2"]["in"])) == [1, 2, 3, 4]  # fed by block1.conv1
        assert sorted(map(int, layers["fc"]["in"])) == [1, 2, 3, 4]  # fed through the skip group
        assert all(v > 0 for e in layers.values() for v in e["out"].values())


def test_the_prediction_at_full_width_is_the_whole_files_time(local, parent):
    doc, _, _ = local
    for fw in ("torch", "keras"):  # the twins share layer names, so one table serves both
        counts = table.channel_counts(checkpoint.load(parent, framework=fw).model, fw)
        for q in ("fp32", "int8"):
            assert table.predict(doc, q, counts) == pytest.approx(doc["precisions"][q]["whole_ms"], rel=1e-9)


def test_a_second_call_reads_the_cache(local):
    _, first, second = local
    assert "timing" in first and "timing" not in second and "cached" in second
    assert "worth_keeping" in first


def test_the_grid_times_over_ssh_like_here(parent, sshd, tmp_path):
    from devices import make_runner

    port, key = sshd
    grid = tmp_path / "grid"
    geoms = layer_grid.geometry(checkpoint.load(parent, framework="torch").model,
                                [s.shape for s in input_specs(ARCH, "torch")], layers=["block1.conv1"])
    layer_grid.build_grid(geoms, {"block1.conv1": [(4, 2), (4, 4)]}, grid, ("fp32",), progress=False)
    runner = make_runner(f"ssh://root@127.0.0.1:{port}", board="desktop", key=key, python=sys.executable,
                         log=lambda line: None)
    timed = runner.time_grid(grid, tmp_path / "grid.json", rounds=1, block=2)
    assert set(timed["files"]) == {"block1.conv1__4x2__fp32.tflite", "block1.conv1__4x4__fp32.tflite"}
    assert json.loads((tmp_path / "grid.json").read_text()) == timed
    assert all(v["ms"] > 0 for v in timed["files"].values())


def test_emulated_boards_and_bad_requests_are_refused(parent, tmp_path):
    proc = subprocess.run(CLI + ["latency-table", str(parent), "--device", "rpi4-emulated"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "emulated board's timings are not latency" in proc.stderr
    proc = subprocess.run(CLI + ["latency-table", str(parent), "--precision", "dynamic"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "the latency grid has fp32, fp16, int8" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_a_float16_table_times_the_float16_files(parent, tmp_path):
    """float16 files (float16 weights; XNNPACK on x86 computes them in float32) are a grid precision of their own:
    what a target does with them is measured, not assumed from float32."""
    proc = subprocess.run(CLI + ["latency-table", str(parent), "--precision", "fp16", *FAST], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = (tmp_path / "runs" / "latency").glob("*/resnet-kws-*.json")
    doc = table.load(path)
    assert list(doc["precisions"]) == ["fp16"]
    assert len(list((tmp_path / "runs").rglob("*.tflite"))) == 0  # the grid's files are not left behind
    conv1 = doc["precisions"]["fp16"]["layers"]["block1.conv1"]
    assert len(conv1["out"]) == 4 and all(ms > 0 for ms in conv1["out"].values())


def test_keys_ignore_weights_but_not_shapes(parent):
    spec = checkpoint.read_spec(parent)
    same = json.loads(json.dumps(spec))
    same["weights_sha256"] = "other"
    assert build.model_key(spec) == build.model_key(same)
    wider = json.loads(json.dumps(spec))
    wider["arch"]["args"]["channels"] = 8
    assert build.model_key(spec) != build.model_key(wider)


def _cached_table(work, parent, conv2_out: dict[str, float] | None = None, precision: str = "int8",
                  conv1_out: dict[str, float] | None = None) -> dict:
    """A hand-written table (int8 unless told) for the tiny model, cached for the 'desktop' target: conv0's time
    steps after 2 channels, block1.conv1's after 3 (or `conv1_out`), block1.conv2's is flat (or `conv2_out`);
    rest 1 ms; whole file 8.5 ms."""
    flat = {str(c): 2.0 for c in range(1, 5)}
    doc = {"format": 1, "model": build.model_key(checkpoint.read_spec(parent)), "target": "desktop",
           "precisions": {precision: {"whole_ms": 8.5, "rest_ms": 1.0, "layers": {
               "conv0": {"full_ms": 2.0, "out": {"1": 1.0, "2": 1.0, "3": 2.0, "4": 2.0}, "in": {}},
               "block1.conv1": {"full_ms": 3.0, "out": conv1_out or {"1": 1.0, "2": 1.0, "3": 1.0, "4": 3.0},
                                "in": {"1": 1.5, "2": 1.5, "3": 3.0, "4": 3.0}},
               "block1.conv2": {"full_ms": 2.0, "out": conv2_out or flat,
                                "in": {"1": 1.0, "2": 1.0, "3": 1.0, "4": 2.0}},
               "fc": {"full_ms": 0.5, "out": {}, "in": {"1": 0.25, "2": 0.25, "3": 0.5, "4": 0.5}}}}}}
    model = checkpoint.load(parent, framework="torch").model
    doc["geometry"] = {n: g.to_json() for n, g in layer_grid.geometry(
        model, [s.shape for s in input_specs(ARCH, "torch")]).items()}
    folder = work / "runs" / "latency" / "cached-device"
    folder.mkdir(parents=True)
    (folder / f"{doc['model']}.json").write_text(json.dumps(doc))
    (work / "runs" / "latency" / "index.json").write_text(json.dumps({"desktop": "cached-device"}))
    return doc


def _prune(parent, work, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["prune", str(parent), "--criterion", "l1", "--out", str(work / "out"), *extra],
                          capture_output=True, text=True, cwd=work)


def test_round_to_auto_grows_counts_to_the_targets_steps(parent, tmp_path):
    _cached_table(tmp_path, parent)
    proc = _prune(parent, tmp_path, "--ratio", "0.5", "--round-to", "auto")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cached" in proc.stdout  # nothing was timed
    model = checkpoint.load(tmp_path / "out", framework="torch").model
    assert model.conv0.out_channels == 2  # 2 is the last count of conv0's first stair
    assert model.block1.conv1.out_channels == 3  # half is 2, but 3 channels cost what 2 cost


def test_a_latency_budget_meets_the_predicted_fraction_or_says_how_close(parent, tmp_path):
    doc = _cached_table(tmp_path, parent)
    proc = _prune(parent, tmp_path, "--budget", "latency=0.7")
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = checkpoint.load(tmp_path / "out", framework="torch").model
    predicted = table.predict(doc, "int8", table.channel_counts(model, "torch"))
    assert predicted <= 0.7 * 8.5
    assert f"-> {predicted:.3f} ms" in proc.stdout  # the prediction is printed beside the MAC cut
    proc = _prune(parent, tmp_path, "--budget", "latency=0.3", "--force")
    assert proc.returncode == 2 and "cannot be met" in proc.stderr and "still take" in proc.stderr
    proc = _prune(parent, tmp_path, "--ratio", "0.5", "--device", "desktop", "--force")
    assert proc.returncode == 2 and "--device applies to" in proc.stderr


def test_round_to_auto_steps_a_coupled_group_on_every_members_time(parent, tmp_path):
    """conv0 and block1.conv2 meet at the identity skip, so they keep one count. conv0 alone steps after 2 (its
    stairs end at 2 and 4: 3 channels would grow to 4); block1.conv2 steps after 3. Together, by count:
    1+1, 1+1, 2+1, 2+3 ms, so 3 ends a stair and a 0.25 cut keeps 3 in both."""
    _cached_table(tmp_path, parent, conv2_out={"1": 1.0, "2": 1.0, "3": 1.0, "4": 3.0})
    proc = _prune(parent, tmp_path, "--ratio", "0.25", "--round-to", "auto")
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = checkpoint.load(tmp_path / "out", framework="torch").model
    assert model.conv0.out_channels == model.block1.conv2.out_channels == 3


def test_counts_for_a_mac_budget_land_on_the_stairs_ends(parent, tmp_path):
    from edgeprune.latency.choose import counts_for_macs
    from edgeprune.models.measure import measure
    from edgeprune.pruning.api import apply_keep

    doc = _cached_table(tmp_path, parent)
    ckpt = checkpoint.load(parent, framework="torch")
    doc["geometry"] = {n: g.to_json() for n, g in layer_grid.geometry(
        ckpt.model, [s.shape for s in input_specs(ARCH, "torch")]).items()}

    def macs_at(width: int) -> int:
        child, _ = apply_keep(ckpt.model, "torch", ARCH, {"block1.conv1": list(range(width))})
        return measure(child, "torch", ARCH)["macs"]

    # 1-3 channels are one stair (1 ms), 4 the next (3 ms): the stairs end at 3 and 4
    choose = lambda budget: counts_for_macs(doc, "int8", ckpt.model, "torch", ARCH, ["block1.conv1"], budget)  # noqa
    assert choose(macs_at(3)) == {"block1.conv1": 3}
    assert choose(macs_at(4)) == {"block1.conv1": 4}  # the whole budget, on a stair's end
    assert choose(macs_at(3) + 1) == {"block1.conv1": 3}  # 4 does not fit; 3 ends the stair below
    assert choose(macs_at(2)) == {"block1.conv1": 2}  # no stair end fits: any count on the lowest stair


def test_counts_for_a_mac_budget_cut_a_coupled_group_together_on_the_groups_stairs(parent, tmp_path):
    """conv0 and block1.conv2 meet at the skip and keep one count (the group's stairs end at 2 and 4). The MACs are
    priced with every member cut: the budget of 2 in both gets 2 in both (priced with block1.conv2 whole, 2 would
    not fit), 4's gets 4. Listing either member chooses for the group."""
    from edgeprune.latency.choose import counts_for_macs
    from edgeprune.models.measure import measure
    from edgeprune.pruning.api import apply_keep

    doc = _cached_table(tmp_path, parent)
    ckpt = checkpoint.load(parent, framework="torch")

    def macs_at(width: int) -> int:  # cutting conv0 cuts its group with it
        child, _ = apply_keep(ckpt.model, "torch", ARCH, {"conv0": list(range(width))})
        assert table.channel_counts(child, "torch")["block1.conv2"][1] == width
        return measure(child, "torch", ARCH)["macs"]

    for listed in ("conv0", "block1.conv2"):
        choose = lambda budget: counts_for_macs(doc, "int8", ckpt.model, "torch", ARCH, [listed], budget)  # noqa
        assert choose(macs_at(2)) == {"conv0": 2, "block1.conv2": 2}
        assert choose(macs_at(4)) == {"conv0": 4, "block1.conv2": 4}


def test_a_mac_budget_is_used_when_stair_ends_alone_are_too_coarse():
    """The DCASE baseline with int8 stairs shaped like this x86's: conv2 costs less at 1 input channel (it folds),
    steps at 8 and 16; conv3 steps at 16. Budget: the seed's C1+C2+C3 (11/11/25), 140,146,000 MACs. On stair ends
    alone (conv1 1, 8, 16; conv2 16; conv3 16, 32) 8/16/16 takes 143.3 M, so the best fit is 1/16/32 at 36.7 M.
    conv3 anywhere on its lowest stair (1-16 cost the same) gives 8/16/10: 139.55 M, worked by hand."""
    from edgeprune.latency.choose import counts_for_macs
    from edgeprune.models.measure import measure
    from edgeprune.pruning.api import apply_keep

    arch = arch_spec("dcase2021_baseline")
    torch.manual_seed(0)
    model = build_model(arch, "torch")
    geoms = layer_grid.geometry(model, [s.shape for s in input_specs(arch, "torch")])

    def stairs(levels):  # [(last count of the stair, ms)]
        out, first = {}, 1
        for last, ms in levels:
            out.update({str(c): ms for c in range(first, last + 1)})
            first = last + 1
        return out

    doc = {"geometry": {n: g.to_json() for n, g in geoms.items()},
           "feeds": {"conv1": {"conv2": 1.0}, "conv2": {"conv3": 1.0}, "conv3": {"dense1": 2.0}},
           "precisions": {"int8": {"whole_ms": 1.0, "rest_ms": 0.1, "layers": {
               "conv1": {"full_ms": 0.1, "out": stairs([(16, 0.1)]), "in": {}},
               "conv2": {"full_ms": 0.5, "out": stairs([(16, 0.5)]), "in": stairs([(1, 0.25), (8, 0.33), (16, 0.5)])},
               "conv3": {"full_ms": 0.04, "out": stairs([(16, 0.02), (32, 0.04)]), "in": stairs([(16, 0.04)])},
               "dense1": {"full_ms": 0.01, "out": stairs([(100, 0.01)]), "in": stairs([(64, 0.01)])},
               "dense2": {"full_ms": 0.01, "out": {}, "in": stairs([(100, 0.01)])}}}}}
    child, _ = apply_keep(model, "torch", arch, {"conv1": list(range(11)), "conv2": list(range(11)),
                                                 "conv3": list(range(25))})
    budget = measure(child, "torch", arch)["macs"]
    assert budget == 140_146_000
    chosen = counts_for_macs(doc, "int8", model, "torch", arch, ["conv1", "conv2", "conv3"], budget)
    assert chosen == {"conv1": 8, "conv2": 16, "conv3": 10}
    # conv2's count 1 alone on its lowest stair (0.3 ms, 2-16 take 0.5): for the seed's C2 budget (conv2 = 12)
    # the stair ends alone offer 1, an eighth of it; any count is chosen instead
    doc["precisions"]["int8"]["layers"]["conv2"]["out"] = stairs([(1, 0.3), (16, 0.5)])
    c2, _ = apply_keep(model, "torch", arch, {"conv2": list(range(12))})
    assert counts_for_macs(doc, "int8", model, "torch", arch, ["conv2"], measure(c2, "torch", arch)["macs"]) == \
        {"conv2": 12}


def test_paired_timing_returns_each_files_time_and_the_ratio_with_its_spread(parent, tmp_path):
    from edgeprune.paired import paired_latency

    geoms = layer_grid.geometry(checkpoint.load(parent, framework="torch").model,
                                [s.shape for s in input_specs(ARCH, "torch")], layers=["block1.conv1"])
    layer_grid.build_grid(geoms, {"block1.conv1": [(4, 1), (4, 4)]}, tmp_path, ("fp32",), progress=False)
    a, b = (str(tmp_path / layer_grid.file_name("block1.conv1", 4, c, "fp32")) for c in (4, 1))
    timed = paired_latency(a, b, rounds=4, block=3)
    assert timed["parent_ms"] > 0 and timed["pruned_ms"] > 0
    low, high = timed["ratio_spread"]
    assert low <= timed["ratio"] <= high  # the median of the per-round ratios lies within their range


def test_a_layers_steps_include_those_of_the_layers_it_feeds():
    """conv a's own time is flat in its output count, but b reads a's channels and steps after 8 of them (an int8
    kernel's input tile): cutting a below 9 pays, anywhere else within a stair does not."""
    doc = {"precisions": {"int8": {"layers": {
        "a": {"full_ms": 1.0, "out": {str(k): 1.0 for k in range(1, 17)}, "in": {}},
        "b": {"full_ms": 2.0, "out": {}, "in": {str(k): 1.0 if k <= 8 else 2.0 for k in range(1, 17)}}}}},
        "feeds": {"a": {"b": 1.0}}}
    assert table.steps_of(doc, "int8", "a") == [8, 16]
    assert table.count_curve(doc, "int8", "a")[9] == pytest.approx(3.0)
    del doc["feeds"]
    assert table.steps_of(doc, "int8", "a") == [16]


def test_a_coupled_groups_steps_add_its_members_and_count_a_shared_reader_once():
    """a and b meet at an add that c reads. a steps after 4, c's input after 6, b is flat: the group's stairs end at
    4, 6 and 8; at 8 channels it costs a 2 + b 1 + c 2 = 5 ms (c once, though both feed it)."""
    doc = {"precisions": {"int8": {"layers": {
        "a": {"full_ms": 2.0, "out": {str(k): 1.0 if k <= 4 else 2.0 for k in range(1, 9)}, "in": {}},
        "b": {"full_ms": 1.0, "out": {str(k): 1.0 for k in range(1, 9)}, "in": {}},
        "c": {"full_ms": 2.0, "out": {}, "in": {str(k): 1.0 if k <= 6 else 2.0 for k in range(1, 9)}}}}},
        "feeds": {"a": {"c": 1.0}, "b": {"c": 1.0}}}
    assert table.steps_of(doc, "int8", ("a", "b")) == [4, 6, 8]
    assert table.count_curve(doc, "int8", ("a", "b"))[8] == pytest.approx(5.0)
    assert table.steps_of(doc, "int8", "a") == [4, 6, 8]  # a alone: its own stairs and c's
    assert table.steps_of(doc, "int8", "b") == [6, 8]


def test_export_vs_a_parent_bundle_adds_the_latency_cut_beside_the_mac_cut(parent, tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=tmp_path)

    common = ["--format", "tflite", "--quant", "fp32", "--profile", "tiny", "--calib", "8", "--eval", "8",
              "--out", str(tmp_path / "export")]
    assert run("export", str(parent), *common, "--name", "parent").returncode == 0
    assert run("prune", str(parent), "--criterion", "l1", "--ratio", "0.5", "--out", str(tmp_path / "half")
               ).returncode == 0
    proc = run("export", str(tmp_path / "half"), *common, "--vs", str(tmp_path / "export" / "parent"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours = json.loads((tmp_path / "export" / "half" / "manifest.json").read_text())
    theirs = json.loads((tmp_path / "export" / "parent" / "manifest.json").read_text())
    (art,) = ours["artifacts"]
    assert art["vs_parent"]["mac_cut"] == pytest.approx(1 - ours["source"]["macs"] / theirs["source"]["macs"],
                                                        abs=1e-4)
    low, high = art["vs_parent"]["ratio_spread"]
    assert low <= 1 - art["vs_parent"]["latency_cut"] <= high
    assert "Against the parent bundle" in (tmp_path / "export" / "half" / "REPORT.md").read_text()
    bad = run("export", str(tmp_path / "half"), *common, "--name", "again", "--vs", str(tmp_path))
    assert bad.returncode == 2 and "not an export bundle" in bad.stderr


def test_export_pads_a_pruned_layer_back_where_the_target_runs_it_faster(parent, tmp_path):
    """block1.conv1 kept 3 of 4 channels; on this (hand-written) target 3 take 3 ms and 4 take 1.5: the float32
    file gets a 4th channel of zeros, and passes parity against the pruned model (the same outputs)."""
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=tmp_path)

    _cached_table(tmp_path, parent, precision="fp32", conv1_out={"1": 1.0, "2": 1.0, "3": 3.0, "4": 1.5})
    keep = tmp_path / "keep.json"
    keep.write_text(json.dumps({"block1.conv1": [0, 1, 3]}))
    assert run("prune", str(parent), "--keep", str(keep), "--out", str(tmp_path / "pruned")).returncode == 0
    common = ["--format", "tflite", "--quant", "fp32", "--profile", "tiny", "--calib", "8", "--eval", "8",
              "--out", str(tmp_path / "export")]
    for nothing in (["--format", "onnx"], ["--quant", "dynamic"]):  # no file --pad-for would pad: refused at once
        proc = run("export", str(tmp_path / "pruned"), *common, *nothing, "--pad-for", "desktop", "--name", "no")
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
        assert "--pad-for desktop: pads the fp32, fp16, int8 TFLite files" in proc.stderr
        assert not (tmp_path / "export" / "no").exists()
    proc = run("export", str(tmp_path / "pruned"), *common, "--pad-for", "desktop")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "padding for desktop: fp32 block1.conv1 -> 4" in proc.stdout
    manifest = json.loads((tmp_path / "export" / "pruned" / "manifest.json").read_text())
    assert manifest["padded"] == {"fp32": ["block1.conv1: 3 -> 4 channels (1 of zeros)"]}
    (art,) = manifest["artifacts"]
    assert art["passed"]
    assert run("export", str(tmp_path / "pruned"), *common, "--name", "plain").returncode == 0
    plain = json.loads((tmp_path / "export" / "plain" / "manifest.json").read_text())
    assert plain["padded"] == {} and art["size_bytes"] > plain["artifacts"][0]["size_bytes"]  # the zeros' bytes
